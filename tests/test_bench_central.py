"""The central station's benchmark (bench/central.py) runs end to end at a tiny size, one node and then two on
PostgreSQL, and prints its tables, targets and the gain.

No timing is asserted: what is checked is that the bench's accounting works (every event published is mirrored and
seen on every node's WebSocket, the command round trips end ``done``, both node counts are measured)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench" / "central.py"
TINY = ["--sites", "4", "--cameras", "2", "--connections", "1", "--paced-rate", "10", "--paced-duration", "1",
        "--burst", "60", "--commands", "2"]


def table(output: str) -> dict[str, str]:
    """The ``| what | figure |`` rows of the last run the bench printed."""
    rows = output.rsplit("| what | figure |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return {cells[0]: cells[1] for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows)}


def test_one_node_then_two_prints_every_figure_and_the_gain(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCH), *TINY, "--nodes", "both", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # the scratch folder is gone: brokers, databases, the nodes' data
    output = done.stdout

    assert "2 central node(s) on PostgreSQL" in output
    figures = table(output)
    assert figures["burst: events mirrored / published"] == "60 / 60"
    assert figures["burst: events on every node's WebSocket / on each"] == "60 / 60 + 60"
    assert figures["paced at 10/s: events seen on the central's WebSocket"] == "10 / 10"
    assert figures["commands: states shown"] == "done 2"

    nodes = output.split("| nodes | burst events/s mirrored |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert [row.strip("|").split("|")[0].strip() for row in nodes] == ["1", "2"]
    assert all("(60 of 60)" in row for row in nodes), nodes
    assert re.search(r"^gain: 2-node throughput / 1-node throughput = [\d.]+$", output, re.MULTILINE)

    targets = output.rsplit("Targets:\n", 1)[1].split("\n\n", 1)[0].splitlines()  # the two-node run's
    assert len(targets) == 2 and all(re.match(r"  (PASS|MISS)  ", line) for line in targets), targets
