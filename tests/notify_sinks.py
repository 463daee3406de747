"""Where the notification tests' messages land: a local HTTP receiver (Apprise's ``json://`` posts to it) and a
local SMTP sink (``mailto://``), both on loopback, both recording what they got, in threads of their own so that a
test process and a ``vmond`` subprocess can reach them alike."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from helpers import free_port

REF = re.compile(r"Ref: (n-[0-9a-f]+)")


class HttpReceiver:
    """Records each JSON body posted to it; ``start()`` can come after vmond first tried (a receiver down, then
    up). ``status`` is what it answers."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[dict[str, Any]] = []  # every post
        self.delivered: list[dict[str, Any]] = []  # the posts it answered 200
        self.status = 200
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  # the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.status
                receiver.received.append(json.loads(body))
                if status == 200:
                    receiver.delivered.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def refs(self) -> list[str]:
        """The Ref of each message it took (answered 200), in order."""
        return [m.group(1) for item in self.delivered if (m := REF.search(item.get("message", "")))]


class SilentServer:
    """Accepts connections and never answers: a target that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.sock.close()


class SmtpSink:
    """An SMTP server that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                sink.messages.append((list(envelope.rcpt_tos), envelope.content.decode("utf-8", "replace")))
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=vmond@example.com&to=duty@example.com"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class TrickleServer:
    """An HTTP target that never finishes its answer: a status line, then one header byte a second, for ever
    (each socket read gets a byte in time, so a per-read timeout never fires). ``connections`` counts the sends
    it got, ``peak`` the most it held at once; ``close()`` lets them all go."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = self.peak = 0
        self._open = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with self._lock:
            self._open += 1
            self.peak = max(self.peak, self._open)
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self._stop.wait(1.0):
                conn.sendall(b"a")
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
