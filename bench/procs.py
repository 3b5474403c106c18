"""Target processes: start, find the port they announce, read their CPU time and memory, stop.

CPU and memory come from ``/proc/<pid>`` (Linux): ``stat`` fields utime + stime (clock ticks) and ``status``
VmRSS / VmHWM (KiB). Both are read the same way for every target, so the numbers compare.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import trio

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
LISTENING_RE: Final = re.compile(rb"listening on ws://([^\s:]+|\[[^\]]+\]):(\d+)")
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 15.0
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process and its live children (a supervisor's workers) have used so far.

    None if it is gone or /proc is unavailable. A target without children reads as before.
    """
    own = process_cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(filter(None, (process_cpu_seconds(child) for child in child_pids(pid))))


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (None if it is gone or /proc is unavailable)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()  # the command name may contain spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _status_kib(pid: int, key: bytes) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_bytes().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_kib(pid: int) -> int | None:
    """Resident set size now (VmRSS)."""
    return _status_kib(pid, b"VmRSS:")


def peak_rss_kib(pid: int) -> int | None:
    """Peak resident set size (VmHWM)."""
    return _status_kib(pid, b"VmHWM:")


@dataclass
class TargetProcess:
    """A running target: its pid, the address it listens on, where its stderr goes."""

    process: trio.Process
    host: str
    port: int
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_tail(self, limit: int = 2_000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def proxy_command(profile: str | None = None) -> list[str]:
    """``python -m proxy --port 0``, under cProfile when ``profile`` names an output file."""
    if profile:
        return [sys.executable, "-m", "cProfile", "-o", profile, "-m", "proxy", "--port", "0"]
    return [sys.executable, "-m", "proxy", "--port", "0"]


def naive_relay_command(upstream: str) -> list[str]:
    return [sys.executable, "-m", "bench.baselines.naive_relay", "--port", "0", "--upstream", upstream]


def _environment(extra: Mapping[str, str | None]) -> dict[str, str]:
    """This environment plus ``extra`` (None removes a variable), with the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@asynccontextmanager
async def started(command: list[str], env: Mapping[str, str | None]) -> AsyncIterator[TargetProcess]:
    """Run ``command`` until the block ends; yields once it printed its ``listening on ws://HOST:PORT`` line."""
    stderr_file: IO[bytes] = tempfile.NamedTemporaryFile(prefix="bench-target-", suffix=".log", delete=False)  # noqa: SIM115
    stderr_path = Path(stderr_file.name)
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=stderr_file, env=_environment(env), cwd=REPO_ROOT
    )
    stderr_file.close()
    assert process.stdout is not None
    stdout = process.stdout
    try:
        async with trio.open_nursery() as nursery:
            buffer = b""
            with trio.move_on_after(START_TIMEOUT_S):
                while not LISTENING_RE.search(buffer):
                    chunk = await stdout.receive_some(4096)
                    if not chunk:
                        break
                    buffer += chunk
            found = LISTENING_RE.search(buffer)
            if found is None:
                tail = await trio.Path(stderr_path).read_text(errors="replace")
                raise RuntimeError(f"{command[2:]} did not announce its port; its stderr ends with:\n{tail[-2_000:]}")
            nursery.start_soon(_drain, stdout)
            yield TargetProcess(process, found.group(1).decode().strip("[]"), int(found.group(2)), stderr_path)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stop(process)
        with suppress(OSError):
            await trio.Path(stderr_path).unlink()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(65536):
        pass


async def stop(process: trio.Process) -> None:
    """SIGINT (graceful: the proxy drains, cProfile writes its output), then SIGKILL if it takes too long."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGINT)
    with trio.move_on_after(STOP_TIMEOUT_S):
        await process.wait()
        return
    process.kill()
    await process.wait()
