"""The ``vmond`` command: run, check-config, info, user, tls, backup, restore, send-test, notify-test."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vmond.config import Config, ConfigError, describe, load_config
from vmond.ops.endpoints import INFO_NAMES
from vmond.util import auth
from vmond.util.version import VERSION

DEFAULT_CONFIG = "/etc/vmond/vmond.yaml"
EXIT_CONFIG = 2


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("VMOND_CONFIG") or DEFAULT_CONFIG)


def _load(args: argparse.Namespace) -> Config:
    """The configuration, or exit 2 with every problem on stderr as FILE:LINE: key: message."""
    path = _config_path(args)
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    except OSError as exc:
        print(f"{path}: cannot read the configuration: {exc.strerror}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _setup_logging(level: str) -> None:
    # Under systemd the journal stamps each line itself.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt)
    from vmond.ingest.smtp import quiet_aiosmtpd_logging
    from vmond.web.accesslog import ACCESS_LOGGER

    quiet_aiosmtpd_logging()
    from vmond.notify.deliver import quiet_apprise_logging

    quiet_apprise_logging()
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    _setup_logging(config.logging.level)
    from vmond.central.duties import NodeNameTaken
    from vmond.daemon import serve  # the daemon's imports are heavy; other subcommands do without
    from vmond.store.db import DatabaseUnavailable

    logging.getLogger(__name__).info("vmond %s starting with %s", VERSION, config.source)
    try:
        asyncio.run(serve(config))
    except (DatabaseUnavailable, NodeNameTaken) as exc:  # one line, and systemd tries again
        raise SystemExit(f"vmond: {exc}") from None
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.file is not None:
        # FILE and --config may both be given (scripts add --config to every command) but must agree.
        if args.config and Path(args.config).resolve() != Path(args.file).resolve():
            print(f"vmond check-config: {args.file} and --config {args.config} are different files; give one",
                  file=sys.stderr)
            return EXIT_CONFIG
        args.config = args.file
    config = _load(args)
    print(f"{config.source}: {describe(config)}")
    for warning in _dashboard_warnings(config):
        print(f"{config.source}: {warning}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from vmond.ops.endpoints import info

    values = info(_load(args))
    if args.get:
        print(values[args.get])
        return 0
    width = max(map(len, values))
    for name, value in values.items():
        print(f"{name:<{width}}  {value or '-'}")
    return 0


def _dashboard_warnings(config: Config) -> list[str]:
    """What the file cannot show but the database can: under per-camera auth, cameras created in the dashboard
    without a password (their mail would be refused). The database is only read, and only if it exists."""
    if config.smtp.auth != "per-camera" or config.storage.postgresql:  # PostgreSQL: a central, no SMTP door
        return []
    import sqlite3

    from vmond.store.peek import cameras_without_password

    path = config.storage.data_dir / "vmond.db"
    try:
        if not path.exists():
            return []  # no dashboard cameras yet
        missing = cameras_without_password(path)
    except (sqlite3.Error, OSError) as exc:
        return [f"smtp.auth: warning: could not check the dashboard's cameras for SMTP passwords in {path}: {exc}"]
    if not missing:
        return []
    names = ", ".join(f"{name} ({local_part}@{config.smtp.domain})" for name, local_part in missing)
    return [f"smtp.auth: warning: per-camera, but {len(missing)} camera(s) created in the dashboard have no SMTP "
            f"password and their mail will be refused until one is set on the camera's page: {names}"]


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise SystemExit("the passwords differ")
    if problem := auth.check_password_policy(password):
        raise SystemExit(f"password too weak: it needs {problem}")
    return password


def _write(config: Config, fn: Callable[..., object], *args: object) -> None:
    """Run *fn* in one write transaction on the daemon's database (it may be running: on SQLite, WAL and a busy
    timeout let both write; on PostgreSQL, a conflict with a running node is tried again)."""
    from vmond.store.db import DatabaseUnavailable, open_configured, run_transaction

    storage = config.storage
    try:
        db = open_configured(storage.data_dir, storage.database, storage.read_database_password())
    except DatabaseUnavailable as exc:
        raise SystemExit(str(exc)) from None
    try:
        run_transaction(db, lambda: fn(*args))
    finally:
        db.close()


def _account_ids(text: str) -> list[int]:
    """``--accounts 1,2``: account ids, comma-separated (spaces allowed)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isascii() and part.isdigit() and 0 < int(part) < 2**63 for part in parts):
        raise argparse.ArgumentTypeError("account ids separated by commas, e.g. 1,2")
    return sorted({int(part) for part in parts})


