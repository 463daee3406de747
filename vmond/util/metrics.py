"""Counters for ``GET /metrics`` (Prometheus text format), kept by the services that count.

Plain in-process counters: they start at zero with each daemon start, which Prometheus's ``rate()`` expects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class Metrics:
    def __init__(self) -> None:
        self.smtp_replies: Counter[str] = Counter()  # reply code -> count, every reply the SMTP door gave
        self.events_created = 0
        self.events_updated = 0
        self.clip_seconds_sum = 0.0
        self.clip_count = 0
        self.clip_failures = 0
        self.clip_failures_in_a_row = 0  # supervision: clips_failing; a made clip sets it back to 0

    def smtp_reply(self, text: str) -> None:
        code = text[:3]
        if code.isdigit():
            self.smtp_replies[code] += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(samples: Iterable[tuple[str, str, str, dict[str, str], float]]) -> str:
    """Prometheus text format from (name, type, help, labels, value); one HELP/TYPE per name."""
    lines: list[str] = []
    seen: set[str] = set()
    for name, kind, text, labels, value in samples:
        if name not in seen:
            seen.add(name)
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return "\n".join(lines) + "\n"
