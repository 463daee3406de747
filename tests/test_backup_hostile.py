"""``vmond backup`` and ``vmond restore`` against tampered databases and hostile backups: nothing is read from
outside the data directory or written outside the destination, a hostile backup is refused whole before the data
directory is touched, and a restore that fails half-way leaves the data directory as it was."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from conftest import write_config
from helpers import run_cli

from vmond.ops.backup import BackupError, backup, restore
from vmond.store.db import open_sqlite

SECRET = b"SECRET outside the data directory"
SPOOL_NAME = "01700000000000000000-0123456789abcdef0123456789abcdef.msg"


def add_media(data: Path, path: str, thumb: str | None = None) -> None:
    with closing(sqlite3.connect(data / "vmond.db")) as db, db:
        db.execute("INSERT INTO media (event_id, kind, position, path, thumb_path, content_type, sha256, bytes, "
                   "created_at) VALUES (1, 'image', 0, ?, ?, 'image/jpeg', '', 7, '2024-01-01T00:00:00Z')",
                   (path, thumb))


def make_data_dir(data: Path) -> Path:
    """A data directory with one picture and its thumbnail, and one spooled mail."""
    open_sqlite(data / "vmond.db").close()
    (data / "media" / "2024").mkdir(parents=True)
    (data / "media" / "2024" / "a.jpg").write_bytes(b"picture")
    (data / "media" / "2024" / "a.thumb.jpg").write_bytes(b"thumb")
    add_media(data, "2024/a.jpg", "2024/a.thumb.jpg")
    (data / "spool" / "new").mkdir(parents=True)
    (data / "spool" / "new" / SPOOL_NAME).write_bytes(b"VMOND1 {}\nmail")
    return data


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(SECRET)
    return tmp_path / "outside"


def everything_under(root: Path) -> dict[str, bytes]:
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            found[str(path.relative_to(root))] = path.read_bytes() if not path.is_symlink() else b"<link>"
    return found


# --- backup: a tampered database ----------------------------------------------------------------------------------

def absolute(data: Path, outside: Path) -> str:
    return str(outside / "secret.txt")


def dot_dot(data: Path, outside: Path) -> str:
    return "../../outside/secret.txt"  # from data/media to tmp/outside; written to backups/outside from dest/media


def symlink_out(data: Path, outside: Path) -> str:
    (data / "media" / "evil.jpg").symlink_to(outside / "secret.txt")
    return "evil.jpg"


def symlinked_directory(data: Path, outside: Path) -> str:
    (data / "media" / "2023").symlink_to(outside, target_is_directory=True)
    return "2023/secret.txt"


def fifo(data: Path, outside: Path) -> str:
    os.mkfifo(data / "media" / "2024" / "pipe.jpg")  # reading it would wait forever
    return "2024/pipe.jpg"


@pytest.mark.parametrize(("plant", "reason"), [
    (absolute, "an absolute path"), (dot_dot, "leaves the media directory"),
    (symlink_out, "a symbolic link out of the media directory"),
    (symlinked_directory, "a symbolic link out of the media directory"), (fifo, "not a regular file")])
def test_backup_refuses_media_paths_that_lead_out(tmp_path: Path, outside: Path,
                                                  plant: Callable[[Path, Path], str], reason: str) -> None:
    data = make_data_dir(tmp_path / "data")
    hostile = plant(data, outside)
    add_media(data, hostile)
    dest = tmp_path / "backups" / "b1"
    manifest = backup(data, dest)
    copied = everything_under(dest)
    assert copied["media/2024/a.jpg"] == b"picture" and not any(SECRET in content for content in copied.values())
    assert sorted(os.listdir(tmp_path / "backups")) == ["b1"]  # nothing written beside the destination
    assert (manifest["media_files"], manifest["media_refused"], manifest["media_missing"]) == (2, 1, 0)
    [refused] = manifest["refused"]
    assert refused.startswith(f"media {ascii(hostile)[:40]}") and refused.endswith(f": {reason}"), refused
    assert json.loads((dest / "vmond-backup.json").read_text())["media_refused"] == 1


def test_backup_skips_a_spool_entry_that_is_a_link(tmp_path: Path, outside: Path) -> None:
    data = make_data_dir(tmp_path / "data")
    (data / "spool" / "new" / SPOOL_NAME.replace("017", "018")).symlink_to(outside / "secret.txt")
    manifest = backup(data, tmp_path / "dest")
    assert not any(SECRET in content for content in everything_under(tmp_path / "dest").values())
    assert (manifest["spooled_mails"], manifest["spool_refused"]) == (1, 1)


def test_backup_command_lists_what_it_refused_and_exits_1(tmp_path: Path, outside: Path) -> None:
    config = write_config(tmp_path, storage={"data_dir": "data", "min_free_space": 0})
    data = make_data_dir(tmp_path / "data")
    add_media(data, "../../outside/secret.txt")
    add_media(data, symlink_out(data, outside))
    result = run_cli("backup", str(tmp_path / "dest"), "--config", str(config))
    assert result.returncode == 1, result
    assert "backed up 0 events, 2 media files and 1 spooled mails" in result.stdout
    lines = result.stderr.splitlines()
    assert lines[:2] == ["refused media '../../outside/secret.txt': leaves the media directory",
                         "refused media 'evil.jpg': a symbolic link out of the media directory"], lines
    assert lines[2].startswith("refused 2 file(s)") and len(lines) == 3


# --- restore: a hostile backup ------------------------------------------------------------------------------------

def db_absolute(b: Path, outside: Path) -> None:
    add_media(b, str(outside / "secret.txt"))


def db_dot_dot(b: Path, outside: Path) -> None:
    add_media(b, "2024/../../../outside/secret.txt")


def media_link(b: Path, outside: Path) -> None:
    (b / "media" / "2024" / "evil.jpg").symlink_to(outside / "secret.txt")


def media_linked_directory(b: Path, outside: Path) -> None:
    (b / "media" / "2023").symlink_to(outside, target_is_directory=True)


def media_tree_is_a_link(b: Path, outside: Path) -> None:
    os.rename(b / "media", outside / "media")
    (b / "media").symlink_to(outside / "media", target_is_directory=True)


def media_fifo(b: Path, outside: Path) -> None:
    os.mkfifo(b / "media" / "2024" / "pipe.jpg")


def spool_link(b: Path, outside: Path) -> None:
    (b / "spool" / "new" / SPOOL_NAME.replace("017", "018")).symlink_to(outside / "secret.txt")


def spool_odd_name(b: Path, outside: Path) -> None:
    (b / "spool" / "new" / "notes.txt").write_bytes(b"x")


def spool_other_directory(b: Path, outside: Path) -> None:
    (b / "spool" / "failed").mkdir()
    (b / "spool" / "failed" / SPOOL_NAME).write_bytes(b"x")


def manifest_link(b: Path, outside: Path) -> None:
    os.rename(b / "vmond-backup.json", outside / "vmond-backup.json")
    (b / "vmond-backup.json").symlink_to(outside / "vmond-backup.json")


def database_link(b: Path, outside: Path) -> None:
    os.rename(b / "vmond.db", outside / "vmond.db")
    (b / "vmond.db").symlink_to(outside / "vmond.db")


def database_garbage(b: Path, outside: Path) -> None:
    (b / "vmond.db").write_bytes(SECRET * 1000)


def manifest_changes(**changes: object) -> Callable[[Path, Path], None]:
    def tamper(b: Path, outside: Path) -> None:
        manifest = json.loads((b / "vmond-backup.json").read_text())
        (b / "vmond-backup.json").write_text(json.dumps({**manifest, **changes}))
    tamper.__name__ = "manifest_" + "_".join(f"{key}_{value}" for key, value in changes.items())
    return tamper


def manifest_text(text: str) -> Callable[[Path, Path], None]:
    def tamper(b: Path, outside: Path) -> None:
        (b / "vmond-backup.json").write_text(text)
    tamper.__name__ = "manifest_text_" + text[:10]
    return tamper


HOSTILE_BACKUPS = [
    (db_absolute, "vmond.db names the media file .*: an absolute path"),
    (db_dot_dot, "vmond.db names the media file .*: leaves the media directory"),
    (media_link, "2024/evil.jpg' is a symbolic link"),
    (media_linked_directory, "'2023' is a symbolic link"),
    (media_tree_is_a_link, "media is a symbolic link"),
    (media_fifo, "2024/pipe.jpg' is not a regular file"),
    (spool_link, "is a symbolic link"),
    (spool_odd_name, "spool/'new/notes.txt' is not a spooled mail"),
    (spool_other_directory, "is not a spooled mail"),
    (manifest_link, "vmond-backup.json is a symbolic link"),
    (database_link, "vmond.db is a symbolic link"),
    (database_garbage, "vmond.db is not a vmond database"),
    (manifest_changes(schema="1"), "schema is '1', not a count"),
    (manifest_changes(schema=1.0), "schema is 1.0, not a count"),
    (manifest_changes(schema=99999), "schema 99999 is newer than this vmond understands"),
    (manifest_changes(schema=1), "vmond.db has schema \\d+, its manifest says 1"),
    (manifest_changes(events=-1), "events is -1, not a count"),
    (manifest_changes(events=True), "events is True, not a count"),
    (manifest_changes(taken_at=5), "taken_at is 5, not a time"),
    (manifest_changes(taken_at="\x1b[2Jyesterday"), "taken_at is .*, not a time"),
    (manifest_changes(vmond=None), "vmond is None, not a version"),
    (manifest_text("not json"), "vmond-backup.json is not JSON"),
    (manifest_text("[" * 100_000 + "]" * 100_000), "vmond-backup.json is not JSON"),
    (manifest_text("[1, 2]"), "vmond-backup.json is not a JSON object"),
]


@pytest.fixture
def good_backup(tmp_path: Path) -> Path:
    manifest = backup(make_data_dir(tmp_path / "original"), tmp_path / "backup")
    assert manifest["media_files"] == 2 and manifest["spooled_mails"] == 1
    return tmp_path / "backup"


@pytest.mark.parametrize(("tamper", "reason"), HOSTILE_BACKUPS, ids=[t.__name__ for t, _ in HOSTILE_BACKUPS])
def test_restore_refuses_a_hostile_backup_before_writing_anything(
        tmp_path: Path, outside: Path, good_backup: Path, tamper: Callable[[Path, Path], None], reason: str) -> None:
    tamper(good_backup, outside)
    data = tmp_path / "restored"
    with pytest.raises(BackupError, match=reason) as refused:
        restore(good_backup, data)
    assert "\n" not in str(refused.value)
    assert not data.exists()


def test_restore_command_says_why_in_one_line(tmp_path: Path, outside: Path, good_backup: Path) -> None:
    media_link(good_backup, outside)
    config = write_config(tmp_path, storage={"data_dir": "restored", "min_free_space": 0})
    result = run_cli("restore", str(good_backup), "--config", str(config))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "refused the backup: '2024/evil.jpg' is a symbolic link\n"
    assert not (tmp_path / "restored").exists()


# --- restore: a good backup, and one that fails half-way ----------------------------------------------------------

def snapshot(data: Path, database_file: bool = True) -> dict[str, str]:
    """Every file of a data directory with a hash of its content (the lock file aside), and the database's rows."""
    files = {name: hashlib.sha256(content).hexdigest() for name, content in everything_under(data).items()
             if name != "vmond.lock" and (database_file or not name.startswith("vmond.db"))}
    with closing(sqlite3.connect(data / "vmond.db")) as db:
        files["rows"] = repr(db.execute("SELECT path, thumb_path FROM media ORDER BY id").fetchall())
    return files


