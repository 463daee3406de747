"""The ingest benchmark (bench/ingest.py) runs end to end at tiny sizes and prints every table and target.

No timing is asserted: what is checked is that the bench's accounting works (each mail of the burst matched to its
event, the parser worker's CPU attributed to it, the clip's readiness seen on the WebSocket, the CLI timed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench" / "ingest.py"
# 20 cameras: more than vmond lets one address open at once by default (all of them mail from 127.0.0.1)
TINY = ["--cameras", "20", "--duration", "0.5", "--burst-cameras", "2", "--burst-mails", "3", "--burst-repeat", "1",
        "--paced-cameras", "1", "--paced-duration", "1", "--clips-cameras", "1", "--clips-duration", "1",
        "--clips-repeat", "1", "--clip-pictures", "3", "--clip-repeat", "1", "--picture-size", "320x180"]


def run_bench(tmp_path: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCH), *args, "--dir", str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # the scratch folder is gone, with every receiver's data
    return done.stdout


def table_rows(output: str, header_start: str) -> list[list[str]]:
    """The rows of the markdown table whose header starts with *header_start*, as lists of cells."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_every_part_prints_its_tables_and_targets(tmp_path: Path) -> None:
    output = run_bench(tmp_path, *TINY)
    summaries = [line for line in output.splitlines() if re.match(r"(vmond|reference) \S+: \d+ mails in", line)]
    assert len(summaries) == 7 and all(", 0 error(s)" in line for line in summaries), summaries

    burst = table_rows(output, "| run | mails accepted / events (missing)")
    assert burst[0][:2] == ["1", "6 / 6 (0)"]  # 2 cameras x 3 mails, each matched to its event.created
    cpu = table_rows(output, "| run | vmond CPU ms/mail: main + parser + encoder + other = total")
    main, parser, encoder, other, total = map(float, re.findall(r"[\d.]+", cpu[0][1]))
    assert main > 0 and parser > 0  # the parser worker's CPU is attributed to it, not lost in "workers"
    assert total == pytest.approx(main + parser + encoder + other, abs=0.2)
    assert table_rows(output, "| cameras | vmond mails/s | reference mails/s")[0][0] == "20"
    assert table_rows(output, "| cameras | vmond mails/s | accept p50 / p99 ms | end-to-end")[0][0] == "1"
    assert [row[0] for row in table_rows(output, "| video.enabled | run |")] == ["false", "false", "true", "true"]
    clip = table_rows(output, "| turn | vmond 250 -> clip ready ms | ffmpeg CLI ms |")
    assert clip[-1][0] == "median" and all(re.fullmatch(r"[\d.]+", cell) for cell in clip[-1][1:])
    assert re.search(r"^vmond / CLI: [\d.]+$", output, re.MULTILINE)

    targets = output.split("Targets:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert all(re.match(r"  (PASS|MISS)  ", line) for line in targets), targets
    for target in ("drain <= 1 s", "throughput >= 0.5 x", "accept p99 <= 2 x", "end-to-end p99 <= 250 ms",
                   "clip ready <= 1 x the ffmpeg CLI", "RSS idle <= 80 MB", "RSS loaded <= 150 MB"):
        assert any(target in line for line in targets), target


def test_burst_only_runs_the_burst_alone(tmp_path: Path) -> None:
    output = run_bench(tmp_path, *TINY, "--burst-only")
    assert table_rows(output, "| run | mails accepted / events (missing)")[0][1] == "6 / 6 (0)"
    for other_part in ("Back to back:", "Paced:", "Clips:", "Clip:"):
        assert other_part not in output
