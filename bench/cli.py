"""``python -m bench``: latency and capacity of the proxy next to a no-relay floor and a naive relay.

Every target gets the same workload, one after the other, against the same in-process upstream; see
docs/performance.md for what is measured and how to read the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import itertools
import math
import os
import platform
import pstats
import re
import sys
from dataclasses import dataclass
from typing import Any

import trio

from .hostile import DEFAULT_KINDS, HostilePlan, parse_kinds
from .report import (
    RampStep,
    TargetResult,
    added,
    hostile_clients_table,
    hostile_table,
    markdown_table,
    plot,
    ramp_table,
    repeat_table,
    sanitize,
    write_json,
)
from .runner import COMMAND_PLACEHOLDERS, PROBE_SESSIONS, Route, TargetSpec, Workload, measure
from .upstream import Upstream
from .wire import TTS_CHUNK_S

DEFAULT_RAMP = "1,10,25,50,100,150,200,250,300,400,500"
KNOWN_TARGETS = ("direct", "naive", "proxy")
COMMAND_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
HOSTILE_TARGETS = "direct,proxy"  # the default with --hostile: the floor and the proxy, each quiet then hostile


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=50, help="concurrent sessions (default 50)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of traffic per target (default 20)")
    p.add_argument("--warmup", type=float, default=None, help="seconds excluded at the start (default 20%%, max 3)")
    p.add_argument("--route", choices=("openai", "deepgram"), default="openai")
    p.add_argument(
        "--targets",
        help=f"comma-separated subset of direct,naive,proxy (default all; with --hostile {HOSTILE_TARGETS})",
    )
    p.add_argument("--target", metavar="URL", help="benchmark an already running proxy (component protocol) instead")
    p.add_argument("--target-pid", type=int, help="pid of the --target process, for its CPU and memory")
    p.add_argument(
        "--target-cmd",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="also measure the proxy this shell command starts, as NAME (repeatable). Placeholders: "
        + ", ".join("{" + name + "}" for name in COMMAND_PLACEHOLDERS)
        + "; its environment has OPENAI_REALTIME_URL, OPENAI_PROXY_PORT, PROXY_PORT and a dummy OPENAI_API_KEY",
    )
    p.add_argument(
        "--upstream-port", type=int, default=0, help="port of the simulated upstream (fix it for --target; default any)"
    )
    p.add_argument("--ramp", action="store_true", help="raise sessions step by step until the budget is exceeded")
    p.add_argument("--ramp-steps", default=DEFAULT_RAMP, help=f"session counts for --ramp (default {DEFAULT_RAMP})")
    p.add_argument("--budget-ms", type=float, default=10.0, help="p99 added latency budget for --ramp (default 10)")
    p.add_argument("--turn-interval", type=float, default=4.0, help="seconds between user turns (default 4)")
    p.add_argument("--reply-seconds", type=float, default=1.5, help="seconds of audio per reply (default 1.5)")
    p.add_argument("--grace", type=float, default=1.0, help="seconds to wait for late frames at the end (default 1)")
    p.add_argument("--connect-concurrency", type=int, default=32, help="sessions connecting at once (default 32)")
    p.add_argument("--seed", type=int, default=1, help="seed of the sessions' send phases")
    p.add_argument(
        "--hostile",
        type=int,
        default=0,
        metavar="N",
        help="measure each target twice, quiet and then beside N hostile clients (default 0: off)",
    )
    p.add_argument(
        "--hostile-kinds",
        default=",".join(DEFAULT_KINDS),
        help=f"kinds the hostile clients take in turn (default {','.join(DEFAULT_KINDS)}; also: json)",
    )
    p.add_argument(
        "--hostile-sockets",
        type=int,
        default=200,
        help="connections held by each slowloris / idle client (default 200)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="measure every target N times (in turn: A B C A B C ...) and add a table of medians and min-max",
    )
    p.add_argument("--json", metavar="FILE", help="write every number (and the workload) as JSON")
    p.add_argument("--plot", metavar="FILE", help="latency CDF and latency vs sessions as PNG (needs matplotlib)")
    p.add_argument("--profile", metavar="FILE", help="run the proxy under cProfile and write its stats here")
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    return p


@dataclass
class Outcome:
    workload: Workload
    results: list[TargetResult]
    steps: list[RampStep]
    largest_passing: int | None
    load_average: tuple[float, float]  # 1-minute load average at the start and at the end: others on the CPUs
    #: With --repeat: every run's results (``results`` is then the last run).
    runs: list[list[TargetResult]] = dataclasses.field(default_factory=list)


def _commands(args: argparse.Namespace) -> dict[str, str]:
    """``--target-cmd NAME=COMMAND`` values by name (checked: a new lower-case name, a command)."""
    commands: dict[str, str] = {}
    for value in args.target_cmd:
        name, _, command = str(value).partition("=")
        name = name.strip()
        if not COMMAND_NAME_RE.fullmatch(name) or not command.strip():
            raise SystemExit(f"--target-cmd: expected NAME=COMMAND with NAME of [a-z0-9_-], got {value!r}")
        if name in KNOWN_TARGETS or name in commands or name == "target":
            raise SystemExit(f"--target-cmd: the name {name!r} is already taken")
        commands[name] = command
    return commands


def _specs(args: argparse.Namespace) -> list[TargetSpec]:
    commands = _commands(args)
    targets = args.targets or (HOSTILE_TARGETS if args.hostile else ",".join((*KNOWN_TARGETS, *commands)))
    names = [name.strip() for name in targets.split(",") if name.strip()]
    unknown = [name for name in names if name not in KNOWN_TARGETS and name not in commands]
    if unknown or not names:
        wrong = ", ".join(unknown) or "(none)"
        known = ",".join((*KNOWN_TARGETS, *commands))
        raise SystemExit(f"--targets: unknown target(s) {wrong}; use {known}")
    if args.ramp:
        for needed in ("direct", "proxy"):
            if needed not in names:
                names.append(needed)
        order = (*KNOWN_TARGETS, *commands)
        names.sort(key=order.index)
    specs: list[TargetSpec] = []
    for name in names:
        if name in commands:
            specs.append(TargetSpec("command", name=name, command=commands[name]))
        elif name == "direct":
            specs.append(TargetSpec("direct"))
        elif name == "naive":
            specs.append(TargetSpec("naive"))
        elif args.target:
            specs.append(TargetSpec("target", url=args.target, pid=args.target_pid))
        else:
            specs.append(TargetSpec("proxy", profile=os.path.abspath(args.profile) if args.profile else None))
    return specs


def _workload(args: argparse.Namespace, sessions: int) -> Workload:
    warmup = args.warmup if args.warmup is not None else min(3.0, args.duration * 0.2)
    route: Route = args.route
    return Workload(
        sessions=sessions,
        duration=args.duration,
        warmup=warmup,
        route=route,
        turn_interval=args.turn_interval,
        reply_chunks=max(1, round(args.reply_seconds / TTS_CHUNK_S)),
        grace=args.grace,
        connect_concurrency=args.connect_concurrency,
        connect_timeout=30.0,
        seed=args.seed,
    )


def _hostile_plan(args: argparse.Namespace) -> HostilePlan | None:
    if not args.hostile:
        return None
    return HostilePlan(args.hostile, parse_kinds(args.hostile_kinds), args.hostile_sockets)


def _judge(results: list[TargetResult], budget_ms: float) -> tuple[dict[str, float], bool, str]:
    floor = next((r for r in results if r.target == "direct"), None)
    candidate = next((r for r in results if r.target in ("proxy", "target")), None)
    if floor is None or candidate is None:
        return {}, False, "needs direct and proxy"
    extra = {"mic": added(candidate, floor, "mic"), "tts": added(candidate, floor, "tts")}
    if not candidate.exact():
        return extra, False, "frames lost/reordered or sessions failed"
    if not floor.exact():
        return extra, False, "the floor itself lost frames (generator saturated)"
    floor_p99 = max(floor.mic.p99, floor.tts.p99)
    if floor_p99 > budget_ms:
        # The generator alone misses the budget: "added" latency is then a difference of two saturated numbers
        # (it can even be negative). Capacity beyond this point cannot be measured on this machine.
        return extra, False, f"the floor's own p99 is {floor_p99:.1f} ms (generator saturated; not measurable)"
    worst = max(extra.values())
    if math.isnan(worst) or worst > budget_ms:
        return extra, False, f"added p99 {worst:.1f} ms"
    return extra, True, ""


async def run(args: argparse.Namespace) -> Outcome:
    specs = _specs(args)
    progress = None if args.quiet else sys.stderr
    upstream = Upstream(reply_chunks=_workload(args, 1).reply_chunks)
    runs = itertools.count(1)
    load_at_start = os.getloadavg()[0]
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream.serve, "127.0.0.1", args.upstream_port)
        if args.target:
            print(f"simulated upstream: ws://127.0.0.1:{upstream.port}/v1/realtime", file=sys.stderr)
        steps: list[RampStep] = []
        repeats: list[list[TargetResult]] = []
        largest: int | None = None
        if args.ramp:
            counts = [int(n) for n in args.ramp_steps.split(",") if n.strip()]
            results: list[TargetResult] = []
            for count in counts:
                workload = _workload(args, count)
                results = [await measure(spec, workload, upstream, next(runs), progress=progress) for spec in specs]
                extra, passed, reason = _judge(results, args.budget_ms)
                steps.append(RampStep(count, extra, passed, reason, results))
                print(
                    f"ramp: {count} sessions: added p99 mic {extra.get('mic', math.nan):.2f} ms, "
                    f"tts {extra.get('tts', math.nan):.2f} ms -> {'pass' if passed else 'FAIL: ' + reason}",
                    file=sys.stderr,
                    flush=True,
                )
                if not passed:
                    break
                largest = count
        else:
            workload = _workload(args, args.sessions)
            plan = _hostile_plan(args)
            probes = PROBE_SESSIONS if plan else 0
            for _ in range(args.repeat):
                results = [
                    await measure(spec, workload, upstream, next(runs), progress=progress, probe_sessions=probes)
                    for spec in specs
                ]
                repeats.append(results)
            if plan is not None:
                # Hostile phase in reverse order (A B B A): a drift of the machine's speed over the run then
                # weighs on the floor and the target alike.
                hostile = {
                    spec: await measure(
                        spec, workload, upstream, next(runs), progress=progress, hostile=plan, probe_sessions=probes
                    )
                    for spec in reversed(specs)
                }
                results += [hostile[spec] for spec in specs]
        nursery.cancel_scope.cancel()
    return Outcome(workload, results, steps, largest, (load_at_start, os.getloadavg()[0]), repeats)


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _profile_summary(path: str, limit: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    return out.getvalue()


def render(outcome: Outcome, args: argparse.Namespace) -> str:
    w = outcome.workload
    lines = [
        f"## Benchmark: route {w.route}, {w.sessions} sessions, {w.duration:g} s (warm-up {w.warmup:g} s)",
        "",
        f"Workload per session: Settings, 85 ms mic frames (16 kHz PCM16 to the proxy) at real time, a user turn "
        f"every {w.turn_interval:g} s answered by {w.reply_chunks * TTS_CHUNK_S:g} s of 24 kHz audio in 100 ms "
        f"chunks at real time. Latencies are one-way, sender to receiver, same clock. "
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; 1-minute load average "
        f"{outcome.load_average[0]:.2f} at the start, {outcome.load_average[1]:.2f} at the end.",
        "",
    ]
    if len(outcome.runs) > 1:
        lines += [repeat_table(outcome.runs, args.budget_ms), "", f"The last of the {len(outcome.runs)} runs:", ""]
    lines.append(markdown_table(outcome.results, args.budget_ms))
    if args.profile:
        lines += ["", "The proxy ran under cProfile: its CPU and latency figures are inflated; read the shares only."]
    quiet = {r.target: r for r in outcome.results if r.hostile is None}
    for attacked in outcome.results:
        if attacked.hostile is None:
            continue
        plan = attacked.hostile.plan
        lines += ["", f"### Hostile: {attacked.target}, {plan.count} hostile clients ({','.join(plan.kinds)})", ""]
        if attacked.target != "direct" and attacked.target in quiet:
            lines += [hostile_table(quiet[attacked.target], attacked, outcome.results, args.budget_ms), ""]
        lines.append(hostile_clients_table(attacked.hostile))
    if outcome.steps:
        lines += [
            "",
            "### Ramp",
            "",
            ramp_table(outcome.steps, args.budget_ms),
            "",
            f"Largest passing session count: **{outcome.largest_passing if outcome.largest_passing else 'none'}** "
            f"(budget: p99 added latency <= {args.budget_ms:g} ms, zero frames lost or reordered).",
        ]
        failed = next((step for step in outcome.steps if not step.passed), None)
        if failed is not None:
            lines.append(f"First failing step: **{failed.sessions} sessions**: {failed.reason}.")
        else:
            lines.append("No step failed: the capacity lies beyond the last step.")
    return "\n".join(lines) + "\n"


def document(outcome: Outcome, args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = sanitize(
        {
            "workload": dataclasses.asdict(outcome.workload),
            "machine": {**_machine(), "load_average_start_end": outcome.load_average},
            "results": [r.to_json() for r in outcome.results],
            "runs": [[r.to_json() for r in run] for run in outcome.runs] if len(outcome.runs) > 1 else [],
            "ramp": [
                {
                    "sessions": s.sessions,
                    "added_p99_ms": s.added_p99_ms,
                    "passed": s.passed,
                    "reason": s.reason,
                    "results": [r.to_json() for r in s.results],
                }
                for s in outcome.steps
            ],
            "budget_ms": args.budget_ms,
            "hostile": dataclasses.asdict(plan) if (plan := _hostile_plan(args)) else None,
            "largest_passing_sessions": outcome.largest_passing,
        }
    )
    return data


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.sessions < 1 or args.duration <= 0:
        raise SystemExit("--sessions must be >= 1 and --duration > 0")
    if args.hostile < 0 or args.hostile_sockets < 0:
        raise SystemExit("--hostile and --hostile-sockets must be >= 0")
    try:
        parse_kinds(args.hostile_kinds)
    except ValueError as exc:
        raise SystemExit(f"--hostile-kinds: {exc}") from None
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    if args.repeat > 1 and (args.ramp or args.hostile):
        raise SystemExit("--repeat repeats one comparison; use it without --ramp and --hostile")
    if args.hostile and args.ramp:
        raise SystemExit("--hostile measures one session count; use it without --ramp")
    if args.profile and args.ramp:
        raise SystemExit("--profile profiles one run; use it without --ramp")
    if args.profile and args.target:
        raise SystemExit("--profile starts the proxy itself; it cannot profile a --target")
    if args.plot:
        try:
            importlib.import_module("matplotlib")
        except ImportError:
            raise SystemExit(
                "--plot needs matplotlib, which is in the optional 'bench' extra: pip install -e '.[bench]'"
            ) from None
    outcome: Outcome | None = None
    try:
        outcome = trio.run(run, args)
    except* KeyboardInterrupt:
        pass
    if outcome is None:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(render(outcome, args), end="")
    if args.profile:
        summary = _profile_summary(args.profile)
        print(f"\n### Proxy profile ({args.profile}, top functions by own time)\n\n```\n{summary}```")
    if args.json:
        write_json(args.json, document(outcome, args))
    if args.plot:
        plot(args.plot, outcome.results, outcome.steps)
    exact = all(r.exact() for r in [*outcome.results, *(r for run in outcome.runs for r in run)])
    return 0 if exact or outcome.steps else 1
