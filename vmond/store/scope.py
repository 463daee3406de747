"""Guards limited to accounts: which accounts a user may see, and whether an event, alarm, media file, camera or
account lies within them.

A :class:`Scope` comes from the signed-in user (``accounts: [ids]``; none means every account). Store queries that
list things take one and filter by camera -> account in SQL; single items are checked with :func:`visible` before
anything else happens to them (the web does this for every route with an id in its path). Something outside the
scope is treated exactly like something that does not exist, so its existence does not leak.

Synchronous functions run on a database thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import peewee as pw

from vmond.store.models import Account, Alarm, AlarmEvent, Camera, Media, User, UserAccount

Q = TypeVar("Q", bound="pw.ModelSelect[Any]")

KINDS = ("event", "alarm", "media", "camera", "account")


class UnknownAccounts(ValueError):
    """Some of the account ids given for a user name no account."""

    def __init__(self, ids: list[int]) -> None:
        super().__init__(f"no such account: {', '.join(map(str, ids))}")
        self.ids = ids


@dataclass(frozen=True)
class Scope:
    """The accounts a user may see: ``None`` for all of them."""

    accounts: frozenset[int] | None = None

    @classmethod
    def of(cls, account_ids: Iterable[int] | None) -> Scope:
        ids = frozenset(account_ids or ())
        return cls(ids or None)  # no accounts named: every account

    @property
    def limited(self) -> bool:
        return self.accounts is not None

    def allows(self, account_id: int | None) -> bool:
        """Whether something of *account_id* may be shown (nothing without an account is, to a limited user)."""
        return self.accounts is None or (account_id is not None and account_id in self.accounts)

    def where(self, query: Q, account_column: Any = Account.id) -> Q:
        """*query* restricted to the scope's accounts; *account_column* is the account id in the query (rows
        whose account is NULL, such as an event of a camera that was removed, are left out too)."""
        if self.accounts is None:
            return query
        return query.where(account_column.in_(sorted(self.accounts)))


EVERY_ACCOUNT = Scope()


def _owner(kind: str, object_id: int) -> tuple[bool, int | None]:
    """(exists, account id) of one event, alarm, media file, camera or account."""
    if kind == "account":
        return Account.select().where(Account.id == object_id).exists(), object_id
    if kind == "camera":
        camera = Camera.select(Camera.account).where(Camera.id == object_id).first()
        return camera is not None, None if camera is None else camera.account_id
    query: pw.ModelSelect[Any]
    if kind == "event":
        query = AlarmEvent.select(Camera.account).join(Camera, pw.JOIN.LEFT_OUTER).where(AlarmEvent.id == object_id)
    elif kind == "alarm":
        query = (Alarm.select(Camera.account).join(AlarmEvent).join(Camera, pw.JOIN.LEFT_OUTER)
                 .where(Alarm.id == object_id))
    elif kind == "media":
        query = (Media.select(Camera.account).join(AlarmEvent).join(Camera, pw.JOIN.LEFT_OUTER)
                 .where(Media.id == object_id))
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    row = query.dicts().first()
    return row is not None, None if row is None else row["account"]


def visible(scope: Scope, kind: str, object_id: int) -> bool:
    """Whether the *kind* (one of :data:`KINDS`) with *object_id* exists and lies within *scope*."""
    exists, account_id = _owner(kind, object_id)
    return exists and scope.allows(account_id)


def visible_event_ids(scope: Scope, event_ids: Iterable[int]) -> list[int]:
    """Those of *event_ids* that exist and lie within *scope*, in the order given (for actions on many events)."""
    wanted = list(dict.fromkeys(event_ids))
    found: set[int] = set()
    for start in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
        query = (AlarmEvent.select(AlarmEvent.id).join(Camera, pw.JOIN.LEFT_OUTER)
                 .where(AlarmEvent.id.in_(wanted[start:start + 500])))
        found.update(row.id for row in scope.where(query, Camera.account))
    return [event_id for event_id in wanted if event_id in found]


# --- a user's accounts ----------------------------------------------------------------------------------------------


def accounts_of_users(user_ids: Iterable[int]) -> dict[int, list[int]]:
    """Each user's accounts (sorted ids; an empty list means every account)."""
    wanted = list(user_ids)
    result: dict[int, list[int]] = {user_id: [] for user_id in wanted}
    for start in range(0, len(wanted), 500):
        rows = (UserAccount.select(UserAccount.user, UserAccount.account)
                .where(UserAccount.user.in_(wanted[start:start + 500]))
                .order_by(UserAccount.account))
        for row in rows:
            result[row.user_id].append(row.account_id)
    return result


def set_user_accounts(user_id: int, account_ids: Iterable[int]) -> list[int]:
    """Limit the user to *account_ids* (none: every account); returns the sorted ids. Unknown ids raise
    :class:`UnknownAccounts` and change nothing."""
    ids = sorted(set(account_ids))
    known = {a.id for a in Account.select(Account.id).where(Account.id.in_(ids))} if ids else set()
    if missing := [i for i in ids if i not in known]:
        raise UnknownAccounts(missing)
    UserAccount.delete().where(UserAccount.user == user_id).execute()
    for account_id in ids:
        UserAccount.create(user=user_id, account=account_id)
    return ids


def account_names() -> dict[int, str]:
    """Every account's name by id (to choose a user's accounts from)."""
    return {a.id: a.name for a in Account.select(Account.id, Account.name).order_by(Account.id)}


def users_limited_to(account_id: int) -> list[str]:
    """The names of the users limited to *account_id* (it must not be deleted under them)."""
    return [u.username for u in User.select(User.username).join(UserAccount)
            .where(UserAccount.account == account_id).order_by(User.username)]
