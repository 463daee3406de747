"""Test helpers for PostgreSQL: a throw-away cluster from Debian's binaries on a free loopback port, and a fresh
database in it for each test.

The cluster lives in a temporary directory of its own (data, log and the unix socket), listens on 127.0.0.1 only,
and runs with ``fsync=off`` (nothing in it outlives the test session). initdb and the server refuse to run as
root, so under root they run as the ``postgres`` system user (Debian's ``postgresql`` package creates it), which
then owns the directory. The system's own cluster (``/var/lib/postgresql``), if any, is never used.

Roles: ``postgres`` (superuser, for the fixtures), ``vmond`` (trusted on loopback: what most tests connect as)
and ``vmond_pw`` (password only, scram-sha-256: for tests of ``storage.database_password_file``).

From another process (a daemon under test, a benchmark): the URL is all it needs. ``python tests/postgres.py``
starts a cluster, prints a fresh database's URL and keeps it until interrupted.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import free_port

PG_ROOT = Path("/usr/lib/postgresql")
RUN_AS = "postgres"  # the system user the cluster runs as when the tests run as root
APP_ROLE = "vmond"
PASSWORD_ROLE = "vmond_pw"
PASSWORD = "pg test secret"
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",  # a test cluster: speed over durability
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",  # several daemons per test, each with a writer, readers and listeners
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d %u '",
}


class PostgresMissing(AssertionError):
    """Debian's PostgreSQL (or psycopg2) is not installed: ``make test`` installs it."""


def bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (``/usr/lib/postgresql/<version>/bin``)."""
    versions = []
    if PG_ROOT.is_dir():
        for child in PG_ROOT.iterdir():
            if re.fullmatch(r"\d+(\.\d+)?", child.name) and (child / "bin" / "initdb").is_file():
                versions.append((float(child.name), child / "bin"))
    if not versions:
        raise PostgresMissing(f"no PostgreSQL server binaries under {PG_ROOT}/<version>/bin: install Debian's "
                              "postgresql package (make test does: make debs)")
    return max(versions)[1]


def _psycopg2() -> Any:
    try:
        import psycopg2
    except ImportError as exc:
        raise PostgresMissing("psycopg2 is not installed: pip install -e '.[test]' (psycopg2-binary) or Debian's "
                              "python3-psycopg2") from exc
    return psycopg2


class PostgresCluster:
    """One PostgreSQL server; ``start()``, ``stop()`` and ``restart()`` keep its port and data."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
        self.directory = Path(tempfile.mkdtemp(prefix="vmond-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.log = self.directory / "postgres.log"
        self._serial = 0
        self._lock = threading.Lock()
        self.socket_dir.mkdir()
        if self._as_root:
            try:
                user = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise PostgresMissing(f"running as root, but there is no {RUN_AS!r} system user to run PostgreSQL "
                                      "as: install Debian's postgresql package") from None
            for path in (self.directory, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}\n{log}")
        return result

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C", "--auth=trust",
                  "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# vmond's test cluster\n")
            conf.write(f"port = {self.port}\n")
            conf.write(f"unix_socket_directories = '{self.socket_dir}'\n")
            for key, value in _SETTINGS.items():
                conf.write(f"{key} = {value}\n")
        # The password role first: the catch-all trust lines must not match it.
        (self.data / "pg_hba.conf").write_text(
            f"local all {PASSWORD_ROLE} scram-sha-256\n"
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n")

    def start(self) -> None:
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log))

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data), check=False)

    def restart(self) -> None:
        """Stop (connections are cut, as when the server is restarted in production) and start again."""
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop("immediate")
        if os.environ.get("PG_KEEP_LOG"):
            shutil.copy(self.log, os.environ["PG_KEEP_LOG"] + f".{os.getpid()}")
        shutil.rmtree(self.directory, ignore_errors=True)

    def admin(self, dbname: str = "postgres") -> Any:
        """A superuser connection in autocommit mode (close it when done)."""
        connection = _psycopg2().connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname,
                                         connect_timeout=10)
        connection.autocommit = True
        return connection

    def execute(self, sql: str, params: tuple[Any, ...] = (), dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; its rows (none for a statement without a result)."""
        connection = self.admin(dbname)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []
        finally:
            connection.close()

    def create_roles(self) -> None:
        self.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
        self.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD %s", (PASSWORD,))

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database owned by ``vmond``; its name."""
        with self._lock:
            self._serial += 1
            name = f"{prefix}_{os.getpid()}_{self._serial}"
        self.execute(f'CREATE DATABASE "{name}" OWNER {APP_ROLE} TEMPLATE template0')
        # The password role may use it too (the same tables, as another login).
        self.execute(f'GRANT ALL ON DATABASE "{name}" TO {PASSWORD_ROLE}')
        self.execute(f"GRANT ALL ON SCHEMA public TO {PASSWORD_ROLE}", dbname=name)
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, dbname: str, user: str = APP_ROLE) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def terminate_backends(self, dbname: str) -> int:
        """Cut every connection to *dbname* (as a server restart or a network failure would); how many."""
        rows = self.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        return sum(1 for (done,) in rows if done)


@contextlib.contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """A started cluster with the test roles, removed afterwards."""
    _psycopg2()  # fail early and clearly
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        cluster.create_roles()
        yield cluster
    finally:
        cluster.remove()


def wait_ready(cluster: PostgresCluster, timeout: float = 30.0) -> None:
    """Poll until the server accepts connections again (after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.execute("SELECT 1")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    with running_cluster() as pg:
        print(pg.url(pg.create_database("manual")), flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
