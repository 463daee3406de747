"""paho-mqtt behind a small interface: one broker connection with its own network thread.

paho runs its network loop on a thread of its own (``connect_async`` + ``loop_start``) and reconnects with
backoff by itself. Its callbacks arrive on that thread; :class:`Link` hands each of them to the asyncio loop with
``call_soon_threadsafe`` and nothing else, so the listener's methods always run on the loop thread.

paho keeps every QoS 1 message it was handed until the broker's PUBACK, and after a reconnect sends those again,
in the order they were handed to it, before anything newer: the forwarder relies on that (and on nothing else
of paho's bookkeeping) for in-order, at-least-once delivery within one connection's lifetime.

The same code runs on paho-mqtt 1.6 (Debian 12) and 2.x: 2.x wants ``CallbackAPIVersion`` and calls the
version-2 callback signatures; 1.6 has no such thing and calls the old ones. The shim is the few lines below.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from vmond.config import MqttConfig, MqttTlsConfig

log = logging.getLogger(__name__)
paho_log = logging.getLogger("vmond.mqtt.paho")


def _not_noise(record: logging.LogRecord) -> bool:
    # paho 2.2 logs this at ERROR on every reconnect attempt while the broker is away; the forwarder says it once.
    return not str(record.msg).startswith("Client is not connected")


paho_log.addFilter(_not_noise)

PAHO2 = hasattr(mqtt, "CallbackAPIVersion")
CANNOT_CONNECT = "cannot connect"  # what paho's on_connect_fail tells (it says no more); see diagnose()
RECONNECT_DELAY = (1, 30)  # seconds: paho doubles the wait after each failed attempt, up to the maximum


def paho_client(client_id: str, clean_session: bool = True, manual_ack: bool = False) -> mqtt.Client:
    """A paho client for MQTT 3.1.1 with the version-2 callback API on paho 2.x (1.6 only has the old one).

    *manual_ack* (paho 2.x only; 1.6 always acknowledges when ``on_message`` returns): the caller acknowledges
    each QoS 1 message with ``client.ack(mid, qos)``."""
    if PAHO2:
        # paho 2 defines it in paho.mqtt.enums, a module 1.6 lacks; its client module imports it (not re-exported).
        version = mqtt.CallbackAPIVersion.VERSION2  # type: ignore[attr-defined]
        return mqtt.Client(version, client_id=client_id, clean_session=clean_session,
                           protocol=mqtt.MQTTv311, manual_ack=manual_ack)
    return mqtt.Client(client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311)


def session_client(settings: LinkSettings, on_connect: Callable[..., None], on_message: Callable[..., None], *,
                   on_disconnect: Callable[..., None] | None = None, manual_ack: bool = False,
                   clean_session: bool = False) -> mqtt.Client:
    """A started subscriber on a persistent session (clean session off, *settings*' fixed client id): what the
    broker queued for it while it was away arrives when it is back. Stop it with :func:`stop_client`."""
    client = paho_client(settings.client_id, clean_session=clean_session, manual_ack=manual_ack)
    client.enable_logger(logging.getLogger("vmond.mqtt.paho"))
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls is not None:
        client.tls_set_context(settings.tls)
    client.reconnect_delay_set(*RECONNECT_DELAY)
    client.on_connect = on_connect
    client.on_message = on_message
    if on_disconnect is not None:
        client.on_disconnect = on_disconnect
    client.connect_async(settings.host, settings.port, keepalive=settings.keepalive)
    client.loop_start()
    return client


def stop_client(client: mqtt.Client) -> None:
    """Disconnect and join paho's thread (blocking: not on the event loop)."""
    client.disconnect()
    client.loop_stop()


def erase_session(settings: LinkSettings, timeout: float = 10.0) -> bool:
    """Connect once with *settings*' client id and clean session on, then disconnect: the broker discards the
    session of that id (its subscriptions and whatever it still queued). Blocking; returns whether it did."""
    connected = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        if connected_ok(rc):
            connected.set()

    client = paho_client(settings.client_id, clean_session=True)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls is not None:
        client.tls_set_context(settings.tls)
    client.on_connect = on_connect
    client.connect_async(settings.host, settings.port, keepalive=settings.keepalive)
    client.loop_start()
    try:
        return connected.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def connected_ok(rc: Any) -> bool:
    """Whether ``on_connect``'s result (1.6: an int; 2.x: a ReasonCode) says the connection was accepted."""
    return not (bool(rc.is_failure) if hasattr(rc, "is_failure") else rc != 0)


def _reason(code: Any, connack: bool = False) -> str:
    """A paho result as text: on 1.6 an int (a CONNACK code in on_connect, an error number elsewhere), on 2.x
    a ReasonCode that says itself."""
    if isinstance(code, int) and not isinstance(code, bool):
        return mqtt.connack_string(code) if connack else mqtt.error_string(code)
    return str(code)


def _failed(code: Any) -> bool:
    return bool(code.is_failure) if hasattr(code, "is_failure") else code != 0


def tls_context(tls: MqttTlsConfig) -> ssl.SSLContext:
    """The client's TLS context: the CA file (or the system's CAs), an optional client certificate, and only
    with the explicit ``insecure`` flag no checks of the server's certificate and name."""
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.certificate is not None:
        context.load_cert_chain(str(tls.certificate), str(tls.key) if tls.key else None)
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class LinkSettings:
    """Everything needed to reach the broker, with files (password, certificates) already read."""

    host: str
    port: int
    client_id: str
    keepalive: int
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_config(cls, mqtt_config: MqttConfig) -> LinkSettings:
        """Blocking (reads the password file and the certificates): call it off the event loop."""
        password = mqtt_config.read_password()
        return cls(host=mqtt_config.host, port=mqtt_config.port, client_id=mqtt_config.client_id,
                   keepalive=max(1, round(mqtt_config.keepalive)), username=mqtt_config.username,
                   password=None if password is None else password.reveal(),
                   tls=tls_context(mqtt_config.tls) if mqtt_config.tls.enabled else None)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class LinkListener(Protocol):
    """What a :class:`Link` reports; every method is called on the event loop thread."""

    def link_connected(self) -> None: ...

    def link_failed(self, reason: str) -> None: ...  # a connection attempt failed (unreachable, refused, TLS)

    def link_lost(self, reason: str) -> None: ...

    def link_published(self, mid: int) -> None: ...  # the broker acknowledged message *mid*

    def link_message(self, topic: str, payload: bytes) -> None: ...


class LinkError(Exception):
    """paho refused a message outright (bad topic, payload too large, queue full)."""


class Link:
    """One paho client: connect in the background, publish, subscribe, report back on the loop."""

    def __init__(self, settings: LinkSettings, listener: LinkListener, loop: asyncio.AbstractEventLoop, *,
                 will: tuple[str, bytes], max_inflight: int,
                 reconnect_delay: tuple[float, float] = RECONNECT_DELAY
                 ) -> None:
        self.settings = settings
        self._listener = listener
        self._loop = loop
        self._will_topic = will[0]
        client = self._client = paho_client(settings.client_id)
        client.enable_logger(paho_log)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            client.tls_set_context(settings.tls)
        client.will_set(will[0], will[1], qos=1, retain=True)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)  # unbounded: the forwarder's window is the bound, and nothing may drop
        client.reconnect_delay_set(*reconnect_delay)  # type: ignore[arg-type]  # paho says int; seconds work as float
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message

    # -- paho's thread -> the loop ---------------------------------------------------------------------------

    def _to_loop(self, method: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(method, *args)
        except RuntimeError:  # the loop is closed: the daemon is gone, nobody to tell
            pass

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        if _failed(rc):
            self._to_loop(self._listener.link_failed, f"broker refused the connection: {_reason(rc, connack=True)}")
        else:
            self._to_loop(self._listener.link_connected)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._to_loop(self._listener.link_failed, CANNOT_CONNECT)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, *args: Any) -> None:
        # 1.6: (rc); 2.x: (disconnect_flags, reason_code, properties)
        rc = args[0] if not PAHO2 else args[1]
        self._to_loop(self._listener.link_lost, _reason(rc))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *args: Any) -> None:
        self._to_loop(self._listener.link_published, mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._to_loop(self._listener.link_message, message.topic, bytes(message.payload))

    # -- the loop's side -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; does not block (paho's thread resolves, connects and retries)."""
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Hand a message to paho (queued there until acknowledged, also while disconnected); returns its mid."""
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:
            raise LinkError(str(exc)) from exc
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise LinkError(_reason(info.rc))
        return info.mid

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._client.subscribe(topic, qos)

    def stop(self, last_words: bytes | None, timeout: float) -> None:
        """Blocking, call it on a thread: publish *last_words* on the will topic (retained) if connected and wait
        up to *timeout* for the broker to take it, then disconnect cleanly (no last will) and end the thread."""
        if last_words is not None and self._client.is_connected():
            try:
                self._client.publish(self._will_topic, last_words, qos=1, retain=True).wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.debug("mqtt: could not publish %r before stopping: %s", last_words, exc)
        self._client.disconnect()
        self._client.loop_stop()


def diagnose(settings: LinkSettings, timeout: float = 5.0) -> str:
    """Why connecting fails, in words (paho does not say): try TCP and the TLS handshake ourselves. Blocking."""
    try:
        with socket.create_connection((settings.host, settings.port), timeout=timeout) as sock:
            if settings.tls is not None:
                with settings.tls.wrap_socket(sock, server_hostname=settings.host):
                    pass
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: certificate verify failed: {exc.verify_message or exc}"
    except ssl.SSLError as exc:
        return f"TLS: {exc.reason or exc}"
    except OSError as exc:
        return exc.strerror or str(exc)
    return "connection closed by the broker"
