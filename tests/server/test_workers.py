"""``--workers N`` end to end: real processes on loopback.

Which worker serves a connection is read from the operating system (the server side of the TCP connection in
/proc/net/tcp, and which process holds that socket), never from anything the proxy tells a client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

from tests.promtext import samples, value
from tests.server.test_server import echo_upstream, http_get
from tests.test_cli import proxy_env

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


@dataclass
class Running:
    process: trio.Process
    port: int
    stderr: Path
    upstream: int

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def workers(self) -> set[int]:
        return children(self.process.pid)


def children(parent: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z":
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def server_side_owner(port: int, client_port: int, candidates: set[int]) -> int | None:
    """The pid among ``candidates`` holding the server side of the connection from ``client_port`` to ``port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    if inode is None:
        return None
    for pid in candidates:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


@asynccontextmanager
async def supervised(tmp_path: Path, *args: str, workers: str = "2") -> AsyncIterator[Running]:
    async with echo_upstream() as up:
        env = proxy_env(
            DEEPGRAM_AGENT_URL=f"ws://127.0.0.1:{up}/v1/agent/converse",
            DEEPGRAM_API_KEY="dg-test",
            LOG_LEVEL="INFO",
            TMPDIR=str(tmp_path),
        )
        command = [sys.executable, "-m", "proxy", "--port", "0", "--workers", workers, *args]
        stderr_path = tmp_path / "stderr.txt"
        with open(stderr_path, "wb") as stderr:  # noqa: ASYNC230 - a local file, before the process starts
            process = await trio.lowlevel.open_process(command, env=env, stdout=subprocess.PIPE, stderr=stderr)
        try:
            assert process.stdout is not None
            line = b""
            with trio.fail_after(30):
                while not line.endswith(b"\n"):
                    chunk = await process.stdout.receive_some(1)
                    assert chunk, stderr_path.read_text()
                    line += chunk
            assert line.startswith(b"listening on ws://127.0.0.1:"), line
            yield Running(process, int(line.rsplit(b":", 1)[1]), stderr_path, up)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await process.wait()
            if process.returncode is None:
                for pid in children(process.pid):
                    os.kill(pid, signal.SIGKILL)
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()


async def sessions_on_every_worker(
    running: Running, stack: AsyncExitStack, at_least: int = 8
) -> dict[WebSocketConnection, int]:
    """Open sessions until every worker serves at least one (and at least ``at_least`` in all); ws -> owner pid."""
    workers = running.workers()
    owners: dict[WebSocketConnection, int] = {}
    for _ in range(64):
        ws = await stack.enter_async_context(open_websocket_url(f"ws://127.0.0.1:{running.port}/v1/agent/converse"))
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
        owner = server_side_owner(running.port, ws.local.port, workers)
        assert owner is not None
        owners[ws] = owner
        if len(owners) >= at_least and set(owners.values()) == workers:
            break
    return owners


async def metrics_text(port: int) -> str:
    status, _headers, body = await http_get(port, "/metrics")
    assert status == 200
    return body.decode()


async def test_two_workers_serve_sessions_from_two_processes_on_one_port(tmp_path: Path) -> None:
    async with supervised(tmp_path) as running, AsyncExitStack() as stack:
        workers = running.workers()
        assert len(workers) == 2
        owners = await sessions_on_every_worker(running, stack)
        assert set(owners.values()) == workers
        # Whichever worker answers the scrape, it reports the whole server.
        for _ in range(6):
            text = await metrics_text(running.port)
            assert value(text, "proxy_sessions_total", route="deepgram") == len(owners)
            assert value(text, "proxy_sessions_active", route="deepgram") == len(owners)
            assert value(text, "proxy_workers") == 2
            assert value(text, "voice_agent_proxy_build_info", version=version_label(text)) == 1
            cpu = {s[1] for s in samples(text) if s[0] == "process_cpu_seconds_total"}
            assert cpu == {
                frozenset({("worker", "0")}),
                frozenset({("worker", "1")}),
                frozenset({("worker", "supervisor")}),
            }
    assert running.process.returncode == 0
    assert "listening on" not in running.log()  # printed once, on stdout, by the supervisor
    assert not any(tmp_path.glob("voice-agent-proxy-metrics-*"))  # noqa: ASYNC240  # the run's metric files are removed


