"""Results: per-target summaries, the markdown table, JSON, and the optional plot."""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .hostile import HostileOutcome, close_times


@dataclass(frozen=True)
class Latency:
    """Percentiles of one latency distribution, in milliseconds (NaN when there were no samples)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples_s: list[float] | np.ndarray) -> Latency:
        data = np.asarray(samples_s, dtype=np.float64) * 1000.0
        if data.size == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        p50, p90, p99 = np.percentile(data, [50, 90, 99])
        return cls(int(data.size), float(p50), float(p90), float(p99), float(np.max(data)))


@dataclass
class Accounting:
    """Frames of one direction, summed over sessions. Exact: every frame sent is either received or lost."""

    sent: int = 0
    received: int = 0
    lost: int = 0
    reordered: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class NewSessions:
    """Fresh sessions opened in the middle of the measured window (beside an attack: can a new user get in?)."""

    attempted: int
    ready: Latency  # connect -> SettingsApplied of those that got in
    failures: dict[str, int]  # why the others did not, by kind of failure


@dataclass
class TargetResult:
    target: str
    description: str
    route: str
    sessions: int
    sessions_ready: int
    duration_s: float
    window_s: float
    mic: Latency
    tts: Latency
    ready: Latency
    first_audio: Latency
    mic_frames: Accounting
    tts_frames: Accounting
    turns: int
    errors: int
    first_error: str
    messages: int
    audio_messages: int
    messages_per_s: float
    cpu_s: float | None
    cpu_us_per_message: float | None
    cpu_us_per_audio_message: float | None
    rss_base_kib: int | None
    rss_idle_kib: int | None
    rss_per_session_kib: float | None
    rss_peak_kib: int | None
    generator_cpu_percent: float
    late_sends: int
    send_lag_max_ms: float
    unmatched_upstream: int
    #: Raw samples for the plot (seconds); not written to JSON.
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: The hostile clients that ran beside this measurement (``--hostile``), and what happened to them.
    hostile: HostileOutcome | None = None
    new_sessions: NewSessions | None = None

    @property
    def phase(self) -> str:
        return "hostile" if self.hostile is not None else "quiet"

    @property
    def label(self) -> str:
        return self.target if self.hostile is None else f"{self.target} + hostile"

    @property
    def cpu_percent(self) -> float | None:
        return None if self.cpu_s is None else self.cpu_s / self.window_s * 100.0

    @property
    def sessions_per_core(self) -> float | None:
        """Projected real-time sessions one core carries: session-seconds served per CPU second (1 / the CPU
        seconds one session costs per second of conversation), from the measured window."""
        if not self.cpu_s or not self.sessions_ready:
            return None
        return self.sessions_ready * self.window_s / self.cpu_s

    def exact(self) -> bool:
        """Zero frames lost, reordered or duplicated, every session ready, no errors."""
        return (
            self.sessions_ready == self.sessions
            and self.errors == 0
            and all(a.lost == 0 and a.reordered == 0 and a.duplicates == 0 for a in (self.mic_frames, self.tts_frames))
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("samples", None)
        data["phase"] = self.phase
        data["sessions_per_core"] = self.sessions_per_core
        return data


@dataclass
class RampStep:
    sessions: int
    added_p99_ms: dict[str, float]
    passed: bool
    reason: str
    results: list[TargetResult]


def floor_of(result: TargetResult, results: list[TargetResult]) -> TargetResult | None:
    """The direct target measured in the same phase (quiet or hostile) as ``result``."""
    return next((r for r in results if r.target == "direct" and r.phase == result.phase), None)


def added(result: TargetResult, floor: TargetResult | None, direction: str) -> float:
    """p99 one-way latency of ``result`` minus the floor's (the direct target) in one direction, ms."""
    if floor is None:
        return math.nan
    mine: Latency = getattr(result, direction)
    base: Latency = getattr(floor, direction)
    return mine.p99 - base.p99


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _lat(lat: Latency) -> str:
    return " / ".join(_ms(v) for v in (lat.p50, lat.p90, lat.p99, lat.max))


