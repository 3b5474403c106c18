"""One measurement: a target, a workload, the upstream, and every number the report shows."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Literal, TextIO

import numpy as np
import trio

from .clients import Flavour, Gates, Schedule, open_probe, run_session
from .hostile import HostileOutcome, HostilePlan, HostileRun
from .procs import (
    cpu_seconds,
    expand,
    free_port,
    naive_relay_command,
    naive_translator_command,
    peak_rss_kib,
    proxy_command,
    rss_kib,
    started,
    started_command,
)
from .report import Accounting, Latency, NewSessions, TargetResult
from .streams import Phase, SessionRecord, Stream
from .upstream import DEEPGRAM_AGENT_PATH, OPENAI_PATH, Upstream
from .wire import TTS_CHUNK_S, session_token

Route = Literal["openai", "deepgram"]
TargetKind = Literal["direct", "naive", "proxy", "target", "command"]
IDLE_SETTLE_S: Final = 1.0
HOSTILE_LEAD_S: Final = 1.0  # the hostile clients start this long before the honest traffic (their ramp-up)
PROBE_SESSIONS: Final = 5  # fresh sessions opened in the middle of the window, in both phases of a hostile run
PROBE_TIMEOUT_S: Final = 10.0
FAKE_KEY: Final = "sk-bench-not-a-real-key"
_NEUTRALISED: Final = (
    "DEEPGRAM_API_KEY",
    "PROXY_CLIENT_TOKENS",
    "PROXY_CLIENT_TOKENS_FILE",
    "PROXY_JWT_SECRETS",
    "PROXY_JWT_SECRETS_FILE",
    "PROXY_JWT_PUBLIC_KEY_FILE",
    "PROXY_JWT_AUDIENCE",
    "PROXY_JWT_ISSUER",
    "PROXY_ALLOWED_ORIGINS",
    "OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH",
    "DEEPGRAM_SYNTHETIC_AUDIO_DONE",
    "PROXY_HOST",
)

DESCRIPTIONS: Final[dict[str, str]] = {
    "direct": "no relay (floor)",
    "naive": "naive trio-websocket translator (/openai) or relay",
    "proxy": "this proxy",
    "target": "external proxy",
}


@dataclass(frozen=True)
class Workload:
    sessions: int
    duration: float
    warmup: float
    route: Route
    turn_interval: float
    reply_chunks: int
    grace: float
    connect_concurrency: int
    connect_timeout: float
    seed: int


@dataclass(frozen=True)
class TargetSpec:
    kind: TargetKind
    url: str | None = None  # an already running proxy (kind "target")
    pid: int | None = None  # its pid, for CPU and memory
    profile: str | None = None  # run the proxy under cProfile, writing here
    name: str | None = None  # what the report calls it (default: the kind)
    command: str | None = None  # a shell command that starts the target (kind "command"; see COMMAND_PLACEHOLDERS)

    @property
    def label(self) -> str:
        return self.name or self.kind


#: What ``--target-cmd`` commands may contain; the same values are in their environment as the variables that
#: this proxy and the reference read (OPENAI_REALTIME_URL, OPENAI_PROXY_PORT / PROXY_PORT, OPENAI_API_KEY).
COMMAND_PLACEHOLDERS: Final = ("port", "upstream_url", "deepgram_url", "upstream_base", "python")


@dataclass(frozen=True)
class _Endpoint:
    url: str
    flavour: Flavour
    pid: int | None


@asynccontextmanager
async def _target(spec: TargetSpec, route: Route, upstream_base: str) -> AsyncIterator[_Endpoint]:
    upstream_path = OPENAI_PATH if route == "openai" else DEEPGRAM_AGENT_PATH
    raw: Flavour = "realtime" if route == "openai" else "component"
    if spec.kind == "direct":
        yield _Endpoint(upstream_base + upstream_path, raw, None)
    elif spec.kind == "naive" and route == "openai":
        # Like for like: the same translation job as the proxy's /openai route, written plainly.
        async with started(naive_translator_command(upstream_base + OPENAI_PATH), {}) as process:
            yield _Endpoint(f"ws://{process.host}:{process.port}{_component_path(route)}", "component", process.pid)
    elif spec.kind == "naive":
        # The pass-through route: a pure byte relay is the like-for-like floor.
        async with started(naive_relay_command(upstream_base), {}) as process:
            yield _Endpoint(f"ws://{process.host}:{process.port}{upstream_path}", raw, process.pid)
    elif spec.kind == "proxy":
        async with started(proxy_command(spec.profile), _proxy_env(upstream_base)) as process:
            yield _Endpoint(f"ws://{process.host}:{process.port}{_component_path(route)}", "component", process.pid)
    elif spec.kind == "command":
        assert spec.command is not None
        port = free_port()
        values = {
            "port": str(port),
            "upstream_url": upstream_base + OPENAI_PATH,
            "deepgram_url": upstream_base + DEEPGRAM_AGENT_PATH,
            "upstream_base": upstream_base,
            "python": sys.executable,
        }
        env = {**_proxy_env(upstream_base), "OPENAI_PROXY_PORT": str(port), "PROXY_PORT": str(port)}
        async with started_command(expand(spec.command, values), env, "127.0.0.1", port) as process:
            yield _Endpoint(f"ws://127.0.0.1:{port}{_component_path(route)}", "component", process.pid)
    else:
        assert spec.url is not None
        yield _Endpoint(spec.url, "component", spec.pid)


def _proxy_env(upstream_base: str) -> dict[str, str | None]:
    return {
        "OPENAI_REALTIME_URL": upstream_base + OPENAI_PATH,
        "OPENAI_API_KEY": FAKE_KEY,
        "DEEPGRAM_AGENT_URL": upstream_base + DEEPGRAM_AGENT_PATH,
        "DEEPGRAM_LISTEN_URL": "ws://127.0.0.1:9/v1/listen",
        "LOG_LEVEL": "WARNING",
        # The honest sessions come from many addresses (bench/clients.py): the default per-address cap stays. Only
        # the total is raised, for ramps beyond the default 2,048 connections.
        "PROXY_MAX_CONNECTIONS": "8192",
        # Settings of the caller's shell that would change what is measured, or refuse the generator.
        **dict.fromkeys(_NEUTRALISED, None),
    }


def _component_path(route: Route) -> str:
    return "/openai" if route == "openai" else "/deepgram-proxy?service=agent"


@dataclass(frozen=True)
class _Attack:
    """Hostile clients for one measurement: whom they attack, and that process's pid (for its CPU)."""

    plan: HostilePlan
    url: str
    pid: int | None
    attacked: str


