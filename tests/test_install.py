"""``pip install .`` into a fresh virtualenv gives a ``vmond`` that finds its templates and static files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import write_config
from daemon_process import Notifications

pytestmark = pytest.mark.slow

TREE = Path(__file__).resolve().parents[1]


def test_installed_vmond_serves_the_dashboard(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build would leave build/ behind in the working tree.
    source = tmp_path / "source"
    shutil.copytree(TREE, source, ignore=shutil.ignore_patterns(".git", ".venv", "var", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", ".ruff_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(source)], check=True,
                   stdout=subprocess.DEVNULL)
    config = write_config(tmp_path)
    notify = Notifications(tmp_path / "notify.sock")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VMOND_WEB_DIR")}
    process = subprocess.Popen([str(venv / "bin" / "vmond"), "run", "--config", str(config)], cwd=tmp_path,
                               env={**env, "NOTIFY_SOCKET": str(notify.path)})
    try:
        ready = notify.wait_for("READY=1")
        web_port = int(ready.rsplit("dashboard on port ", 1)[1].split(",")[0])
        base = f"http://127.0.0.1:{web_port}"
        with urllib.request.urlopen(f"{base}/setup", timeout=10) as response:
            assert response.status == 200 and b'name="password"' in response.read()
        for asset in ("app.css", "wall.js", "favicon.svg"):
            with urllib.request.urlopen(f"{base}/static/{asset}", timeout=10) as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        notify.close()
    # The installed package is not the tree: it must have found its own copy of the web files.
    installed = subprocess.run([str(venv / "bin" / "python"), "-c",
                                "from vmond.web.paths import find_web_paths; print(find_web_paths().templates)"],
                               capture_output=True, text=True, check=True, cwd=tmp_path, env=env).stdout.strip()
    assert installed.startswith(str(venv)), installed
