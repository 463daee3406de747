"""Value parsers of the vmond configuration: one YAML node in, one value out (a size, a ``host:port``, a list of
networks, a secret ...), or :class:`Invalid` with a message for the node's line.

They work on composed YAML *nodes* rather than loaded Python objects so that every problem can name the line it
came from, and so that YAML 1.1 surprises (``auth: off`` becoming ``False``, ``phone: +15550100`` becoming an
integer) can be avoided by reading the text exactly as written. Which keys use which parser is in
:mod:`vmond.config.schema`.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import urlsplit

import yaml

from vmond.config.types import (
    HostPort,
    Problem,
    Secret,
    format_duration,
    format_size,
    is_host,
    parse_duration,
    parse_hostport,
    parse_size,
)
from vmond.util.kinds import DEFAULT_PRIORITIES, HIGHEST, KINDS, LOWEST

_T = "tag:yaml.org,2002:"
NULL, BOOL, INT, FLOAT, STR = (_T + n for n in ("null", "bool", "int", "float", "str"))


# --- parsing context and node helpers -------------------------------------


class Invalid(ValueError):
    """A value is wrong; the walker turns this into a Problem at the value's line."""


class Ctx:
    """State of one parse: where relative paths resolve and what went wrong."""

    def __init__(self, file: str, base_dir: Path, check_files: bool) -> None:
        self.file = file
        self.base_dir = base_dir
        self.check_files = check_files
        self.problems: list[Problem] = []
        self.lines: dict[str, int] = {}  # dotted path -> line, for cross-key checks
        self.failed: set[str] = set()  # paths whose value was reported as wrong
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, where: yaml.Node | int, path: str, message: str) -> None:
        line = where if isinstance(where, int) else where.start_mark.line + 1
        self.problems.append(Problem(self.file, line, path, message))

    def construct(self, node: yaml.ScalarNode) -> Any:
        try:
            return self._constructor.construct_object(node)
        except (ValueError, yaml.YAMLError):  # e.g. "!!int abc"
            raise Invalid(f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}") from None


def is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == NULL)