@asynccontextmanager
async def _attack_for(
    spec: TargetSpec, endpoint: _Endpoint, route: Route, upstream_base: str, plan: HostilePlan | None
) -> AsyncIterator[_Attack | None]:
    """Where the hostile clients go. The direct floor has no relay to attack: they attack a proxy of their own
    beside it, so the floor of the hostile phase carries the same load on the machine's CPUs."""
    if plan is None:
        yield None
    elif spec.kind == "direct":
        async with started(proxy_command(), _proxy_env(upstream_base)) as victim:
            url = f"ws://{victim.host}:{victim.port}{_component_path(route)}"
            yield _Attack(plan, url, victim.pid, "a proxy beside the floor")
    else:
        yield _Attack(plan, endpoint.url, endpoint.pid, "the target")


@dataclass(frozen=True)
class _Snapshot:
    at: float
    target_cpu: float | None
    generator_cpu: float
    upstream_messages: int
    client_messages: int
    mic_received: int
    tts_received: int


def _snapshot(phase: Phase, records: list[SessionRecord], pid: int | None) -> _Snapshot:
    return _Snapshot(
        at=trio.current_time(),
        target_cpu=cpu_seconds(pid) if pid else None,
        generator_cpu=time.process_time(),
        upstream_messages=phase.upstream_messages,
        client_messages=phase.client_messages,
        mic_received=sum(r.mic.received for r in records),
        tts_received=sum(r.tts.received for r in records),
    )


