"""``vmond send-test``: a camera-like alarm mail with a snapshot, for installers and for trying ``make run``."""

from __future__ import annotations

import io
import smtplib
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from PIL import Image, ImageDraw

from vmond.config import Config


def snapshot_jpeg(text: str, size: tuple[int, int] = (1280, 720)) -> bytes:
    """A synthetic camera picture: a gradient with a caption, like a still from a night-time camera."""
    width, height = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height - 40, width, height), fill=(0, 0, 0))
    draw.text((12, height - 30), text, fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def build_test_mail(to: str, when: datetime | None = None) -> EmailMessage:
    when = when or datetime.now()
    message = EmailMessage()
    message["From"] = "vmond-send-test <camera@localhost>"
    message["To"] = to
    message["Subject"] = "Motion Detection alarm (vmond send-test)"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("send-test")
    message.set_content(f"EVENT TYPE: Motion Detection\nEVENT TIME: {when:%Y-%m-%d,%H:%M:%S}\n"
                        "CHANNEL NUMBER: 1\nSent by 'vmond send-test'.\n")
    message.add_attachment(snapshot_jpeg(f"vmond send-test {when:%Y-%m-%d %H:%M:%S}"), maintype="image",
                           subtype="jpeg", filename=f"snapshot-{when:%Y%m%d%H%M%S}.jpg")
    return message


def _first_camera(config: Config) -> str | None:
    for account in config.accounts:
        for camera in account.cameras:
            return f"{camera.smtp_address}@{config.smtp.domain}"
    return None


def send_test_mail(config: Config, to: str | None = None, server: str | None = None,
                   password: str | None = None) -> str:
    """Send one alarm mail the way a camera does (AUTH LOGIN over plain SMTP); returns the server's reply."""
    to = to or _first_camera(config)
    if to is None:
        raise SystemExit("no camera in the configuration: give --to ADDRESS")
    if server:
        host, _, port_text = server.rpartition(":")
        port = int(port_text)
    else:
        host, port = config.smtp.listen
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    with smtplib.SMTP(host.strip("[]"), port, timeout=30) as smtp:
        smtp.ehlo("vmond-send-test")
        if config.smtp.auth != "off":
            smtp.login(to, password or "any")
        refused = smtp.send_message(build_test_mail(to))
        if refused:
            raise SystemExit(f"refused: {refused}")
        code, text = smtp.noop()
    return f"sent a test alarm to {to} via {host}:{port}"
