"""The store's camera and picture queries that the SMTP directory, the live view and the MQTT forwarder call: they
answer plain values, see only cameras in service, and keep camera test mails out of the snapshots."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from vmond.config import Config
from vmond.store.cameras import active_camera_devices, active_camera_ids, camera_source, smtp_identities
from vmond.store.db import Database
from vmond.store.events import IngestRecord, MediaRecord, record_mail
from vmond.store.models import Camera
from vmond.store.pictures import latest_images, thumbnail_path
from vmond.store.sync import sync_accounts

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RTSP = "rtsp://viewer:secret@192.0.2.10/stream1"


def picture(key: str, n: int, content_type: str = "image/jpeg", thumb: bool = True) -> MediaRecord:
    return MediaRecord(kind="image", path=f"{key}-{n}.{content_type.rpartition('/')[2]}", content_type=content_type,
                       sha256="0" * 64, bytes=10, thumb_path=f"{key}-{n}.thumb.jpg" if thumb else None)


def mail(key: str, local: str, *media: MediaRecord, seconds: int = 0, is_test: bool = False) -> IngestRecord:
    at = NOW.replace(second=seconds)
    return IngestRecord(ingest_key=key, local_part=local, received_at=at, event_time=at, event_type="Motion",
                        is_test=is_test, media=media)


def camera_ids() -> dict[str, int]:
    return {c.smtp_local_part: c.id for c in Camera.select()}


def add_cameras() -> None:
    """Next to the YAML's two: one made in the dashboard (a stored password hash, a vendor, an emptied RTSP URL),
    one retired."""
    Camera.create(account=1, name="Gate", smtp_local_part="camera-gate", smtp_password_hash="scrypt$hash",
                  vendor_hint="hikvision", rtsp_url="")
    Camera.create(account=1, name="Old Shed", smtp_local_part="camera-shed", rtsp_url=RTSP, active=False)


async def test_camera_queries_see_cameras_in_service_as_plain_values(tmp_path: Path,
                                                                     make_config: Callable[..., Config]) -> None:
    config = make_config(accounts=[{"name": "Test Customer", "cameras": [
        {"name": "Front Door", "smtp_address": "camera-front", "rtsp_url": RTSP},
        {"name": "Back Yard", "smtp_address": "camera-back"},
    ]}])
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        await db.write(add_cameras)
        ids = await db.read(camera_ids)
        front, back, gate, shed = (ids[f"camera-{name}"] for name in ("front", "back", "gate", "shed"))

        identities = sorted(await db.read(smtp_identities), key=lambda c: c["id"])
        assert identities == [
            {"id": front, "name": "Front Door", "local_part": "camera-front", "account_id": 1, "password_hash": None},
            {"id": back, "name": "Back Yard", "local_part": "camera-back", "account_id": 1, "password_hash": None},
            {"id": gate, "name": "Gate", "local_part": "camera-gate", "account_id": 1,
             "password_hash": "scrypt$hash"},
        ]

        assert await db.read(camera_source, front) == (True, RTSP)
        assert await db.read(camera_source, back) == (True, None)
        assert await db.read(camera_source, gate) == (True, None)
        assert await db.read(camera_source, shed) == (False, RTSP)
        assert await db.read(camera_source, 999) is None

        assert await db.read(active_camera_devices) == {front: {"name": "Front Door", "vendor": None},
                                                         back: {"name": "Back Yard", "vendor": None},
                                                         gate: {"name": "Gate", "vendor": "hikvision"}}
        assert await db.read(active_camera_ids, [front, shed, 999]) == {front}
        assert await db.read(active_camera_ids, []) == set()


async def test_latest_images_are_each_cameras_newest_jpeg_never_a_test_mail(tmp_path: Path, config: Config) -> None:
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        ids = await db.read(camera_ids)
        front, back = ids["camera-front"], ids["camera-back"]
        assert await db.read(latest_images) == {}

        older = await db.write(record_mail, "monitor.local", mail("a", "camera-front", picture("a", 0)), 0.0)
        newer = await db.write(record_mail, "monitor.local",
                               mail("b", "camera-front", picture("b", 0), picture("b", 1), seconds=10), 0.0)
        await db.write(record_mail, "monitor.local",
                       mail("t", "camera-front", picture("t", 0), seconds=20, is_test=True), 0.0)
        png = await db.write(record_mail, "monitor.local",
                             mail("p", "camera-back", picture("p", 0, "image/png"), seconds=30), 0.0)
        newest_front = max(image["id"] for image in newer.event["images"])
        assert newest_front > max(image["id"] for image in older.event["images"])
        png_id = png.event["images"][0]["id"]

        # A PNG is published as its JPEG thumbnail; a camera test mail's picture is never the snapshot.
        assert await db.read(latest_images) == {front: {"media_id": newest_front, "path": "b-1.jpeg"},
                                                back: {"media_id": png_id, "path": "p-0.thumb.jpg"}}
        assert await db.read(latest_images, [back]) == {back: {"media_id": png_id, "path": "p-0.thumb.jpg"}}

        await db.write(lambda: Camera.update(active=False).where(Camera.id == back).execute())
        assert await db.read(latest_images) == {front: {"media_id": newest_front, "path": "b-1.jpeg"}}

        assert await db.read(thumbnail_path, newest_front) == "b-1.thumb.jpg"
        assert await db.read(thumbnail_path, 999) is None


async def test_a_png_without_thumbnail_is_published_as_it_is_and_has_no_thumbnail(tmp_path: Path,
                                                                                 config: Config) -> None:
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        front = (await db.read(camera_ids))["camera-front"]
        result = await db.write(record_mail, "monitor.local",
                                mail("n", "camera-front", picture("n", 0, "image/png", thumb=False)), 0.0)
        media_id = result.event["images"][0]["id"]
        assert await db.read(latest_images) == {front: {"media_id": media_id, "path": "n-0.png"}}
        assert await db.read(thumbnail_path, media_id) is None
