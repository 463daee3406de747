"""The ingest benchmark's tables (markdown, as bench/README.md keeps them) and its targets, PASS or MISS."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ingestclip import ClipTimes  # bench/ is the script's own folder
from ingestload import Load, percentile
from ingestservers import UNIT_ENVIRONMENT

# Targets from the issues.
TARGET_DRAIN_S = 1.0  # the burst on the wall at most 1 s after its last 250, nothing missing
TARGET_PACED_P99_MS = 250.0
TARGET_PACED_P50_MS = 100.0
TARGET_THROUGHPUT = 0.5  # vmond mails/s >= 0.5 x the reference's
TARGET_ACCEPT_P99 = 2.0  # vmond accept p99 <= 2 x the reference's
TARGET_CLIP = 1.0  # clip ready after the 250 <= 1.0 x the ffmpeg CLI's time on the same frames
TARGET_CLIPS = 1.2  # accept p99 while clips encode <= 1.2 x without
TARGET_RSS_IDLE_MB = 80.0
TARGET_RSS_LOAD_MB = 150.0


@dataclass
class Results:
    """What one bench run measured; a part not run is empty."""

    pairs: list[tuple[Load, Load]]  # back to back: (vmond, reference) per camera count
    paced: Load | None
    clips: tuple[list[Load], list[Load]] | None  # accept latency, video off and on
    bursts: list[tuple[Load, Load]]  # (vmond, reference) per repeat
    clip: ClipTimes | None

    def vmond_runs(self) -> list[Load]:
        return ([mine for mine, _ in self.pairs + self.bursts] + ([self.paced] if self.paced else [])
                + [load for loads in self.clips or () for load in loads])


def ms(value: float) -> str:
    return "-" if value != value else f"{value:.0f}" if value >= 100 else f"{value:.1f}"  # NaN -> "-"


def div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def describe(load: Load) -> str:
    accepted = load.accepted()
    text = (f"{load.server} {load.label}: {len(accepted)} mails in {load.ended - load.started:.1f} s, "
            f"{load.bytes_sent / max(1, len(accepted)) / 1e3:.0f} kB average, {len(load.errors)} error(s)")
    if load.server == "vmond" and load.drained - load.ended < 0.01:
        text += f", {len(load.e2e_ms())} event.created during the load (no catch-up wait)"
    elif load.server == "vmond":
        text += (f", {len(load.e2e_ms())} event.created within {load.drained - load.ended:.1f} s of catch-up"
                 f" ({load.missing_events()} missing, {load.matched_by_order} matched by camera and order)")
    if load.events_late:
        text += f", {load.events_late} event.created matched no mail"
    return text + (f"; first error: {load.errors[0]}" if load.errors else "")


def size(args: argparse.Namespace) -> str:
    width, height = args.picture_size
    return f"{height}p" if width * 9 == height * 16 else f"{width}x{height}"


def p(values: Sequence[float]) -> str:
    return f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))}"


def cpu_split(load: Load) -> str:
    parts = ("main", "parser", "encoder", "other")
    return (" + ".join(f"{load.cpu_ms_per_mail(part):.1f}" for part in parts)
            + f" = {load.cpu_ms_per_mail():.1f}")


CPU_HEADER = "vmond CPU ms/mail: main + parser + encoder + other = total"


def print_back_to_back(args: argparse.Namespace, pairs: list[tuple[Load, Load]]) -> None:
    print(f"Back to back: each camera sends its next mail as soon as the last one is done, for {args.duration:g} s "
          "(vmond's end-to-end latency then measures how far its pipeline falls behind its SMTP door)")
    print()
    print("| cameras | vmond mails/s | reference mails/s | vmond/ref throughput | vmond accept p50 / p99 ms "
          "| reference accept p50 / p99 ms | vmond/ref accept p99 | vmond end-to-end p50 / p99 ms "
          "| vmond events/s |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for mine, ref in pairs:
        accept, ref_accept = mine.accept_ms(), ref.accept_ms()
        print(f"| {mine.cameras} | {mine.rate:.1f} | {ref.rate:.1f} | {div(mine.rate, ref.rate):.2f} | {p(accept)} "
              f"| {p(ref_accept)} | {div(percentile(accept, 99), percentile(ref_accept, 99)):.2f} "
              f"| {p(mine.e2e_ms())} | {mine.events_rate():.1f} |")
    print()
    print(f"| cameras | {CPU_HEADER} | reference CPU ms/mail | bench client CPU ms/mail "
          "| vmond main RSS MB: fresh / idle / peak | parser worker RSS peak MB | fork server RSS peak MB "
          "| reference RSS peak MB |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for mine, ref in pairs:
        print(f"| {mine.cameras} | {cpu_split(mine)} | {ref.cpu_ms_per_mail():.1f} "
              f"| {div(mine.client_cpu, len(mine.accepted())) * 1000:.1f} "
              f"| {mine.fresh_rss:.0f} / {mine.idle_rss:.0f} / {mine.peak_rss.get('main', 0):.0f} "
              f"| {mine.peak_rss.get('parser', 0):.0f} | {mine.peak_rss.get('forkserver', 0):.0f} "
              f"| {ref.peak_rss.get('main', 0):.0f} |")


def print_burst(args: argparse.Namespace, bursts: list[tuple[Load, Load]]) -> None:
    print(f"Burst: {args.burst_cameras} cameras x {args.burst_mails} generated mails (three {size(args)} JPEGs), "
          "each camera its mails back to back on new connections, video off; drain = last event.created - last 250")
    print()
    print("| run | mails accepted / events (missing) | vmond mails/s | reference mails/s | vmond/ref throughput "
          "| vmond accept p50 / p99 ms | reference accept p50 / p99 ms | vmond/ref accept p99 | drain s "
          "| pipeline events/s |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for run, (mine, ref) in enumerate(bursts, 1):
        accept, ref_accept = mine.accept_ms(), ref.accept_ms()
        print(f"| {run} | {len(mine.accepted())} / {len(mine.e2e_ms())} ({mine.missing_events()}) | {mine.rate:.1f} "
              f"| {ref.rate:.1f} | {div(mine.rate, ref.rate):.2f} | {p(accept)} | {p(ref_accept)} "
              f"| {div(percentile(accept, 99), percentile(ref_accept, 99)):.2f} | {mine.drain_s():.2f} "
              f"| {mine.events_rate():.1f} |")
    if len(bursts) > 1:
        print(f"| median | | {median([m.rate for m, _ in bursts]):.1f} | {median([r.rate for _, r in bursts]):.1f} "
              f"| {median([throughput(m, r) for m, r in bursts]):.2f} | | | "
              f"{median([accept_ratio(m, r) for m, r in bursts]):.2f} | {median([m.drain_s() for m, _ in bursts]):.2f} "
              f"| {median([m.events_rate() for m, _ in bursts]):.1f} |")
    print()
    print(f"| run | {CPU_HEADER} | reference CPU ms/mail | vmond main RSS MB: fresh / idle / peak "
          "| parser worker RSS peak MB | encoder worker RSS peak MB | fork server RSS peak MB |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for run, (mine, ref) in enumerate(bursts, 1):
        print(f"| {run} | {cpu_split(mine)} | {ref.cpu_ms_per_mail():.1f} "
              f"| {mine.fresh_rss:.0f} / {mine.idle_rss:.0f} / {mine.peak_rss.get('main', 0):.0f} "
              f"| {mine.peak_rss.get('parser', 0):.0f} | {mine.peak_rss.get('encoder', 0):.0f} "
              f"| {mine.peak_rss.get('forkserver', 0):.0f} |")
    print()
    print("(CPU counted from the burst's first mail until the pipeline had caught up; \"other\" is the fork server, "
          "the resource tracker and a replaced worker's last moments.)")


def print_paced(args: argparse.Namespace, paced: Load) -> None:
    print(f"Paced: {paced.cameras} cameras, each one mail every {args.paced_interval:g} s for "
          f"{args.paced_duration:g} s (a storm of alarms the pipeline can keep up with)")
    print()
    print("| cameras | vmond mails/s | accept p50 / p99 ms | end-to-end p50 / p99 ms | end-to-end max ms |")
    print("|--:|--:|--:|--:|--:|")
    e2e = paced.e2e_ms()
    print(f"| {paced.cameras} | {div(len(paced.accepted()), paced.ended - paced.started):.1f} "
          f"| {p(paced.accept_ms())} | {p(e2e)} | {ms(max(e2e, default=float('nan')))} |")


def print_clips(args: argparse.Namespace, clips: tuple[list[Load], list[Load]]) -> None:
    pace = (f"each one mail every {args.clips_interval:g} s" if args.clips_interval else "back to back "
            "(a backlog: vmond holds its clips back until the pipeline has caught up)")
    print(f"Clips: {args.clips_cameras} cameras, {pace}, 3-picture mails only, {args.clips_duration:g} s per "
          "run, runs alternating (accept latency only: no catch-up wait)")
    print()
    print("| video.enabled | run | mails/s | accept p50 / p99 ms | clips made / skipped during the load "
          "| CPU cores busy during the load: main + workers | encoder worker RSS peak MB |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for video, loads in zip(("false", "true"), clips, strict=True):
        for load in loads:
            span = load.drained - load.started
            print(f"| {video} | {load.label.rsplit('-', 1)[1]} | {load.rate:.1f} | {p(load.accept_ms())} "
                  f"| {len(load.clips_ready)} / {len(load.clips_skipped)} "
                  f"| {div(load.cpu.get('main', 0), span):.2f} + "
                  f"{div(load.cpu.get('workers', 0), span):.2f} | {load.peak_rss.get('encoder', 0):.0f} |")
        pooled = [value for load in loads for value in load.accept_ms()]
        print(f"| {video} | all | {statistics.mean(load.rate for load in loads):.1f} | {p(pooled)} "
              f"| {sum(len(load.clips_ready) for load in loads)} / "
              f"{sum(len(load.clips_skipped) for load in loads)} | | |")


def print_clip(args: argparse.Namespace, clip: ClipTimes) -> None:
    print(f"Clip: one camera mails {clip.pictures} {size(args)} JPEGs in one mail, video on: the 250 -> event.updated "
          "with video.state ready, against the ffmpeg CLI encoding the same frames alone (libx264 ultrafast, "
          "same width and fps), the two taking turns")
    print()
    print("| turn | vmond 250 -> clip ready ms | ffmpeg CLI ms |")
    print("|--:|--:|--:|")
    for turn in range(max(len(clip.vmond_ms), len(clip.cli_ms))):
        mine = clip.vmond_ms[turn] if turn < len(clip.vmond_ms) else float("nan")
        cli = clip.cli_ms[turn] if turn < len(clip.cli_ms) else float("nan")
        print(f"| {turn + 1} | {ms(mine)} | {ms(cli)} |")
    print(f"| median | {ms(clip.vmond)} | {ms(clip.cli)} |")
    print()
    print(f"vmond / CLI: {div(clip.vmond, clip.cli):.2f}" + "".join(f"; {error}" for error in clip.errors))


def print_tables(args: argparse.Namespace, results: Results) -> None:
    environment = " ".join(f"{key}={value}" for key, value in UNIT_ENVIRONMENT.items())
    print(f"vmond runs with the service unit's environment: {environment}")
    parts = [(results.pairs, print_back_to_back), (results.bursts, print_burst), (results.paced, print_paced),
             (results.clips, print_clips)]
    for value, printer in parts:
        if value:
            print()
            printer(args, value)  # type: ignore[operator]
    if results.clip is not None:
        print()
        print_clip(args, results.clip)


def throughput(mine: Load, ref: Load) -> float:
    return div(mine.rate, ref.rate)


def accept_ratio(mine: Load, ref: Load) -> float:
    return div(percentile(mine.accept_ms(), 99), percentile(ref.accept_ms(), 99))


def runs_text(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def targets(args: argparse.Namespace, results: Results) -> dict[str, tuple[bool, str]]:
    """The issue's targets (medians over the repeats), then the earlier ones this bench still checks."""
    out: dict[str, tuple[bool, str]] = {}
    if results.bursts:
        mine = [m for m, _ in results.bursts]
        missing = sum(m.missing_events() + m.short() for m in mine)
        drain = median([m.drain_s() for m in mine]) if not missing else float("nan")
        label = f"{args.burst_cameras} x {args.burst_mails} burst"
        out[f"drain <= {TARGET_DRAIN_S:g} s after the last 250, nothing missing, {label}"] = (
            drain <= TARGET_DRAIN_S, f"{drain:.2f} s" + (f"; {missing} mails or events missing" if missing else "")
            + f" (runs: {runs_text([m.drain_s() for m in mine])})")
        ratios = [throughput(m, r) for m, r in results.bursts]
        out[f"throughput >= {TARGET_THROUGHPUT:g} x the reference's, {label}"] = (
            median(ratios) >= TARGET_THROUGHPUT, f"{median(ratios):.2f} x (runs: {runs_text(ratios)})")
        ratios = [accept_ratio(m, r) for m, r in results.bursts]
        out[f"accept p99 <= {TARGET_ACCEPT_P99:g} x the reference's, {label}"] = (
            median(ratios) <= TARGET_ACCEPT_P99, f"{median(ratios):.2f} x (runs: {runs_text(ratios)})")
    if results.paced is not None:
        e2e, missing = results.paced.e2e_ms(), results.paced.missing_events()
        note = f", {missing} of {len(results.paced.accepted())} events still missing" if missing else ""
        label = f"{results.paced.cameras} cameras paced"
        out[f"end-to-end p99 <= {TARGET_PACED_P99_MS:g} ms, {label}"] = (
            not missing and percentile(e2e, 99) <= TARGET_PACED_P99_MS, f"{ms(percentile(e2e, 99))} ms{note}")
    if results.clip is not None:
        clip = results.clip
        ratio = div(clip.vmond, clip.cli)
        out[f"clip ready <= {TARGET_CLIP:g} x the ffmpeg CLI's time, {clip.pictures} x {size(args)}"] = (
            ratio <= TARGET_CLIP, f"{ms(clip.vmond)} vs {ms(clip.cli)} ms = {ratio:.2f} x")
    runs = results.vmond_runs()
    if runs:
        idle = max(run.idle_rss for run in runs)
        out[f"main process RSS idle <= {TARGET_RSS_IDLE_MB:g} MB"] = (
            idle <= TARGET_RSS_IDLE_MB, f"{idle:.0f} MB after the warm-up mails, "
            f"{max(run.fresh_rss for run in runs):.0f} MB right after start")
        loaded = max(runs, key=lambda run: run.peak_rss.get("main", 0.0))
        peak = loaded.peak_rss.get("main", 0.0)
        out[f"main process RSS loaded <= {TARGET_RSS_LOAD_MB:g} MB"] = (
            peak <= TARGET_RSS_LOAD_MB, f"{peak:.0f} MB at most, in the {loaded.label} run (workers apart: parser "
            f"{max(r.peak_rss.get('parser', 0) for r in runs):.0f}, encoder "
            f"{max(r.peak_rss.get('encoder', 0) for r in runs):.0f}, fork server "
            f"{max(r.peak_rss.get('forkserver', 0) for r in runs):.0f} MB)")
    out.update(earlier_targets(args, results))
    return out


