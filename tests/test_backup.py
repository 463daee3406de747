"""``vmond backup`` while mails arrive, and ``vmond restore`` into a fresh data directory: nothing acknowledged is
missing, nothing is doubled, every picture is there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import Daemon, distinct, sample, write_config
from helpers import run_cli, wait_until

from vmond.config import load_config
from vmond.daemon import running
from vmond.ops.backup import BackupError, backup, data_dir_lock, restore
from vmond.store.models import Mail, Media

pytestmark = pytest.mark.slow


def ingest_keys() -> set[str]:
    return {m.ingest_key for m in Mail.select()}


def media_paths() -> list[str]:
    return [p for m in Media.select() for p in (m.path, m.thumb_path) if p]


async def test_backup_while_mails_arrive_restores_everything_acknowledged(tmp_path: Path) -> None:
    original = load_config(write_config(tmp_path))
    acknowledged_before_backup: set[str] = set()
    async with running(original) as services:
        daemon = Daemon(services)
        mails = [sample(name) for name in ("hikvision-ipc-intrusion.eml", "swann-nvr-human.eml")]

        sent = iter(range(10_000))

        async def camera(count: int, into: set[str]) -> None:
            for n in range(count):
                replies = await daemon.send(distinct(mails[n % 2], next(sent)))
                assert replies["data"][0] == 250
                into.add(replies["data"][1].rsplit(" ", 1)[1].removesuffix(".msg"))

        await camera(6, acknowledged_before_backup)
        during: set[str] = set()
        sender = asyncio.create_task(camera(20, during))
        await wait_until(lambda: during, timeout=30, what="a mail acknowledged as the backup begins")
        manifest = await asyncio.to_thread(backup, original.storage.data_dir, tmp_path / "backup")
        await sender
        await daemon.wait_idle()
        everything = await services.db.read(ingest_keys)
    assert manifest["events"] + manifest["spooled_mails"] >= len(acknowledged_before_backup)
    assert manifest["media_missing"] == 0

    # With a daemon holding the data directory, a restore refuses to touch it.
    with data_dir_lock(tmp_path / "restored"), pytest.raises(BackupError, match="in use"):
        restore(tmp_path / "backup", tmp_path / "restored")
    restored_dir = tmp_path / "restored"
    result = run_cli("restore", str(tmp_path / "backup"), "--config",
                     str(write_config(restored_dir, storage={"data_dir": ".", "min_free_space": 0})))
    assert result.returncode == 0, result.stderr
    again = run_cli("restore", str(tmp_path / "backup"), "--config", str(restored_dir / "vmond.yaml"))
    assert again.returncode != 0 and "already has a database" in again.stderr

    async with running(load_config(restored_dir / "vmond.yaml")) as services:
        await Daemon(services).wait_idle()  # mails that were still spooled become events now
        restored = await services.db.read(ingest_keys)
        paths = await services.db.read(media_paths)
    stems = {key.split(":")[0] for key in restored}
    assert acknowledged_before_backup <= stems  # everything acknowledged before the backup began
    assert restored <= everything  # nothing invented
    assert len(restored) == len(stems)  # nothing doubled (one camera per mail here)
    assert all((restored_dir / "media" / path).is_file() for path in paths)


def test_backup_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "something").write_text("x")
    (tmp_path / "data").mkdir()
    with pytest.raises(BackupError, match="no database"):
        backup(tmp_path / "data", tmp_path / "empty")
    (tmp_path / "data" / "vmond.db").write_bytes(b"")
    with pytest.raises(BackupError, match="not empty"):
        backup(tmp_path / "data", tmp_path / "dest")
    with pytest.raises(BackupError, match="not a vmond backup"):
        restore(tmp_path / "dest", tmp_path / "data")


async def test_a_second_daemon_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    async with running(config):
        with pytest.raises(BackupError, match="in use by a running vmond"):
            async with running(config):
                pass
