"""Where a client on this machine reaches vmond, as a configuration says: the dashboard's URL, the SMTP door,
the first camera's address.

``vmond info`` prints these (the ``make run`` banner asks it instead of parsing the YAML itself), and
``vmond send-test`` connects to the same SMTP address. Pure functions of a loaded :class:`Config`.
"""

from __future__ import annotations

from vmond.config import Config, HostPort

# A listener on every address is reached from this machine over loopback.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def local_address(listen: HostPort) -> HostPort:
    """The address a client on this machine connects to for *listen*."""
    return HostPort(_LOOPBACK.get(listen.host, listen.host), listen.port)


def dashboard_url(config: Config) -> str:
    tls = config.web.tls
    scheme = "https" if tls.certificate is not None or tls.self_signed else "http"
    return f"{scheme}://{local_address(config.web.listen)}/"


def smtp_address(config: Config) -> HostPort:
    return local_address(config.smtp.listen)


def first_camera(config: Config) -> str | None:
    """The full mail address of the first camera the file declares, or None."""
    for _account, camera in config.cameras():
        return f"{camera.smtp_address}@{config.smtp.domain}"
    return None


INFO_NAMES = ("dashboard", "smtp", "domain", "camera", "data", "database", "config")


def info(config: Config) -> dict[str, str]:
    """What ``vmond info`` shows, by the names ``--get`` takes (an absent camera is an empty string)."""
    return {
        "dashboard": dashboard_url(config),
        "smtp": str(smtp_address(config)),
        "domain": config.smtp.domain,
        "camera": first_camera(config) or "",
        "data": str(config.storage.data_dir),
        "database": config.storage.database or str(config.storage.data_dir / "vmond.db"),
        "config": str(config.source or ""),
    }