def _add_user(config: Config, name: str, encoded: str, role: str, accounts: list[int]) -> None:
    """In one write transaction: the user, limited to *accounts*. On a fresh install the daemon has not yet brought
    the configuration's accounts into the database: that is done first here (as the daemon would at start), so
    that their ids exist."""
    from vmond.store.scope import account_names
    from vmond.store.sync import sync_accounts
    from vmond.store.users import create_user

    if accounts and not account_names():
        sync_accounts(config.accounts)
    create_user(name, encoded, role, accounts=accounts)


def _accounts_text(config: Config) -> str:
    from vmond.store.scope import account_names

    holder: list[dict[int, str]] = []
    _write(config, lambda: holder.append(account_names()))
    return ", ".join(f"{i} {name}" for i, name in holder[0].items()) or "none yet"


def cmd_user_add(args: argparse.Namespace) -> int:
    from vmond.store.scope import UnknownAccounts
    from vmond.store.users import UserExists
    from vmond.web.login import USERNAME_PATTERN

    config = _load(args)
    if not USERNAME_PATTERN.fullmatch(args.name):
        raise SystemExit("a user name is 1 to 64 letters, digits, dots, dashes, underscores or @")
    encoded = auth.hash_password(_read_password(args))
    try:
        _write(config, _add_user, config, args.name, encoded, args.role, args.accounts)
    except UserExists:
        raise SystemExit(f"user {args.name} exists already (use 'vmond user passwd')") from None
    except UnknownAccounts as exc:
        raise SystemExit(f"{exc} (the accounts are: {_accounts_text(config)})") from None
    limited = f", limited to account(s) {', '.join(map(str, args.accounts))}" if args.accounts else ""
    print(f"created {args.role} {args.name}{limited}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from vmond.store.users import UserNotFound, set_password

    config = _load(args)
    encoded = auth.hash_password(_read_password(args))
    try:
        _write(config, set_password, args.name, encoded)
    except UserNotFound:
        raise SystemExit(f"no user {args.name}") from None
    print(f"password of {args.name} changed; their sessions were ended")
    return 0


def cmd_tls_fingerprint(args: argparse.Namespace) -> int:
    from vmond.config.tls import certificate_path, fingerprint

    config = _load(args)
    path = certificate_path(config)
    if not path.is_file():
        raise SystemExit(f"no certificate at {path} (set web.tls.certificate, or web.tls.self_signed: true "
                         "and start vmond once)")
    print(f"SHA-256 {fingerprint(path)}  {path}")
    return 0


def _refuse_postgresql(config: Config, command: str) -> None:
    if config.storage.postgresql:
        raise SystemExit(f"vmond {command} works on the SQLite database of storage.data_dir; this vmond's database is "
                         "PostgreSQL (storage.database): back it up and restore it with PostgreSQL's own tools, "
                         "e.g. pg_dump -Fc -f vmond.dump DBNAME and pg_restore")


def cmd_backup(args: argparse.Namespace) -> int:
    from vmond.ops.backup import BackupError, backup

    config = _load(args)
    _refuse_postgresql(config, "backup")
    try:
        manifest = backup(config.storage.data_dir, Path(args.dest))
    except BackupError as exc:
        raise SystemExit(str(exc)) from None
    print(f"backed up {manifest['events']} events, {manifest['media_files']} media files and "
          f"{manifest['spooled_mails']} spooled mails to {args.dest} in {manifest['seconds']} s")
    refused = manifest["media_refused"] + manifest["spool_refused"]
    if not refused:
        return 0
    for line in manifest["refused"]:
        print(f"refused {line}", file=sys.stderr)
    print(f"refused {refused} file(s): outside the data directory, or not regular files "
          f"(listed in {args.dest}/vmond-backup.json); the database may have been tampered with", file=sys.stderr)
    return 1


def cmd_restore(args: argparse.Namespace) -> int:
    from vmond.ops.backup import BackupError, restore

    config = _load(args)
    _refuse_postgresql(config, "restore")
    try:
        manifest = restore(Path(args.source), config.storage.data_dir, force=args.force)
    except BackupError as exc:
        raise SystemExit(str(exc)) from None
    print(f"restored the backup of {manifest['taken_at']} ({manifest['events']} events) into "
          f"{config.storage.data_dir}; start vmond to continue")
    return 0


def cmd_send_test(args: argparse.Namespace) -> int:
    from vmond.ops.testmail import SendTestError, send_test_mail

    config = _load(args)
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else args.password
    try:
        print(send_test_mail(config, to=args.to, server=args.server, password=password, alarm=args.alarm))
    except SendTestError as exc:
        print(f"vmond send-test: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_notify_test(args: argparse.Namespace) -> int:
    from vmond.notify.testsend import UnknownTarget, notify_test

    config = _load(args)
    try:
        results = notify_test(config, args.target)
    except UnknownTarget as exc:
        print(f"vmond notify-test: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for result in results:
        if result.error is None:
            print(f"{result.target}: sent")
        else:
            print(f"{result.target}: failed: {result.error}", file=sys.stderr)
    return 1 if any(r.error is not None for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    config_help = f"configuration file (default: $VMOND_CONFIG, then {DEFAULT_CONFIG})"
    parser = argparse.ArgumentParser(prog="vmond", description="Video alarm appliance daemon.")
    parser.add_argument("-c", "--config", metavar="FILE", help=config_help)
    # Every subcommand takes --config too; SUPPRESS keeps a subcommand from erasing one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS, help=config_help)
    parser.add_argument("--version", action="version", version=f"vmond {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("run", parents=[common], help="run the daemon in the foreground").set_defaults(func=cmd_run)
    check = commands.add_parser("check-config", parents=[common], help="validate the configuration file")
    check.add_argument("file", metavar="FILE", nargs="?", help="the file to check (the same as --config FILE)")
    check.set_defaults(func=cmd_check_config)

    info = commands.add_parser("info", parents=[common],
                               help="where the configuration puts the dashboard, SMTP and the first camera")
    info.add_argument("--get", choices=INFO_NAMES, metavar="NAME",
                      help=f"print only this value, for scripts ({', '.join(INFO_NAMES)})")
    info.set_defaults(func=cmd_info)

    user = commands.add_parser("user", parents=[common], help="manage dashboard users")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_commands.add_parser("add", parents=[common], help="create a user")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=auth.ROLES)
    add.add_argument("--accounts", type=_account_ids, default=[], metavar="ID,ID",
                     help="limit the user to these accounts (ids, comma-separated); default: every account")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.set_defaults(func=cmd_user_add)
    passwd = user_commands.add_parser("passwd", parents=[common], help="change a password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    passwd.set_defaults(func=cmd_user_passwd)

    tls = commands.add_parser("tls", parents=[common], help="the dashboard's TLS certificate")
    tls_commands = tls.add_subparsers(dest="tls_command", required=True, metavar="ACTION")
    tls_commands.add_parser("fingerprint", parents=[common], help="print the certificate's SHA-256 fingerprint"
                            ).set_defaults(func=cmd_tls_fingerprint)

    backup = commands.add_parser("backup", parents=[common],
                                 help="copy the database, media and spool to DEST (while vmond runs)")
    backup.add_argument("dest", metavar="DEST", help="a new or empty directory")
    backup.set_defaults(func=cmd_backup)
    restore = commands.add_parser("restore", parents=[common],
                                  help="put a backup into the data directory (vmond must be stopped)")
    restore.add_argument("source", metavar="SRC", help="a directory made by 'vmond backup'")
    restore.add_argument("--force", action="store_true", help="replace an existing database")
    restore.set_defaults(func=cmd_restore)

    send = commands.add_parser("send-test", parents=[common],
                               help="send a camera's test mail (or --alarm: an alarm) with a picture to a running "
                                    "vmond, logged in as the camera")
    send.add_argument("--to", metavar="ADDRESS",
                      help="the camera's address, or just its local part (default: the first camera in the "
                           "configuration)")
    send.add_argument("--server", metavar="HOST:PORT", help="where vmond listens (default: smtp.listen)")
    secret = send.add_mutually_exclusive_group()
    secret.add_argument("--password", help="the camera's SMTP password (default: its smtp_password in the "
                                           "configuration)")
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the camera's SMTP password from the first line of stdin")
    send.add_argument("--alarm", action="store_true",
                      help="send an ordinary alarm, which the wall shows, instead of the camera's test mail")
    send.set_defaults(func=cmd_send_test)

    notify = commands.add_parser("notify-test", parents=[common],
                                 help="send a test notification to one or every notify.targets entry")
    notify.add_argument("target", metavar="TARGET", nargs="?", help="a target's name (default: every target)")
    notify.set_defaults(func=cmd_notify_test)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
