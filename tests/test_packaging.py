"""The systemd unit and the Debian packaging agree with the code: fast checks, no package build.

(`.ci/package` builds, lints, installs and runs the package end to end.)
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import vmond
from vmond.cli import build_parser
from vmond.config import load_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "vmond.service"
PORT_25 = ROOT / "systemd" / "port-25.conf"
DEBIAN = ROOT / "debian"
CONFIG = "/etc/vmond/vmond.yaml"
MAX_EXPOSURE = 2.0

# PyPI name (lower case) -> the Debian package that provides it. A new entry in setup.cfg's install_requires
# fails test_control_depends_on_every_runtime_requirement until it is added here and to debian/control.
PYPI_TO_DEBIAN = {
    "aiohttp": "python3-aiohttp",
    "aiohttp-jinja2": "python3-aiohttp-jinja2",
    "aiosmtpd": "python3-aiosmtpd",
    "apprise": "apprise",  # Debian ships the module in the package of the command
    "av": "python3-av",
    "jinja2": "python3-jinja2",
    "paho-mqtt": "python3-paho-mqtt",
    "peewee": "python3-peewee",
    "pillow": "python3-pil",
    "pyyaml": "python3-yaml",
    "sdnotify": "python3-sdnotify",
}


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file as {section: [(key, value), ...]}, repeated keys kept in order (systemd merges them;
    configparser would keep only the last)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), \
            f"{path.name}:{number}: not a key=value line in a section: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in section if name == key]


def single(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}= should be set once, found {found}"
    return found[0]


def seconds(value: str) -> float:
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


@pytest.fixture(scope="module")
def service() -> list[tuple[str, str]]:
    return parse_unit(UNIT)["Service"]


def test_unit_has_the_required_directives(service: list[tuple[str, str]]) -> None:
    expected = {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "User": "vmond",
        "StateDirectory": "vmond", "ConfigurationDirectory": "vmond", "ProtectSystem": "strict",
        "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "ExecStartPre": f"/usr/bin/vmond check-config --config {CONFIG}",
        "ExecStart": f"/usr/bin/vmond run --config {CONFIG}",
    }
    for key, value in expected.items():
        assert single(service, key) == value, key
    assert 10 <= seconds(single(service, "WatchdogSec")) <= 600
    assert single(service, "MemoryMax")
    assert set(single(service, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert parse_unit(UNIT)["Install"] == [("WantedBy", "multi-user.target")]


def test_unit_keeps_what_the_daemon_needs(service: list[tuple[str, str]]) -> None:
    filters = values(service, "SystemCallFilter")
    # An allow list starting from @system-service: fork/exec for the fork server, nice() and setrlimit()
    # (@resources) for the workers.
    assert filters[0] == "@system-service"
    denied = " ".join(f[1:] for f in filters if f.startswith("~")).split()
    assert not {"@system-service", "@process", "@resources", "@basic-io", "@network-io"} & set(denied), denied
    assert single(service, "KillMode") == "mixed"  # SIGTERM to the daemon, which stops its own workers
    assert single(service, "OOMPolicy") == "continue"  # a worker killed for memory must not stop the service
    # The data directory vmond writes is the state directory the sandbox leaves writable.
    assert load_config(ROOT / "config" / "vmond.yaml").storage.data_dir == Path("/var/lib/vmond")


def test_unit_command_lines_are_accepted_by_the_cli(service: list[tuple[str, str]]) -> None:
    for key, command in (("ExecStartPre", "check-config"), ("ExecStart", "run")):
        argv = single(service, key).split()
        assert argv[0] == "/usr/bin/vmond"
        args = build_parser().parse_args(argv[1:])
        assert args.command == command and args.config == CONFIG


def test_port_25_drop_in_adds_only_the_bind_capability() -> None:
    drop_in = parse_unit(PORT_25)["Service"]
    assert single(drop_in, "CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert single(drop_in, "AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    # In a private user namespace the capability would not count for the host's network namespace.
    assert single(drop_in, "PrivateUsers") == "no"
    assert "/etc/systemd/system/vmond.service.d/" in PORT_25.read_text()


def test_shipped_conffile_is_the_documented_default() -> None:
    installs = [line.split() for line in (DEBIAN / "vmond.install").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert ["config/vmond.yaml", "etc/vmond/"] in installs
    # dh_installsystemd installs debian/vmond.service where the Debian release wants units: it is this unit.
    assert (DEBIAN / "vmond.service").resolve() == UNIT.resolve()
    # The unit's ExecStartPre checks exactly this file at every start: it must be valid as shipped.
    config = load_config(ROOT / "config" / "vmond.yaml")
    assert config.storage.data_dir == Path("/var/lib/vmond")
    assert yaml.safe_load((ROOT / "config" / "vmond.yaml").read_text())["storage"]["data_dir"] == "/var/lib/vmond"


def requirements() -> dict[str, tuple[str | None, str | None]]:
    """setup.cfg's install_requires as {lower-case PyPI name: (minimum version, newest allowed version)}."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    found: dict[str, tuple[str | None, str | None]] = {}
    for line in setup["options"]["install_requires"].strip().splitlines():
        if line.strip().startswith("#"):
            continue
        match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*(?:>=\s*([0-9][0-9.]*))?\s*(?:,\s*<=\s*([0-9][0-9.]*))?\s*", line)
        assert match, line
        found[match[1].lower().replace("_", "-")] = (match[2], match[3])
    return found


