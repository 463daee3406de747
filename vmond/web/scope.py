"""Guards limited to accounts, on the web side: the scope of the signed-in user, the one check every route with an
id in its path goes through, and which live messages a limited user is sent.

A user with ``accounts: [ids]`` sees only those accounts' events, alarms, media, cameras and accounts; everything
else answers 404, exactly as if it did not exist. Lists are filtered in the store's queries (pass
:func:`scope_of` to them); single items are checked here, by :func:`limit_to_accounts`, before the handler runs,
so that a new route with ``{event_id}``, ``{alarm_id}``, ``{media_id}``, ``{camera_id}`` or ``{account_id}`` in
its path is guarded the day it is added. User administration (admins) is not limited.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from vmond.store.scope import EVERY_ACCOUNT, Scope, visible
from vmond.util.bus import Message
from vmond.web.keys import DB
from vmond.web.params import parse_id
from vmond.web.security import Handler, is_api, principal

# The path parameters that name something of an account, and what they name.
GUARDED_IDS = {"event_id": "event", "alarm_id": "alarm", "media_id": "media", "camera_id": "camera",
               "account_id": "account"}
# Live messages that name no account and may still go to a limited user: ``alarm.viewers`` is only sent to the
# sockets watching that alarm, and a limited user may watch only an alarm of theirs (see vmond.web.ws);
# ``resync`` (another central node's messages may have been missed: reload) tells nothing about any account.
ACCOUNT_FREE_MESSAGES = frozenset({"alarm.viewers", "resync"})


def scope_from(who: dict[str, Any] | None) -> Scope:
    """The scope of a principal (as the session check reads it with every request)."""
    return EVERY_ACCOUNT if who is None else Scope.of(who.get("accounts"))


def scope_of(request: web.Request) -> Scope:
    """The accounts the signed-in user may see; pass it to the store's list queries."""
    return scope_from(principal(request))


# A limited user would not see the account they create: creating accounts is for unlimited users.
NEW_ACCOUNT_REFUSED = "a user limited to accounts cannot create accounts (an admin can, and add it to the user)"


def not_found(request: web.Request) -> web.HTTPNotFound:
    """The 404 of something outside the user's accounts: the same as for an id that does not exist."""
    if is_api(request):
        return web.HTTPNotFound(text=json.dumps({"error": "not found"}), content_type="application/json")
    return web.HTTPNotFound()


async def check_visible(request: web.Request, kind: str, object_id: int) -> None:
    """Raise 404 unless the *kind* (event, alarm, media, camera, account) with *object_id* lies within the user's
    accounts. For ids that do not come from the path (a request body); those in the path are checked already."""
    scope = scope_of(request)
    if scope.limited and not await request.app[DB].read(visible, scope, kind, object_id):
        raise not_found(request)


@web.middleware
async def limit_to_accounts(request: web.Request, handler: Handler) -> web.StreamResponse:
    """404 for a limited user when the path names an event, alarm, media file, camera or account of another
    account (or none that exists). Runs after authentication; others pass untouched."""
    scope = scope_of(request)
    if scope.limited:
        for name, kind in GUARDED_IDS.items():
            object_id = parse_id(request.match_info.get(name))
            if object_id is not None:
                await check_visible(request, kind, object_id)
    return await handler(request)


def _account_id(data: dict[str, Any]) -> tuple[bool, int | None]:
    """(names an account, its id) for a live message's data: its own ``account``, or its event's or alarm's."""
    for holder in (data, data.get("event"), data.get("alarm")):
        if isinstance(holder, dict) and "account" in holder:
            account = holder["account"]
            return True, account.get("id") if isinstance(account, dict) else None
    return False, None


def message_allowed(scope: Scope, message: Message) -> bool:
    """Whether a live message may go to a user of *scope*: one about another account (or about no account at all,
    unless it is one of :data:`ACCOUNT_FREE_MESSAGES`) is not sent to a limited user."""
    if not scope.limited or message.type in ACCOUNT_FREE_MESSAGES:
        return True
    names, account_id = _account_id(message.data)
    return names and scope.allows(account_id)
