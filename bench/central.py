"""Benchmark: a central station mirroring N sites over a real broker (see bench/README.md).

The bench starts mosquitto on a free loopback port and impersonates N sites (default 500, 16 cameras each) with
the messages an edge publishes (bench/sites.py: made by vmond's own store functions): retained ``available``,
``status`` (with ``heartbeat_at``, again every minute) and ``config``, then ``events`` and ``alarms``. A central
``vmond run`` (``central: {sites: auto}``) mirrors them; the bench signs in and watches its ``/ws``. Each event
carries a token in its subject, so each ``event.created`` on the WebSocket is matched to the publish it came from.

The runs, in order:

1. **reference**: a bare paho subscriber on the same broker receives a burst of the same messages (under another
   prefix, which the central does not mirror): the transport's ceiling on this machine, as messages/s;
2. **onboarding**: the central starts with every site's retained messages waiting; until ``GET /api/sites``
   lists all of them;
3. **paced**: events at a steady rate (default 50/s): the latency from the edge's publish to the central's
   ``event.created``, p50/p95/p99, beside the bare subscriber's for the same messages;
4. **commands**: an operator's dismissal through the central's API -> the signed command on
   ``<prefix>/<site>/commands`` (checked by the edge's own :func:`vmond.store.commands.read_command`) -> the
   fake site's result on ``.../commands/result`` -> the central shows it done; one at a time;
5. **burst**: as many events as the broker takes (default 10,000): the events mirrored per second.

The central's RSS (``/proc``) and CPU are sampled throughout. No timing is asserted: the figures are printed,
with the issue's targets (200 events/s mirrored; p99 under 1 s at 50 events/s) marked PASS or MISS.

    .venv/bin/python bench/central.py [--sites 500] [--cameras 16] [--paced-rate 50] [--burst 10000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from centralrig import (
    MOSQUITTO,
    Api,
    BareSubscriber,
    Broker,
    Central,
    Database,
    Live,
    Sampler,
    Sighting,
    profile_summary,
    start_profiler,
    stop_profiler,
    wait_until,
)
from ingestload import percentile  # bench/ is the script's own folder
from ingestreport import div, verdict
from scenes import camera_jpegs
from sites import PREFIX, Fleet, publish_burst, publish_paced

REFERENCE_PREFIX = "bench-ref"  # the reference burst's topics: not the central's prefix, so it mirrors none of it

# Targets from the issue.
TARGET_EVENTS_PER_S = 200.0
TARGET_P99_MS = 1000.0


@dataclass
class Results:
    targets: dict[str, tuple[bool, str]] = field(default_factory=dict)

    @staticmethod
    def say(text: str = "") -> None:
        print(text, flush=True)


def ms(seconds: float) -> str:
    value = seconds * 1000
    return "-" if value != value else f"{value:.0f}" if value >= 100 else f"{value:.1f}"  # NaN -> "-"


def spread(values: Sequence[float]) -> str:
    values = [value for value in values if value == value]  # NaN: not seen
    return " / ".join(ms(percentile(values, q)) for q in (50, 95, 99)) + f" / {ms(max(values, default=float('nan')))}"


async def reference_burst(args: argparse.Namespace, fleet: Fleet, port: int) -> tuple[float, int]:
    """The bare subscriber's receive rate for a burst (messages/s, all messages: events and alarms)."""
    subscriber = await asyncio.to_thread(BareSubscriber, port, f"{REFERENCE_PREFIX}/+/#")
    try:
        start, before = time.perf_counter(), fleet.messages_sent
        await asyncio.to_thread(publish_burst, fleet, args.burst, args.alarm_every, REFERENCE_PREFIX)
        messages = fleet.messages_sent - before
        await wait_until(lambda: subscriber.count >= messages, args.drain_timeout)
        return div(subscriber.count, subscriber.last - start), subscriber.count
    finally:
        subscriber.close()