def kind(node: yaml.Node) -> str:
    """Describe what was found, for "expected X, found Y" messages."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    names = {NULL: "nothing (null)", BOOL: "a boolean", INT: "a whole number",
             FLOAT: "a number", STR: f"a string ({node.value!r})"}
    return names.get(node.tag, "a value")


@overload
def text(node: yaml.Node, nullable: Literal[False] = False) -> str: ...
@overload
def text(node: yaml.Node, nullable: bool) -> str | None: ...
def text(node: yaml.Node, nullable: bool = False) -> str | None:
    """The scalar exactly as written, so ``+15550100`` or ``off`` stay strings."""
    if isinstance(node, yaml.ScalarNode) and node.tag != NULL:
        return node.value
    if nullable and is_null(node):
        return None
    raise Invalid(f"expected a string, found {kind(node)}")


Parser = Callable[[yaml.Node, Ctx, str], Any]


def string(*, nullable: bool = False, lower: bool = False, empty: bool = False,
           pattern: re.Pattern[str] | None = None, hint: str = "",
           check: Callable[[str], bool] | None = None) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> str | None:
        value = text(node, nullable)
        if value is None:
            return None
        value = value.lower() if lower else value
        if not value.strip() and not empty:
            raise Invalid("must not be empty" + (" (use null to leave it unset)" if nullable else ""))
        if (pattern and not pattern.fullmatch(value)) or (check and not check(value)):
            raise Invalid(f"{value!r} {hint}")
        return value
    return parse


def checked(convert: Callable[[str], str]) -> Parser:
    """A nullable string normalised by *convert*, whose ValueError message is the problem."""
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> str | None:
        value = text(node, nullable=True)
        if value is None:
            return None
        try:
            return convert(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    return parse


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unclosed "[" in the host part
        return ""


def secret(*, schemes: tuple[str, ...] = ()) -> Parser:
    # Messages here never echo the value: it may be a password.
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> Secret | None:
        if is_null(node):
            return None
        value = text(node)
        if not value:
            raise Invalid("must not be empty (use null to leave it unset)")
        if schemes and _scheme(value) not in schemes:
            raise Invalid(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return Secret(value)
    return parse


def public_url(node: yaml.Node, ctx: Ctx, path: str) -> str | None:
    """The dashboard's address as others reach it (``https://monitor.example.com:8443``), normalised without a
    trailing slash so that media paths can be appended; it goes into MQTT messages, so no credentials."""
    value = text(node, nullable=True)
    if value is None:
        return None
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise Invalid("must be a URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        port, host = parts.port, parts.hostname
    except ValueError as exc:  # a port that is not a number, an unclosed "["
        raise Invalid(f"is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Invalid("must start with http:// or https://, e.g. https://monitor.example.com:8443")
    if not host:
        raise Invalid("must name the host, e.g. https://monitor.example.com:8443")
    if not is_host(host):
        raise Invalid(f"{host!r} is not a host name or address")
    if parts.username is not None or parts.password is not None:
        raise Invalid("must not hold a user name or password (it is sent in every MQTT message)")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise Invalid("must not have a query (?...) or fragment (#...)")
    if port == 0:
        raise Invalid("port 0 is not a port others can reach")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def boolean(node: yaml.Node, ctx: Ctx, path: str) -> bool:
    if isinstance(node, yaml.ScalarNode):
        word = node.value.lower()
        if node.tag == BOOL and word in ("true", "false"):
            return word == "true"
        if node.tag == BOOL:  # YAML 1.1 yes/no/on/off: ambiguous to readers
            raise Invalid(f"write true or false instead of {node.value!r}")
        if node.tag == STR and word in ("true", "false"):
            raise Invalid("write true or false without quotes")
    raise Invalid(f"expected true or false, found {kind(node)}")


def integer(minimum: int, maximum: int | None = None) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> int:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == INT):
            raise Invalid(f"expected a whole number, found {kind(node)}")
        value = ctx.construct(node)
        if value < minimum or (maximum is not None and value > maximum):
            limit = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise Invalid(f"must be {limit}, not {value}")
        return value
    return parse


def positive_number(node: yaml.Node, ctx: Ctx, path: str) -> float:
    if not (isinstance(node, yaml.ScalarNode) and node.tag in (INT, FLOAT)):
        raise Invalid(f"expected a number, found {kind(node)}")
    value = float(ctx.construct(node))
    if not math.isfinite(value) or value <= 0:
        raise Invalid(f"must be a number greater than 0, not {node.value}")
    return value


def choice(*values: str) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> str:
        value = text(node).lower()
        if value not in values:
            raise Invalid(f"{value!r} is not one of: {', '.join(values)}")
        return value
    return parse


def size(minimum: int) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> int:
        try:
            value = parse_size(text(node))
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if value < minimum:
            raise Invalid(f"must be at least {format_size(minimum)}")
        return value
    return parse


def duration(*, positive: bool = True, maximum: float | None = None) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> float:
        try:
            value = parse_duration(text(node))
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if positive and value <= 0:
            raise Invalid("must be longer than 0s")
        if maximum is not None and value > maximum:
            raise Invalid(f"must be at most {format_duration(maximum)}")
        return value
    return parse


def hostport(*, nullable: bool = False) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> HostPort | None:
        value = text(node, nullable)
        try:
            return None if value is None else parse_hostport(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    return parse


def path(*, nullable: bool = True, file: bool = True) -> Parser:
    """A path; relative paths resolve against the config file's directory."""
    def parse(node: yaml.Node, ctx: Ctx, key: str) -> Path | None:
        value = text(node, nullable)
        if value is None:
            return None
        if not value.strip() or "\0" in value:
            raise Invalid("must be a file name" + (" (use null to leave it unset)" if nullable else ""))
        resolved = Path(os.path.normpath(ctx.base_dir / value))
        if ctx.check_files and file:
            if resolved.is_dir():
                raise Invalid(f"a directory, not a file: {resolved}")
            if not resolved.is_file():
                raise Invalid(f"file not found: {resolved}")
            if not os.access(resolved, os.R_OK):
                raise Invalid(f"file not readable: {resolved}")
        if ctx.check_files and not file and resolved.exists() and not resolved.is_dir():
            raise Invalid(f"not a directory: {resolved}")
        return resolved
    return parse


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(node: yaml.Node, ctx: Ctx, key: str) -> tuple[Network, ...]:
    """CIDR networks; host bits are cleared (10.0.0.1/8 means 10.0.0.0/8)."""
    if isinstance(node, yaml.SequenceNode) and not node.value:
        raise Invalid("list at least one network; no camera could connect")
    return optional_networks(node, ctx, key)


