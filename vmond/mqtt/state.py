"""What the broker was last given, kept across restarts in ``data_dir/mqtt-state.json``.

Two things the outbox cannot tell: which picture each camera's retained snapshot topic holds (so a restart
publishes only the snapshots the broker has not acknowledged), and which cameras were announced to Home
Assistant (so a camera deleted while vmond was down is still removed). Losing the file costs a few duplicate
retained messages, nothing more: it is written with a rename, without fsync, and a damaged one is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class BrokerState:
    snapshots: dict[int, int] = field(default_factory=dict)  # camera id -> media id the broker acknowledged
    announced: set[int] = field(default_factory=set)  # camera ids with Home Assistant configs on the broker
    appliance_announced: bool = False

    @classmethod
    def load(cls, path: Path) -> BrokerState:
        """Blocking."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(snapshots={int(k): int(v) for k, v in raw.get("snapshots", {}).items()},
                       announced={int(c) for c in raw.get("announced", [])},
                       appliance_announced=bool(raw.get("appliance_announced", False)))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("mqtt: ignoring unreadable %s (%s): snapshots will be published again", path, exc)
            return cls()

    def dump(self) -> bytes:
        return json.dumps({"snapshots": {str(k): v for k, v in sorted(self.snapshots.items())},
                           "announced": sorted(self.announced),
                           "appliance_announced": self.appliance_announced}).encode()


def save(path: Path, data: bytes) -> None:
    """Blocking: replace *path* with *data* in one rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
