"""README's "Central station" chapter as written: its broker configuration (TLS, a user per site, per-site ACLs)
on a real mosquitto, where a site writes only its own topics and reads only its own commands and the central
reads every site and writes only commands; and its edge and central configurations, which vmond takes.

"Not delivered" is shown without waiting for nothing: the forbidden message is sent before an allowed one on the
same connection, and the broker hands a subscriber what it routes in the order it received it, so once the
allowed one has arrived, the forbidden one would have arrived first.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mosquitto import MOSQUITTO_PASSWD, Mosquitto, make_password_file, make_tls_files

from vmond.config import parse_config_text
from vmond.mqtt.client import paho_client

README = Path(__file__).resolve().parent.parent / "README.md"
PASSWORDS = {"central-1": "central secret 1", "site-a": "site a secret 1", "site-b": "site b secret 1"}
SITE_WRITES = ["available", "status", "config", "events", "alarms", "media/12", "media/12/thumbnail",
               "cameras/3/snapshot", "cameras/3/event", "commands/result"]


def chapter() -> str:
    text = README.read_text()
    return text[text.index("\n## Central station\n"):text.index("\n## Notifications\n")]


def readme_block(first_line: str) -> str:
    """The fenced block of README.md that starts with *first_line*."""
    for block in re.findall(r"^```[a-z]*\n(.*?)^```$", README.read_text(), flags=re.M | re.S):
        if block.startswith(first_line + "\n"):
            return block
    raise AssertionError(f"README.md has no block starting with {first_line!r}")


class ReadmeBroker(Mosquitto):
    """mosquitto on README's configuration: the paths and the port are the test's, the rest as written."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.tls = make_tls_files(directory / "tls")
        passwd = directory / "vmond.passwd"
        users = iter(PASSWORDS.items())
        make_password_file(passwd, *next(users))
        for user, password in users:
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True, capture_output=True)
        acl = directory / "vmond.acl"
        acl.write_text(readme_block("# /etc/mosquitto/vmond.acl"))
        conf = readme_block("# /etc/mosquitto/conf.d/vmond.conf")
        for written, here in (("/etc/mosquitto/certs/broker.pem", self.tls.server_cert),
                              ("/etc/mosquitto/certs/broker.key", self.tls.server_key),
                              ("/etc/mosquitto/vmond.passwd", passwd), ("/etc/mosquitto/vmond.acl", acl)):
            assert written in conf
            conf = conf.replace(written, str(here))
        assert "listener 8883\n" in conf
        self.readme_conf = conf.replace("listener 8883\n", f"listener {self.port} 127.0.0.1\n")

    def _config(self) -> str:
        # what Debian's /etc/mosquitto/mosquitto.conf adds, for a test: no persistence, a log, the test's own user
        plain = super()._config().splitlines()
        keep = [line for line in plain if line.split(" ", 1)[0] in ("user", "log_dest", "log_type",
                                                                    "connection_messages", "persistence")]
        return "\n".join(keep) + "\n" + self.readme_conf


