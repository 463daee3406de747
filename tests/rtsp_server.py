"""A real RTSP camera for the live-view tests: GStreamer's RTSP server with basic auth on loopback.

Run with Debian's Python (the venv cannot import Debian's ``gi``)::

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --user U --password W

Mounts (all need the user and password):

- ``/stream``: H.264 640x360, 10 fps, a keyframe every second (a moving ball, so frames differ)
- ``/slowgop``: the same with a keyframe every 5 seconds (cameras with "smart" codecs)
- ``/split``: the same with the parameter sets repeated in-band; with x264's sliced threads the payloader then
  marks a keyframe's end early, and FFmpeg hands it over in two packets (vmond must put them together)
- ``/nocodec``: a stream FFmpeg has no decoder for (GStreamer's own RTP payload), as an unsupported camera

It prints one JSON object per line on stdout, flushed, for the test to read: ``{"event": "ready", "port": P}``
once listening, then ``client-connected`` / ``client-closed`` (TCP connections, each with an ``id``),
``session`` (an RTSP SETUP created a session) and ``teardown`` (the client said TEARDOWN). It runs until stdin
closes or it gets SIGTERM, so it never outlives the test that started it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

H264 = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=10/1 "
        "! x264enc tune=zerolatency key-int-max={gop} ! rtph264pay name=pay0 pt=96{extra} )")
MOUNTS = {
    "/stream": H264.format(gop=10, extra=""),
    "/slowgop": H264.format(gop=50, extra=""),
    "/split": H264.format(gop=10, extra=" config-interval=-1"),
    "/nocodec": ("( videotestsrc is-live=true ! video/x-raw,width=160,height=90,framerate=5/1 "
                 "! rtpgstpay name=pay0 pt=96 )"),
}
ROLE = "camera-user"

_ids = itertools.count(1)
_emitting = threading.Lock()  # GStreamer calls back from several threads: one line at a time


def emit(event: str, **fields: object) -> None:
    with _emitting:
        print(json.dumps({"event": event, **fields}), flush=True)


def _client_connected(_server: Any, client: Any) -> None:
    client_id = next(_ids)
    emit("client-connected", id=client_id)
    client.connect("closed", lambda _client: emit("client-closed", id=client_id))
    client.connect("new-session", lambda _client, _session: emit("session", id=client_id))
    client.connect("teardown-request", lambda _client, _context: emit("teardown", id=client_id))


def build_server(port: int, user: str, password: str) -> Any:
    from gi.repository import GstRtspServer

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    permissions.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    mounts = server.get_mount_points()
    for path, launch in MOUNTS.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)  # one encoder for every client, as a camera has
        factory.set_permissions(permissions)
        mounts.add_factory(path, factory)
    server.connect("client-connected", _client_connected)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed in the ready line)")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst

    Gst.init(None)
    server = build_server(args.port, args.user, args.password)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    emit("ready", port=server.get_bound_port())
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: loop.quit() or False)

    def watch_stdin() -> None:
        sys.stdin.read()  # returns when the test's end of the pipe closes (the test ended or died)
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_stdin, daemon=True).start()
    loop.run()


# --- the tests' side (the venv's Python: no gi here) -----------------------------------------------------------


class RtspCamera:
    """The server as a process the tests start and watch: its URLs, and the connections it has seen."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.port = 0
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> RtspCamera:
        self._process = subprocess.Popen(
            ["/usr/bin/python3", str(Path(__file__).resolve()), "--port", "0", "--user", self.user,
             "--password", self.password],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._collect, daemon=True).start()
        ready = self.wait_for(lambda: any(e["event"] == "ready" for e in self.events), timeout)
        if not ready:
            self.stop()
            raise RuntimeError("the RTSP test server did not start (GStreamer packages missing? see TEST_DEBS)")
        self.port = next(e["port"] for e in self.events if e["event"] == "ready")
        return self

    def _collect(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not ours (GStreamer printing something): the events are what counts
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def count(self, event: str) -> int:
        with self._changed:
            return sum(1 for e in self.events if e["event"] == event)

    @property
    def open_clients(self) -> int:
        return self.count("client-connected") - self.count("client-closed")

    def url(self, path: str = "/stream", user: str | None = None, password: str | None = None) -> str:
        user = self.user if user is None else user
        password = self.password if password is None else password
        return f"rtsp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()


if __name__ == "__main__":
    main()
