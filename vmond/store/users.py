"""Users and their sessions (web cookies and API bearer tokens). Synchronous: run on a database thread."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, overload

from vmond.store.models import AuditEntry, Session, User, utcnow
from vmond.store.scope import accounts_of_users, set_user_accounts


class UserExists(ValueError):
    pass


class UserNotFound(LookupError):
    pass


def user_dict(user: User, accounts: list[int] | None = None) -> dict[str, Any]:
    """A user as the API shows it; ``accounts`` are the ids it is limited to (empty: every account)."""
    if accounts is None:
        accounts = accounts_of_users([user.id])[user.id]
    return {"id": user.id, "username": user.username, "role": user.role, "active": user.active,
            "created_at": user.created_at.isoformat(), "accounts": accounts}


def user_count() -> int:
    return User.select().count()


@overload
def create_user(username: str, password_hash: str, role: str, *, only_if_first: Literal[False] = False,
                by_user_id: int | None = None, accounts: Sequence[int] = ()) -> dict[str, Any]: ...
@overload
def create_user(username: str, password_hash: str, role: str, *, only_if_first: bool,
                by_user_id: int | None = None, accounts: Sequence[int] = ()) -> dict[str, Any] | None: ...
def create_user(username: str, password_hash: str, role: str, *, only_if_first: bool = False,
                by_user_id: int | None = None, accounts: Sequence[int] = ()) -> dict[str, Any] | None:
    """Create a user; with *only_if_first*, only while no user exists (first-run setup) and None otherwise.
    *accounts* limits the user to those accounts (none: every account); an unknown id raises UnknownAccounts."""
    if only_if_first and User.select().exists():
        return None
    if User.select().where(User.username == username).exists():
        raise UserExists(username)
    user = User.create(username=username, password_hash=password_hash, role=role)
    limited = set_user_accounts(user.id, accounts)
    AuditEntry.create(user=by_user_id or user.id, action="user.create", target_type="user", target_id=user.id,
                      detail={"username": username, "role": role, **({"accounts": limited} if limited else {})})
    return user_dict(user, limited)


def set_password(username: str, password_hash: str) -> None:
    user = User.get_or_none(User.username == username)
    if user is None:
        raise UserNotFound(username)
    user.password_hash = password_hash
    user.save()
    # A changed password ends every session that knew the old one.
    Session.delete().where(Session.user == user).execute()
    AuditEntry.create(user=user.id, action="user.password", target_type="user", target_id=user.id, detail={})


def credentials(username: str) -> dict[str, Any] | None:
    """The user with its password hash, for a login check; None when unknown or inactive."""
    user = User.get_or_none(User.username == username)
    if user is None or not user.active:
        return None
    return {**user_dict(user), "password_hash": user.password_hash}


def list_users() -> list[dict[str, Any]]:
    users = list(User.select().order_by(User.username))
    accounts = accounts_of_users(u.id for u in users)
    return [user_dict(u, accounts[u.id]) for u in users]


def create_session(user_id: int, kind: str, token_hash: str, expires_at: datetime, csrf_token: str | None,
                   peer: str | None) -> None:
    now = utcnow()
    Session.delete().where(Session.expires_at < now).execute()
    Session.create(token_hash=token_hash, user=user_id, kind=kind, csrf_token=csrf_token, expires_at=expires_at,
                   peer=peer)
    AuditEntry.create(user=user_id, action=f"session.{kind}", target_type="user", target_id=user_id,
                      detail={"peer": peer})


def session_principal(token_hash: str, kind: str) -> dict[str, Any] | None:
    """The active user behind a session token of *kind*, or None (unknown, expired, or user disabled)."""
    row = (Session.select(Session, User).join(User)
           .where(Session.token_hash == token_hash, Session.kind == kind, Session.expires_at > utcnow(),
                  User.active == True)  # noqa: E712 - peewee expression
           .first())
    if row is None:
        return None
    # Read with every request: a change of the user's accounts applies to the very next one.
    return {"user_id": row.user.id, "username": row.user.username, "role": row.user.role,
            "csrf_token": row.csrf_token, "kind": kind, "expires_at": row.expires_at,
            "accounts": accounts_of_users([row.user.id])[row.user.id]}


def valid_sessions(token_hashes: list[str]) -> set[str]:
    """Which of these session token hashes still belong to a live session of an active user."""
    valid: set[str] = set()
    now = utcnow()
    for start in range(0, len(token_hashes), 500):  # SQLite's limit on bound parameters
        chunk = token_hashes[start:start + 500]
        rows = (Session.select(Session.token_hash).join(User)
                .where(Session.token_hash.in_(chunk), Session.expires_at > now,
                       User.active == True))  # noqa: E712 - peewee expression
        valid.update(row.token_hash for row in rows)
    return valid


def delete_session(token_hash: str) -> None:
    Session.delete().where(Session.token_hash == token_hash).execute()


class LastAdmin(ValueError):
    """The change would leave no active administrator."""


def _active_admins(excluding: int) -> int:
    return User.select().where(User.role == "admin", User.active == True, User.id != excluding).count()  # noqa: E712


def get_user(user_id: int) -> dict[str, Any]:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        raise UserNotFound(user_id)
    return user_dict(user)


def update_user(user_id: int, by_user_id: int, role: str | None = None, active: bool | None = None,
                password_hash: str | None = None, accounts: Sequence[int] | None = None) -> dict[str, Any]:
    """Change role, active flag, password or the accounts the user is limited to (an empty list: every account);
    never leaves the appliance without an active admin."""
    user = User.get_or_none(User.id == user_id)
    if user is None:
        raise UserNotFound(user_id)
    demoted = (role is not None and role != "admin") or active is False
    if user.role == "admin" and demoted and _active_admins(user.id) == 0:
        raise LastAdmin("the last active administrator cannot be demoted or disabled")
    changes: dict[str, Any] = {}
    if role is not None and role != user.role:
        changes["role"] = [user.role, role]
        user.role = role
    if active is not None and active != user.active:
        changes["active"] = [user.active, active]
        user.active = active
    if password_hash is not None:
        user.password_hash = password_hash
        changes["password"] = "changed"
    if accounts is not None:
        before = accounts_of_users([user.id])[user.id]
        after = set_user_accounts(user.id, accounts)
        if after != before:
            changes["accounts"] = [before, after]
    user.save()
    if "password" in changes or active is False:
        Session.delete().where(Session.user == user).execute()  # old sessions end with the old rights
    AuditEntry.create(user=by_user_id, action="user.change", target_type="user", target_id=user.id, detail=changes)
    return user_dict(user)


def delete_user(user_id: int, by_user_id: int) -> None:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        raise UserNotFound(user_id)
    if user.id == by_user_id:
        raise LastAdmin("you cannot delete yourself")
    if user.role == "admin" and _active_admins(user.id) == 0:
        raise LastAdmin("the last active administrator cannot be deleted")
    user.delete_instance()  # sessions go with it; notes and audit keep their text with no author
    AuditEntry.create(user=by_user_id, action="user.delete", target_type="user", target_id=user_id,
                      detail={"username": user.username})
