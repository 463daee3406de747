"""Cameras in the database: the installer's diagnostics, the Camera JSON shape, and the camera lists the SMTP
directory, the live view and the MQTT forwarder read. Run on a database thread."""

from __future__ import annotations

import ipaddress
from typing import Any

from vmond.store.models import Account, Camera, Site
from vmond.store.monitoring import camera_fields
from vmond.store.prepared import Prepared, slot
from vmond.store.scope import EVERY_ACCOUNT, Scope
from vmond.store.sites import site_ref


def camera_dict(camera: Camera, domain: str) -> dict[str, Any]:
    """A camera as the API shows it. The RTSP URL may hold credentials, and the SMTP password is a secret: only
    whether there is one."""
    return {
        "id": camera.id,
        "name": camera.name,
        "smtp_address": f"{camera.smtp_local_part}@{domain}",
        "account": {"id": camera.account.id, "name": camera.account.name},
        "active": camera.active,
        "from_config": camera.from_config,
        "has_rtsp_url": bool(camera.rtsp_url),
        "has_smtp_password": bool(camera.smtp_password_hash) or camera.smtp_password_in_config,
        "last_mail_at": camera.last_mail_at.isoformat() if camera.last_mail_at else None,
        "last_peer": camera.last_peer,
        "test_mail_at": camera.test_mail_at.isoformat() if camera.test_mail_at else None,
        "test_mail_received": camera.test_mail_at is not None,
        "last_refusal": camera.last_refusal,
        "last_transcript": camera.last_transcript or [],
        **camera_fields(camera),  # snooze (issue 17)
    } | ({} if camera.site_id is None else {"site": site_ref(Site.get_by_id(camera.site_id))})  # on a central


def _query() -> Any:
    return Camera.select(Camera, Account).join(Account)


def list_cameras(domain: str, scope: Scope = EVERY_ACCOUNT) -> list[dict[str, Any]]:
    return [camera_dict(c, domain) for c in scope.where(_query()).order_by(Account.name, Camera.name)]


def get_camera(domain: str, camera_id: int) -> dict[str, Any] | None:
    camera = _query().where(Camera.id == camera_id).first()
    return None if camera is None else camera_dict(camera, domain)


def smtp_identities() -> list[dict[str, Any]]:
    """The active cameras as the SMTP directory knows them: ``id``, ``name``, ``local_part``, ``account_id`` and
    ``password_hash`` (set for cameras created in the dashboard; YAML cameras keep theirs in the config)."""
    return [{"id": c.id, "name": c.name, "local_part": c.smtp_local_part, "account_id": c.account_id,
             "password_hash": c.smtp_password_hash}
            for c in Camera.select().where(Camera.active == True)]  # noqa: E712 - peewee expression


def camera_source(camera_id: int) -> tuple[bool, str | None] | None:
    """(active, RTSP URL) of a camera, None if there is no such camera."""
    camera = Camera.get_or_none(Camera.id == camera_id)
    return None if camera is None else (camera.active, camera.rtsp_url or None)


def active_camera_devices() -> dict[int, dict[str, Any]]:
    """The active cameras as devices to announce: ``{id: {"name", "vendor"}}``."""
    return {c.id: {"name": c.name, "vendor": c.vendor_hint}
            for c in Camera.select(Camera.id, Camera.name, Camera.vendor_hint).where(Camera.active == True)}  # noqa: E712


def active_camera_ids(camera_ids: list[int]) -> set[int]:
    """Those of *camera_ids* that are cameras still in service."""
    return {c.id for c in Camera.select(Camera.id).where(Camera.id.in_(camera_ids), Camera.active == True)}  # noqa: E712


def record_sessions(sessions: list[tuple[list[int], list[str], dict[int, dict[str, str]]]]) -> None:
    """Keep, per camera, the last SMTP session that named it and what it was refused in it (in session order)."""
    for camera_ids, transcript, refusals in sessions:
        if len(camera_ids) == 1:  # a camera's own session: every mail, so prepared once
            _TRANSCRIPT.execute(id=camera_ids[0], transcript=transcript)
        else:
            Camera.update(last_transcript=transcript).where(Camera.id.in_(camera_ids)).execute()
        for camera_id, refusal in refusals.items():
            Camera.update(last_refusal=refusal).where(Camera.id == camera_id).execute()


_TRANSCRIPT = Prepared(Camera, lambda: Camera.update({
    Camera.last_transcript: slot("transcript", Camera.last_transcript)}).where(Camera.id == slot("id", Camera.id)))


def peer_host(peer: str) -> str:
    """The IP address in a stored peer (``1.2.3.4:5678``, ``[::1]:5678``), IPv4-mapped IPv6 as IPv4."""
    host = peer[1:peer.find("]")] if peer.startswith("[") else peer.rpartition(":")[0] or peer
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def cameras_last_seen_at(hosts: set[str]) -> dict[str, dict[str, Any]]:
    """For each of *hosts* (IP addresses), the camera whose last mail came from there most recently."""
    found: dict[str, dict[str, Any]] = {}
    if not hosts:
        return found
    query = (Camera.select(Camera.id, Camera.name, Camera.last_peer).where(Camera.last_peer.is_null(False))
             .order_by(Camera.last_mail_at.desc()))
    for camera in query:
        if camera.last_peer is None:  # the query leaves these out; this tells the type checker
            continue
        host = peer_host(camera.last_peer)
        if host in hosts and host not in found:
            found[host] = {"id": camera.id, "name": camera.name}
    return found