async def paced_run(args: argparse.Namespace, fleet: Fleet, live: Live, port: int
                    ) -> tuple[list[int], list[float], list[float]]:
    """Events at args.paced_rate: (tokens, the central's latencies, the bare subscriber's), in seconds."""
    subscriber = await asyncio.to_thread(BareSubscriber, port, f"{PREFIX}/+/events")
    try:
        count = max(1, round(args.paced_rate * args.paced_duration))
        tokens = await asyncio.to_thread(publish_paced, fleet, args.paced_rate, count, args.alarm_every)
        await wait_until(lambda: all(t in live.first for t in tokens), args.drain_timeout)
        await wait_until(lambda: all(t in subscriber.arrived for t in tokens), 5.0)
    finally:
        subscriber.close()
    central = [live.first[t].at - fleet.published[t] for t in tokens if t in live.first]
    bare = [subscriber.arrived[t] - fleet.published[t] for t in tokens if t in subscriber.arrived]
    return tokens, central, bare


def command_state(kind: str, data: dict[str, Any], event_id: int) -> str | None:
    """The state of the command an operator's action on the central's event *event_id* became, from a
    ``command.created`` / ``command.updated`` message (``data`` is the command: ``{"id", "site", "action",
    "event_id", "state": pending|done|refused, "error", ...}``)."""
    if kind in ("command.created", "command.updated") and data.get("event_id") == event_id:
        state = data.get("state")
        return state if isinstance(state, str) else None
    return None


@dataclass
class RoundTrip:
    api: float  # seconds: the POST answered
    at_site: float  # the command arrived at the site
    done: float  # the central shows it done (or refused)
    dismissed: float  # the central shows the event dismissed (the site's own update, mirrored)
    state: str
    error: str | None


async def command_round_trips(args: argparse.Namespace, fleet: Fleet, live: Live, api: Api, tokens: list[int]
                              ) -> tuple[list[RoundTrip], list[str]]:
    """One dismissal at a time through the central's API, each on an event the paced run mirrored."""
    trips: list[RoundTrip] = []
    problems: list[str] = []
    # events still active on the central now (an event whose alarm the site raised is not dismissed)
    candidates = [t for t in tokens if t in live.first
                  and live.newest[live.first[t].data["id"]].data.get("status") == "active"]
    for token in candidates[:args.commands]:
        event_id = live.first[token].data["id"]
        done: asyncio.Future[tuple[float, str]] = asyncio.get_running_loop().create_future()
        dismissed: list[float] = []

        def watch(kind: str, data: dict[str, Any], now: float, event_id: int = event_id,
                  done: asyncio.Future[tuple[float, str]] = done, dismissed: list[float] = dismissed) -> None:
            state = command_state(kind, data, event_id)
            if state in ("done", "refused") and not done.done():
                done.set_result((now, state))
            if kind.startswith("event.") and data.get("id") == event_id and data.get("status") == "dismissed":
                dismissed.append(now)

        live.watchers.append(watch)
        seen_before = len(fleet.commands)
        start = time.perf_counter()
        try:
            status, body = await api.post(f"/api/events/{event_id}/dismiss")
            answered = time.perf_counter()
            if status >= 300:
                problems.append(f"POST /api/events/{event_id}/dismiss answered {status}: {body}")
                continue
            try:
                finished, state = await asyncio.wait_for(done, args.command_timeout)
                await wait_until(lambda dismissed=dismissed: bool(dismissed), args.command_timeout)
            except TimeoutError:
                last = live.newest.get(event_id)
                shown = {"status": last.data.get("status")} if last else None
                problems.append(f"event {event_id}: the central showed no done or refused within "
                                f"{args.command_timeout:g} s (last shown: {shown})")
                continue
        finally:
            live.watchers.remove(watch)
        arrived = [c for c in fleet.commands[seen_before:] if c.command and c.command.get("action") == "dismiss"]
        at_site = arrived[0].at - start if arrived else float("nan")
        trips.append(RoundTrip(answered - start, at_site, finished - start,
                               dismissed[0] - start if dismissed else float("nan"), state,
                               arrived[0].error if arrived else "no command reached the site"))
    return trips, problems


async def burst_run(args: argparse.Namespace, fleet: Fleet, live: Live, centrals: list[Central]
                    ) -> tuple[list[int], int, float, float, float]:
    """The burst: (tokens, messages, when the first was published, when the last was mirrored, the nodes' CPU s)."""
    profiler = start_profiler(args.profile, centrals[0].pid) if args.profile else None
    cpu_before = sum([await asyncio.to_thread(central.cpu) for central in centrals])
    start, sent_before = time.perf_counter(), fleet.messages_sent
    try:
        tokens = await asyncio.to_thread(publish_burst, fleet, args.burst, args.alarm_every)
        messages = fleet.messages_sent - sent_before
        await wait_until(lambda: all(t in live.first for t in tokens), args.drain_timeout, poll=0.2)
    finally:
        if profiler is not None:
            await asyncio.to_thread(stop_profiler, profiler)
    seen = [live.first[t].at for t in tokens if t in live.first]
    cpu = sum([await asyncio.to_thread(central.cpu) for central in centrals]) - cpu_before
    return tokens, messages, start, max(seen, default=start), cpu


