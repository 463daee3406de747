"""Walking a composed configuration document and checking keys against each other.

:func:`check_document` turns the YAML node tree into nested dicts of parsed
values (defaults filled in), recording every problem in the :class:`Ctx`
instead of stopping at the first. Checks that involve more than one key
(certificate without key, duplicate camera addresses ...) run afterwards on
those dicts, using the line numbers remembered during the walk, and so do the
defaults that follow other keys (``mqtt.client_id``, a contact's ``priority`` ...).
"""

from __future__ import annotations

import socket
from itertools import combinations
from typing import Any

import yaml

from vmond.config.database import is_postgresql
from vmond.config.links import NODE_NAME
from vmond.config.schedule import system_timezone
from vmond.config.schema import SECTIONS, suggest
from vmond.config.spec import REQUIRED, ListOf, Section, Table
from vmond.config.types import format_duration
from vmond.config.values import Ctx, Invalid, is_null, kind
from vmond.util.addresses import camera_local_part

_ALLOWED_TAGS = {f"tag:yaml.org,2002:{name}" for name in
                 ("null", "bool", "int", "float", "str", "timestamp", "seq", "map", "merge")}



def check_document(root: yaml.Node | None, ctx: Ctx) -> dict[str, Any]:
    """Parse the whole document; problems go to ``ctx.problems``."""
    if root is not None:
        _check_tags(root, ctx)
    values = _walk(root, SECTIONS, "", ctx)
    _check_combinations(values, ctx)
    _check_storage(values, ctx)
    _check_database(values, ctx)
    _check_accounts(values, ctx)
    _check_notify(values, ctx)
    _follow_other_keys(values)
    return values


