"""``storage.database`` and ``storage.database_password_file``: SQLite by default, PostgreSQL only on a central
station, never a password in the URL, every problem with its file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import only_problem, parse

CENTRAL = "central:\n  sites: auto\n"


def test_sqlite_is_the_default() -> None:
    storage = parse("").storage
    assert storage.database is None and storage.database_password_file is None
    assert not storage.postgresql


def test_a_central_station_on_postgresql(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "vmond.yaml").write_text(
        CENTRAL + "storage:\n  database: postgresql://vmond@db.example.com:5433/vmond?sslmode=verify-full\n"
        "  database_password_file: pw\n")
    from vmond.config import load_config

    storage = load_config(tmp_path / "vmond.yaml").storage
    assert storage.postgresql
    assert storage.database == "postgresql://vmond@db.example.com:5433/vmond?sslmode=verify-full"
    assert storage.database_password_file == tmp_path / "pw"
    password = storage.read_database_password()
    assert password is not None and password.reveal() == "s3cret"


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://vmond:hunter2@db/vmond", "must not hold a password (it would show in ps, logs and backups): "
     "put it in storage.database_password_file"),
    ("mysql://vmond@db/vmond", "must be a postgresql:// URL"),
    ("/var/lib/vmond/vmond.db", "must be a postgresql:// URL"),
    ("postgresql://vmond@db", "must name the database after the host"),
    ("postgresql://vmond@db:port/vmond", "is not a URL"),
    ("postgresql://vmond@db/vmond?sslmod=require", "unknown connection parameter 'sslmod'; did you mean `sslmode`?"),
    ("postgresql://vmond@db/vmond?sslmode=sometimes", "sslmode 'sometimes' is not one of"),
    ("postgresql://vmond@db/vmond?connect_timeout=soon", "connect_timeout must be a whole number of seconds"),
    ("postgresql://vmond@db/vmond ", None),  # trailing space: stripped, fine
])
def test_wrong_urls(url: str, message: str | None) -> None:
    text = CENTRAL + f"storage:\n  database: '{url}'\n"
    if message is None:
        assert parse(text).storage.database == url.strip()
        return
    problem = only_problem(text)
    assert problem.startswith(f"vmond.yaml:4: storage.database: {message}"), problem
    assert "hunter2" not in problem


def test_an_appliance_stays_on_sqlite() -> None:
    problem = only_problem("storage:\n  database: postgresql://vmond@db/vmond\n")
    assert problem.startswith("vmond.yaml:2: storage.database: PostgreSQL is for a central station (a `central:` "
                              "section)"), problem


def test_a_password_file_needs_a_postgresql_url() -> None:
    problem = only_problem(CENTRAL + "storage:\n  database_password_file: pw\n", check_files=False)
    assert problem.startswith("vmond.yaml:4: storage.database_password_file: is the password of a PostgreSQL "
                              "database"), problem


def test_the_password_file_must_exist() -> None:
    problem = only_problem(CENTRAL + "storage:\n  database: postgresql://vmond@db/vmond\n"
                           "  database_password_file: nowhere\n")
    assert problem.startswith("vmond.yaml:5: storage.database_password_file: file not found"), problem
