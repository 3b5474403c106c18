"""One session's hot path two ways: the proxy's Outbox (send from the producing task) vs pump tasks joined by
Trio memory channels (the textbook design). CPU per message and added latency, at 1 and 200 sessions.

    python -m bench.pumps [--sessions 1,200] [--seconds 6] [--repeat 3]

Per session, a source writes 85 ms-paced messages (a timestamp and 4 KiB, about one mic append) into a socket
pair; the middle reads each one, passes it through a trivial core, and forwards it into a second socket pair; a
sink reads it and records how long it took from the source's send. Only the middle differs:

* ``outbox``: the reader queues the core's output in :class:`proxy.session.Outbox` and sends it itself, unless a
  send on that leg is already in progress (as ``Session._send_frames`` does);
* ``channels``: the reader puts the output into a bounded memory channel; a writer task per leg takes it out and
  sends it.

Sources, sinks and the middle share one process and one clock, so the figures are the whole path's; the sources'
and sinks' work is the same for both designs, so the difference between the two rows is what the design costs.
CPU is the process's (``time.process_time``) over the measured seconds divided by the messages delivered.
"""

from __future__ import annotations

import argparse
import random
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import trio

from proxy.core import Frame
from proxy.session import Outbox

MESSAGE_BYTES = 4_096 + 8
PERIOD_S = 0.085
_STAMP = struct.Struct("<d")


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    delivered: int = 0
    measuring: bool = False


async def _read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise trio.EndOfChannel
        data += chunk
    return data


def _core(message: bytes) -> list[Frame]:
    """The sans-IO step: here a copy, so both designs pay the same for it."""
    return [bytes(message)]


async def _source(stream: trio.SocketStream, stop_at: float, phase: float) -> None:
    payload = bytes(MESSAGE_BYTES - 8)
    due = trio.current_time() + phase
    while due < stop_at:
        await trio.sleep_until(due)
        await stream.send_all(_STAMP.pack(trio.current_time()) + payload)
        due += PERIOD_S
    await stream.aclose()


async def _sink(stream: trio.SocketStream, tally: Tally) -> None:
    try:
        while True:
            message = await _read_exactly(stream, MESSAGE_BYTES)
            if tally.measuring:
                tally.latencies.append(trio.current_time() - _STAMP.unpack_from(message)[0])
                tally.delivered += 1
    except trio.EndOfChannel:
        pass


async def _outbox_middle(inbound: trio.SocketStream, outbound: trio.SocketStream) -> None:
    outbox = Outbox(256, 4 << 20)
    try:
        while True:
            if not outbox.writable():
                await outbox.wait_writable()
            message = await _read_exactly(inbound, MESSAGE_BYTES)
            outbox.extend(_core(message))
            if outbox.busy:
                continue
            outbox.busy = True
            try:
                while (frame := outbox.pop()) is not None:
                    await outbound.send_all(frame if isinstance(frame, bytes) else frame.encode())
            finally:
                outbox.release()
    except trio.EndOfChannel:
        await outbound.aclose()


async def _channel_middle(inbound: trio.SocketStream, outbound: trio.SocketStream) -> None:
    sender, receiver = trio.open_memory_channel[Frame](256)

    async def writer() -> None:
        async with receiver:
            async for frame in receiver:
                await outbound.send_all(frame if isinstance(frame, bytes) else frame.encode())
        await outbound.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        async with sender:
            try:
                while True:
                    message = await _read_exactly(inbound, MESSAGE_BYTES)
                    for frame in _core(message):
                        await sender.send(frame)
            except trio.EndOfChannel:
                pass


Middle = Callable[[trio.SocketStream, trio.SocketStream], Awaitable[None]]
DESIGNS: dict[str, Middle] = {"outbox": _outbox_middle, "channels": _channel_middle}


@dataclass
class Result:
    design: str
    sessions: int
    cpu_us_per_message: float
    p50_ms: float
    p99_ms: float
    messages: int


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def measure(design: str, sessions: int, seconds: float, warmup: float = 1.0) -> Result:
    tally = Tally()
    rng = random.Random(sessions)
    start = trio.current_time()
    stop_at = start + warmup + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            source_end, middle_in = _pair()
            middle_out, sink_end = _pair()
            nursery.start_soon(_source, source_end, stop_at, rng.uniform(0, PERIOD_S))
            nursery.start_soon(DESIGNS[design], middle_in, middle_out)
            nursery.start_soon(_sink, sink_end, tally)
        await trio.sleep_until(start + warmup)
        tally.measuring = True
        cpu_before = time.process_time()
        await trio.sleep_until(stop_at)
        cpu = time.process_time() - cpu_before
        tally.measuring = False
    latencies = np.array(tally.latencies) * 1e3
    return Result(
        design,
        sessions,
        cpu / max(tally.delivered, 1) * 1e6,
        float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
        float(np.percentile(latencies, 99)) if latencies.size else float("nan"),
        tally.delivered,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pumps", description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="1,200", help="comma-separated session counts (default 1,200)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run (default 6)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per design and count, alternating (default 3)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.sessions.split(",") if n.strip()]
    results: dict[tuple[str, int], list[Result]] = {}
    for count in counts:
        for _ in range(args.repeat):
            for design in DESIGNS:  # alternating, so a drift of the machine weighs on both
                result = trio.run(measure, design, count, args.seconds)
                results.setdefault((design, count), []).append(result)
    print("| sessions | design | CPU µs per message: median (min-max) | p50 ms | p99 ms: median (min-max) | messages |")
    print("|---|---|---|---|---|---|")
    for (design, count), runs in results.items():
        cpu = [r.cpu_us_per_message for r in runs]
        p99 = [r.p99_ms for r in runs]
        print(
            f"| {count} | {design} | {statistics.median(cpu):.1f} ({min(cpu):.1f}-{max(cpu):.1f}) | "
            f"{statistics.median(r.p50_ms for r in runs):.3f} | "
            f"{statistics.median(p99):.3f} ({min(p99):.3f}-{max(p99):.3f}) | {sum(r.messages for r in runs)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
