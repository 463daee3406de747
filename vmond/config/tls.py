"""The dashboard's per-device certificate (``web.tls.self_signed``) and its fingerprint.

The certificate is made once with the ``openssl`` command and kept in ``data_dir/tls``; guards' browsers are
told to trust it by comparing the fingerprint that ``vmond tls fingerprint`` prints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import ssl
import subprocess
import warnings
from pathlib import Path

from vmond.config import Config

log = logging.getLogger(__name__)


def self_signed_paths(config: Config) -> tuple[Path, Path]:
    directory = config.storage.data_dir / "tls"
    return directory / "cert.pem", directory / "key.pem"


def certificate_path(config: Config) -> Path:
    """The certificate the dashboard serves: the configured one, else the per-device one."""
    return config.web.tls.certificate or self_signed_paths(config)[0]


def ensure_self_signed(config: Config) -> Config:
    """Create the per-device certificate if missing; returns *config* pointing web.tls at it. Blocking."""
    cert, key = self_signed_paths(config)
    if not (cert.is_file() and key.is_file()):
        cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        hostname = socket.gethostname()
        tmp_cert, tmp_key = cert.with_suffix(".tmp"), key.with_suffix(".tmp")
        old_umask = os.umask(0o077)
        try:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(tmp_key), "-out", str(tmp_cert), "-days", "3650",
                 "-subj", f"/CN={hostname}/O=vmond {config.site.id}",
                 "-addext", f"subjectAltName=DNS:{hostname},DNS:localhost,IP:127.0.0.1"],
                check=True, capture_output=True, timeout=60)
        finally:
            os.umask(old_umask)
        os.replace(tmp_key, key)
        os.replace(tmp_cert, cert)
        log.warning("created a self-signed dashboard certificate, SHA-256 fingerprint %s", fingerprint(cert))
    tls = dataclasses.replace(config.web.tls, certificate=cert, key=key)
    return dataclasses.replace(config, web=dataclasses.replace(config.web, tls=tls))


_TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
                 "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(certificate: Path, key: Path | None, min_version: str = "1.2") -> ssl.SSLContext:
    """A TLS server context for a PEM certificate (chain) and key, accepting *min_version* and newer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate), str(key) if key else None)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0/1.1; an installer who set min_version "1.0" asked for them on purpose.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = _TLS_VERSIONS[min_version]
    if min_version in ("1.0", "1.1"):
        # OpenSSL 3 refuses TLS 1.0/1.1 at its default security level; old camera firmware needs level 0.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def fingerprint(cert: Path) -> str:
    """SHA-256 of the certificate (DER), as colon-separated hex pairs like browsers show it."""
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