async def count_sites(api: Api, cameras: int) -> int:
    """Sites the central lists with their config mirrored (all their cameras) and their heartbeat."""
    try:
        sites = (await api.get("/api/sites")).get("sites", [])
    except aiohttp.ClientError:
        return -1
    return sum(1 for site in sites if site.get("config_at") and site.get("heartbeat_at")
               and site.get("cameras") == cameras)


@dataclass
class Summary:
    """What the comparison of one node with two needs from a run."""

    nodes: int
    rate: float  # burst events/s mirrored
    mirrored: int
    burst: int
    cpu_ms: float  # all nodes' CPU per event in the burst
    latencies: list[float]  # paced: publish -> the first node's /ws, seconds
    paced: int  # events published in the paced run


async def bench(args: argparse.Namespace, scratch: Path, nodes: int) -> Summary:
    scratch.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(16)
    out = Results()
    broker = Broker(scratch / "broker", args.max_queued, args.max_inflight)
    database = Database(scratch / "postgres") if args.database == "postgresql" else None
    centrals: list[Central] = []
    fleet: Fleet | None = None
    apis: list[Api] = []
    lives: list[Live] = []
    sampler = None
    try:
        await asyncio.to_thread(broker.start)
        if database is not None:
            await asyncio.to_thread(database.start)
        for index in range(nodes):
            centrals.append(Central(scratch / f"central-{index + 1}", broker.port, secret,
                                    node=f"node-{index + 1}" if nodes > 1 else None,
                                    database=database.url if database is not None else None))
        central = centrals[0]
        print(f"mosquitto on port {broker.port}; {nodes} central node(s) on "
              f"{'PostgreSQL' if database is not None else 'SQLite'}; recording the template site and connecting "
              f"{args.connections} publishing connections ...", flush=True)
        thumbnail = camera_jpegs(1, 480, 270, seed=args.seed, quality=75)[0] if args.thumbnails else None
        fleet = await asyncio.to_thread(Fleet, broker.port, args.sites, args.cameras, args.connections, secret,
                                        scratch, args.seed, thumbnail)

        # 1. The transport's ceiling.
        ref_rate, ref_count = await reference_burst(args, fleet, broker.port)
        print(f"reference: a bare paho subscriber received {ref_count} messages at {ref_rate:.0f}/s", flush=True)

        # 2. Onboarding: every site's retained state is waiting when the central starts.
        await asyncio.to_thread(fleet.publish_retained)
        await wait_until(lambda: fleet is not None and fleet.unacknowledged() == 0, 60.0)
        for index, node in enumerate(centrals):  # the first node makes the admin; the others share its database
            await asyncio.to_thread(node.start, index == 0)
        started = time.perf_counter()
        fresh_rss = await asyncio.to_thread(central.rss)
        first: dict[int, Sighting] = {}
        newest: dict[int, Sighting] = {}
        for node in centrals:
            apis.append(Api(node))
            await apis[-1].sign_in()
            lives.append(Live(apis[-1], first, newest))  # the first sighting on any node's socket counts
            await lives[-1].start()
        api, live = apis[0], lives[0]
        sampler = Sampler(central)
        sampler.start()
        sampler.phase = "onboarding"
        deadline = time.monotonic() + args.drain_timeout
        sites_seen = 0
        while time.monotonic() < deadline and sites_seen < args.sites:
            sites_seen = await count_sites(api, args.cameras)
            await asyncio.sleep(1.0)
        onboarding = time.perf_counter() - started
        print(f"onboarding: {sites_seen} of {args.sites} sites listed after {onboarding:.1f} s", flush=True)
        fleet.start_heartbeat()
        await asyncio.sleep(2.0)
        idle_rss = await asyncio.to_thread(central.rss)

        # 3. Latency at a steady rate.
        sampler.phase = "paced"
        tokens, central_lat, bare_lat = await paced_run(args, fleet, live, broker.port)
        print(f"paced: {len(central_lat)} of {len(tokens)} events on the central's WebSocket", flush=True)

        # 4. Commands.
        sampler.phase = "commands"
        trips, problems = await command_round_trips(args, fleet, live, api, tokens) if args.commands else ([], [])
        print(f"commands: {len(trips)} round trips, {len(problems)} problem(s)", flush=True)
        for problem in problems[:5]:
            print(f"  {problem}", flush=True)

        # 5. Throughput.
        sampler.phase = "burst"
        burst_tokens, burst_messages, burst_start, burst_end, burst_cpu = await burst_run(args, fleet, live,
                                                                                          centrals)
        mirrored = sum(1 for t in burst_tokens if t in live.first)
        rate = div(mirrored, burst_end - burst_start)
        print(f"burst: {mirrored} of {len(burst_tokens)} events mirrored in {burst_end - burst_start:.1f} s",
              flush=True)
        if nodes > 1:  # every node's WebSocket shows every event, whichever node mirrored it
            await wait_until(lambda: all(all(t in each.mine for t in burst_tokens) for each in lives), 10.0)
        everywhere = sum(1 for t in burst_tokens if all(t in each.mine for each in lives))
        sampler.phase = "after"
        await asyncio.sleep(1.0)
        end_rss = await asyncio.to_thread(central.rss)
        others_rss = await asyncio.to_thread(central.rss_others)
        bodies = [await each.get("/api/health") for each in apis]
        healths = [body.get("central") or {} for body in bodies]
        health = {key: sum(int(h.get(key) or 0) for h in healths) for key in ("mirrored", "dropped", "waiting")}
        # PostgreSQL: transactions that met another's and were run again (serialization failures, deadlocks)
        health["conflicts"] = sum(int((body.get("database") or {}).get("conflicts") or 0) for body in bodies)

        report(out, args, ref_rate=ref_rate, sites_seen=sites_seen, onboarding=onboarding, fresh_rss=fresh_rss,
               idle_rss=idle_rss, end_rss=end_rss, others_rss=others_rss, peaks=sampler.peak, tokens=tokens,
               central_lat=central_lat, bare_lat=bare_lat, trips=trips, problems=problems, burst=len(burst_tokens),
               mirrored=mirrored, rate=rate, burst_messages=burst_messages,
               burst_cpu=burst_cpu, live=live, fleet=fleet, health=health, nodes=nodes, everywhere=everywhere,
               per_node=[len(each.mine & set(burst_tokens)) for each in lives])
        return Summary(nodes, rate, mirrored, len(burst_tokens), div(burst_cpu * 1000, mirrored), central_lat,
                       len(tokens))
    except BaseException:
        for node in centrals:
            print(f"\n{node.folder.name}'s log, last lines:\n" + node.log_tail(), file=sys.stderr)
        raise
    finally:
        for closing in (sampler, *lives, *apis):
            if closing is not None:
                await closing.close()
        if fleet is not None:
            fleet.close()
        for node in centrals:
            node.stop()
        broker.stop()
        if database is not None:
            database.stop()