async def measure(
    spec: TargetSpec,
    workload: Workload,
    upstream: Upstream,
    run: int,
    *,
    progress: TextIO | None = sys.stderr,
    hostile: HostilePlan | None = None,
    probe_sessions: int = 0,
) -> TargetResult:
    """Run the workload against one target and summarise it; with ``hostile``, beside those hostile clients.

    ``probe_sessions`` fresh sessions are opened in the middle of the window (not with the measured ones: their
    connects would disturb the latency of a small run that has no attack to compare with).
    """
    phase = Phase(run, spec.label, workload.route)
    upstream.phase = phase
    base = f"ws://127.0.0.1:{upstream.port}"
    try:
        async with (
            _target(spec, workload.route, base) as endpoint,
            _attack_for(spec, endpoint, workload.route, base, hostile) as attack,
        ):
            return await _drive(phase, endpoint, workload, upstream, progress, attack, probe_sessions)
    finally:
        upstream.phase = None


async def _prime(phase: Phase, endpoint: _Endpoint, workload: Workload, upstream: Upstream) -> None:
    """One short session through the whole path (connect, Settings, audio, a turn) before anything is measured.

    Targets import and allocate lazily on first use (the proxy imports its translator with the first /openai
    session); without this the first measured session pays for it and the per-session memory is meaningless.
    """
    primer = Phase(phase.run, phase.target, phase.route)
    record = SessionRecord(0, session_token(phase.run, 999_999), phase.route)
    primer.sessions = {record.token: record}
    upstream.phase = primer
    gates = Gates(1, trio.Semaphore(1))
    schedule = Schedule(0.3, workload.connect_timeout, workload.seed)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_session, primer, record, endpoint.url, endpoint.flavour, gates, schedule)
        await gates.all_settled.wait()
        gates.start_at = trio.current_time()
        gates.stop_at = gates.start_at + 0.5
        gates.start.set()
        await trio.sleep_until(gates.stop_at)
        with trio.move_on_after(workload.reply_chunks * TTS_CHUNK_S + 5.0):
            while record.ready_latency is not None and not record.errors and not record.settled():  # noqa: ASYNC110
                await trio.sleep(0.05)
        gates.close.set()
    upstream.phase = phase
    if record.errors:
        raise RuntimeError(f"{phase.target}: the priming session failed: {record.first_error}")


