"""``python -m bench.workers``: the benchmark against ``python -m proxy --workers N``, per worker.

For each worker count it starts the proxy with that many workers, runs ``python -m bench --target`` against it (the
benchmark's own simulated upstream, sessions and measurement window), and reads, from ``/proc``:

* sessions per worker: the most client connections each worker held at once while the benchmark ran (the server
  side of each TCP connection to the proxy's port, matched to the process that holds it);
* CPU per worker over the whole run (connects and warm-up included), and the supervisor's;
* CPU per session-second in the benchmark's measurement window (every process of the proxy together), and the
  projected sessions per core, 1 / (CPU seconds per session-second): what one core sustains when the load
  generator does not compete for it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

from .procs import REPO_ROOT, child_pids, process_cpu_seconds, started
from .runner import _proxy_env

SAMPLE_INTERVAL_S = 0.5


@dataclass
class Run:
    workers: int
    sessions: int
    sessions_ready: int
    window_s: float
    cpu_window_s: float
    sessions_per_worker: list[int]
    cpu_per_worker_s: list[float]
    cpu_supervisor_s: float | None
    mic_p99_ms: float
    tts_p99_ms: float

    @property
    def cpu_per_session_second(self) -> float:
        return self.cpu_window_s / (self.sessions_ready * self.window_s)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connections_by_process(port: int, pids: list[int]) -> dict[int, int]:
    """Established connections to ``port`` held by each of ``pids``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in pids:
        held = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    held += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
                except OSError:
                    continue
        except OSError:
            pass
        counts[pid] = held
    return counts


async def measure(workers: int, args: argparse.Namespace) -> Run:
    upstream_port = _free_port()
    base = f"ws://127.0.0.1:{upstream_port}"
    command = [sys.executable, "-m", "proxy", "--port", "0", "--workers", str(workers)]
    async with started(command, _proxy_env(base)) as target:
        pids = child_pids(target.pid) or [target.pid]
        cpu_before = {pid: process_cpu_seconds(pid) or 0.0 for pid in [target.pid, *pids]}
        most: dict[int, int] = dict.fromkeys(pids, 0)
        with tempfile.TemporaryDirectory() as scratch:
            report = Path(scratch) / "bench.json"
            bench = [
                sys.executable,
                "-m",
                "bench",
                "--target",
                f"ws://127.0.0.1:{target.port}/openai",
                "--target-pid",
                str(target.pid),
                "--upstream-port",
                str(upstream_port),
                "--sessions",
                str(args.sessions),
                "--duration",
                str(args.duration),
                "--json",
                str(report),
                "--quiet",
            ]
            async with trio.open_nursery() as nursery:
                run = functools.partial(trio.run_process, bench, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, check=True)
                process = await nursery.start(run)
                while process.returncode is None:
                    for pid, held in _connections_by_process(target.port, pids).items():
                        most[pid] = max(most[pid], held)
                    with trio.move_on_after(SAMPLE_INTERVAL_S):
                        await process.wait()
            document = json.loads(report.read_text())
            if args.keep:
                Path(args.keep).write_text(report.read_text())  # noqa: ASYNC240 - once, after the run
        cpu_after = {pid: process_cpu_seconds(pid) or 0.0 for pid in cpu_before}
    (result,) = [r for r in document["results"] if r["target"] == "target"]
    used = {pid: cpu_after[pid] - cpu_before[pid] for pid in cpu_before}
    return Run(
        workers=workers,
        sessions=result["sessions"],
        sessions_ready=result["sessions_ready"],
        window_s=result["window_s"],
        cpu_window_s=result["cpu_s"],
        sessions_per_worker=[most[pid] for pid in pids],
        cpu_per_worker_s=[used[pid] for pid in pids],
        cpu_supervisor_s=used[target.pid] if workers > 1 else None,
        mic_p99_ms=result["mic"]["p99"],
        tts_p99_ms=result["tts"]["p99"],
    )


def table(runs: list[Run]) -> str:
    lines = [
        "| workers | sessions | sessions per worker | CPU per worker (s, whole run) | supervisor CPU (s) "
        "| CPU s per session-second | projected sessions per core | mic p99 (ms) | TTS p99 (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        supervisor = "-" if run.cpu_supervisor_s is None else f"{run.cpu_supervisor_s:.2f}"
        lines.append(
            f"| {run.workers} | {run.sessions_ready}/{run.sessions} | {' / '.join(map(str, run.sessions_per_worker))} "
            f"| {' / '.join(f'{c:.2f}' for c in run.cpu_per_worker_s)} | {supervisor} "
            f"| {run.cpu_per_session_second:.5f} | {1 / run.cpu_per_session_second:.0f} "
            f"| {run.mic_p99_ms:.2f} | {run.tts_p99_ms:.2f} |"
        )
    if len(runs) > 1:
        first = runs[0].cpu_per_session_second
        for run in runs[1:]:
            change = (run.cpu_per_session_second / first - 1) * 100
            lines.append(f"\nCPU per session-second, {run.workers} vs {runs[0].workers} workers: {change:+.1f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    p.add_argument("--sessions", type=int, default=50, help="concurrent sessions (default 50)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of traffic per run (default 20)")
    p.add_argument("--json", metavar="FILE", help="write the runs as JSON")
    p.add_argument("--keep", metavar="FILE", help="keep the last benchmark report (JSON) here")
    args = p.parse_args(argv)
    runs = [trio.run(measure, int(n), args) for n in args.workers.split(",")]
    print(table(runs))
    if args.json:
        rows = [{**vars(run), "cpu_per_session_second": run.cpu_per_session_second} for run in runs]
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
