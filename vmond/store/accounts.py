"""Accounts (the customers), their contacts, and creating, changing and removing accounts and cameras.

Accounts and cameras declared in the YAML are read-only here (the file is their truth). A camera with events is
never deleted, only retired (it refuses mail and keeps its history). Synchronous: run on a database thread.
"""

from __future__ import annotations

import secrets
from typing import Any

import peewee as pw

from vmond.config.notifyvalues import EXAMPLE as APPRISE_EXAMPLE
from vmond.config.notifyvalues import apprise_understands
from vmond.config.types import MASK
from vmond.store.actionplans import check_plan
from vmond.store.cameras import camera_dict
from vmond.store.models import Account, AlarmEvent, AuditEntry, Camera, Contact, Site, utcnow
from vmond.store.monitoring import account_fields
from vmond.store.scope import EVERY_ACCOUNT, Scope, users_limited_to
from vmond.store.sites import site_ref
from vmond.store.supervision import parse_max_silence
from vmond.util.addresses import camera_local_part, email_address, phone_number

ADDRESS_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud to an installer, typed into a camera
MAX_TEXT = 2000
MAX_CONTACTS = 50  # per account


class Invalid(ValueError):
    """Validation failed; ``fields`` maps field names to messages, shown next to each field."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


class NotFound(LookupError):
    pass


class ReadOnly(PermissionError):
    """Declared in the configuration file, or (on a central) a site's: change it there."""


def check_editable(row: Account | Camera, what: str, verb: str = "change") -> None:
    """ReadOnly when *row* is not this dashboard's to change: the configuration file's, or a mirrored site's."""
    if row.site_id is not None:
        raise ReadOnly(f"this {what} belongs to site {Site.get_by_id(row.site_id).name}; {verb} it there")
    if row.from_config:
        raise ReadOnly(f"this {what} is declared in the configuration file; {verb} it there")


def _text(data: dict[str, Any], key: str, errors: dict[str, str], required: bool = False,
          limit: int = 200) -> str | None:
    if key not in data:
        if required:
            errors[key] = "required"
        return None
    value = data[key]
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors[key] = "must be text"
        return None
    value = value.strip()
    if required and not value:
        errors[key] = "required"
    elif len(value) > limit:
        errors[key] = f"at most {limit} characters"
    return value


def _reachable(contact: dict[str, Any], errors: dict[str, str]) -> None:
    """Check the phone number and e-mail address (normalised in place); at least one of them is needed."""
    for key, check in (("phone", phone_number), ("email", email_address)):
        if key in errors:
            continue
        if not contact[key]:
            contact[key] = None
            continue
        try:
            contact[key] = check(contact[key])
        except ValueError as exc:
            errors[key] = str(exc)
    if contact["phone"] is None and contact["email"] is None and not {"phone", "email"} & errors.keys():
        errors["phone"] = "a contact needs a phone number or an e-mail address"


def _contacts(raw: Any, errors: dict[str, str]) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        errors["contacts"] = "must be a list"
        return []
    if len(raw) > MAX_CONTACTS:
        errors["contacts"] = f"at most {MAX_CONTACTS} contacts"
        return []
    contacts = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            errors[f"contacts[{index}]"] = "must be an object"
            continue
        item_errors: dict[str, str] = {}
        contact = {key: _text(item, key, item_errors, required=key == "name")
                   for key in ("name", "phone", "email", "role")}
        _reachable(contact, item_errors)
        contact["role"] = contact["role"] or None
        contact["notify_url"] = _notify_url(item, item_errors)  # notifications (issue 17)
        priority = item.get("priority", index + 1)
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 1:
            item_errors["priority"] = "a whole number from 1"
        contact["priority"] = priority
        errors.update({f"contacts[{index}].{k}": v for k, v in item_errors.items()})
        contacts.append(contact)
    return contacts


# --- contacts' notification URLs (issue 17): secrets, shown masked; the mask sent back keeps the URL -------------


def _notify_url(item: dict[str, Any], errors: dict[str, str]) -> str | None:
    value = item.get("notify_url")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        errors["notify_url"] = f"an Apprise URL of at most {MAX_TEXT} characters"
        return None
    if value != MASK and not apprise_understands(value.strip()):
        errors["notify_url"] = f"Apprise does not understand this URL; expected one such as {APPRISE_EXAMPLE}"
        return None
    return value.strip()