def _check_tags(root: yaml.Node, ctx: Ctx) -> None:
    # Explicit tags (!!python/..., !custom) would be read as plain text; refuse them.
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases share nodes
            continue
        seen.add(id(node))
        if node.tag not in _ALLOWED_TAGS:
            ctx.problem(node, "(yaml)", f"unsupported tag {node.tag!r}")
        if isinstance(node, yaml.MappingNode):
            stack += [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def _walk(node: yaml.Node | None, table: Table, path: str, ctx: Ctx) -> dict[str, Any]:
    """Parse one mapping against ``table``; absent keys get defaults (None if required)."""
    values: dict[str, Any] = {}
    present: set[str] = set()
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                ctx.problem(line, path or "(top level)", "keys must be plain names")
                continue
            key = key_node.value
            sub = f"{path}.{key}" if path else key
            if key in seen:  # PyYAML would silently keep the last one
                ctx.problem(line, sub, f"duplicate key (first on line {seen[key]})")
                continue
            seen[key] = line
            present.add(key)
            spec = table.get(key)
            if spec is None:
                merge = key_node.tag.endswith(":merge")
                ctx.problem(line, sub, "merge keys (<<) are not supported; write the keys out"
                            if merge else suggest(key, table, path))
                continue
            ctx.lines[sub] = line
            if isinstance(spec, Section):
                values[key] = _walk(value_node, spec.table, sub, ctx)
            elif isinstance(spec, ListOf):
                if f"auto_{key}" in table and isinstance(value_node, yaml.ScalarNode) and value_node.value == "auto":
                    values[f"auto_{key}"] = True  # `sites: auto` is the flag auto_sites
                    present.add(f"auto_{key}")
                    values[key] = ()
                    continue
                values[key] = _walk_list(value_node, spec.table, sub, ctx)
            else:
                try:
                    values[key] = spec.parse(value_node, ctx, sub)
                except Invalid as exc:
                    ctx.failed.add(sub)
                    ctx.problem(value_node, sub, str(exc))
    elif node is not None and not is_null(node):
        if path:
            ctx.problem(node, path, f"expected a mapping, found {kind(node)}")
        else:
            ctx.problem(node, "(top level)", f"expected a mapping of sections (site:, smtp:, ...), "
                        f"found {kind(node)}")
    for key, spec in table.items():
        if key in values:
            continue
        if isinstance(spec, Section):
            values[key] = _walk(None, spec.table, f"{path}.{key}" if path else key, ctx)
        elif isinstance(spec, ListOf):
            values[key] = ()
        elif spec.default is REQUIRED:
            values[key] = None
            if key not in present and isinstance(node, yaml.MappingNode):
                ctx.problem(node, path, f"missing required key `{key}`")
        else:
            values[key] = spec.default
    return values


def _walk_list(node: yaml.Node, table: Table, path: str, ctx: Ctx) -> tuple[Any, ...]:
    """Parse a list of mappings; broken items become None to keep indices aligned."""
    if is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        ctx.problem(node, path, f"expected a list, found {kind(node)}")
        return ()
    items: list[dict[str, Any] | None] = []
    for index, item in enumerate(node.value):
        sub = f"{path}[{index}]"
        ctx.lines[sub] = item.start_mark.line + 1
        if isinstance(item, yaml.MappingNode):
            items.append(_walk(item, table, sub, ctx))
        else:
            ctx.problem(item, sub, f"expected a mapping, found {kind(item)}")
            items.append(None)
    return tuple(items)


# --- checks across keys ---------------------------------------------------

_ALL_ADDRESSES = {"", "0.0.0.0", "::"}


def _report(ctx: Ctx, path: str, message: str) -> None:
    ctx.problem(ctx.lines.get(path, 0), path, message)


def _given(values: dict[str, Any], path: str, ctx: Ctx) -> bool:
    # A key that failed to parse counts as given, to avoid a second, misleading problem.
    return values[path.rsplit(".", 1)[-1]] is not None or path in ctx.failed


def _together(values: dict[str, Any], prefix: str, ctx: Ctx, a: str = "certificate",
              b: str = "key") -> None:
    has_a, has_b = _given(values, f"{prefix}.{a}", ctx), _given(values, f"{prefix}.{b}", ctx)
    if has_a != has_b:
        given, missing = (a, b) if has_a else (b, a)
        _report(ctx, f"{prefix}.{given}", f"`{prefix}.{missing}` must be set as well")


def _check_connection_limits(smtp: dict[str, Any], ctx: Ctx) -> None:
    per_peer, total = smtp["max_connections_per_peer"], smtp["max_connections"]
    if {"smtp.max_connections", "smtp.max_connections_per_peer"} & ctx.failed or per_peer <= total:
        return
    if "smtp.max_connections_per_peer" in ctx.lines:
        _report(ctx, "smtp.max_connections_per_peer", f"must not exceed smtp.max_connections ({total})")
    else:
        smtp["max_connections_per_peer"] = total  # the default, with a smaller max_connections, follows it


def _check_combinations(values: dict[str, Any], ctx: Ctx) -> None:
    smtp_tls, web_tls, mqtt = values["smtp"]["tls"], values["web"]["tls"], values["mqtt"]
    _check_connection_limits(values["smtp"], ctx)
    _together(smtp_tls, "smtp.tls", ctx)
    _together(web_tls, "web.tls", ctx)
    _together(mqtt["tls"], "mqtt.tls", ctx)
    if smtp_tls["implicit_tls_listen"] and not _given(smtp_tls, "smtp.tls.certificate", ctx):
        _report(ctx, "smtp.tls.implicit_tls_listen", "needs `smtp.tls.certificate` and `smtp.tls.key`")
    if web_tls["self_signed"] and _given(web_tls, "web.tls.certificate", ctx):
        _report(ctx, "web.tls.self_signed", "use either a certificate or self_signed, not both")
    has_password = _given(mqtt, "mqtt.password", ctx)
    has_file = _given(mqtt, "mqtt.password_file", ctx)
    if has_password and has_file:
        _report(ctx, "mqtt.password_file", "set either `mqtt.password` or `mqtt.password_file`, not both")
    if (has_password or has_file) and not _given(mqtt, "mqtt.username", ctx):
        path = "mqtt.password" if has_password else "mqtt.password_file"
        _report(ctx, path, "a password needs `mqtt.username` as well (MQTT has no password-only login)")
    _check_commands(mqtt, ctx)
    _check_central(values["central"], ctx)
    web = values["web"]
    if web["max_connections_per_peer"] and web["max_connections"] \
            and web["max_connections_per_peer"] > web["max_connections"]:
        _report(ctx, "web.max_connections_per_peer", f"is more than web.max_connections ({web['max_connections']})")
    listens = [("smtp.listen", values["smtp"]["listen"]),
               ("smtp.tls.implicit_tls_listen", smtp_tls["implicit_tls_listen"]),
               ("web.listen", values["web"]["listen"])]
    for (path_a, a), (path_b, b) in combinations(listens, 2):
        # Port 0 picks a free port, so it never clashes.
        if a and b and a.port and a.port == b.port and (
                a.host == b.host or a.host in _ALL_ADDRESSES or b.host in _ALL_ADDRESSES):
            path, other = (path_b, path_a) if path_b in ctx.lines else (path_a, path_b)
            _report(ctx, path, f"port {a.port} is also used by `{other}`")


def _check_storage(values: dict[str, Any], ctx: Ctx) -> None:
    storage = values["storage"]
    given = "storage.audit_retention" in ctx.lines and "storage.audit_retention" not in ctx.failed
    if given and None not in (storage["audit_retention"], storage["retention"]) and (
            storage["audit_retention"] < storage["retention"]):
        _report(ctx, "storage.audit_retention", f"must not be shorter than `storage.retention` "
                f"({format_duration(storage['retention'])}): the audit of the events kept must stay with them")


def _check_database(values: dict[str, Any], ctx: Ctx) -> None:
    """PostgreSQL is for a central station; its password file goes with a PostgreSQL URL."""
    storage = values["storage"]
    if is_postgresql(storage["database"]) and not values["central"]["enabled"]:
        _report(ctx, "storage.database", "PostgreSQL is for a central station (a `central:` section); an "
                "appliance keeps SQLite in storage.data_dir: its promise to a camera rests on a local fsync")
    if _given(storage, "storage.database_password_file", ctx) and not is_postgresql(storage["database"]) \
            and "storage.database" not in ctx.failed:
        _report(ctx, "storage.database_password_file", "is the password of a PostgreSQL database: set "
                "`storage.database` to its postgresql:// URL as well")


def _check_accounts(values: dict[str, Any], ctx: Ctx) -> None:
    domain = values["smtp"]["domain"]
    per_camera = values["smtp"]["auth"] == "per-camera"
    names: dict[str, str] = {}
    addresses: dict[str, str] = {}
    for i, account in enumerate(values["accounts"]):
        if account is None:
            continue
        path = f"accounts[{i}]"
        if account["name"] is not None:
            first = names.setdefault(account["name"].strip().casefold(), path)
            if first != path:
                _report(ctx, f"{path}.name", f"duplicate account name {account['name']!r} "
                        f"(also `{first}` on line {ctx.lines[first + '.name']})")
        for position, contact in enumerate(account["contacts"], start=1):
            if contact is None:
                continue
            if contact["priority"] is None:
                contact["priority"] = position
            contact_path = f"{path}.contacts[{position - 1}]"
            if contact["phone"] is None and contact["email"] is None and not {
                    f"{contact_path}.phone", f"{contact_path}.email"} & ctx.failed:
                ctx.problem(ctx.lines[contact_path], f"{contact_path}.phone",
                            "missing: a contact needs a phone number or an e-mail address (phone: or email:)")
        for j, camera in enumerate(account["cameras"]):
            if camera is None:
                continue
            cam_path = f"{path}.cameras[{j}]"
            if per_camera and camera["smtp_password"] is None \
                    and f"{cam_path}.smtp_password" not in ctx.failed:
                _report(ctx, cam_path, "smtp.auth is per-camera, so this camera needs an smtp_password")
            if camera["smtp_address"] is None:
                continue
            key = f"{cam_path}.smtp_address"
            try:
                camera["smtp_address"] = camera_local_part(
                    camera["smtp_address"], None if "smtp.domain" in ctx.failed else domain)
            except ValueError as exc:
                _report(ctx, key, str(exc))
                continue
            first = addresses.setdefault(camera["smtp_address"], key)
            if first != key:
                _report(ctx, key, f"duplicate camera address {camera['smtp_address']!r} "
                        f"(also `{first}` on line {ctx.lines[first]})")


# --- notify (issue 17) ------------------------------------------------------------------------------------------

def _check_notify(values: dict[str, Any], ctx: Ctx) -> None:
    names: dict[str, str] = {}
    for i, target in enumerate(values["notify"]["targets"]):
        if target is None or target["name"] is None:
            continue
        path = f"notify.targets[{i}].name"
        first = names.setdefault(target["name"].strip().casefold(), path)
        if first != path:
            _report(ctx, path, f"duplicate target name {target['name']!r} (also `{first}` on line {ctx.lines[first]})")


def _follow_other_keys(values: dict[str, Any]) -> None:
    """Defaults that depend on other keys (the ones that also need a check are set by their check)."""
    mqtt, storage = values["mqtt"], values["storage"]
    mqtt["client_id"] = mqtt["client_id"] or f"vmond-{values['site']['id']}"
    central_mqtt = values["central"]["mqtt"]
    central_mqtt["client_id"] = central_mqtt["client_id"] or f"vmond-{values['site']['id']}"
    values["central"]["node"] = values["central"]["node"] or default_node_name()
    values["site"]["timezone"] = values["site"]["timezone"] or system_timezone()  # schedules (issue 17)
    # A shorter audit_retention in the file is reported by _check_storage; the default follows a longer retention.
    storage["audit_retention"] = max(storage["audit_retention"], storage["retention"])


def default_node_name() -> str:
    """``central.node``'s default: the host's short name, made a safe token (issue 19)."""
    name = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "-"
                   for c in socket.gethostname().split(".")[0])[:63].strip("-_") or "node"
    return name if NODE_NAME.fullmatch(name) else "node"