def test_restore_replaces_a_database_with_force_and_leaves_no_staging(tmp_path: Path, good_backup: Path) -> None:
    data = tmp_path / "data"
    open_sqlite(data / "vmond.db").close()
    add_media(data, "old/picture.jpg")  # written through the log: the old database's -wal must not survive
    restore(good_backup, data, force=True)
    assert snapshot(data, database_file=False) == snapshot(tmp_path / "original", database_file=False)
    assert not [path for path in data.rglob("*") if ".vmond-restore" in path.parts]


def test_a_restore_that_fails_half_way_leaves_the_data_directory_as_it_was(tmp_path: Path,
                                                                         good_backup: Path) -> None:
    """A full disk, here a file size limit, while the backup's media are copied: the restore fails, and the data
    directory it was forced onto keeps its database and its files."""
    (good_backup / "media" / "2024" / "big.jpg").write_bytes(b"\0" * 2_000_000)
    add_media(good_backup, "2024/big.jpg")
    config = write_config(tmp_path, storage={"data_dir": "data", "min_free_space": 0})
    data = make_data_dir(tmp_path / "data")
    add_media(data, "2024/only-in-the-old-database.jpg")
    before = snapshot(data)

    # No file of more than 1 MB; SIGXFSZ ignored, so that such a write fails with EFBIG as on a full disk.
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000)); "
               "from vmond.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", limited, "restore", str(good_backup), "--force", "--config",
                             str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "the data directory is as it was" in result.stderr, result.stderr
    assert snapshot(data) == before
    assert not list(data.rglob(".vmond-restore"))


