"""The ``vmond`` command as an installer uses it: check-config, users, TLS fingerprint, send-test."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import PASSWORD, Daemon, sample, write_config
from helpers import free_port, run_cli

from vmond.config import Config
from vmond.daemon import running
from vmond.ingest.mailparse import parse_mail
from vmond.ops.testmail import build_test_mail
from vmond.store.db import open_sqlite
from vmond.store.models import Session, utcnow
from vmond.store.users import credentials
from vmond.util import auth


def test_check_config_ok_prints_a_summary(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: ok: site test-site, 1 account(s), 2 camera(s)")
    assert len(result.stdout.splitlines()) == 1


def test_check_config_says_a_central_is_one(tmp_path: Path) -> None:
    config = tmp_path / "central.yaml"
    config.write_text("site: {id: central-1}\ncentral:\n  mqtt: {host: broker.example, port: 8883}\n  sites: auto\n")
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: ok: central station central-1, any site, mqtt broker.example:8883")


def test_check_config_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site:\n  id: Not Valid\nsmpt:\n  listen: x\nweb:\n  listen: \"127.0.0.1:99999\"\n")
    result = run_cli("check-config", "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{bad}:2: site.id: ") for line in lines), lines
    assert any(line.startswith(f"{bad}:3: smpt: ") and "did you mean `smtp`" in line for line in lines), lines
    assert any(line.startswith(f"{bad}:6: web.listen: ") for line in lines), lines
    assert result.stdout == ""


def test_config_comes_from_the_environment_then_the_default(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run_cli("check-config", env={"VMOND_CONFIG": str(config), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and str(config) in result.stdout
    missing = run_cli("check-config", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr


def test_config_option_before_or_after_the_subcommand(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert run_cli("--config", str(config), "check-config").returncode == 0
    assert run_cli("check-config", "-c", str(config)).returncode == 0


def test_check_config_takes_the_file_as_an_argument(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run_cli("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: ok: ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("site:\n  id: Not Valid\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2 and result.stderr.startswith(f"{bad}:2: site.id: ")
    # The same file named both ways is fine, in any spelling of the option.
    for both in (["check-config", str(config), "--config", str(config)],
                 ["check-config", "-c", str(tmp_path / "." / "vmond.yaml"), str(config)],
                 ["--config", str(config), "check-config", str(config)]):
        assert run_cli(*both).returncode == 0, both


def test_check_config_refuses_two_different_files(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text())
    for both in (["check-config", str(config), "--config", str(other)],
                 ["--config", str(other), "check-config", str(config)]):
        result = run_cli(*both)
        assert result.returncode == 2 and result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert str(config) in line and str(other) in line and "give one" in line


def test_info_shows_what_the_file_configures(tmp_path: Path) -> None:
    config = write_config(tmp_path, smtp={"listen": "0.0.0.0:2626", "domain": "cams.example"},
                          web={"listen": "[::1]:8443", "tls": {"self_signed": True}})
    values = {"dashboard": "https://[::1]:8443/", "smtp": "127.0.0.1:2626", "domain": "cams.example",
              "camera": "camera-front@cams.example", "data": str(tmp_path / "data"),
                      "database": str(tmp_path / "data" / "vmond.db"), "config": str(config)}
    for name, value in values.items():
        result = run_cli("info", "--config", str(config), "--get", name)
        assert result.returncode == 0 and result.stdout == f"{value}\n", (name, result)
    shown = run_cli("info", "--config", str(config))
    assert [line.split() for line in shown.stdout.splitlines()] == [[k, v] for k, v in values.items()]
    no_camera = write_config(tmp_path, accounts=[])
    assert run_cli("info", "-c", str(no_camera), "--get", "camera").stdout == "\n"


def test_make_run_banner_shows_the_configured_addresses(tmp_path: Path) -> None:
    config = write_config(tmp_path, smtp={"listen": "127.0.0.1:2626", "domain": "cams.example"},
                          web={"listen": "0.0.0.0:8181"})
    result = subprocess.run(["make", "-s", "-C", str(Path(__file__).parent.parent), "banner", f"CONFIG={config}",
                             f"VMOND={sys.executable} -m vmond"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    banner = result.stdout
    assert "dashboard http://127.0.0.1:8181/  SMTP 127.0.0.1:2626" in banner
    assert "open http://127.0.0.1:8181/setup" in banner
    assert "camera-front@cams.example via 127.0.0.1:2626" in banner
    assert "8080" not in banner and "2525" not in banner and "monitor.local" not in banner
    broken = tmp_path / "broken.yaml"
    broken.write_text("smtp:\n  listen: nowhere\n")
    result = subprocess.run(["make", "-s", "-C", str(Path(__file__).parent.parent), "banner", f"CONFIG={broken}",
                             f"VMOND={sys.executable} -m vmond"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and f"{broken}:2: smtp.listen: " in result.stderr


def test_user_add_and_passwd(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    created = run_cli("user", "add", "alice", "--role", "supervisor", "--password-stdin", "--config", str(config),
                    stdin=f"{PASSWORD}\n")
    assert created.returncode == 0, created.stderr
    again = run_cli("user", "add", "alice", "--role", "guard", "--password-stdin", "--config", str(config),
                  stdin=f"{PASSWORD}\n")
    assert again.returncode != 0 and "exists already" in again.stderr
    weak = run_cli("user", "add", "bob", "--role", "guard", "--password-stdin", "--config", str(config), stdin="abc\n")
    assert weak.returncode != 0 and "too weak" in weak.stderr
    db = open_sqlite(tmp_path / "data" / "vmond.db")
    try:
        user = credentials("alice")
        assert user is not None and user["role"] == "supervisor"
        assert auth.verify_password(PASSWORD, user["password_hash"])
        Session.create(token_hash="x", user=user["id"], kind="web", expires_at=utcnow() + timedelta(hours=1))
    finally:
        db.close()
    changed = run_cli("user", "passwd", "alice", "--password-stdin", "--config", str(config),
                    stdin="another good password\n")
    assert changed.returncode == 0, changed.stderr
    db = open_sqlite(tmp_path / "data" / "vmond.db")
    try:
        user = credentials("alice")
        assert user is not None and auth.verify_password("another good password", user["password_hash"])
        assert Session.select().count() == 0  # the old password's sessions are gone
    finally:
        db.close()
    unknown = run_cli("user", "passwd", "nobody", "--password-stdin", "--config", str(config), stdin=f"{PASSWORD}\n")
    assert unknown.returncode != 0 and "no user nobody" in unknown.stderr


def test_tls_fingerprint_of_the_self_signed_certificate(tmp_path: Path) -> None:
    from vmond.config import load_config
    from vmond.config.tls import ensure_self_signed

    config = write_config(tmp_path, web={"listen": "127.0.0.1:0", "tls": {"self_signed": True}})
    missing = run_cli("tls", "fingerprint", "--config", str(config))
    assert missing.returncode != 0 and "no certificate" in missing.stderr
    ensure_self_signed(load_config(config))
    key = tmp_path / "data" / "tls" / "key.pem"
    assert key.stat().st_mode & 0o077 == 0
    result = run_cli("tls", "fingerprint", "--config", str(config))
    assert result.returncode == 0, result.stderr
    openssl = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "data" / "tls" / "cert.pem"), "-noout",
                              "-fingerprint", "-sha256"], capture_output=True, text=True, check=True)
    assert openssl.stdout.strip().split("=", 1)[1] in result.stdout


@pytest.mark.slow
async def test_send_test_delivers_an_alarm(daemon: Daemon, tmp_path: Path) -> None:
    config = daemon.config.source
    assert config is not None
    result = await asyncio.to_thread(run_cli, "send-test", "--alarm", "--config", str(config),
                                     "--server", f"127.0.0.1:{daemon.smtp_port}")
    assert result.returncode == 0, result.stderr
    await daemon.wait_idle()
    await daemon.add_user()
    status, body = await daemon.api("GET", "/api/events", await daemon.token())
    (event,) = body["events"]
    assert event["camera"]["smtp_address"] == "camera-front@monitor.local"
    assert event["event_type"] == "Motion Detection" and len(event["images"]) == 1


def test_send_test_mail_is_recognised_as_a_test_mail() -> None:
    test = parse_mail(build_test_mail("camera-front@monitor.local", alarm=False).as_bytes())
    alarm = parse_mail(build_test_mail("camera-front@monitor.local", alarm=True).as_bytes())
    assert test.is_test and len(test.images) == 1
    assert not alarm.is_test and alarm.event_type == "Motion Detection"
    # The header decides, whatever the wording: a camera's own alarm that names it otherwise stays an alarm.
    marked = sample("swann-nvr-human.eml").replace(b"Subject:", b"X-Vmond-Test: send-test\r\nSubject:", 1)
    assert parse_mail(marked).is_test
    other = sample("swann-nvr-human.eml").replace(b"Subject:", b"X-Vmond-Test: no\r\nSubject:", 1)
    assert not parse_mail(other).is_test


async def send_test(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, "send-test", "--config", str(config), *args, stdin=stdin)


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1 and result.stdout == "", result
    (line,) = result.stderr.splitlines()
    assert line.startswith("vmond send-test: ") and "Traceback" not in line
    return line


@pytest.mark.slow
async def test_send_test_is_the_cameras_test_mail(daemon: Daemon) -> None:
    config = daemon.config.source
    assert config is not None
    server = f"127.0.0.1:{daemon.smtp_port}"
    result = await send_test(config, "--server", server)
    assert result.returncode == 0, result.stderr
    assert "test mail" in result.stdout and "camera-front@monitor.local" in result.stdout
    bare = await send_test(config, "--server", server, "--to", "camera-back")  # qualified with smtp.domain
    assert bare.returncode == 0, bare.stderr
    await daemon.wait_idle()
    await daemon.add_user()
    token = await daemon.token()
    _, wall = await daemon.api("GET", "/api/events", token)
    assert wall["events"] == []  # test mails stay off the guards' wall
    _, everything = await daemon.api("GET", "/api/events?status=all&include_tests=1", token)
    tests = {e["camera"]["smtp_address"]: e for e in everything["events"]}
    assert set(tests) == {"camera-front@monitor.local", "camera-back@monitor.local"}
    assert all(e["is_test"] and len(e["images"]) == 1 for e in tests.values())
    _, cameras = await daemon.api("GET", "/api/cameras", token)
    assert all(c["test_mail_received"] and c["test_mail_at"] for c in cameras["cameras"])


@pytest.mark.slow
async def test_send_test_failures_are_one_line_each(daemon: Daemon) -> None:
    config = daemon.config.source
    assert config is not None
    server = f"127.0.0.1:{daemon.smtp_port}"
    unknown = one_line_failure(await send_test(config, "--server", server, "--to", "nobody@monitor.local"))
    assert "550 5.1.1" in unknown and "no camera has this address: check --to or the camera list" in unknown
    unknown_local = one_line_failure(await send_test(config, "--server", server, "--to", "nobody"))
    assert "<nobody@monitor.local>" in unknown_local and "check --to" in unknown_local
    foreign = one_line_failure(await send_test(config, "--server", server, "--to", "camera-front@example.com"))
    assert "550" in foreign and "not smtp.domain (monitor.local)" in foreign
    down = one_line_failure(await send_test(config, "--server", f"127.0.0.1:{free_port()}"))
    assert "connection refused: is vmond running?" in down
    nonsense = one_line_failure(await send_test(config, "--server", "no port"))
    assert "--server 'no port'" in nonsense
    (config.parent / "empty").mkdir()
    nothing = one_line_failure(await send_test(write_config(config.parent / "empty", accounts=[]), "--server", server))
    assert "no camera in" in nothing and "--to ADDRESS" in nothing


@pytest.mark.slow
async def test_send_test_logs_in_as_the_camera(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "auth": "per-camera"},
                         accounts=[{"name": "Shop", "cameras": [
                             {"name": "Till", "smtp_address": "camera-till", "smtp_password": "till-secret"},
                             {"name": "Door", "smtp_address": "camera-door", "smtp_password": "door-secret"}]}])
    assert config.source is not None
    async with running(config) as services:
        daemon = Daemon(services)
        server = f"127.0.0.1:{daemon.smtp_port}"
        await daemon.add_user()
        token = await daemon.token()
        _, account = await daemon.api("POST", "/api/accounts", token, json={"name": "Depot"})
        _, dock = await daemon.api("POST", "/api/cameras", token, json={
            "account_id": account["id"], "name": "Dock", "generate_password": True})
        # Each camera with the password the file gives it (a login as another camera is refused at RCPT).
        for args in ([], ["--to", "camera-door"]):
            result = await send_test(config.source, "--server", server, *args)
            assert result.returncode == 0, result.stderr
        wrong = one_line_failure(await send_test(config.source, "--server", server, "--to", "camera-door",
                                                 "--password", "not-the-password"))
        assert "535" in wrong and "check --to, and --password" in wrong
        unknown = one_line_failure(await send_test(config.source, "--server", server, "--to", dock["smtp_address"]))
        assert f"no SMTP password for {dock['smtp_address']}" in unknown and "give it with --password" in unknown
        given = await send_test(config.source, "--server", server, "--to", dock["smtp_address"], "--password-stdin",
                                stdin=dock["smtp_password"] + "\n")
        assert given.returncode == 0, given.stderr
        await daemon.wait_idle()
        _, cameras = await daemon.api("GET", "/api/cameras", token)
        assert {c["name"]: c["test_mail_received"] for c in cameras["cameras"]} == {
            "Till": True, "Door": True, "Dock": True}