def _check_central(central: dict[str, Any], ctx: Ctx) -> None:
    """A ``central:`` section in the file makes this vmond a central station; its sites are named once each."""
    if "central" in ctx.lines and "central.enabled" not in ctx.lines:
        central["enabled"] = True
    link = central["mqtt"]
    if central["enabled"] and link["enabled"] is False and "central.mqtt.enabled" not in ctx.failed:
        _report(ctx, "central.mqtt.enabled", "a central station reaches its sites only over MQTT: its link cannot "
                "be switched off (leave the key out, or disable the central with `central.enabled: false`)")
    _together(link["tls"], "central.mqtt.tls", ctx)
    if _given(link, "central.mqtt.password", ctx) and _given(link, "central.mqtt.password_file", ctx):
        _report(ctx, "central.mqtt.password_file",
                "set either `central.mqtt.password` or `central.mqtt.password_file`, not both")
    for where, item in [("central", central)] + [(f"central.sites[{n}]", site)
                                                 for n, site in enumerate(central["sites"]) if site]:
        if _given(item, f"{where}.command_secret", ctx) and _given(item, f"{where}.command_secret_file", ctx):
            _report(ctx, f"{where}.command_secret_file",
                    f"set either `{where}.command_secret` or `{where}.command_secret_file`, not both")
    seen: dict[str, int] = {}
    for index, site in enumerate(central["sites"]):
        if site and site["id"]:
            if site["id"] in seen:
                _report(ctx, f"central.sites[{index}].id", f"site `{site['id']}` is listed twice")
            seen.setdefault(site["id"], index)


def _check_commands(mqtt: dict[str, Any], ctx: Ctx) -> None:
    """Commands from a central station need exactly one of the secret and its file."""
    has_secret = _given(mqtt, "mqtt.command_secret", ctx)
    has_file = _given(mqtt, "mqtt.command_secret_file", ctx)
    if has_secret and has_file:
        _report(ctx, "mqtt.command_secret_file",
                "set either `mqtt.command_secret` or `mqtt.command_secret_file`, not both")
    if mqtt["commands"] and not (has_secret or has_file) and "mqtt.commands" not in ctx.failed:
        _report(ctx, "mqtt.commands", "commands need `mqtt.command_secret` or `mqtt.command_secret_file`")