class Client:
    """A paho client over TLS with a user name: subscribes (waiting for the SUBACK), publishes (waiting for the
    PUBACK), and collects what it receives in order."""

    def __init__(self, broker: ReadmeBroker, user: str | None, name: str, password: str | None = None) -> None:
        self.received: list[str] = []
        self._lock = threading.Lock()
        self._acks: dict[int, threading.Event] = {}
        self.granted: dict[int, Any] = {}
        self.connected = threading.Event()
        self.refused: Any = None
        self.client = paho_client(f"{name}-{id(self)}")
        self.client.tls_set_context(ssl.create_default_context(cafile=str(broker.tls.ca)))
        if user is not None:
            self.client.username_pw_set(user, PASSWORDS.get(user) if password is None else password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        failed = rc.is_failure if hasattr(rc, "is_failure") else rc != 0
        if failed:
            self.refused = rc
        self.connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, granted: Any, properties: Any = None) -> None:
        self.granted[mid] = granted
        self._acks.setdefault(mid, threading.Event()).set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.received.append(message.topic)

    def ready(self) -> Client:
        assert self.connected.wait(10), "no CONNACK"
        assert self.refused is None, f"refused: {self.refused}"
        return self

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            _, mid = self.client.subscribe(topic, qos=1)
            assert self._acks.setdefault(mid, threading.Event()).wait(10), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes = b"{}") -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def wait_for(self, topic: str, timeout: float = 10.0) -> list[str]:
        """What arrived up to and including *topic* (which must arrive)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if topic in self.received:
                    return self.received[:self.received.index(topic) + 1]
            time.sleep(0.02)
        raise AssertionError(f"{topic} did not arrive; received {self.received}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ReadmeBroker]:
    broker = ReadmeBroker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def clients(broker: ReadmeBroker) -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def connect(broker: ReadmeBroker, clients: list[Client], user: str, name: str | None = None) -> Client:
    client = Client(broker, user, name or user)
    clients.append(client)
    return client.ready()


def test_a_site_writes_its_own_topics_and_nothing_else(broker: ReadmeBroker, clients: list[Client]) -> None:
    central = connect(broker, clients, "central-1")
    central.subscribe("vmond/#")
    site = connect(broker, clients, "site-a")
    for forbidden in ("vmond/site-b/events", "vmond/site-b/config", "vmond/site-b/commands/result",
                      "vmond/site-a/commands", "vmond/central-1/commands", "vmond/site-a", "other/site-a/events"):
        site.publish(forbidden)
    for level in SITE_WRITES:  # what an edge publishes, the last one last
        site.publish(f"vmond/site-a/{level}")

    assert central.wait_for(f"vmond/site-a/{SITE_WRITES[-1]}") == [f"vmond/site-a/{level}" for level in SITE_WRITES]


def test_a_site_reads_only_its_own_commands(broker: ReadmeBroker, clients: list[Client]) -> None:
    site_a = connect(broker, clients, "site-a")
    site_a.subscribe("vmond/site-a/commands", "vmond/+/commands", "vmond/#")  # the broader ones may be refused
    site_b = connect(broker, clients, "site-b")
    site_b.subscribe("vmond/site-b/commands")
    central = connect(broker, clients, "central-1")

    site_b.publish("vmond/site-b/events")  # routed once acknowledged
    central.publish("vmond/site-b/commands")
    central.publish("vmond/site-a/commands")

    assert site_b.wait_for("vmond/site-b/commands") == ["vmond/site-b/commands"]
    assert site_a.wait_for("vmond/site-a/commands") == ["vmond/site-a/commands"]
    assert set(site_a.received) == {"vmond/site-a/commands"}  # the same command through more subscriptions at most


def test_the_central_reads_every_site_and_writes_only_commands(broker: ReadmeBroker, clients: list[Client]
                                                                ) -> None:
    observer = connect(broker, clients, "central-1", "observer")
    observer.subscribe("vmond/+/events", "vmond/+/config", "vmond/+/commands", "vmond/+/commands/result",
                       "vmond/+/available", "vmond/+/status")
    site_a = connect(broker, clients, "site-a")
    site_a.subscribe("vmond/site-a/commands")
    central = connect(broker, clients, "central-1")

    site_a.publish("vmond/site-a/events")
    assert observer.wait_for("vmond/site-a/events") == ["vmond/site-a/events"]  # reads a site's events
    for forged in ("vmond/site-a/events", "vmond/site-a/config", "vmond/site-a/commands/result",
                   "vmond/site-a/available"):
        central.publish(forged)
    central.publish("vmond/site-a/commands")
    # its own link, as any vmond's forwarder publishes it (user name = its site.id, as for the sites)
    central.publish("vmond/central-1/available")
    central.publish("vmond/central-1/status")

    assert observer.wait_for("vmond/central-1/status") == [
        "vmond/site-a/events", "vmond/site-a/commands", "vmond/central-1/available", "vmond/central-1/status"]
    assert site_a.wait_for("vmond/site-a/commands") == ["vmond/site-a/commands"]


@pytest.mark.parametrize("user, password", [(None, None), ("site-a", "a wrong password")])
def test_without_the_password_nobody_connects(broker: ReadmeBroker, clients: list[Client], user: str | None,
                                              password: str | None) -> None:
    client = Client(broker, user, "stranger", password)
    clients.append(client)
    assert client.connected.wait(10), "no CONNACK"
    assert client.refused is not None


def section(title: str) -> str:
    """The README's section *title* (a ``###`` heading of the chapter), up to the next heading."""
    text = chapter()
    start = text.index(f"\n### {title}\n")
    ends = [i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i != -1]
    return text[start:min(ends, default=len(text))]


def test_the_chapter_configures_an_edge_and_a_central() -> None:
    edge, central = (parse_config_text(block, "README.md", check_files=False)
                     for title in ("An edge for a central", "A central")
                     for block in re.findall(r"^```yaml\n(.*?)^```$", section(title), flags=re.M | re.S))
    assert edge.mqtt.enabled and edge.mqtt.commands and edge.mqtt.publish_media == "thumbnails"
    assert edge.mqtt.username == edge.site.id  # what the ACL's %u patterns rely on
    assert not edge.central.enabled
    assert central.central.enabled and [site.id for site in central.central.sites] == ["site-a", "site-b"]
    assert central.central.mqtt.username == central.site.id
    assert "user " + central.site.id in readme_block("# /etc/mosquitto/vmond.acl").splitlines()