def version_label(text: str) -> str:
    (labels,) = [dict(s[1]) for s in samples(text) if s[0] == "voice_agent_proxy_build_info"]
    return labels["version"]


async def test_a_killed_worker_is_restarted_counted_and_the_port_keeps_serving(tmp_path: Path) -> None:
    async with supervised(tmp_path) as running, AsyncExitStack() as stack:
        owners = await sessions_on_every_worker(running, stack)
        victim = min(running.workers())
        survivors = [ws for ws, pid in owners.items() if pid != victim]
        os.kill(victim, signal.SIGKILL)
        # Once the process is gone (its listener with it; a connection that was still queued on that listener at
        # that moment is reset), the other worker's listener takes every new connection, before any restart.
        with trio.fail_after(10):
            while alive(victim):  # noqa: ASYNC110 - the kernel tears the process down when it does
                await trio.sleep(0.01)
        for _ in range(10):
            assert (await http_get(running.port, "/health"))[0] == 200
        for ws in survivors:
            await ws.send_message("still here")
            assert await ws.get_message() == "still here"
        with trio.fail_after(20):
            while len(workers := running.workers()) < 2 or victim in workers:  # noqa: ASYNC110 - a process restarts when it does
                await trio.sleep(0.05)
        text = await metrics_text(running.port)
        assert value(text, "proxy_worker_restarts_total") == 1
        # The dead worker's sessions stay counted; the ones it held are no longer active.
        assert value(text, "proxy_sessions_total", route="deepgram") == len(owners)
        assert value(text, "proxy_sessions_active", route="deepgram") == len(survivors)
        # The new worker serves too.
        new_worker = (workers - set(owners.values())).pop()
        served = False
        for _ in range(64):
            async with open_websocket_url(f"ws://127.0.0.1:{running.port}/v1/agent/converse") as ws:
                await ws.send_message("x")
                assert await ws.get_message() == "x"
                served = server_side_owner(running.port, ws.local.port, workers) == new_worker
            if served:
                break
        assert served
    assert f"(pid {victim}) died: killed by SIGKILL; starting it again in 0.5 s" in running.log()


async def test_sigterm_drains_every_worker_together(tmp_path: Path) -> None:
    async with supervised(tmp_path, "--drain-timeout", "60") as running, AsyncExitStack() as stack:
        owners = await sessions_on_every_worker(running, stack)
        running.process.send_signal(signal.SIGTERM)
        # Every worker drains: a run of fresh connections (spread over both) all see 503 on /ready.
        with trio.fail_after(10):
            streak = 0
            while streak < 12:
                streak = streak + 1 if (await http_get(running.port, "/ready"))[0] == 503 else 0
        for _ in range(6):
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(f"ws://127.0.0.1:{running.port}/v1/agent/converse"):
                    pass
            assert refused.value.status_code == 503
        for ws in owners:  # sessions go on during the drain, on both workers
            await ws.send_message("during the drain")
            assert await ws.get_message() == "during the drain"
        running.process.send_signal(signal.SIGTERM)  # a second signal: close now
        for ws in owners:
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1001
        with trio.fail_after(10):
            assert await running.process.wait() == 0
    assert running.workers() == set()


async def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    async with supervised(tmp_path) as running:
        workers = running.workers()
        assert len(workers) == 2
        running.process.kill()
        await running.process.wait()
        with trio.fail_after(20):
            while any(alive(pid) for pid in workers):  # noqa: ASYNC110 - the workers drain, then exit
                await trio.sleep(0.05)
    assert "the supervisor is gone; draining" in running.log()


async def test_a_port_in_use_is_one_line_and_exit_code_1(tmp_path: Path) -> None:
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = proxy_env(LOG_LEVEL="INFO")
    with taken:
        result = await trio.run_process(
            [sys.executable, "-m", "proxy", "--port", str(port), "--workers", "2"],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.decode()
    assert b"listening on" not in result.stdout


async def test_one_worker_is_the_single_process_without_a_supervisor(tmp_path: Path) -> None:
    async with supervised(tmp_path, workers="1") as running:
        assert running.workers() == set()
        text = await metrics_text(running.port)
        assert ("process_cpu_seconds_total", frozenset()) in samples(text)
        assert value(text, "proxy_workers") is None