def report(out: Results, args: argparse.Namespace, **r: Any) -> None:
    live: Live = r["live"]
    fleet: Fleet = r["fleet"]
    out.say()
    out.say(f"{args.sites} sites x {args.cameras} cameras on {args.connections} publishing connections"
            f"{', thumbnails after each event' if args.thumbnails else ''}; "
            f"every {args.alarm_every}th event also raises its alarm at the site (an events update and an alarms "
            f"message); the WebSocket reconnected {len(live.closes)} time(s), {live.resyncs} resync(s)")
    out.say()
    out.say(f"{r['nodes']} central node(s) on {'PostgreSQL' if args.database == 'postgresql' else 'SQLite'}; "
            "the latency is to the first node's WebSocket that shows the event")
    out.say("| what | figure |")
    out.say("|---|--:|")
    out.say(f"| reference: bare paho subscriber, messages/s | {r['ref_rate']:.0f} |")
    out.say(f"| onboarding: sites listed by `GET /api/sites` with config, cameras and heartbeat / seconds "
            f"| {r['sites_seen']} / {r['onboarding']:.1f} |")
    out.say(f"| burst: events mirrored / published | {r['mirrored']} / {r['burst']} |")
    message_rate = div(r["burst_messages"] * r["rate"], r["burst"])
    out.say(f"| burst: events/s mirrored (messages/s) | {r['rate']:.1f} ({message_rate:.0f}) |")
    out.say(f"| burst: central/reference, messages/s | {div(message_rate, r['ref_rate']):.2f} |")
    out.say(f"| burst: central CPU ms per event (all nodes) | {div(r['burst_cpu'] * 1000, r['mirrored']):.2f} |")
    if r["nodes"] > 1:
        out.say(f"| burst: events on every node's WebSocket / on each | {r['everywhere']} / "
                f"{' + '.join(str(n) for n in r['per_node'])} |")
    central_lat, bare_lat = r["central_lat"], r["bare_lat"]
    out.say(f"| paced at {args.paced_rate:g}/s: events seen on the central's WebSocket | "
            f"{len(central_lat)} / {len(r['tokens'])} |")
    out.say(f"| paced: publish -> central `/ws` ms, p50 / p95 / p99 / max | {spread(central_lat)} |")
    out.say(f"| paced: publish -> bare subscriber ms, p50 / p95 / p99 / max | {spread(bare_lat)} |")
    out.say(f"| paced: p99 central/bare | {div(percentile(central_lat, 99), percentile(bare_lat, 99)):.1f} |")
    trips: list[RoundTrip] = r["trips"]
    if trips:
        out.say(f"| commands: {len(trips)} dismissals, API answered ms p50 / max | "
                f"{ms(percentile([t.api for t in trips], 50))} / {ms(max(t.api for t in trips))} |")
        out.say(f"| commands: API -> at the site ms p50 / max | {ms(percentile([t.at_site for t in trips], 50))} / "
                f"{ms(max(t.at_site for t in trips))} |")
        done = [t for t in trips if t.state == "done"]
        for label, values in (("the command shown done", [t.done for t in done]),
                              ("the event shown dismissed", [t.dismissed for t in done if t.dismissed == t.dismissed])):
            out.say(f"| commands: API -> {label} ms p50 / p95 / max | {ms(percentile(values, 50))} / "
                    f"{ms(percentile(values, 95))} / {ms(max(values, default=float('nan')))} |")
        states = sorted({t.state for t in trips})
        out.say(f"| commands: states shown | {', '.join(f'{s} {sum(t.state == s for t in trips)}' for s in states)} |")
        for reason in sorted({t.error for t in trips if t.state != "done" and t.error}):
            out.say(f"| commands: refused by the site | {reason} |")
    peaks = r["peaks"]
    out.say(f"| central main process RSS MB: fresh / {args.sites} sites onboarded / peak paced / peak burst / "
            f"after | {r['fresh_rss']:.0f} / {r['idle_rss']:.0f} / {peaks.get('paced', 0):.0f} / "
            f"{peaks.get('burst', 0):.0f} / {r['end_rss']:.0f} |")
    out.say(f"| central's other processes RSS MB (the worker pool it starts) | {r['others_rss']:.0f} |")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.say(f"| the bench's own CPU s (publishers, subscribers, WebSocket) | {usage.ru_utime + usage.ru_stime:.1f} |")
    out.say(f"| events and alarms published in all | {fleet.events_sent} / {fleet.alarms_sent} |")
    health = r["health"]
    out.say(f"| the central's `/api/health`: site messages mirrored / dropped / waiting | {health.get('mirrored')} / "
            f"{health.get('dropped')} / {health.get('waiting')} |")
    if args.database == "postgresql":
        out.say("| PostgreSQL: write transactions run again after a conflict, all nodes | "
                f"{health.get('conflicts')} |")
    out.targets[f"mirror >= {TARGET_EVENTS_PER_S:.0f} events/s"] = (
        r["rate"] >= TARGET_EVENTS_PER_S and r["mirrored"] == r["burst"],
        f"{r['rate']:.1f} events/s ({r['mirrored']} of {r['burst']})")
    p99 = percentile(central_lat, 99)
    out.targets[f"p99 publish -> /ws < 1 s at {args.paced_rate:g} events/s"] = (
        p99 < TARGET_P99_MS / 1000 and len(central_lat) == len(r["tokens"]),
        f"{ms(p99)} ms ({len(central_lat)} of {len(r['tokens'])} seen)")
    out.say()
    out.say("Targets:")
    for name, (ok, value) in out.targets.items():
        out.say(f"  {verdict(ok)}  {name}: {value}")
    if args.profile:
        out.say()
        out.say(f"Where the central's threads were during the burst (py-spy, {args.profile}):")
        for line in profile_summary(args.profile):
            out.say(f"    {line}")
    if r["problems"]:
        out.say()
        out.say("Command problems: " + "; ".join(r["problems"][:5]))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=500, help="sites impersonated (500)")
    parser.add_argument("--cameras", type=int, default=16, help="cameras per site (16)")
    parser.add_argument("--connections", type=int, default=4, help="publishing connections the sites share (4)")
    parser.add_argument("--paced-rate", type=float, default=50.0, help="events/s of the latency run (50)")
    parser.add_argument("--paced-duration", type=float, default=20.0, help="seconds of the latency run (20)")
    parser.add_argument("--burst", type=int, default=10000, help="events of the throughput run (10000)")
    parser.add_argument("--alarm-every", type=int, default=10,
                        help="every Nth event's alarm is raised at its site (10; 0: none)")
    parser.add_argument("--thumbnails", action="store_true",
                        help="each event's two thumbnails follow it, as from sites with mqtt.publish_media: thumbnails")
    parser.add_argument("--commands", type=int, default=20, help="command round trips, one at a time (20)")
    parser.add_argument("--command-timeout", type=float, default=10.0, help="seconds one round trip may take (10)")
    parser.add_argument("--drain-timeout", type=float, default=180.0,
                        help="seconds to wait for the central to catch up after a run (180)")
    parser.add_argument("--max-queued", type=int, default=1_000_000,
                        help="mosquitto's max_queued_messages for the central's session (1000000)")
    parser.add_argument("--max-inflight", type=int, default=20,
                        help="mosquitto's max_inflight_messages: unacknowledged messages per client (20, its default)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record the central with py-spy during the burst into this file (collapsed stacks) and "
                        "print where its time went")
    parser.add_argument("--seed", type=int, default=18, help="random seed: which site and camera each event has")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--nodes", choices=("1", "2", "both"), default="1",
                        help="central nodes sharing the broker and the database: 1, 2, or both one after the other, "
                        "with the gain (1)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default=None,
                        help="the central's database (default: SQLite for one node, PostgreSQL for two and for both, "
                        "so that the comparison runs on one engine); PostgreSQL is a throw-away cluster of Debian's "
                        "binaries (tests/postgres.py)")
    args = parser.parse_args(argv)
    if args.database is None:
        args.database = "sqlite" if args.nodes == "1" else "postgresql"
    if args.database == "sqlite" and args.nodes != "1":
        parser.error("several nodes share a PostgreSQL database: --database postgresql")
    return args


