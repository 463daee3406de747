"""A line-level SMTP client on a raw socket, for what smtplib will not send (blocking: run it in a thread when the
server shares the test's loop)."""

from __future__ import annotations

import socket


class RawSession:
    def __init__(self, port: int, timeout: float = 20.0, source: str | None = None) -> None:
        """*source*: the local address to connect from (any 127.x.y.z is a distinct client on Linux)."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode("utf-8", "replace")
            if not line:
                raise ConnectionError("closed: " + "".join(lines))
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()