def control_depends() -> dict[str, str | None]:
    """The binary package's Depends as {package: minimum version or None}; an upper bound as {package + " <<": it}."""
    text = (DEBIAN / "control").read_text()
    binary = text.split("\nPackage: vmond\n", 1)[1]
    match = re.search(r"^Depends:(.*?)(?=^\S)", binary + "\nEnd:", re.M | re.S)
    assert match, "no Depends: in debian/control's vmond stanza"
    depends: dict[str, str | None] = {}
    for item in match[1].replace("\n", " ").split(","):
        item = item.strip()
        if not item or item.startswith("${"):
            continue
        dep = re.fullmatch(r"([a-z0-9.+-]+)\s*(?:\((>=|<<)\s*([^)\s]+)\s*\))?", item)
        assert dep, f"unexpected dependency syntax in debian/control: {item!r}"
        if dep[2] == "<<":
            depends[f"{dep[1]} <<"] = dep[3]
        else:
            depends[dep[1]] = dep[3]
    return depends


def test_control_depends_on_every_runtime_requirement() -> None:
    depends = control_depends()
    for name, (minimum, newest) in requirements().items():
        assert name in PYPI_TO_DEBIAN, f"setup.cfg requires {name}: add its Debian package to PYPI_TO_DEBIAN " \
                                       "in this test and to Depends in debian/control"
        package = PYPI_TO_DEBIAN[name]
        assert package in depends, f"debian/control does not depend on {package} (for {name})"
        assert depends[package] == minimum, f"{package}: debian/control wants >= {depends[package]}, " \
                                            f"setup.cfg wants {name} >= {minimum}"
        # A cap (setup.cfg: <= the newest release run) is the same cap in Debian's terms: << the next one.
        *head, last = newest.split(".") if newest else ("",)
        cap = ".".join([*head, str(int(last) + 1)]) + "~" if newest else None
        assert depends.get(f"{package} <<") == cap, f"{package}: debian/control caps it at << " \
            f"{depends.get(f'{package} <<')}, setup.cfg at {name} <= {newest} (<< {cap} in Debian's terms)"
    assert "openssl" in depends  # `openssl req` makes the self-signed certificate


def test_control_and_rules() -> None:
    control = (DEBIAN / "control").read_text()
    assert re.search(r"^Architecture: all$", control, re.M)
    assert re.search(r"^Rules-Requires-Root: no$", control, re.M)
    rules = (DEBIAN / "rules").read_text()
    assert re.search(r"^\tdh \$@ --with python3 --buildsystem=pybuild$", rules, re.M)
    assert re.search(r"^override_dh_auto_test:\s*$", rules, re.M)
    sysusers = (DEBIAN / "vmond.sysusers").read_text()
    assert re.search(r"^u vmond - .* /var/lib/vmond$", sysusers, re.M)


def test_changelog_version_is_the_package_version() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.match(r"vmond \((?:\d+:)?([^)]+?)(?:-[^-)]+)?\) ", first)
    assert match, first
    assert match[1] == vmond.__version__


def test_web_assets_install_where_the_package_looks() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    targets = set(setup["options.data_files"])
    # pybuild installs data_files under /usr: /usr/share/vmond/web is one of vmond.web.paths' places.
    assert {"share/vmond/web/templates", "share/vmond/web/static"} <= targets


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not found (Debian package systemd): the unit was not verified")
    return path


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    # verify checks that ExecStart's program exists; this tree's vmond is not installed, so a stand-in is.
    stub = tmp_path / "vmond"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "vmond.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/vmond ", f"{stub} "))
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr


def test_systemd_analyze_security_exposure() -> None:
    analyze = systemd_analyze()
    version = subprocess.run([analyze, "--version"], capture_output=True, text=True).stdout
    if int(re.search(r"systemd (\d+)", version)[1]) < 250:
        pytest.skip(f"systemd-analyze is older than 250 ({version.split()[1]}): it has no security --offline")
    result = subprocess.run([analyze, "security", "--offline=yes", str(UNIT)], capture_output=True, text=True,
                            timeout=60)
    match = re.search(r"Overall exposure level for vmond\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout
