"""Python heap per idle session, measured in process with tracemalloc (``python -m bench.session_memory``).

Each session is the production shell (:class:`proxy.session.Session`) with the ``/openai`` translator, both legs
:class:`proxy.ws.WebSocket` over in-memory streams, brought to the idle state the RSS benchmark measures: the
component's ``Settings`` answered by ``session.updated`` and ``SettingsApplied`` delivered. The peers are bare
byte streams (no WebSocket object of their own), so what is counted is the proxy's side plus two in-memory stream
pairs (about 9 KiB per session). The clock is virtual and never advances, so no ping or watchdog fires; the figure
is deterministic for given Python and library versions. RSS (the benchmark's ``--targets proxy`` row) counts
sockets instead of memory streams, and the allocator's overhead.
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc
from dataclasses import dataclass

import trio
import trio.testing

from proxy.config import Limits
from proxy.openai.translator import Translator
from proxy.session import Session, UpstreamTarget
from proxy.ws import WebSocket
from proxy.ws.frames import OP_TEXT, encode_frame

SETTINGS = json.dumps({"type": "Settings", "agent": {"think": {"prompt": "Hi"}}}).encode()
SESSION_UPDATED = json.dumps({"type": "session.updated", "session": {"type": "realtime"}}).encode()


@dataclass(frozen=True)
class Measurement:
    sessions: int
    bytes_per_session: float
    #: Trio tasks each idle session keeps (its peers' reader tasks in this harness excluded).
    tasks_per_session: float
    top: list[tuple[str, int]]


def _count_tasks() -> int:
    count, todo = 0, [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        count += 1
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    """Read and discard what the proxy sends a peer (as a real peer would), so buffers do not count."""
    while await stream.receive_some(65_536):
        pass


async def _open_sessions(nursery: trio.Nursery, count: int, limits: Limits) -> list[Session]:
    sessions: list[Session] = []
    for _ in range(count):
        browser, proxy_side = trio.testing.memory_stream_pair()
        upstream_peer: list[trio.abc.Stream] = []

        async def connector(
            target: UpstreamTarget, lim: Limits, peers: list[trio.abc.Stream] = upstream_peer
        ) -> WebSocket:
            ours, theirs = trio.testing.memory_stream_pair()
            peers.append(theirs)
            nursery.start_soon(_drain, theirs)
            return WebSocket(ours, client=True, max_message_size=lim.upstream_max_message_bytes)

        client = WebSocket(proxy_side, client=False, max_message_size=limits.client_max_message_bytes)
        session = Session(client, Translator(), UpstreamTarget("/v1/realtime"), limits, connector=connector)
        nursery.start_soon(session.run)
        nursery.start_soon(_drain, browser)
        await browser.send_all(encode_frame(OP_TEXT, SETTINGS, mask=True))
        await trio.testing.wait_all_tasks_blocked()
        await upstream_peer[0].send_all(encode_frame(OP_TEXT, SESSION_UPDATED, mask=False))
        await trio.testing.wait_all_tasks_blocked()
        sessions.append(session)
    return sessions


async def _measure(count: int, warmup: int, frames: int, clock: trio.testing.MockClock) -> Measurement:
    limits = Limits()
    async with trio.open_nursery() as nursery:
        await _open_sessions(nursery, warmup, limits)  # caches, interned strings, first-use imports
        gc.collect()
        tasks_before = _count_tasks()
        tracemalloc.start(frames)
        before = tracemalloc.take_snapshot()
        await _open_sessions(nursery, count, limits)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        # Each session in this harness adds two peer tasks that read and discard what the proxy sends.
        tasks = (_count_tasks() - tasks_before) / count - 2
        stats = after.compare_to(before, "lineno")
        total = sum(stat.size_diff for stat in stats)
        top = [(str(stat.traceback[0]), stat.size_diff) for stat in stats[:15]]
        clock.autojump_threshold = 0  # the sessions' shielded closes wait on virtual time
        nursery.cancel_scope.cancel()
    return Measurement(count, total / count, tasks, top)


def measure(count: int = 200, *, warmup: int = 20, frames: int = 1) -> Measurement:
    """Bytes of Python heap per idle session, averaged over ``count`` sessions opened after ``warmup`` others."""
    clock = trio.testing.MockClock()
    return trio.run(_measure, count, warmup, frames, clock, clock=clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--top", type=int, default=15, help="lines of the biggest allocation sites to print")
    args = parser.parse_args()
    result = measure(args.sessions)
    print(f"idle sessions: {result.sessions}")
    print(f"bytes per idle session: {result.bytes_per_session:,.0f} ({result.bytes_per_session / 1024:.1f} KiB)")
    print(f"tasks per idle session: {result.tasks_per_session:g}")
    for site, size in result.top[: args.top]:
        print(f"  {size / result.sessions:9,.0f} B  {site}")


if __name__ == "__main__":
    main()