def _keep_masked_urls(account_id: int | None, contacts: list[dict[str, Any]], errors: dict[str, str]) -> None:
    """A contact sent back with the masked URL keeps the one it had, matched by name; the mask under a name that
    had none (a renamed contact) is refused rather than the keyholder silently no longer told."""
    before = ({c.name: c.notify_url for c in Contact.select().where(Contact.account == account_id)}
              if account_id is not None else {})
    for index, contact in enumerate(contacts):
        if contact["notify_url"] == MASK:
            contact["notify_url"] = before.get(contact["name"])
            if contact["notify_url"] is None:
                errors[f"contacts[{index}].notify_url"] = ("no notify URL to keep under this name (was the contact "
                                                           "renamed?): enter the URL again")


def account_dict(account: Account, domain: str) -> dict[str, Any]:
    cameras = Camera.select(Camera, Account).join(Account).where(Camera.account == account).order_by(Camera.name)
    return {
        "id": account.id,
        "name": account.name,
        "address": account.address,
        "notes": account.notes,
        "from_config": account.from_config,
        **({} if account.site_id is None else {"site": site_ref(Site.get_by_id(account.site_id))}),  # a central's
        "contacts": [{"id": c.id, "name": c.name, "phone": c.phone, "email": c.email, "role": c.role,
                      "priority": c.priority, "notify_url": None if c.notify_url is None else MASK}
                     for c in Contact.select().where(Contact.account == account)
                     .order_by(Contact.priority, Contact.id)],
        "cameras": [camera_dict(c, domain) for c in cameras],
        "action_plan": account.action_plan or [],
        **account_fields(account),  # schedules (issue 17): schedule, manual arm/disarm
    }


def _account(account_id: int) -> Account:
    account = Account.get_or_none(Account.id == account_id)
    if account is None:
        raise NotFound(account_id)
    return account


def list_accounts(domain: str, scope: Scope = EVERY_ACCOUNT) -> list[dict[str, Any]]:
    return [account_dict(a, domain) for a in scope.where(Account.select()).order_by(Account.name)]


def get_account(domain: str, account_id: int) -> dict[str, Any]:
    return account_dict(_account(account_id), domain)


def save_account(domain: str, data: dict[str, Any], user_id: int | None, account_id: int | None = None
                 ) -> dict[str, Any]:
    """Create (no *account_id*) or change an account; ``contacts``, when given, replaces the contact list."""
    errors: dict[str, str] = {}
    account = Account(from_config=False) if account_id is None else _account(account_id)
    check_editable(account, "account")
    name = _text(data, "name", errors, required=account_id is None)
    address = _text(data, "address", errors, limit=MAX_TEXT)
    notes = _text(data, "notes", errors, limit=MAX_TEXT)
    contacts = _contacts(data["contacts"], errors) if "contacts" in data else None
    plan = check_plan(data["action_plan"], errors) if "action_plan" in data else None  # replaces the plan
    if name and Account.select().where(pw.fn.lower(Account.name) == name.lower(), Account.id != (account_id or 0)
                                       ).exists():
        errors["name"] = "another account has this name"
    if contacts is not None:
        _keep_masked_urls(account_id, contacts, errors)
    if errors:
        raise Invalid(errors)
    for field, value in (("name", name), ("address", address), ("notes", notes)):
        if value is not None:
            setattr(account, field, value)
    if plan is not None:
        account.action_plan = plan
    account.updated_at = utcnow()
    account.save()
    if contacts is not None:
        Contact.delete().where(Contact.account == account).execute()
        for contact in contacts:
            Contact.create(account=account, **contact)
    AuditEntry.create(user=user_id, action="account.create" if account_id is None else "account.change",
                      target_type="account", target_id=account.id, detail={"name": account.name})
    return account_dict(account, domain)


def delete_account(account_id: int, user_id: int | None) -> None:
    account = _account(account_id)
    check_editable(account, "account", "remove")
    if Camera.select().where(Camera.account == account).exists():
        raise Invalid({"cameras": "move or delete the account's cameras first"})
    if limited := users_limited_to(account.id):  # they would see every account once it is gone
        raise Invalid({"users": f"users limited to this account: {', '.join(limited)}; change them first"})
    account.delete_instance(recursive=False)  # contacts go with it (ON DELETE CASCADE)
    AuditEntry.create(user=user_id, action="account.delete", target_type="account", target_id=account_id,
                      detail={"name": account.name})


# --- cameras -----------------------------------------------------------------------------------------------------


def _new_local_part() -> str:
    for _ in range(100):
        local = "camera-" + "".join(secrets.choice(ADDRESS_ALPHABET) for _ in range(5))
        if not Camera.select().where(Camera.smtp_local_part == local).exists():
            return local
    raise RuntimeError("could not find a free camera address")


