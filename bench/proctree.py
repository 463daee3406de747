"""A benchmarked server's processes, read from /proc: CPU seconds and RSS by role (main process, workers).

vmond's workers are forked by multiprocessing's fork server and replaced after a number of tasks, so a worker seen
at one moment may be gone at the next: CPU is summed over every process seen (sample often, see
:meth:`ProcessTree.sample`), and the exact total of the workers comes from the processes' own and their parents'
counts of reaped children.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKER_ROLES = ("parser", "encoder")


def stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def descendants(root: int) -> dict[int, int]:
    """Every process below *root*: pid -> parent pid."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for child in children.get(parent, []):
            found[child] = parent
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own utime + stime, reaped children's cutime + cstime) of *pid*, every thread included."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def address_space_limit(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max address space"):
                soft = line.split()[3]
                return None if soft == "unlimited" else int(soft)
    except OSError:
        pass
    return None


def start_time(pid: int) -> str | None:
    fields = stat_fields(pid)
    return None if fields is None else fields[19]


class ProcessTree:
    """A server process and everything it started: vmond's fork server, its parser and encoder workers."""

    def __init__(self, pid: int) -> None:
        from vmond.daemon import ENCODER_MEMORY, PARSER_MEMORY

        self.pid = pid
        self._roles = {PARSER_MEMORY: "parser", ENCODER_MEMORY: "encoder"}
        self.seen: dict[int, str] = {}  # every descendant seen: pid -> its start time (a reused pid is not ours)
        # (pid, start time) of every worker seen -> (role, its own CPU seconds when last seen)
        self._worker_cpu: dict[tuple[int, str | None], tuple[str, float]] = {}

    def see(self, pid: int) -> None:
        if pid not in self.seen and (started := start_time(pid)) is not None:
            self.seen[pid] = started

    def role(self, pid: int, parent: int) -> str:
        """main; forkserver and tracker (multiprocessing's, the main process's children); parser and encoder
        (workers, told apart by their address-space limits); "starting" (a worker not yet limited)."""
        if pid == self.pid:
            return "main"
        if parent == self.pid:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                cmdline = b""
            return ("forkserver" if b"forkserver" in cmdline else "tracker" if b"resource_tracker" in cmdline
                    else "other")
        return self._roles.get(address_space_limit(pid) or 0, "starting")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the main process's own; the workers' in all (every other live process of the tree, and
        those that exited, through their parents' counts of reaped children); and of those, each worker role's as
        last sampled (a worker's last moments before it was replaced are in "workers" only)."""
        own, reaped = cpu_seconds(self.pid)
        out = {"main": own, "workers": reaped, **dict.fromkeys(WORKER_ROLES, 0.0)}
        for pid, parent in descendants(self.pid).items():
            self.see(pid)
            child_own, child_reaped = cpu_seconds(pid)
            out["workers"] += child_own + child_reaped
            self._note_worker(pid, parent, child_own)
        for role, seconds in self._worker_cpu.values():
            out[role] += seconds
        return out

    def _note_worker(self, pid: int, parent: int, own: float) -> None:
        key = (pid, start_time(pid))
        known = self._worker_cpu.get(key)
        role = known[0] if known else self.role(pid, parent)
        if role in WORKER_ROLES:
            self._worker_cpu[key] = (role, own)

    def sample(self) -> dict[str, float]:
        """RSS in MB by role (see :meth:`role`); notes each worker's CPU as well, for :meth:`cpu`'s split."""
        out = {"main": rss_mb(self.pid)}
        for pid, parent in descendants(self.pid).items():
            self.see(pid)
            role = self.role(pid, parent)
            out[role] = out.get(role, 0.0) + rss_mb(pid)
            self._note_worker(pid, parent, cpu_seconds(pid)[0])
        return out


def stop_process(process: subprocess.Popen[Any] | None) -> None:
    """SIGTERM, and SIGKILL when it has not ended within 20 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
