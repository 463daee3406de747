"""A central station on PostgreSQL (``storage.database``): ``vmond run`` migrates an empty database and serves,
``vmond user add`` works on it, the password comes from ``storage.database_password_file``, the SQLite-only tools
say what to use instead; and the central's own tests (the mirror, commands, site supervision) run again here,
with the central process on PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from centralsite import Central, central, central_process, edge, edge_process, poll, watchful_central  # noqa: F401
from conftest import Daemon
from helpers import run_cli
from mosquitto import Mosquitto
from postgres import PostgresCluster

# The central's tests that matter most on PostgreSQL, collected again with this module's central_storage.
from test_central_commands import (
    test_a_bulk_dismiss_and_its_undo_go_to_the_site,  # noqa: F401
    test_actions_at_the_central_are_applied_at_the_edge_and_come_back_done,  # noqa: F401
)
from test_central_mirror import (
    test_a_sites_accounts_and_cameras_are_read_only_on_the_central,  # noqa: F401
    test_an_edge_event_and_its_alarm_reach_the_central,  # noqa: F401
)
from test_central_sites import test_a_killed_edge_is_offline_until_it_returns  # noqa: F401

# First-run setup, logins and tokens on a central in the test's loop (the fixture `daemon` below): its users and
# sessions in PostgreSQL.
from test_web import (
    test_first_run_setup_creates_the_admin_once,  # noqa: F401
    test_login_wrong_password_and_rate_limit,  # noqa: F401
    test_token_gives_bearer_access,  # noqa: F401
)

from vmond.config import Config, parse_config_text
from vmond.daemon import running
from vmond.store import migrations

pytestmark = pytest.mark.usefixtures("quick_mqtt")


@pytest.fixture
def central_storage(postgres_url: str) -> dict[str, Any]:
    return {"database": postgres_url}


async def test_a_central_migrates_an_empty_database_and_serves(central: Central, postgres: PostgresCluster,  # noqa: F811
                                                               postgres_db: str) -> None:
    status, _, body = await central.fetch("/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok", body
    database = json.loads(body)["database"]
    assert database["ok"] and database["engine"] == "postgresql" and database["reconnects"] == 0, database
    versions = postgres.execute("SELECT max(version) FROM vmond_schema", dbname=postgres_db)
    assert versions == [(migrations.LATEST,)]
    # the admin `vmond user add` created (centralsite) logged in: its session is a row in PostgreSQL
    sessions = postgres.execute('SELECT count(*) FROM "session" s JOIN "user" u ON u.id = s.user_id '
                                "WHERE u.username = 'admin'", dbname=postgres_db)
    assert sessions[0][0] >= 1
    assert not (central.directory / "data" / "vmond.db").exists()  # no SQLite file beside it
    log = (central.directory / "vmond.log").read_text()
    assert "database postgresql://" in log


def test_the_password_comes_from_its_file(tmp_path: Path, broker: Mosquitto,
                                          postgres_password_url: tuple[str, Path]) -> None:
    url, password_file = postgres_password_url
    with central_process(tmp_path / "central", broker.port,
                         storage={"database": url, "database_password_file": str(password_file)}) as station:
        assert station.process.get("/api/health")[0] == 200
    password = password_file.read_text().strip()
    assert password not in (tmp_path / "central" / "vmond.log").read_text()


def test_a_wrong_password_stops_the_start_with_a_clear_error(tmp_path: Path,
                                                             postgres_password_url: tuple[str, Path]) -> None:
    url, password_file = postgres_password_url
    password_file.write_text("not the password\n")
    config = tmp_path / "vmond.yaml"
    config.write_text(yaml.safe_dump({
        "site": {"id": "central-1"}, "web": {"listen": "127.0.0.1:0"},
        "storage": {"data_dir": "data", "database": url, "database_password_file": str(password_file)},
        "central": {"sites": "auto"}}))
    result = run_cli("user", "add", "someone", "--role", "admin", "--password-stdin", "--config", str(config),
                     stdin="correct horse battery\n")
    assert result.returncode != 0
    (line,) = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"cannot open the database {url}: ") and "password authentication failed" in line
    assert "not the password" not in result.stderr
    # The daemon too: it stops at once with that line last (systemd starts it again), not with a traceback.
    result = run_cli("run", "--config", str(config))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"vmond: cannot open the database {url}: ") and "password authentication failed" in last
    assert "not the password" not in result.stderr


def test_the_sqlite_tools_point_at_postgresqls(tmp_path: Path, postgres_url: str) -> None:
    config = tmp_path / "vmond.yaml"
    config.write_text(yaml.safe_dump({"site": {"id": "central-1"}, "storage": {"data_dir": "data",
                                                                               "database": postgres_url},
                                      "central": {"sites": "auto"}}))
    assert run_cli("check-config", str(config)).returncode == 0
    for command in (["backup", str(tmp_path / "copy")], ["restore", str(tmp_path / "copy")]):
        result = run_cli(*command, "--config", str(config))
        assert result.returncode != 0 and "pg_dump" in result.stderr, result.stderr
    assert not (tmp_path / "copy").exists()
    info = run_cli("info", "--config", str(config), "--get", "database")
    assert info.stdout.strip() == postgres_url


def test_users_are_kept_in_postgresql(tmp_path: Path, postgres: PostgresCluster, postgres_db: str,
                                      postgres_url: str) -> None:
    config = tmp_path / "vmond.yaml"
    config.write_text(yaml.safe_dump({"site": {"id": "central-1"}, "storage": {"data_dir": "data",
                                                                               "database": postgres_url},
                                      "central": {"sites": "auto"}}))
    for args in (["user", "add", "guard7", "--role", "guard"], ["user", "passwd", "guard7"]):
        result = run_cli(*args, "--password-stdin", "--config", str(config), stdin="correct horse battery\n")
        assert result.returncode == 0, result.stderr
    again = run_cli("user", "add", "guard7", "--role", "guard", "--password-stdin", "--config", str(config),
                    stdin="correct horse battery\n")
    assert again.returncode != 0 and "exists already" in again.stderr
    assert postgres.execute("SELECT role, active FROM \"user\" WHERE username = 'guard7'",
                            dbname=postgres_db) == [("guard", True)]


@pytest.fixture
async def daemon(make_config: Callable[..., Config], broker: Mosquitto, postgres_url: str) -> AsyncIterator[Daemon]:
    """A central station on PostgreSQL, in the test's loop (no edge: its users are what is tested)."""
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "database": postgres_url},
                         central={"mqtt": {"host": "127.0.0.1", "port": broker.port}, "sites": "auto",
                                  "command_secret": "secret-of-every-site"}, accounts=[])
    assert config.central.enabled and config.storage.postgresql
    async with running(config) as services:
        yield Daemon(services)


def test_the_readmes_example_is_a_valid_central_on_postgresql() -> None:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    chapter = text[text.index("\n## Storage: SQLite or PostgreSQL\n"):text.index("\n## Configuration reference\n")]
    (block,) = re.findall(r"^```yaml\n(.*?)^```$", chapter, flags=re.M | re.S)
    config = parse_config_text(block, "README.md", check_files=False)
    assert config.central.enabled and config.storage.postgresql
    assert config.storage.database_password_file == Path("/etc/vmond/database-password")
