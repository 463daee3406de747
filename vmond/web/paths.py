"""Where the dashboard's templates and static files are: in the source tree, or where an install put them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple


class WebPaths(NamedTuple):
    templates: Path
    static: Path


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    found = []
    if env := os.environ.get("VMOND_WEB_DIR"):
        found.append(Path(env))
    found.append(here.parents[2] / "web")  # the source tree: vmond/web/paths.py -> <tree>/web
    # pip puts data_files under the environment's prefix; the Debian package under /usr/share.
    found += [Path(sys.prefix) / "share/vmond/web", Path("/usr/local/share/vmond/web"), Path("/usr/share/vmond/web")]
    return found


def find_web_paths() -> WebPaths:
    for base in _candidates():
        if (base / "templates" / "base.html").is_file() and (base / "static").is_dir():
            return WebPaths(base / "templates", base / "static")
    tried = ", ".join(str(p) for p in _candidates())
    raise FileNotFoundError(f"the dashboard's templates were not found (looked in {tried}; set VMOND_WEB_DIR)")