def earlier_targets(args: argparse.Namespace, results: Results) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    by_cameras = {mine.cameras: (mine, ref) for mine, ref in results.pairs}
    if 8 in by_cameras:
        mine, ref = by_cameras[8]
        out["(earlier) throughput >= 0.5 x the reference's, 8 cameras back to back"] = (
            throughput(mine, ref) >= TARGET_THROUGHPUT,
            f"{mine.rate:.1f} vs {ref.rate:.1f} mails/s = {throughput(mine, ref):.2f} x")
        out["(earlier) accept p99 <= 2 x the reference's, 8 cameras back to back"] = (
            accept_ratio(mine, ref) <= TARGET_ACCEPT_P99, f"{accept_ratio(mine, ref):.2f} x")
    if results.paced is not None:
        e2e, missing = results.paced.e2e_ms(), results.paced.missing_events()
        out[f"(earlier) end-to-end p50 <= {TARGET_PACED_P50_MS:g} ms, {results.paced.cameras} cameras paced"] = (
            not missing and percentile(e2e, 50) <= TARGET_PACED_P50_MS, f"{ms(percentile(e2e, 50))} ms")
    if results.clips is not None:
        base, p99 = (percentile([value for load in loads for value in load.accept_ms()], 99) for loads in results.clips)
        out[f"(earlier) accept p99 while clips encode <= 1.2 x without, {args.clips_cameras} cameras"] = (
            p99 <= TARGET_CLIPS * base, f"{ms(p99)} vs {ms(base)} ms = {div(p99, base):.2f} x")
    return out


def print_targets(found: dict[str, tuple[bool, str]]) -> None:
    print("Targets:")
    for name, (ok, value) in found.items():
        print(f"  {verdict(ok)}  {name}: {value}")
