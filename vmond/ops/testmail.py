"""``vmond send-test``: a camera's mail with a snapshot, sent the way the camera sends it, for installers and
``make run``.

It logs in as the camera (login name: the camera's full address; password: ``--password``, else the camera's
``smtp_password`` from the configuration) and, by default, sends the camera's *test mail*, like the "send test
mail" button of a camera's setup page: marked with :data:`SEND_TEST_HEADER`, it sets the camera's "test mail
received" and stays off the guards' wall. ``alarm=True`` sends an ordinary alarm instead, which the wall shows.

Every failure is a :class:`SendTestError` whose text is one line: what went wrong and what to do about it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import smtplib
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from PIL import Image, ImageDraw

from vmond.config import Config, HostPort, parse_hostport
from vmond.ingest.vendors import SEND_TEST_HEADER, SEND_TEST_VALUE
from vmond.ops.endpoints import first_camera, local_address, smtp_address

TIMEOUT = 30.0  # seconds for the connection and each reply
SENDER = "send-test@vmond.invalid"


class SendTestError(Exception):
    """Sending failed; the message is one line for the installer."""


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


def build_test_mail(to: str, when: datetime | None = None, alarm: bool = True) -> EmailMessage:
    """The mail: a Hikvision-style motion alarm with a snapshot, or (``alarm=False``) the camera's test mail."""
    when = when or datetime.now()
    message = EmailMessage()
    message["From"] = "vmond-send-test <camera@localhost>"
    message["To"] = to
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("send-test")
    if alarm:
        message["Subject"] = "Motion Detection alarm (vmond send-test)"
        message.set_content(f"EVENT TYPE: Motion Detection\nEVENT TIME: {when:%Y-%m-%d,%H:%M:%S}\n"
                            "CHANNEL NUMBER: 1\nSent by 'vmond send-test --alarm'.\n")
    else:
        message[SEND_TEST_HEADER] = SEND_TEST_VALUE
        message["Subject"] = "Test mail from vmond send-test"
        message.set_content(f"Test mail for {to}, sent by 'vmond send-test' the way the camera sends its "
                            f"alarms, at {when:%Y-%m-%d %H:%M:%S}.\n")
    message.add_attachment(snapshot_jpeg(f"vmond send-test {when:%Y-%m-%d %H:%M:%S}"), maintype="image",
                           subtype="jpeg", filename=f"snapshot-{when:%Y%m%d%H%M%S}.jpg")
    return message


def recipient(config: Config, to: str | None) -> str:
    """The camera's full address: *to* (a bare local part gets ``smtp.domain``) or the first declared camera."""
    if to is None or not to.strip():
        address = first_camera(config)
        if address is None:
            raise SendTestError(f"no camera in {config.source}: give --to ADDRESS (a camera's address, as the "
                                "dashboard's Cameras page shows it)")
        return address
    to = to.strip()
    return to if "@" in to else f"{to}@{config.smtp.domain}"


def camera_password(config: Config, address: str) -> str | None:
    """The ``smtp_password`` the configuration declares for the camera at *address*, if any."""
    local, _, domain = address.rpartition("@")
    found = config.find_camera(local) if domain.lower() == config.smtp.domain else None
    if found is None or found[1].smtp_password is None:
        return None
    return found[1].smtp_password.reveal()


def _server(config: Config, server: str | None) -> HostPort:
    if server is None:
        return smtp_address(config)
    try:
        return local_address(parse_hostport(server))
    except ValueError as exc:
        raise SendTestError(f"--server {server!r}: {exc}") from None


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