def test_restore_writes_nothing_through_a_link_in_the_data_directory(tmp_path: Path, outside: Path,
                                                                      good_backup: Path) -> None:
    data = tmp_path / "data"
    open_sqlite(data / "vmond.db").close()
    (data / "media").mkdir()
    (data / "media" / "2024").symlink_to(outside, target_is_directory=True)  # where the backup's pictures go
    before = snapshot(data)
    with pytest.raises(BackupError, match="nothing was restored: a symbolic link or a directory in .*/media stands "
                                          "where '2024/a.*' goes"):
        restore(good_backup, data, force=True)
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert snapshot(data) == before and not list(data.rglob(".vmond-restore"))


def test_restore_into_a_media_directory_on_another_file_system(tmp_path: Path, good_backup: Path) -> None:
    """``media`` may be a link to another disk: each tree is staged inside itself, so every move is a rename."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path) as disk:
        data = tmp_path / "data"
        data.mkdir()
        (data / "media").symlink_to(disk, target_is_directory=True)
        restore(good_backup, data)
        assert everything_under(Path(disk)) == everything_under(tmp_path / "original" / "media")
        assert everything_under(data / "spool") == everything_under(tmp_path / "original" / "spool")
        assert not list(data.rglob(".vmond-restore")) and (data / "vmond.db").is_file()


def test_names_planted_in_the_destination_during_a_backup_are_not_followed(
        tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vmond.ops.backup

    data = make_data_dir(tmp_path / "data")
    dest = tmp_path / "dest"
    copy_media = vmond.ops.backup._copy_media

    def planting(*args: object) -> int:  # another local user, with write access to DEST, strikes mid-backup
        (dest / "vmond-backup.json").symlink_to(outside / "secret.txt")
        (dest / "vmond.db").symlink_to(outside / "victim.db")
        return copy_media(*args)

    monkeypatch.setattr(vmond.ops.backup, "_copy_media", planting)
    manifest = backup(data, dest)
    assert (outside / "secret.txt").read_bytes() == SECRET and not (outside / "victim.db").exists()
    assert not (dest / "vmond-backup.json").is_symlink() and not (dest / "vmond.db").is_symlink()
    assert json.loads((dest / "vmond-backup.json").read_text()) == manifest
    assert sorted(os.listdir(dest)) == ["media", "spool", "vmond-backup.json", "vmond.db"]


def test_a_planted_directory_link_stops_the_backup_without_writing_through_it(
        tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vmond.ops.backup

    data = make_data_dir(tmp_path / "data")
    dest = tmp_path / "dest"
    copy_media = vmond.ops.backup._copy_media

    def planting(*args: object) -> int:
        (dest / "media").symlink_to(outside, target_is_directory=True)
        return copy_media(*args)

    monkeypatch.setattr(vmond.ops.backup, "_copy_media", planting)
    with pytest.raises(BackupError, match="could not put the backup into"):
        backup(data, dest)
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert not [name for name in os.listdir(dest) if name.startswith(".vmond-backup")]  # no staging left


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_destination_others_may_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    data = make_data_dir(tmp_path / "data")
    dest = tmp_path / "shared"
    dest.mkdir()
    dest.chmod(mode)
    with pytest.raises(BackupError, match="may be written by other users"):
        backup(data, dest)
    assert os.listdir(dest) == []


def test_the_destination_is_held_while_its_name_moves(tmp_path: Path, outside: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import vmond.ops.backup

    data = make_data_dir(tmp_path / "data")
    dest = tmp_path / "dest"
    copy_media = vmond.ops.backup._copy_media

    def moving(*args: object) -> int:  # the directory is renamed and its name pointed elsewhere mid-backup
        dest.rename(tmp_path / "moved")
        dest.symlink_to(outside, target_is_directory=True)
        return copy_media(*args)

    monkeypatch.setattr(vmond.ops.backup, "_copy_media", moving)
    backup(data, dest)
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert sorted(os.listdir(tmp_path / "moved")) == ["media", "spool", "vmond-backup.json", "vmond.db"]


def test_an_interrupted_backup_leaves_no_obstacle(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data")
    dest = tmp_path / "dest"
    (dest / ".vmond-backup-k1ll3d" / "media").mkdir(parents=True)
    manifest = backup(data, dest)
    assert manifest["media_files"] == 2
    assert sorted(os.listdir(dest)) == ["media", "spool", "vmond-backup.json", "vmond.db"]


@pytest.mark.parametrize("path", ["2024", "2024/" + "x" * 300 + ".jpg"])
def test_a_path_that_is_no_file_is_refused_not_fatal(tmp_path: Path, path: str) -> None:
    data = make_data_dir(tmp_path / "data")
    add_media(data, path)
    manifest = backup(data, tmp_path / "dest")
    assert (manifest["media_files"], manifest["media_refused"]) == (2, 1)
    assert json.loads((tmp_path / "dest" / "vmond-backup.json").read_text())["media_refused"] == 1
