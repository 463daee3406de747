"""On a central station, the dashboard's actions on a site's event or alarm become signed commands to the site.

The handlers of the actions (dismiss, restore, raise, take over, note, step, resolve: the API and the pages' forms)
ask this module first: for a mirrored row (it has a ``site``) the action is checked as locally and sent as a
command (:mod:`vmond.store.centralactions`), answered ``202 {"command": {...}, "event" | "alarm": ...}`` with the
object as the mirror has it now; for anything else the hook answers None and the handler goes on as on an
appliance. The site's answer makes the command ``done`` or ``refused`` (``command.updated`` on the bus).

The command secrets (``central.sites[].command_secret(_file)``, else ``central.command_secret(_file)``) are read
off the loop when first needed, and kept until the configuration is reloaded. A site without one: 409, nothing sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from vmond.store.alarms import AlarmNotFound, acknowledge, add_note, alarm_of_event, resolve, tick_step
from vmond.store.centralactions import (
    STATES,
    Sender,
    command_on_alarm,
    command_on_event,
    commands_about,
    dismiss_on_sites,
    list_commands,
    site_of,
    sites_of_events,
)
from vmond.store.dismissals import RestoreRefused
from vmond.store.events import EventNotFound, StatusConflict
from vmond.util import auth
from vmond.web.keys import CHANGES, COMMAND_SECRETS, DB, config_of
from vmond.web.params import path_id, query_int
from vmond.web.scope import scope_of
from vmond.web.security import json_error, principal, require

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from vmond.config import Config

log = logging.getLogger(__name__)
routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them

NO_SECRET = ("no command secret for site {site} (or its file cannot be read): set central.sites[].command_secret "
             "(or _file) or central.command_secret; nothing was sent")


class Sent(dict[str, Any]):
    """What a hook answers for an action sent to a site as a command: ``{"command", "event" | "alarm"}``."""


class CommandSecrets:
    """Each site's command secret, read (files: off the loop) when first needed and kept for that config."""

    def __init__(self, io: Executor) -> None:
        self._io = io
        self._config: Config | None = None
        self._known: dict[str, str | None] = {}

    async def get(self, config: Config, site: str) -> str | None:
        if config is not self._config:  # a reload may have changed them
            self._config, self._known = config, {}
        if site not in self._known:
            try:
                self._known[site] = await asyncio.get_running_loop().run_in_executor(self._io, _read_secret, config,
                                                                                    site)
            except (OSError, UnicodeError) as exc:  # not kept: read again at the next action
                log.error("central: cannot read the command secret of site %s: %s", site, exc)
                return None
        return self._known[site]


def _read_secret(config: Config, site: str) -> str | None:
    listed = config.central.find_site(site)
    secret = (listed.read_command_secret() if listed is not None else None) or config.central.read_command_secret()
    return secret.reveal() if secret is not None else None


async def _sender(request: web.Request, site: str) -> Sender | None:
    config = config_of(request.app)
    secret = await request.app[COMMAND_SECRETS].get(config, site)
    if not secret:
        return None
    who = principal(request)
    assert who is not None
    return Sender((int(who["user_id"]), str(who["username"])), config.site.name, secret, config.mqtt.topic_prefix)


async def _sender_or_409(request: web.Request, site: str) -> Sender:
    sender = await _sender(request, site)
    if sender is None:
        raise web.HTTPConflict(text=NO_SECRET.format(site=site))
    return sender


async def _site_of(request: web.Request, kind: str, object_id: int) -> str | None:
    if not config_of(request.app).central.enabled:
        return None
    try:
        return await request.app[DB].read(site_of, kind, object_id)
    except (EventNotFound, AlarmNotFound):
        raise web.HTTPNotFound(text=f"no such {kind}") from None


# --- the hooks the handlers call ---------------------------------------------------------------------------------


