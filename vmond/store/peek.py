"""A look into the daemon's database without the daemon: read-only, for ``vmond check-config``.

Opened with SQLite's ``mode=ro``: nothing is created, migrated or locked for writing, and a running daemon is not
disturbed. Raises :class:`sqlite3.Error` when the database cannot be read (absent tables included).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote


def cameras_without_password(path: Path) -> list[tuple[str, str]]:
    """(name, local part) of the active cameras created in the dashboard that have no SMTP password."""
    connection = sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True, timeout=5)
    try:
        rows = connection.execute(
            "SELECT name, smtp_local_part FROM camera WHERE active AND NOT from_config "
            "AND smtp_password_hash IS NULL ORDER BY name, smtp_local_part").fetchall()
    finally:
        connection.close()
    return [(str(name), str(local_part)) for name, local_part in rows]
