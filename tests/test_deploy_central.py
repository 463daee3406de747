"""deploy/central/ as shipped: the systemd template unit, the nodes' configurations, `nginx -t` and `haproxy -c` on
the balancers' files (test_deploy_balancer runs them in front of two real central nodes), the broker files, the
database's set-up, and the compose file, which names the same files, ports and machines as the systemd example (no
container runs here: the file is checked as YAML and by Debian's docker-compose, which validates it without a
daemon)."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from centralsite import DEPLOY
from helpers import free_port
from mosquitto import TlsFiles, make_tls_files
from postgres import PostgresCluster
from proxies import HAPROXY, NODES, NODES_NAME, PUBLIC_NAME, Proxy, haproxy_sections, require, warnings_of
from test_central_acl import Client, ReadmeBroker, connect, readme_block
from test_packaging import MAX_EXPOSURE, UNIT, parse_unit, systemd_analyze

TEMPLATE = DEPLOY / "vmond-central@.service"
COMPOSE = DEPLOY / "compose.yaml"
DOCKER_COMPOSE = "/usr/bin/docker-compose"
# What the central's unit leaves out of vmond.service's sandbox, and why: no camera mail, no clip encoder.
NOT_ON_A_CENTRAL = {"DeviceAllow", "SupplementaryGroups", "PrivateDevices"}


# ---------------------------------------------------------------------------------------------------------------
# The systemd unit


def instance_unit(folder: Path) -> Path:
    """The template as the instance ``vmond-central@a.service``, with a stand-in for /usr/bin/vmond (verify
    checks that ExecStart's program exists)."""
    stub = folder / "vmond"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = folder / "vmond-central@a.service"
    unit.write_text(TEMPLATE.read_text().replace("/usr/bin/vmond ", f"{stub} "))
    return unit


def test_template_unit_verifies(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    result = subprocess.run([analyze, "verify", "--man=no", str(instance_unit(tmp_path))], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr


def test_template_unit_is_as_sandboxed_as_the_appliance(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    result = subprocess.run([analyze, "security", "--offline=yes", str(instance_unit(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for vmond-central@a\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout


def test_template_unit_runs_the_instances_configuration() -> None:
    unit = parse_unit(TEMPLATE)
    service = dict(unit["Service"])
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/usr/bin/vmond run --config /etc/vmond/central-%i.yaml"
    assert service["ExecStartPre"] == "/usr/bin/vmond check-config --config /etc/vmond/central-%i.yaml"
    assert service["StateDirectory"] == "vmond/central-%i"
    # the shipped node configurations keep their data where the instance's StateDirectory is
    for name in ("a", "b"):
        node = yaml.safe_load((DEPLOY / f"central-{name}.yaml").read_text())
        assert node["storage"]["data_dir"] == f"/var/lib/vmond/central-{name}"
    # every hardening line of the appliance's unit, but for the video devices a central does not use
    appliance = parse_unit(UNIT)["Service"]
    central = unit["Service"]
    for key, value in appliance:
        if key in NOT_ON_A_CENTRAL or key in ("ExecStart", "ExecStartPre", "StateDirectory", "WorkingDirectory"):
            continue
        assert (key, value) in central, f"{key}={value} of vmond.service is not in the template"
    assert ("PrivateDevices", "yes") in central


# ---------------------------------------------------------------------------------------------------------------
# The nodes' configurations


def test_the_nodes_differ_only_in_their_own_lines() -> None:
    a = (DEPLOY / "central-a.yaml").read_text().splitlines()
    b = (DEPLOY / "central-b.yaml").read_text().splitlines()
    differing = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    assert all(x.startswith("#") or "central-a" in x for x, _ in differing), differing
    assert [y.replace("central-b", "central-a").replace('node "b"', 'node "a"').replace("central-a.yaml differs",
                                                                                            "central-b.yaml differs")
            for _, y in differing] == [x for x, _ in differing]
    document = yaml.safe_load("\n".join(a))
    assert document["central"]["node"] == "central-a"
    assert document["storage"]["database"].startswith("postgresql://")
    assert ":" not in document["storage"]["database"].split("//", 1)[1].split("@", 1)[0]  # no password in it
    assert document["central"]["mqtt"]["share_group"]
    assert PUBLIC_NAME in document["web"]["allowed_hosts"]


# ---------------------------------------------------------------------------------------------------------------
# The balancers' files on Debian's nginx and HAProxy


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    """One CA; a certificate for 127.0.0.1 and the nodes' common name, used by both nodes and the balancer."""
    return make_tls_files(tmp_path / "tls", names=(NODES_NAME,))


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_balancer_configuration_checks(kind: str, tmp_path: Path, tls: TlsFiles) -> None:
    proxy = Proxy(kind, tmp_path / kind, (free_port(), free_port()), tls)
    result = proxy.check()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not warnings_of(output), output


def test_haproxy_sections_fit_debians_haproxy_cfg(tmp_path: Path, tls: TlsFiles) -> None:
    """Appended to Debian's own /etc/haproxy/haproxy.cfg, as the file says."""
    debian = Path("/etc/haproxy/haproxy.cfg")
    assert debian.is_file(), "Debian's haproxy package is not installed (make debs installs it)"
    tmp_path.mkdir(exist_ok=True)
    sections = tmp_path / "vmond-central.cfg"
    sections.write_text(haproxy_sections((free_port(), free_port()), free_port(), free_port(), tls, tmp_path))
    result = subprocess.run([HAPROXY, "-c", "-f", str(debian), "-f", str(sections)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and not warnings_of(result.stdout + result.stderr), result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------------
# The broker files and the compose file


def test_broker_files_are_the_readmes() -> None:
    """deploy/central/mosquitto holds the README's broker files, which test_central_acl runs on mosquitto."""
    assert (DEPLOY / "mosquitto" / "vmond.conf").read_text() == readme_block("# /etc/mosquitto/conf.d/vmond.conf")
    assert (DEPLOY / "mosquitto" / "vmond.acl").read_text() == readme_block("# /etc/mosquitto/vmond.acl")


@pytest.fixture
def readme_broker(tmp_path: Path) -> Iterator[ReadmeBroker]:
    broker = ReadmeBroker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


def test_nodes_share_the_sites_messages_through_the_readme_broker(readme_broker: ReadmeBroker) -> None:
    """Two nodes, both logged in as the central's one user, in one shared subscription group on the broker files
    as shipped: each site message reaches one of them, and both get their share."""
    clients: list[Client] = []
    try:
        nodes = [connect(readme_broker, clients, "central-1", f"node-{name}") for name in "ab"]
        group = yaml.safe_load((DEPLOY / "central-a.yaml").read_text())["central"]["mqtt"]["share_group"]
        for node in nodes:
            node.subscribe(f"$share/{group}/vmond/+/events")
        site = connect(readme_broker, clients, "site-a")
        for _ in range(20):
            site.publish("vmond/site-a/events")
        deadline = time.monotonic() + 10
        while sum(len(node.received) for node in nodes) < 20:
            assert time.monotonic() < deadline, [len(node.received) for node in nodes]
            time.sleep(0.02)
        site.publish("vmond/site-a/status")  # a marker: anything doubled would have come before it
        observer = connect(readme_broker, clients, "central-1", "observer")
        observer.subscribe("vmond/site-a/status")
        site.publish("vmond/site-a/status")
        observer.wait_for("vmond/site-a/status")
        assert sum(len(node.received) for node in nodes) == 20
        assert all(node.received for node in nodes), [len(node.received) for node in nodes]
    finally:
        for client in clients:
            client.close()


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's bind mounts: container path -> source, relative to deploy/central."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source[2:]
    return found


def test_compose_runs_the_same_files_as_the_systemd_example() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    aliases = {alias: name for name, service in services.items()
               if isinstance(service.get("networks"), dict)
               for network in service["networks"].values() if isinstance(network, dict)
               for alias in network.get("aliases", [])}
    # the balancer: the shipped site, in front of the two nodes under the names the site uses
    nginx = services["nginx"]
    assert mounts(nginx)["/etc/nginx/conf.d/default.conf"] == "nginx/vmond-central.conf"
    assert nginx["image"] == "nginx:1.22"  # Debian 12's nginx, on which the site is tested
    for node in NODES:
        assert aliases[node.split(":")[0]] in ("central-a", "central-b")
    site = (DEPLOY / "nginx" / "vmond-central.conf").read_text()
    for target in mounts(nginx):
        if target.startswith("/etc/nginx/vmond/"):
            assert target in site
    # the balancer has the address the nodes trust, in the nodes' network
    balancer = nginx["networks"]["backend"]["ipv4_address"]
    subnet = compose["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(balancer) in ipaddress.ip_network(subnet)
    for name in ("a", "b"):
        trusted = yaml.safe_load((DEPLOY / f"central-{name}.yaml").read_text())["web"]["trusted_proxies"]
        assert any(ipaddress.ip_address(balancer) in ipaddress.ip_network(network) for network in trusted)
    listens = sorted({int(port) for port in re.findall(r"listen (?:\[::\]:)?(\d+)", site)})
    assert sorted(int(port.split(":")[1]) for port in nginx["ports"]) == listens
    # the nodes: the shipped configuration, every file it names mounted where it names it
    for name in ("a", "b"):
        node = services[f"central-{name}"]
        config_path = f"/etc/vmond/central-{name}.yaml"
        assert node["command"] == ["run", "--config", config_path]
        files = mounts(node)
        assert files[config_path] == f"central-{name}.yaml"
        config = (DEPLOY / f"central-{name}.yaml").read_text()
        named = set(re.findall(r"(/etc/vmond/[\w./-]+)", config))
        assert named and named <= set(files), named - set(files)
        document = yaml.safe_load(config)
        assert aliases[document["central"]["mqtt"]["host"]] == "mosquitto"
        database_host = re.match(r"postgresql://[^@]+@([^:/]+)", document["storage"]["database"])
        assert database_host and aliases[database_host[1]] == "postgres"
        assert any(volume.endswith(":/var/lib/vmond") for volume in node["volumes"])
        assert document["storage"]["data_dir"].startswith("/var/lib/vmond/")
    # the broker: the shipped files where vmond.conf names them, on its port
    mosquitto = services["mosquitto"]
    broker_files = mounts(mosquitto)
    assert broker_files["/etc/mosquitto/conf.d/vmond.conf"] == "mosquitto/vmond.conf"
    assert broker_files["/etc/mosquitto/vmond.acl"] == "mosquitto/vmond.acl"
    conf = (DEPLOY / "mosquitto" / "vmond.conf").read_text()
    for path in re.findall(r"^\w+file (/\S+)$", conf, flags=re.M):
        assert path in broker_files, path
    listener = re.search(r"^listener (\d+)$", conf, flags=re.M)
    assert listener and mosquitto["ports"] == [f"{listener[1]}:{listener[1]}"]
    assert mosquitto["image"].startswith("eclipse-mosquitto:2")
    main = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert "include_dir /etc/mosquitto/conf.d" in main and "persistence true" in main
    # the database as the nodes' URL says: user and database vmond
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15")  # Debian 12's PostgreSQL
    assert postgres["environment"]["POSTGRES_USER"] == "vmond" == postgres["environment"]["POSTGRES_DB"]
    # every shipped file a service mounts is in the repository; secrets/ is made by the README's steps
    for service in services.values():
        for source in mounts(service).values():
            assert source.startswith("secrets/") or (DEPLOY / source).is_file(), source
    assert (DEPLOY / services["central-a"]["build"]["dockerfile"].removeprefix("deploy/central/")).is_file()


# ---------------------------------------------------------------------------------------------------------------
# The database's set-up script


def test_postgresql_setup_makes_the_role_and_database(postgres: PostgresCluster, tmp_path: Path) -> None:
    password_file = tmp_path / "vmond-database-password"
    env = {**os.environ, "PSQL": f"psql -h 127.0.0.1 -p {postgres.port} -U postgres", "VMOND_DB_ROLE": "deploy_role",
           "VMOND_DB": "deploy_db", "VMOND_DB_PASSWORD_FILE": str(password_file)}
    script = DEPLOY / "postgresql" / "setup.sh"
    try:
        result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        password = password_file.read_text().strip()
        assert len(password) == 48 and password_file.stat().st_mode & 0o777 == 0o600
        assert password not in result.stdout + result.stderr
        # the password is stored hashed (SCRAM), and the role owns the database and may make its tables there
        assert postgres.execute("SELECT rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid WHERE rolname = %s",
                                ("deploy_role",)) == [(True,)]
        assert postgres.execute("SELECT pg_get_userbyid(datdba), datcollate FROM pg_database "
                                "WHERE datname = 'deploy_db'") == [("deploy_role", "C.UTF-8")]
        connection = psycopg2.connect(host="127.0.0.1", port=postgres.port, user="deploy_role", dbname="deploy_db",
                                      password=password, connect_timeout=10)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute("CREATE TABLE probe (id BIGINT PRIMARY KEY)")
        finally:
            connection.close()
        # a second run keeps the password that may be in use
        again = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "exists already" in again.stderr
        assert password_file.read_text().strip() == password
    finally:
        postgres.execute('DROP DATABASE IF EXISTS "deploy_db" WITH (FORCE)')
        postgres.execute("DROP ROLE IF EXISTS deploy_role")


def test_compose_file_is_valid_for_docker_compose() -> None:
    """Docker's own parser checks the file (``config`` validates it against the Compose schema; no daemon)."""
    compose = require(DOCKER_COMPOSE, "docker-compose")
    result = subprocess.run([compose, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
