"""Target processes: start, find their port, read the CPU time and memory of their process tree, stop.

CPU and memory come from ``/proc`` (Linux) and are read the same way for every target, so the numbers compare.
A target is its process and every descendant alive when it is read (a shell wrapper, worker processes). CPU is
``/proc/<pid>/task/<tid>/schedstat``'s time on the CPU (nanoseconds, user and system together) summed over every
thread of the tree: exact where ``stat``'s clock ticks are 10 ms steps. A thread or process that ended inside the
window takes its CPU time with it (none of the measured targets does that). Memory is VmRSS (VmHWM for the peak)
summed over the tree: shared pages count once per process.
"""

from __future__ import annotations

import os
import re
import signal
import socket
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


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (read from each thread's ``children`` list)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            with suppress(OSError, ValueError):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                pending.extend(int(child) for child in children)
    return found


def _process_cpu_ns(pid: int) -> int | None:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for task in tasks:
        with suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_bytes().split()[0])
    return total


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds the process tree of ``pid`` has used so far (None if it is gone or /proc is unavailable)."""
    counts = [_process_cpu_ns(member) for member in tree(pid)]
    if not counts or counts[0] is None:
        return None
    return sum(count for count in counts if count is not None) / 1e9


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of one process, its threads included (None if it is gone or /proc is unavailable)."""
    ns = _process_cpu_ns(pid)
    return None if ns is None else ns / 1e9


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


def _tree_kib(pid: int, key: bytes) -> int | None:
    values = [_status_kib(member, key) for member in tree(pid)]
    if not values or values[0] is None:
        return None
    return sum(value for value in values if value is not None)


def rss_kib(pid: int) -> int | None:
    """Resident set size of the process tree now (VmRSS)."""
    return _tree_kib(pid, b"VmRSS:")


def peak_rss_kib(pid: int) -> int | None:
    """Peak resident set size (VmHWM), summed over the tree."""
    return _tree_kib(pid, b"VmHWM:")


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


def naive_translator_command(upstream_url: str) -> list[str]:
    return [sys.executable, "-m", "bench.baselines.naive_translator", "--port", "0", "--upstream", upstream_url]


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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for a target that must be told its port)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def expand(command: str, placeholders: Mapping[str, str]) -> str:
    """``command`` with each ``{name}`` replaced (other braces, as in shell syntax, are left alone)."""
    for name, value in placeholders.items():
        command = command.replace("{" + name + "}", value)
    return command


@asynccontextmanager
async def started_command(
    command: str, env: Mapping[str, str | None], host: str, port: int
) -> AsyncIterator[TargetProcess]:
    """Run a shell command in its own process group until the block ends; yields once ``host:port`` accepts.

    The whole group is stopped at the end (SIGINT, then SIGKILL), so a wrapper script takes its children along.
    """
    log_file: IO[bytes] = tempfile.NamedTemporaryFile(prefix="bench-target-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log_file.name)
    process = await trio.lowlevel.open_process(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=log_file,
        env=_environment(env),
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    log_file.close()
    try:
        await _wait_for_port(process, host, port, log_path)
        yield TargetProcess(process, host, port, log_path)
    finally:
        with trio.CancelScope(shield=True):
            await stop_group(process)
        with suppress(OSError):
            await trio.Path(log_path).unlink()


async def _wait_for_port(process: trio.Process, host: str, port: int, log_path: Path) -> None:
    with trio.move_on_after(START_TIMEOUT_S):
        while process.poll() is None:
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return
    tail = (await trio.Path(log_path).read_text(errors="replace"))[-2_000:]
    state = "did not listen in time" if process.returncode is None else f"exited with {process.returncode}"
    raise RuntimeError(f"the target command {state} on {host}:{port}; its output ends with:\n{tail}")


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(OSError, ValueError, IndexError):
            data = Path(f"/proc/{entry}/stat").read_bytes()
            fields = data[data.rindex(b")") + 2 :].split()
            if int(fields[2]) == group and fields[0] != b"Z":
                members.append(int(entry))
    return members


async def stop_group(process: trio.Process) -> None:
    """SIGINT to the process group, a moment for what is left of it once the leader is gone, then SIGKILL."""
    group = process.pid  # the leader of its own session and group
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGINT)
    with trio.move_on_after(STOP_TIMEOUT_S):
        await process.wait()
    for _ in range(20):  # background jobs of a shell ignore SIGINT: give them a second at most
        if not group_members(group):
            break
        await trio.sleep(0.05)
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    await process.wait()


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