async def _drive(
    phase: Phase,
    endpoint: _Endpoint,
    workload: Workload,
    upstream: Upstream,
    progress: TextIO | None,
    attack: _Attack | None,
    probe_sessions: int,
) -> TargetResult:
    n = workload.sessions
    pid = endpoint.pid
    await _prime(phase, endpoint, workload, upstream)
    records = [SessionRecord(sid, session_token(phase.run, sid), phase.route) for sid in range(n)]
    probes = [
        SessionRecord(n + index, session_token(phase.run, n + index), phase.route) for index in range(probe_sessions)
    ]
    phase.sessions = {r.token: r for r in records + probes}
    rss_base = rss_kib(pid) if pid else None
    gates = Gates(n, trio.Semaphore(workload.connect_concurrency))
    schedule = Schedule(workload.turn_interval, workload.connect_timeout, workload.seed)
    hostile: HostileRun | None = None
    try:
        async with trio.open_nursery() as nursery:
            for record in records:
                nursery.start_soon(run_session, phase, record, endpoint.url, endpoint.flavour, gates, schedule)
            async with trio.open_nursery() as watch:
                if progress is not None:
                    watch.start_soon(_progress, phase, records, progress)
                await gates.all_settled.wait()
                await trio.sleep(IDLE_SETTLE_S)
                rss_idle = rss_kib(pid) if pid else None
                if attack is not None:
                    # The honest sessions are open; the attack begins before their traffic and lasts its whole
                    # window. New sessions opened during the attack are the probes below.
                    longest_s = HOSTILE_LEAD_S + workload.duration + PROBE_TIMEOUT_S + 60.0
                    hostile = await HostileRun.start(attack.url, attack.plan, attack.attacked, longest_s)
                    await trio.sleep(HOSTILE_LEAD_S)
                gates.start_at = trio.current_time() + 0.1
                gates.stop_at = gates.start_at + workload.duration
                gates.start.set()
                await trio.sleep_until(gates.start_at + workload.warmup)
                phase.measuring = True
                before = _snapshot(phase, records, pid)
                attacked_before = cpu_seconds(attack.pid) if attack and attack.pid else None
                probe_at = (before.at + gates.stop_at) / 2
                probing = await nursery.start(_probe, phase, probes, endpoint, probe_at)
                await trio.sleep_until(gates.stop_at)
                after = _snapshot(phase, records, pid)
                attacked_after = cpu_seconds(attack.pid) if attack and attack.pid else None
                outcome: HostileOutcome | None = None
                if hostile is not None:
                    outcome = await hostile.finish()
                    if attacked_before is not None and attacked_after is not None:
                        window = max(after.at - before.at, 1e-9)
                        outcome.attacked_cpu_percent = (attacked_after - attacked_before) / window * 100.0
                # Let replies in flight finish and every frame sent arrive, then account.
                with trio.move_on_after(workload.reply_chunks * TTS_CHUNK_S + workload.grace + 5.0):
                    # Polled: "settled" spans many sessions' counters, written by both ends; 50 ms is plenty.
                    while not all(r.settled() for r in records if r.ready_latency is not None and not r.errors):  # noqa: ASYNC110
                        await trio.sleep(0.05)
                await trio.sleep(workload.grace)
                phase.measuring = False
                rss_peak = peak_rss_kib(pid) if pid else None
                await probing.done.wait()
                watch.cancel_scope.cancel()
            gates.close.set()
    finally:
        if hostile is not None:
            with trio.CancelScope(shield=True):
                await hostile.kill()
    result = _summarise(phase, records, workload, before, after, rss_base, rss_idle, rss_peak)
    result.hostile = outcome
    result.new_sessions = probing.summary() if probes else None
    return result


@dataclass(eq=False)
class _Probing:
    attempted: int
    ready_s: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)

    def summary(self) -> NewSessions:
        return NewSessions(self.attempted, Latency.of(self.ready_s), dict(self.failures))