def _opt(value: float | int | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def naive_of(result: TargetResult, results: list[TargetResult]) -> TargetResult | None:
    """The naive baseline measured in the same run and phase as ``result``."""
    return next((r for r in results if r.target == "naive" and r.phase == result.phase), None)


def cpu_vs_naive(result: TargetResult, results: list[TargetResult]) -> float | None:
    """CPU per audio message of ``result`` / the naive baseline's, both from the same run."""
    naive = naive_of(result, results)
    if naive is None or result is naive or not result.cpu_us_per_audio_message or not naive.cpu_us_per_audio_message:
        return None
    return result.cpu_us_per_audio_message / naive.cpu_us_per_audio_message


def saturated(floor: TargetResult | None, budget_ms: float) -> bool:
    """The floor (the generator talking to the upstream directly) misses the budget on its own: latency added by
    a relay is then a difference of two saturated numbers, not a measurement."""
    return floor is not None and max(floor.mic.p99, floor.tts.p99) > budget_ms


def _added_cell(result: TargetResult, floor: TargetResult | None, budget_ms: float) -> str:
    if floor is not None and saturated(floor, budget_ms):
        return f"generator saturated (floor p99 {_ms(max(floor.mic.p99, floor.tts.p99))})"
    return _pair(added(result, floor, "mic"), added(result, floor, "tts"))


def markdown_table(results: list[TargetResult], budget_ms: float = 10.0) -> str:
    """The targets side by side (each compared with the direct floor of its own phase).

    "Added p99" is shown only where the floor itself stays within ``budget_ms``.
    """
    floors = [floor_of(r, results) for r in results]
    header = "| | " + " | ".join(f"**{r.label}**" for r in results) + " |"
    rule = "|---|" + "---|" * len(results)
    rows: list[tuple[str, list[str]]] = [
        ("what", [r.description for r in results]),
        ("sessions ready / opened", [f"{r.sessions_ready} / {r.sessions}" for r in results]),
        ("mic -> upstream p50 / p90 / p99 / max (ms)", [_lat(r.mic) for r in results]),
        ("upstream -> client p50 / p90 / p99 / max (ms)", [_lat(r.tts) for r in results]),
        (
            "added p99 vs direct, mic / tts (ms)",
            [_added_cell(r, floor, budget_ms) for r, floor in zip(results, floors, strict=True)],
        ),
        ("connect -> SettingsApplied p50 / p99 (ms)", [f"{_ms(r.ready.p50)} / {_ms(r.ready.p99)}" for r in results]),
        ("new sessions mid-window: ready, p50 / max (ms)", [_new_sessions(r.new_sessions) for r in results]),
        (
            "user turn -> first audio p50 / p99 (ms)",
            [f"{_ms(r.first_audio.p50)} / {_ms(r.first_audio.p99)}" for r in results],
        ),
        ("CPU µs per audio message", [_opt(r.cpu_us_per_audio_message) for r in results]),
        ("CPU per audio message / naive's, same run", [_opt(cpu_vs_naive(r, results), "{:.2f}") for r in results]),
        ("CPU µs per message (all)", [_opt(r.cpu_us_per_message) for r in results]),
        ("projected real-time sessions per core", [_opt(r.sessions_per_core, "{:.0f}") for r in results]),
        ("RSS KiB per idle session", [_opt(r.rss_per_session_kib) for r in results]),
        ("RSS base / peak (MiB)", [_rss(r) for r in results]),
        ("messages/s (both directions)", [f"{r.messages_per_s:.0f}" for r in results]),
        (
            "mic frames sent / received / lost / reordered",
            [_frames(r.mic_frames) for r in results],
        ),
        (
            "tts frames sent / received / lost / reordered",
            [_frames(r.tts_frames) for r in results],
        ),
        ("errors", [str(r.errors) + (f" ({r.first_error[:60]})" if r.errors else "") for r in results]),
        (
            "generator CPU % / late sends / max lag (ms)",
            [f"{r.generator_cpu_percent:.0f} / {r.late_sends} / {_ms(r.send_lag_max_ms)}" for r in results],
        ),
    ]
    lines = [header, rule]
    lines.extend(f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows)
    return "\n".join(lines)


def _spread(values: list[float], digits: int | None = None) -> str:
    """Median (min-max) of the runs' values."""
    if not values:
        return "-"
    ordered = sorted(values)
    median = float(np.median(ordered))
    if digits is None:
        digits = 2 if abs(median) < 10 else 1 if abs(median) < 100 else 0
    cell = f"{median:.{digits}f}"
    if len(ordered) > 1:
        cell += f" ({ordered[0]:.{digits}f}-{ordered[-1]:.{digits}f})"
    return cell


def repeat_table(runs: list[list[TargetResult]], budget_ms: float) -> str:
    """Every target over ``len(runs)`` repeats of the same comparison: medians and (min-max); ratios from one run."""
    targets = list(dict.fromkeys(r.target for run in runs for r in run))

    def values(target: str, measure: Callable[[TargetResult, list[TargetResult]], float | None]) -> list[float]:
        found = []
        for run in runs:
            for result in run:
                if result.target == target:
                    value = measure(result, run)
                    if value is not None and math.isfinite(value):
                        found.append(value)
        return found

    def added_in(direction: str) -> Callable[[TargetResult, list[TargetResult]], float | None]:
        def measure(result: TargetResult, run: list[TargetResult]) -> float | None:
            floor = floor_of(result, run)
            if floor is None or result is floor or saturated(floor, budget_ms):
                return None
            return added(result, floor, direction)

        return measure

    rows: list[tuple[str, Callable[[TargetResult, list[TargetResult]], float | None]]] = [
        ("CPU µs per audio message", lambda r, _: r.cpu_us_per_audio_message),
        ("CPU per audio message / naive's, same run", cpu_vs_naive),
        ("added p99 mic (ms)", added_in("mic")),
        ("added p99 tts (ms)", added_in("tts")),
        ("projected real-time sessions per core", lambda r, _: r.sessions_per_core),
        ("RSS KiB per idle session", lambda r, _: r.rss_per_session_kib),
        ("frames lost + reordered + duplicated", lambda r, _: float(_inexact(r))),
    ]
    lines = [
        f"| {len(runs)} runs: median (min-max) | " + " | ".join(f"**{t}**" for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for name, measure in rows:
        digits = 0 if name.startswith("frames") else None
        lines.append(f"| {name} | " + " | ".join(_spread(values(t, measure), digits) for t in targets) + " |")
    return "\n".join(lines)


def _inexact(result: TargetResult) -> int:
    return sum(a.lost + a.reordered + a.duplicates for a in (result.mic_frames, result.tts_frames))


def _new_sessions(new: NewSessions | None) -> str:
    if new is None:
        return "-"
    text = f"{new.ready.count} of {new.attempted}"
    if new.ready.count:
        text += f", {_ms(new.ready.p50)} / {_ms(new.ready.max)}"
    if new.failures:
        text += " (" + ", ".join(f"{why} x{count}" for why, count in sorted(new.failures.items())) + ")"
    return text


def _rss(result: TargetResult) -> str:
    if result.rss_base_kib is None or result.rss_peak_kib is None:
        return "-"
    return f"{result.rss_base_kib / 1024:.1f} / {result.rss_peak_kib / 1024:.1f}"


def _frames(acc: Accounting) -> str:
    extra = f" (+{acc.duplicates} dup)" if acc.duplicates else ""
    return f"{acc.sent} / {acc.received} / {acc.lost} / {acc.reordered}{extra}"


def ramp_table(steps: list[RampStep], budget_ms: float) -> str:
    lines = [
        "| sessions | added p99 mic (ms) | added p99 tts (ms) | proxy p99 mic / tts (ms) | lost | "
        f"pass (budget {budget_ms:g} ms) |",
        "|---|---|---|---|---|---|",
    ]
    for step in steps:
        proxy = next((r for r in step.results if r.target != "direct" and r.target != "naive"), None)
        lost = sum(r.mic_frames.lost + r.tts_frames.lost for r in step.results if r.target != "direct")
        lines.append(
            f"| {step.sessions} | {_ms(step.added_p99_ms.get('mic', math.nan))} | "
            f"{_ms(step.added_p99_ms.get('tts', math.nan))} | "
            f"{_ms(proxy.mic.p99) if proxy else '-'} / {_ms(proxy.tts.p99) if proxy else '-'} | {lost} | "
            f"{'yes' if step.passed else 'no: ' + step.reason} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# JSON and plot


def write_json(path: str, document: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(document, indent=2, allow_nan=False, default=_json_default) + "\n")


def _json_default(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sanitize(value: Any) -> Any:
    """NaN/inf become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    return value


def plot(path: str, results: list[TargetResult], steps: list[RampStep]) -> None:
    """Latency CDFs per target and direction, and (with a ramp) added p99 latency against sessions."""
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib, which is in the optional 'bench' extra: pip install -e '.[bench]'"
        ) from None
    fig, (cdf, ramp) = plt.subplots(1, 2, figsize=(13, 5))
    for result in results:
        for direction, style in (("mic", "-"), ("tts", "--")):
            data = np.sort(result.samples.get(direction, np.zeros(0))) * 1000.0
            if data.size:
                cdf.plot(data, np.arange(1, data.size + 1) / data.size, style, label=f"{result.target} {direction}")
    cdf.set_xscale("log")
    cdf.set_xlabel("one-way latency (ms, log)")
    cdf.set_ylabel("fraction of frames")
    cdf.set_title("Latency CDF (mic: client -> upstream, tts: upstream -> client)")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8)
    points = steps or [RampStep(results[0].sessions if results else 0, {}, True, "", results)]
    targets = sorted({r.target for step in points for r in step.results})
    for target in targets:
        for direction, style in (("mic", "o-"), ("tts", "s--")):
            xs, ys = [], []
            for step in points:
                for r in step.results:
                    if r.target == target:
                        xs.append(step.sessions)
                        ys.append(getattr(r, direction).p99)
            ramp.plot(xs, ys, style, label=f"{target} {direction} p99")
    ramp.set_xlabel("concurrent sessions")
    ramp.set_ylabel("p99 one-way latency (ms)")
    ramp.set_title("p99 latency vs sessions")
    ramp.grid(True, alpha=0.3)
    ramp.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# Hostile mode


@dataclass(frozen=True)
class HostileVerdict:
    """The goal of the hostile mode for one relay: honest p99 within ``max_ratio`` of the quiet run, nothing lost."""

    ratio_mic: float
    ratio_tts: float
    met: bool | None  # None: not measurable on this machine in this run
    reason: str


def hostile_verdict(
    quiet: TargetResult, hostile: TargetResult, results: list[TargetResult], budget_ms: float, max_ratio: float = 2.0
) -> HostileVerdict:
    ratio_mic = hostile.mic.p99 / quiet.mic.p99 if quiet.mic.p99 else math.nan
    ratio_tts = hostile.tts.p99 / quiet.tts.p99 if quiet.tts.p99 else math.nan
    if not hostile.exact():
        return HostileVerdict(ratio_mic, ratio_tts, False, "honest frames lost/reordered or sessions failed")
    for floor in (floor_of(quiet, results), floor_of(hostile, results)):
        if floor is not None and max(floor.mic.p99, floor.tts.p99) > budget_ms:
            # As with --ramp: past this point the generator, not the target, sets the tail.
            return HostileVerdict(
                ratio_mic, ratio_tts, None, f"the {floor.phase} floor's own p99 exceeds {budget_ms:g} ms"
            )
    worst = max(ratio_mic, ratio_tts)
    if math.isnan(worst) or worst > max_ratio:
        return HostileVerdict(ratio_mic, ratio_tts, False, f"p99 {worst:.1f}x the quiet run")
    return HostileVerdict(ratio_mic, ratio_tts, True, "")


def _pair(first: float, second: float) -> str:
    return f"{_ms(first)} / {_ms(second)}"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def hostile_table(quiet: TargetResult, hostile: TargetResult, results: list[TargetResult], budget_ms: float) -> str:
    """Honest sessions of one relay, quiet against hostile, with the goal's verdict."""
    floor_quiet, floor_hostile = floor_of(quiet, results), floor_of(hostile, results)

    def added_pair(result: TargetResult, floor: TargetResult | None) -> str:
        return _pair(added(result, floor, "mic"), added(result, floor, "tts"))

    def floor_pair(floor: TargetResult | None) -> str:
        return _pair(floor.mic.p99, floor.tts.p99) if floor else "-"

    def lost(result: TargetResult) -> str:
        frames = (result.mic_frames, result.tts_frames)
        return f"{sum(a.lost for a in frames)} / {sum(a.reordered for a in frames)}"

    verdict = hostile_verdict(quiet, hostile, results, budget_ms)
    added_quiet = max(added(quiet, floor_quiet, d) for d in ("mic", "tts"))
    added_hostile = max(added(hostile, floor_hostile, d) for d in ("mic", "tts"))
    rows = [
        ("p99 mic / tts (ms)", _pair(quiet.mic.p99, quiet.tts.p99), _pair(hostile.mic.p99, hostile.tts.p99),
         f"{_ratio(verdict.ratio_mic)} / {_ratio(verdict.ratio_tts)}"),
        ("added p99 vs direct, mic / tts (ms)", added_pair(quiet, floor_quiet), added_pair(hostile, floor_hostile),
         f"{_ratio(added_hostile / added_quiet if added_quiet > 0 else math.nan)} (worse direction)"),
        ("direct floor p99 mic / tts (ms)", floor_pair(floor_quiet), floor_pair(floor_hostile), ""),
        ("new sessions mid-window: ready, p50 / max (ms)", _new_sessions(quiet.new_sessions),
         _new_sessions(hostile.new_sessions), ""),
        ("sessions ready / errors", f"{quiet.sessions_ready} / {quiet.errors}",
         f"{hostile.sessions_ready} / {hostile.errors}", ""),
        ("honest frames lost / reordered", lost(quiet), lost(hostile), ""),
        ("target CPU % (window)", _opt(quiet.cpu_percent, "{:.0f}"), _opt(hostile.cpu_percent, "{:.0f}"), ""),
        ("generator late sends", str(quiet.late_sends), str(hostile.late_sends), ""),
    ]  # fmt: skip
    lines = [f"| {quiet.target} | quiet | hostile | hostile / quiet |", "|---|---|---|---|"]
    lines.extend(f"| {name} | {a} | {b} | {c} |" for name, a, b, c in rows)
    if verdict.met is None:
        judged = f"not measurable ({verdict.reason})"
    else:
        judged = "**met**" if verdict.met else f"**not met** ({verdict.reason})"
    lines += ["", f"Goal (honest p99 within 2x the quiet run, nothing lost): {judged}."]
    return "\n".join(lines)


def hostile_clients_table(outcome: HostileOutcome) -> str:
    """What each hostile client did and how the target ended its connections."""
    lines = [
        "| client | kind | connections (failed) | sent frames / KiB | received frames / KiB | closed by target | "
        "how they ended | open -> closed p50 / max (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for client in outcome.clients:
        p50, longest = close_times(client)
        endings = ", ".join(f"{how} x{count}" for how, count in sorted(client.endings.items())) or "-"
        timing = "-" if math.isnan(p50) else f"{p50:.2f} / {longest:.2f}"
        lines.append(
            f"| {client.client} | {client.kind} | {client.connections} ({client.connect_failures}) | "
            f"{client.frames_sent} / {client.bytes_sent / 1024:.0f} | "
            f"{client.frames_received} / {client.bytes_received / 1024:.0f} | {client.closed_by_target} | "
            f"{endings} | {timing} |"
        )
    cpu = outcome.process_cpu_s / outcome.process_wall_s * 100.0 if outcome.process_wall_s else math.nan
    attacked = _opt(outcome.attacked_cpu_percent, "{:.0f}")
    lines += [
        "",
        f"Attacked: {outcome.attacked}, CPU {attacked} % over the window; the hostile clients' own process: "
        f"{_opt(cpu, '{:.0f}')} % CPU over {outcome.process_wall_s:.1f} s.",
    ]
    return "\n".join(lines)