def _camera(camera_id: int) -> Camera:
    camera = Camera.select(Camera, Account).join(Account).where(Camera.id == camera_id).first()
    if camera is None:
        raise NotFound(camera_id)
    return camera


def _smtp_local_part(data: dict[str, Any], domain: str, camera: Camera | None, errors: dict[str, str]
                     ) -> str | None:
    """The local part the installer chose (``smtp_address``), checked like the YAML's, or None to generate one
    (a new camera) or keep it (a change)."""
    value = data.get("smtp_address")
    if value is None or (camera is None and isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        errors["smtp_address"] = "must be text"
        return None
    if not value.strip():
        errors["smtp_address"] = "required (leave it out to keep the address)"
        return None
    try:
        local = camera_local_part(value.strip(), domain)
    except ValueError as exc:
        errors["smtp_address"] = str(exc)
        return None
    other = Camera.get_or_none(Camera.smtp_local_part == local, Camera.id != (camera.id if camera else 0))
    if other is not None:
        state = "" if other.active else "retired "
        errors["smtp_address"] = f"{local}@{domain} is the address of the {state}camera {other.name!r}"
        return None
    return local


def save_camera(domain: str, data: dict[str, Any], user_id: int | None, camera_id: int | None = None,
                password_hash: str | None = None) -> dict[str, Any]:
    """Create or change a camera.

    ``smtp_address`` (the local part, or the full address in *domain*) is the installer's choice, checked like
    the YAML's and unique ignoring case; a new camera without one gets a generated address. ``rtsp_url`` is
    write-only (it may carry credentials); ``password_hash`` (already hashed by the caller, off the event loop)
    sets the per-camera SMTP password, ``clear_password`` removes it."""
    errors: dict[str, str] = {}
    camera = None if camera_id is None else _camera(camera_id)
    if camera is not None:
        check_editable(camera, "camera")
    name = _text(data, "name", errors, required=camera is None)
    local_part = _smtp_local_part(data, domain, camera, errors)
    rtsp_url = _text(data, "rtsp_url", errors, limit=MAX_TEXT)
    if rtsp_url and not rtsp_url.lower().startswith(("rtsp://", "rtsps://")):
        errors["rtsp_url"] = "must start with rtsp:// or rtsps://"
    account_id = data.get("account_id", None if camera is not None else ...)
    if account_id is ... or (camera is None and account_id is None):
        errors["account_id"] = "required"
    elif account_id is not None:
        if not isinstance(account_id, int) or isinstance(account_id, bool) or Account.get_or_none(
                Account.id == account_id) is None:
            errors["account_id"] = "no such account"
    if "max_silence" in data:  # supervision: this camera's own silence limit
        try:
            max_silence = parse_max_silence(data["max_silence"])
        except ValueError as exc:
            errors["max_silence"] = str(exc)
    if errors:
        raise Invalid(errors)
    detail: dict[str, Any] = {}
    if camera is None:
        camera = Camera(smtp_local_part=local_part or _new_local_part(), from_config=False, active=True)
    elif local_part is not None and local_part != camera.smtp_local_part:
        detail["smtp_address"] = {"from": f"{camera.smtp_local_part}@{domain}", "to": f"{local_part}@{domain}"}
        camera.smtp_local_part = local_part
    if "max_silence" in data and max_silence != camera.max_silence:  # supervision: its own silence limit
        detail["max_silence"] = {"from": camera.max_silence, "to": max_silence}
        camera.max_silence = max_silence
    if name is not None:
        camera.name = name
    if isinstance(account_id, int):
        camera.account_id = account_id
    if rtsp_url is not None:
        camera.rtsp_url = rtsp_url or None
    if password_hash is not None:
        camera.smtp_password_hash = password_hash
    elif data.get("clear_password"):
        camera.smtp_password_hash = None
    camera.save()
    AuditEntry.create(user=user_id, action="camera.create" if camera_id is None else "camera.change",
                      target_type="camera", target_id=camera.id, detail={"name": camera.name, **detail})
    return camera_dict(_camera(camera.id), domain)


def delete_camera(camera_id: int, user_id: int | None) -> str:
    """Delete a camera without events; retire one with events (its history stays). Returns what happened."""
    camera = _camera(camera_id)
    check_editable(camera, "camera", "remove")
    if AlarmEvent.select().where(AlarmEvent.camera == camera).exists():
        camera.active = False
        camera.save()
        outcome = "retired"
    else:
        camera.delete_instance()
        outcome = "deleted"
    AuditEntry.create(user=user_id, action=f"camera.{outcome}", target_type="camera", target_id=camera_id,
                      detail={"name": camera.name})
    return outcome