async def _probe(
    phase: Phase,
    probes: list[SessionRecord],
    endpoint: _Endpoint,
    at: float,
    task_status: trio.TaskStatus[_Probing] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open a few fresh sessions at ``at`` (mid-window), concurrently: can a new user still get in?"""
    probing = _Probing(len(probes))
    task_status.started(probing)
    await trio.sleep_until(at)

    async def one(record: SessionRecord) -> None:
        ready = await open_probe(phase, record, endpoint.url, endpoint.flavour, PROBE_TIMEOUT_S)
        if isinstance(ready, float):
            probing.ready_s.append(ready)
        else:
            probing.failures[ready] = probing.failures.get(ready, 0) + 1

    async with trio.open_nursery() as nursery:
        for record in probes:
            nursery.start_soon(one, record)
    probing.done.set()


def _summarise(
    phase: Phase,
    records: list[SessionRecord],
    workload: Workload,
    before: _Snapshot,
    after: _Snapshot,
    rss_base: int | None,
    rss_idle: int | None,
    rss_peak: int | None,
) -> TargetResult:
    window = max(after.at - before.at, 1e-9)
    messages = (after.upstream_messages - before.upstream_messages) + (after.client_messages - before.client_messages)
    audio = (after.mic_received - before.mic_received) + (after.tts_received - before.tts_received)
    cpu = None
    if after.target_cpu is not None and before.target_cpu is not None:
        cpu = after.target_cpu - before.target_cpu
    ready = sum(1 for r in records if r.ready_latency is not None)
    per_session = None
    if rss_base is not None and rss_idle is not None and ready:
        per_session = (rss_idle - rss_base) / ready
    errors = [r for r in records if r.errors]
    return TargetResult(
        target=phase.target,
        description=DESCRIPTIONS.get(phase.target, phase.target),
        route=phase.route,
        sessions=workload.sessions,
        sessions_ready=ready,
        duration_s=workload.duration,
        window_s=window,
        mic=Latency.of(phase.mic_latencies),
        tts=Latency.of(phase.tts_latencies),
        ready=Latency.of(phase.ready_latencies),
        first_audio=Latency.of(phase.first_audio_latencies),
        mic_frames=_account(r.mic for r in records),
        tts_frames=_account(r.tts for r in records),
        turns=sum(r.turns for r in records),
        errors=sum(r.errors for r in records) + phase.unmatched_upstream + phase.malformed,
        first_error=errors[0].first_error if errors else _unmatched(phase),
        messages=messages,
        audio_messages=audio,
        messages_per_s=messages / window,
        cpu_s=cpu,
        cpu_us_per_message=cpu / messages * 1e6 if cpu is not None and messages else None,
        cpu_us_per_audio_message=cpu / audio * 1e6 if cpu is not None and audio else None,
        rss_base_kib=rss_base,
        rss_idle_kib=rss_idle,
        rss_per_session_kib=per_session,
        rss_peak_kib=rss_peak,
        generator_cpu_percent=(after.generator_cpu - before.generator_cpu) / window * 100.0,
        late_sends=phase.late_sends,
        send_lag_max_ms=phase.send_lag_max * 1000.0,
        unmatched_upstream=phase.unmatched_upstream,
        samples={
            "mic": np.asarray(phase.mic_latencies, dtype=np.float64),
            "tts": np.asarray(phase.tts_latencies, dtype=np.float64),
        },
    )


def _unmatched(phase: Phase) -> str:
    if phase.malformed:
        return f"{phase.malformed} message(s) could not be decoded"
    if phase.unmatched_upstream:
        return f"{phase.unmatched_upstream} upstream connection(s) without a known session"
    return ""


def _account(streams: Iterable[Stream]) -> Accounting:
    total = Accounting()
    for stream in streams:
        total.sent += stream.sent
        total.received += stream.received
        total.lost += stream.lost
        total.reordered += stream.reordered
        total.duplicates += stream.duplicates
    return total


async def _progress(phase: Phase, records: list[SessionRecord], out: TextIO) -> None:
    """One updating status line (a plain line every few seconds when not a terminal)."""
    tty = out.isatty()
    begin = trio.current_time()
    seen_mic = seen_tts = 0
    try:
        while True:
            await trio.sleep(0.5 if tty else 5.0)
            mic, tts = phase.mic_latencies, phase.tts_latencies
            p99_mic = _p99(mic[seen_mic:])
            p99_tts = _p99(tts[seen_tts:])
            seen_mic, seen_tts = len(mic), len(tts)
            ready = sum(1 for r in records if r.ready_latency is not None)
            line = (
                f"[{phase.target}] {trio.current_time() - begin:5.1f}s  sessions {ready}/{len(records)}  "
                f"frames up {sum(r.mic.sent for r in records)} down {sum(r.tts.sent for r in records)}  "
                f"p99 up {p99_mic} down {p99_tts} ms" + ("" if phase.measuring else "  (warming up)")
            )
            out.write(("\r" + line.ljust(110)) if tty else line + "\n")
            out.flush()
    finally:
        if tty:
            out.write("\n")
            out.flush()


def _p99(samples: list[float]) -> str:
    if not samples:
        return "-"
    value = float(np.percentile(np.asarray(samples), 99)) * 1000.0
    return "-" if math.isnan(value) else f"{value:.2f}"