class _Session:
    """One SMTP session of the test, each step turning an unexpected reply into a :class:`SendTestError`."""

    def __init__(self, smtp: smtplib.SMTP, server: HostPort, config: Config, address: str) -> None:
        self.smtp, self.server, self.config, self.address = smtp, server, config, address

    def expect(self, reply: tuple[int, bytes], wanted: int, step: str, advice: str = "") -> None:
        code, text = reply
        if code == wanted:
            return
        if 400 <= code < 500 and not advice:
            advice = "a temporary refusal: try again in a moment"
        advice = f": {advice}" if advice else ""
        raise SendTestError(f"{step}: {self.server} answered {code} {_text(text)}{advice}")

    def login(self, password: str) -> None:
        """AUTH LOGIN as the camera, the way camera firmware does it (also over plain TCP)."""
        self.expect(self.smtp.docmd("AUTH", "LOGIN"), 334, "AUTH")
        self.expect(self.smtp.docmd(_b64(self.address)), 334, "AUTH")
        self.expect(self.smtp.docmd(_b64(password)), 235, f"login as {self.address}",
                    "wrong password for this camera, or no such camera: check --to, and --password or the "
                    f"camera's smtp_password in {self.config.source}")

    def rcpt(self) -> None:
        code, text = self.smtp.rcpt(self.address)
        if code == 250:
            return
        advice = ""
        if code == 550 and b"5.1.1" in text:
            domain = self.address.rpartition("@")[2].lower()
            advice = ("check --to or the camera list (the dashboard's Cameras page)"
                      if domain == self.config.smtp.domain else
                      f"the domain is not smtp.domain ({self.config.smtp.domain}): check --to")
        elif code == 530:
            advice = f"the server wants the camera to log in: is smtp.auth the same as in {self.config.source}?"
        self.expect((code, text), 250, f"RCPT TO:<{self.address}>", advice)


def send_test_mail(config: Config, to: str | None = None, server: str | None = None,
                   password: str | None = None, alarm: bool = False, timeout: float = TIMEOUT) -> str:
    """Send one mail as the camera at *to*; returns a one-line report, raises :class:`SendTestError`."""
    address = recipient(config, to)
    endpoint = _server(config, server)
    password = password if password is not None else camera_password(config, address)
    if config.smtp.auth == "per-camera" and password is None:
        raise SendTestError(f"no SMTP password for {address}: smtp.auth is per-camera and {config.source} declares "
                            "none for it (a camera added in the dashboard keeps only a hash of its password): "
                            "give it with --password")
    message = build_test_mail(address, alarm=alarm).as_bytes()
    smtp = smtplib.SMTP(timeout=timeout)
    try:
        session = _Session(smtp, endpoint, config, address)
        session.expect(smtp.connect(endpoint.host, endpoint.port), 220, "connect")
        session.expect(smtp.ehlo("vmond-send-test"), 250, "EHLO")
        if smtp.has_extn("auth"):
            session.login(password if password is not None else "send-test")
        elif config.smtp.auth == "per-camera":
            raise SendTestError(f"{endpoint} offers no AUTH, so the camera cannot log in: is smtp.auth "
                                f"per-camera there, as in {config.source}?")
        session.expect(smtp.mail(SENDER), 250, "MAIL FROM")
        session.rcpt()
        session.expect(smtp.data(message), 250, "DATA")
        with contextlib.suppress(OSError):  # the mail is delivered: how the goodbye goes does not matter
            smtp.quit()
    except SendTestError:
        raise
    except smtplib.SMTPDataError as exc:
        raise SendTestError(f"DATA: {endpoint} answered {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except smtplib.SMTPServerDisconnected:
        raise SendTestError(f"{endpoint} closed the connection: is it vmond's SMTP port (smtp.listen)?") from None
    except ConnectionRefusedError:
        raise SendTestError(f"cannot connect to {endpoint}: connection refused: is vmond running? "
                            f"(it listens on smtp.listen of {config.source}; or give --server HOST:PORT)") from None
    except TimeoutError:
        raise SendTestError(f"{endpoint} did not answer within {timeout:g} s: is vmond running there?") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SendTestError(f"cannot send to {endpoint}: {exc}") from None
    finally:
        smtp.close()
    if alarm:
        return f"sent an alarm to {address} via {endpoint}: it shows on the wall"
    return (f"sent the camera's test mail to {address} via {endpoint}: its camera page shows \"test mail "
            "received\" (test mails stay off the wall; --alarm sends an alarm)")