def optional_networks(node: yaml.Node, ctx: Ctx, key: str) -> tuple[Network, ...]:
    """Like :func:`networks`, but none (``[]`` or null) is a valid answer."""
    if is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(f"expected a list of networks, e.g. [10.0.0.0/8], found {kind(node)}")
    result = []
    for index, item in enumerate(node.value):
        try:
            result.append(ipaddress.ip_network(text(item), strict=False))
        except ValueError as exc:
            ctx.problem(item, f"{key}[{index}]", f"not a network: {exc}")
    return tuple(result)


def host_names(node: yaml.Node, ctx: Ctx, key: str) -> tuple[str, ...]:
    """Host names (``*.example.com`` for all names under one), lower-cased, without a trailing dot."""
    if is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(f"expected a list of host names, e.g. [monitor.example.com], found {kind(node)}")
    result = []
    for index, item in enumerate(node.value):
        try:
            name = (text(item) or "").strip().lower().rstrip(".")
        except Invalid as exc:
            ctx.problem(item, f"{key}[{index}]", str(exc))
            continue
        bare = name[2:] if name.startswith("*.") else name
        if not bare or ":" in bare or not is_host(bare):
            ctx.problem(item, f"{key}[{index}]", f"{name!r} is not a host name (no port, no scheme; "
                        "*.example.com allows every name under example.com)")
            continue
        result.append(name)
    return tuple(result)


def names_from(names: tuple[str, ...], noun: str, label: str, expected: str) -> Parser:
    """A list drawn from *names* (case folded, each once): ``notify.on``'s rules, an action step's event kinds. A
    name not among them is a problem of its own (``'persn' is not an event kind; did you mean `person`?``)."""
    def parse(node: yaml.Node, ctx: Ctx, key: str) -> tuple[str, ...]:
        if is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise Invalid(expected)
        result: list[str] = []
        for index, item in enumerate(node.value):
            try:
                name = (text(item) or "").strip().lower()
            except Invalid as exc:
                ctx.problem(item, f"{key}[{index}]", str(exc))
                continue
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
                ctx.problem(item, f"{key}[{index}]", f"{name!r} is not {noun}"
                            f"{f'; did you mean `{close[0]}`?' if close else ''} ({label}: {', '.join(names)})")
            elif name not in result:
                result.append(name)
        return tuple(result)
    return parse


def priorities(*, with_defaults: bool) -> Parser:
    """A mapping of event kind to priority, 1 (most urgent) to 5, e.g. ``{person: 1, motion: 4}``.

    With *with_defaults* (``events.priorities``) the kinds it leaves out keep their default priority; without
    (``accounts[].priorities``) it holds only what it names, and the rest follow ``events.priorities``."""
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> dict[str, int]:
        result = dict(DEFAULT_PRIORITIES) if with_defaults else {}
        if is_null(node):
            return result
        if not isinstance(node, yaml.MappingNode):
            raise Invalid(f"expected a mapping of event kind to priority, e.g. {{person: 1, motion: 4}}, "
                          f"found {kind(node)}")
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else ""
            where = f"{path}.{name}"
            if name not in KINDS:
                close = difflib.get_close_matches(str(name), KINDS, n=1, cutoff=0.6)
                ctx.problem(key_node, where, f"unknown event kind{f'; did you mean `{close[0]}`?' if close else ''}"
                            f" (kinds: {', '.join(KINDS)})")
                continue
            try:
                result[name] = integer(HIGHEST, LOWEST)(value_node, ctx, where)
            except Invalid as exc:
                ctx.problem(value_node, where, f"{exc} (1 is the most urgent)")
        return result
    return parse
