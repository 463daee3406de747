"""``storage.database``: where the data lives. Unset, SQLite (``vmond.db`` in ``storage.data_dir``); on a central
station also PostgreSQL, as ``postgresql://user@host:port/dbname?sslmode=...`` with the password in
``storage.database_password_file``.

A password inside the URL is refused: the URL shows in ``ps``, in logs and in backups of the configuration.
Only the connection parameters a central needs are accepted in the query, so that a typo is an error here rather
than a setting libpq silently ignores or a surprise at the first connection.
"""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from vmond.config.values import Ctx, Invalid, text

SCHEMES = ("postgresql", "postgres")
# libpq's connection parameters that a URL's query may set (the rest of the URL sets host, port, user, dbname).
QUERY_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "connect_timeout",
                    "application_name", "target_session_attrs", "host")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
EXAMPLE = "postgresql://vmond@db.example.com:5432/vmond"


def database_url(node: yaml.Node, ctx: Ctx, path: str) -> str | None:
    """A PostgreSQL URL, checked (see the module's docstring); None: SQLite in ``storage.data_dir``."""
    value = text(node, nullable=True)
    if value is None:
        return None
    value = value.strip()
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise Invalid("must be a URL without spaces or control characters")
    connect_params(value)  # raises Invalid
    return value


def connect_params(url: str) -> dict[str, Any]:
    """psycopg2's keyword arguments for *url* (``dbname``, ``host``, ``port``, ``user``, the query's parameters);
    :class:`Invalid` with a message that never repeats a password."""
    try:
        parts = urlsplit(url)
        port, host, user, password = parts.port, parts.hostname, parts.username, parts.password
    except ValueError as exc:  # a port that is not a number, an unclosed "["
        raise Invalid(f"is not a URL: {str(exc).split(':')[0]} (e.g. {EXAMPLE})") from None
    if parts.scheme.lower() not in SCHEMES:
        raise Invalid(f"must be a postgresql:// URL, e.g. {EXAMPLE} (leave it unset for SQLite in "
                      "storage.data_dir)")
    if password is not None:
        raise Invalid("must not hold a password (it would show in ps, logs and backups): put it in "
                      "storage.database_password_file")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname or "/" in dbname:
        raise Invalid(f"must name the database after the host, e.g. {EXAMPLE}")
    if parts.fragment:
        raise Invalid("must not have a fragment (#...)")
    params: dict[str, Any] = {"dbname": dbname}
    if host:
        params["host"] = host
    if port is not None:
        if port == 0:
            raise Invalid("port 0 is not a port PostgreSQL listens on")
        params["port"] = port
    if user:
        params["user"] = unquote(user)
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise Invalid("has a query that is not name=value pairs joined by &") from None
    for name, value in query:
        if name not in QUERY_PARAMETERS:
            close = difflib.get_close_matches(name, QUERY_PARAMETERS, n=1, cutoff=0.6)
            raise Invalid(f"unknown connection parameter {name!r}{f'; did you mean `{close[0]}`?' if close else ''}"
                          f" (allowed: {', '.join(QUERY_PARAMETERS)})")
        if name in params:
            raise Invalid(f"gives {name} twice")
        if name == "sslmode" and value not in SSLMODES:
            raise Invalid(f"sslmode {value!r} is not one of: {', '.join(SSLMODES)}")
        if name == "connect_timeout" and not (value.isascii() and value.isdigit()):
            raise Invalid("connect_timeout must be a whole number of seconds")
        params[name] = value
    return params


def is_postgresql(url: str | None) -> bool:
    return url is not None and urlsplit(url).scheme.lower() in SCHEMES