def compare(one: Summary, two: Summary) -> None:
    """The gain of a second node: the burst's throughput and the paced latency side by side."""
    print()
    print("| nodes | burst events/s mirrored | CPU ms per event (all nodes) | paced publish -> /ws p50 / p99 ms |")
    print("|--:|--:|--:|--:|")
    for run in (one, two):
        print(f"| {run.nodes} | {run.rate:.1f} ({run.mirrored} of {run.burst}) | {run.cpu_ms:.2f} | "
              f"{ms(percentile(run.latencies, 50))} / {ms(percentile(run.latencies, 99))} |")
    print()
    print(f"gain: 2-node throughput / 1-node throughput = {div(two.rate, one.rate):.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(MOSQUITTO).exists():
        print("mosquitto is needed (Debian: apt-get install mosquitto)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a CI timeout cleans up like Ctrl-C
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()}, "
          f"load {os.getloadavg()[0]:.1f}); {args.sites} sites x {args.cameras} cameras")
    with tempfile.TemporaryDirectory(prefix="vmond-bench-central-", dir=args.dir) as scratch:
        try:
            if args.nodes != "both":
                asyncio.run(bench(args, Path(scratch), int(args.nodes)))
                return 0
            one = asyncio.run(bench(args, Path(scratch) / "one-node", 1))
            two = asyncio.run(bench(args, Path(scratch) / "two-nodes", 2))
            compare(one, two)
            return 0
        except KeyboardInterrupt:
            print("interrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            print(f"\n(load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    sys.exit(main())
