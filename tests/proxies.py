"""The load balancers of deploy/central/ as they are shipped, on this machine: Debian's nginx and HAProxy with the
repository's own files, changed only in the addresses they listen on and reach the nodes at, and in the paths of
their certificates.

nginx runs in the foreground (``daemon off``) with a main file of the test's that includes the shipped site;
HAProxy with a minimal ``global``/``defaults`` of the test's before the shipped file, as Debian's haproxy.cfg does.
Both are started and stopped by the test; their logs stay in the test's folder.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from centralsite import DEPLOY
from helpers import free_port
from mosquitto import TlsFiles

NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"
NGINX_SITE = DEPLOY / "nginx" / "vmond-central.conf"
HAPROXY_SECTIONS = DEPLOY / "haproxy" / "vmond-central.cfg"
NODES = ("central-a.internal:8443", "central-b.internal:8443")
NODES_NAME = "central-nodes.internal"  # the name every node's certificate carries (proxy_ssl_name, verifyhost)
PUBLIC_NAME = "central.example.net"


def require(binary: str, package: str) -> str:
    """The program's path; its absence fails the test (``make test`` installs it): nothing is skipped."""
    if not (os.access(binary, os.X_OK) or shutil.which(binary)):
        raise AssertionError(f"{binary} is missing: install Debian's {package} package (make debs does)")
    return binary


def substitute(text: str, replacements: dict[str, str]) -> str:
    """*text* with each key replaced by its value; every key must occur (the shipped file changed otherwise)."""
    for written, here in replacements.items():
        assert written in text, f"{written!r} is no longer in the shipped file"
        text = text.replace(written, here)
    return text


def nginx_site(node_ports: tuple[int, int], http_port: int, https_port: int, tls: TlsFiles, folder: Path) -> str:
    """The shipped nginx site with the test's ports, node addresses and certificates."""
    return substitute(NGINX_SITE.read_text(), {
        "    listen 80;\n": f"    listen 127.0.0.1:{http_port};\n",
        "    listen [::]:80;\n": "",
        "    listen 443 ssl;\n": f"    listen 127.0.0.1:{https_port} ssl;\n",
        "    listen [::]:443 ssl;\n": "",
        f"server {NODES[0]} ": f"server 127.0.0.1:{node_ports[0]} ",
        f"server {NODES[1]} ": f"server 127.0.0.1:{node_ports[1]} ",
        f"/etc/nginx/vmond/{PUBLIC_NAME}.pem": str(tls.server_cert),
        f"/etc/nginx/vmond/{PUBLIC_NAME}.key": str(tls.server_key),
        "/etc/nginx/vmond/nodes-ca.pem": str(tls.ca),
    })


def haproxy_sections(node_ports: tuple[int, int], http_port: int, https_port: int, tls: TlsFiles,
                     folder: Path) -> str:
    """The shipped HAProxy sections with the test's ports, node addresses and certificates."""
    bundle = folder / "public.pem"  # HAProxy takes the certificate and its key in one file
    bundle.write_text(tls.server_cert.read_text() + tls.server_key.read_text())
    return substitute(HAPROXY_SECTIONS.read_text(), {
        "    bind :80\n": f"    bind 127.0.0.1:{http_port}\n",
        f"    bind :443 ssl crt /etc/haproxy/vmond/{PUBLIC_NAME}.pem\n":
            f"    bind 127.0.0.1:{https_port} ssl crt {bundle}\n",
        f" {NODES[0]}\n": f" 127.0.0.1:{node_ports[0]}\n",
        f" {NODES[1]}\n": f" 127.0.0.1:{node_ports[1]}\n",
        "/etc/haproxy/vmond/nodes-ca.pem": str(tls.ca),
    })


NGINX_MAIN = """\
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
daemon off;
{user}
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/site.conf;
}}
"""

HAPROXY_BASE = """\
global
    log stderr format raw local0 info
    # a test: no chroot, no daemon, no stats socket (Debian's haproxy.cfg has them)
defaults
    log global
    mode http
    option httplog
    timeout connect 5s
    timeout client 50s
    timeout server 50s
"""


class Proxy:
    """nginx or HAProxy on the shipped configuration, in front of two nodes on *node_ports*."""

    def __init__(self, kind: str, folder: Path, node_ports: tuple[int, int], tls: TlsFiles) -> None:
        self.kind = kind
        self.folder = folder
        self.http_port = free_port()
        self.https_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "proxy.log"
        if kind == "nginx":
            (folder / "site.conf").write_text(nginx_site(node_ports, self.http_port, self.https_port, tls, folder))
            # nginx's workers drop to "nobody" when it runs as root; the test's folders are root's alone
            user = "user root;" if os.geteuid() == 0 else ""
            (folder / "nginx.conf").write_text(NGINX_MAIN.format(folder=folder, user=user))
            self.command = [require(NGINX, "nginx"), "-p", str(folder), "-c", str(folder / "nginx.conf")]
        else:
            (folder / "base.cfg").write_text(HAPROXY_BASE)
            (folder / "vmond-central.cfg").write_text(haproxy_sections(node_ports, self.http_port, self.https_port,
                                                                        tls, folder))
            self.command = [require(HAPROXY, "haproxy"), "-db", "-f", str(folder / "base.cfg"),
                            "-f", str(folder / "vmond-central.cfg")]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` or ``haproxy -c`` on the configuration."""
        flag = ["-t"] if self.kind == "nginx" else ["-c"]
        return subprocess.run([*self.command, *flag], capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.5).close()
                return
            except OSError:
                assert self.process.poll() is None, f"{self.kind} ended: {self.log_text()}"
                assert time.monotonic() < deadline, f"{self.kind} is not listening: {self.log_text()}"
                time.sleep(0.05)

    def log_text(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        error_log = self.folder / "error.log"
        return text + (error_log.read_text(errors="replace") if error_log.exists() else "")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def warnings_of(output: str) -> list[str]:
    """The lines of a configuration check that warn (or worse), but for the notices every check prints."""
    return [line for line in output.splitlines()
            if re.search(r"\[(warn|emerg|alert|crit|error)\]|\[WARNING\]|\[ALERT\]", line)]