async def event_command(request: web.Request, action: str) -> Sent | None:
    """``dismiss``, ``restore`` or ``alarm`` of the path's event sent to its site; None for a local event (and
    for raising the alarm of an event whose alarm is mirrored already: the handler answers with that alarm).
    Raises HTTP errors with a message (404, 403 for a restore that is not the caller's, 409 without a secret)."""
    event_id = path_id(request, "event_id")
    site = await _site_of(request, "event", event_id)
    if site is None:
        return None
    if action == "alarm" and await request.app[DB].read(alarm_of_event, event_id) is not None:
        return None  # its alarm is here already: answered with it, as locally (raising changes nothing)
    sender = await _sender_or_409(request, site)
    who = principal(request)
    supervisor = who is not None and auth.role_allows(who["role"], "supervisor")
    try:
        return Sent(await request.app[CHANGES].record(command_on_event, config_of(request.app).smtp.domain,
                                                      event_id, action, sender, supervisor))
    except EventNotFound:
        raise web.HTTPNotFound(text="no such event") from None
    except RestoreRefused as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    except StatusConflict as exc:  # as the appliance answers it
        raise web.HTTPConflict(text=str(exc)) from None


async def api_event_command(request: web.Request, action: str) -> web.Response | None:
    """:func:`event_command` answered as the API does: 202 with the command, or a JSON error; None: local."""
    try:
        sent = await event_command(request, action)
    except web.HTTPException as exc:
        return json_error(exc.status, exc.text or exc.reason)
    return None if sent is None else web.json_response(sent, status=202)


# The alarm changes of vmond.store.alarms, and the command each is on a site's alarm: (action, its arguments).
_ALARM_ACTIONS: dict[Callable[..., Any], tuple[str, Callable[..., dict[str, Any]]]] = {
    acknowledge: ("acknowledge", lambda: {}),
    add_note: ("note", lambda text: {"text": text}),
    tick_step: ("step", lambda n: {"n": n}),
    resolve: ("resolve", lambda code, text, **_: {"code": code, "text": text}),
}


async def alarm_command(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Sent | None:
    """The alarm change *fn* (with the handler's *args*) of the path's alarm sent to its site; None for a local
    alarm. Raises as the local change does (ValueError, :class:`AlarmInvalid`, :class:`AlarmNotFound`), or
    409 without a secret."""
    alarm_id = path_id(request, "alarm_id")
    site = await _site_of(request, "alarm", alarm_id)
    if site is None:
        return None
    action, arguments = _ALARM_ACTIONS[fn]
    sender = await _sender_or_409(request, site)
    return Sent(await request.app[CHANGES].record(command_on_alarm, alarm_id, action, arguments(*args, **kwargs),
                                                  sender, bool(kwargs.get("require_code"))))


async def dismiss_many(request: web.Request, ids: list[int]) -> tuple[list[int], list[dict[str, Any]],
                                                                    list[dict[str, Any]]]:
    """A bulk dismiss's events of sites sent as commands. Returns the ids left to dismiss here, the ones
    skipped (``no_command_secret``) and the commands sent."""
    if not config_of(request.app).central.enabled or not ids:
        return ids, [], []
    sites = await request.app[DB].read(sites_of_events, ids)
    senders: dict[str, Sender] = {}
    for site in sorted({key for key in sites.values() if key is not None}):
        if (sender := await _sender(request, site)) is not None:
            senders[site] = sender
    remote = [i for i in ids if sites.get(i) in senders]
    skipped = [{"id": i, "reason": "no_command_secret"} for i in ids if sites.get(i) and sites[i] not in senders]
    commands = await request.app[CHANGES].record(dismiss_on_sites, remote, senders) if remote else []
    return [i for i in ids if sites.get(i) is None], skipped, commands


# --- what was sent --------------------------------------------------------------------------------------------------


async def with_commands(request: web.Request, kind: str, shown: dict[str, Any]) -> dict[str, Any]:
    """*shown* (an Event or Alarm of a site) with the newest ``commands`` sent about it; the rest unchanged."""
    if not shown.get("site"):
        return shown
    return {**shown, "commands": await request.app[DB].read(commands_about, kind, shown["id"])}


@routes.get("/api/commands")
@require("supervisor")
async def api_commands(request: web.Request) -> web.Response:
    state = request.query.get("state", "pending")
    if state not in (*STATES, "all"):
        return json_error(400, f"state must be one of {', '.join((*STATES, 'all'))}")
    limit = query_int(request, "limit", 100, 1, 500)
    return web.json_response({"commands": await request.app[DB].read(list_commands, state, limit,
                                                                    scope_of(request))})
