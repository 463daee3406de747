"""The installer setting up per-camera SMTP logins: cameras without a password are named at start-up, on the
pages and by check-config; the camera page says exactly what to type into the camera."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from conftest import Daemon, write_config
from helpers import run_cli

from vmond.config import load_config
from vmond.daemon import running

PER_CAMERA = {"listen": "127.0.0.1:0", "domain": "monitor.local", "auth": "per-camera"}
YAML_CAMERAS = [{"name": "Shop", "cameras": [
    {"name": "Till", "smtp_address": "camera-till", "smtp_password": "till-secret"}]}]


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("check-config", "--config", str(path))


async def page(daemon: Daemon, token: str, path: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(
            f"{daemon.url}{path}", headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
        return await response.text()


def test_check_config_refuses_declared_cameras_without_a_password(tmp_path: Path) -> None:
    path = write_config(tmp_path, smtp=PER_CAMERA)  # the base config's cameras have no smtp_password
    result = check_config(path)
    assert result.returncode == 2
    problems = result.stderr.splitlines()
    assert len(problems) == 2 and all(
        p.startswith(f"{path}:") and "accounts[0].cameras[" in p and "needs an smtp_password" in p
        for p in problems), problems


async def test_dashboard_cameras_without_a_password_are_named(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(tmp_path, smtp=PER_CAMERA, accounts=YAML_CAMERAS)
    config = load_config(path)
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user("boss", "supervisor")
        boss = await daemon.token("boss")
        _, account = await daemon.api("POST", "/api/accounts", boss, json={"name": "Depot"})
        _, dock = await daemon.api("POST", "/api/cameras", boss, json={"account_id": account["id"], "name": "Dock"})
        cameras = await page(daemon, boss, "/cameras")
        assert 'data-warning="no-smtp-password"' in cameras and "Dock" in cameras
        assert dock["smtp_address"] in cameras
        camera_page = await page(daemon, boss, f"/cameras/{dock['id']}")
        assert 'data-warning="no-smtp-password"' in camera_page
        till_page = await page(daemon, boss, "/cameras/1")
        assert 'data-warning="no-smtp-password"' not in till_page

    result = check_config(path)  # the daemon is stopped: the database is only read
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    assert "warning" in result.stderr and f"Dock ({dock['smtp_address']})" in result.stderr
    assert "Till" not in result.stderr

    caplog.set_level(logging.WARNING)
    async with running(config) as services:
        daemon = Daemon(services)
        boss = await daemon.token("boss")
        named = [r.getMessage() for r in caplog.records if "have no SMTP password" in r.getMessage()]
        assert len(named) == 1 and f"Dock ({dock['smtp_address'].split('@')[0]})" in named[0]
        assert "Till" not in named[0]
        status, _ = await daemon.api("PATCH", f"/api/cameras/{dock['id']}", boss,
                                     json={"smtp_password": "dock-password"})
        assert status == 200
        assert 'data-warning="no-smtp-password"' not in await page(daemon, boss, "/cameras")
    assert check_config(path).stderr == ""


def test_check_config_says_when_it_cannot_read_the_database(tmp_path: Path) -> None:
    path = write_config(tmp_path, smtp=PER_CAMERA, accounts=YAML_CAMERAS)
    (tmp_path / "data" / "vmond.db").mkdir(parents=True)  # not a database
    result = check_config(path)
    assert result.returncode == 0
    assert "could not check the dashboard's cameras" in result.stderr


async def test_the_camera_page_says_what_to_type_into_the_camera(make_config: Callable[..., object]) -> None:
    config = make_config(smtp=PER_CAMERA, accounts=YAML_CAMERAS)
    async with running(config) as services:  # type: ignore[arg-type]
        daemon = Daemon(services)
        await daemon.add_user("boss", "supervisor")
        boss = await daemon.token("boss")
        _, account = await daemon.api("POST", "/api/accounts", boss, json={"name": "Depot"})
        _, dock = await daemon.api("POST", "/api/cameras", boss, json={
            "account_id": account["id"], "name": "Dock", "smtp_password": "dock-password"})
        text = await page(daemon, boss, f"/cameras/{dock['id']}")
        setup = text[text.index('data-list="smtp-setup"'):]
        setup = setup[:setup.index("</dl>")]
        local_part = dock["smtp_address"].split("@")[0]
        assert "<code>127.0.0.1</code>" in setup and f"<code>{daemon.smtp_port}</code>" in setup
        assert f"<code>{dock['smtp_address']}</code> (or just <code>{local_part}</code>" in setup
        assert "the one set on this page" in setup and "none set yet" not in setup
        assert "none (this appliance has no SMTP certificate)" in setup
        assert setup.count(f"<code>{dock['smtp_address']}</code>") == 3  # user name, sender example, recipient
        till = await page(daemon, boss, "/cameras/1")
        assert "<code>smtp_password</code> in the configuration file" in till
