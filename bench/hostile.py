"""Hostile clients that run beside the honest load (``python -m bench --hostile N``).

Each client is one kind of abuse a public edge must survive without starving the honest sessions:

* ``ping-flood`` / ``pong-flood`` — control frames on an open WebSocket, as fast as the socket takes them (written
  in batches; the replies are read and counted so the flood is never held back by our own receive window);
* ``slowloris`` — many sockets, each trickling an upgrade request head one byte at a time and never finishing it;
* ``fragments`` — one text message that never ends: an endless run of empty continuation fragments (the message
  never grows, so no size limit fires);
* ``idle`` — many TCP connections that never send anything;
* ``json`` — a deeply nested JSON text frame and an oversized one, in turn, on the component route.

Every client is bounded: the socket kinds hold ``sockets`` connections each, and every connection the target closes
is re-opened only after a pause (``RECONNECT_PAUSE_S``), so a target that closes at once does not turn the client
into a connect flood; all clients stop when told (or at ``max_seconds``). They talk to loopback only.

The clients run in their own process (``python -m bench.hostile``, driven by :class:`HostileRun`): their work would
otherwise delay the generator's honest senders in its event loop and show up as latency the target never added.
The process stops when its stdin closes and prints one JSON document: per client, what it sent and received and
how each of its connections ended (the target's close code or HTTP status, and how long after opening).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast, get_args
from urllib.parse import urlsplit

import trio

from .procs import REPO_ROOT, cpu_seconds
from .ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Closed,
    HandshakeFailed,
    WebSocket,
    frame_bytes,
)
from .ws import connect as open_websocket

#: The hostile clients connect from their own loopback address, as an attacker would from the honest users'; the
#: proxy's per-address cap then applies to them and not to the generator's honest sessions.
ATTACKER_ADDRESS = "127.0.0.2"

Kind = Literal["ping-flood", "pong-flood", "slowloris", "fragments", "idle", "json"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
DEFAULT_KINDS: Final[tuple[Kind, ...]] = ("ping-flood", "pong-flood", "slowloris", "fragments", "idle")
SOCKET_KINDS: Final[frozenset[Kind]] = frozenset({"slowloris", "idle"})

FLOOD_BATCH_FRAMES: Final = 256  # frames per write: as fast as the socket takes them, without a syscall per frame
PING_PAYLOAD: Final = b"hostile!"
RECONNECT_PAUSE_S: Final = 0.1
OPEN_SPREAD_S: Final = 1.0  # the socket kinds open their sockets spread over this time, not in one burst
SLOWLORIS_BYTE_INTERVAL_S: Final = 0.5
CONNECT_TIMEOUT_S: Final = 10.0
CLOSE_WAIT_S: Final = 2.0  # after a failed write, how long the reader may take to see why
JSON_INTERVAL_S: Final = 1.0
JSON_NESTING_DEPTH: Final = 100_000
JSON_OVERSIZED_BYTES: Final = 2 << 20
MAX_CLOSE_SAMPLES: Final = 10_000
STOP_TIMEOUT_S: Final = 10.0
OPEN_AT_END: Final = "open at end"


@dataclass
class ClientReport:
    """What one hostile client did, and what the target did to it."""

    client: int
    kind: str
    connections: int = 0  # TCP connections that were opened
    connect_failures: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    #: How each connection ended: ``ws <close code>``, ``http <status>``, ``dropped`` (no close frame or HTTP
    #: answer), ``open at end`` (still open when the client stopped).
    endings: dict[str, int] = field(default_factory=dict)
    #: Seconds from opening to the target's close, one per connection the target closed (capped).
    close_after_s: list[float] = field(default_factory=list)

    def ended(self, how: str, after_s: float | None) -> None:
        self.endings[how] = self.endings.get(how, 0) + 1
        if after_s is not None and len(self.close_after_s) < MAX_CLOSE_SAMPLES:
            self.close_after_s.append(after_s)

    @property
    def closed_by_target(self) -> int:
        return sum(count for how, count in self.endings.items() if how != OPEN_AT_END)


@dataclass(frozen=True)
class HostilePlan:
    count: int
    kinds: tuple[Kind, ...]
    sockets: int  # per slowloris / idle client

    def kind_of(self, client: int) -> Kind:
        return self.kinds[client % len(self.kinds)]


@dataclass
class HostileOutcome:
    plan: HostilePlan
    attacked: str  # what the clients attacked: the target itself, or a proxy beside the direct floor
    clients: list[ClientReport]
    process_cpu_s: float  # the hostile clients' own process
    process_wall_s: float
    attacked_cpu_percent: float | None = None  # the attacked process, over the measured window


def parse_kinds(text: str) -> tuple[Kind, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in KINDS]
    if unknown or not names:
        raise ValueError(f"unknown hostile kind(s) {', '.join(unknown) or '(none)'}; use {','.join(KINDS)}")
    return cast("tuple[Kind, ...]", names)


# ---------------------------------------------------------------------------------------------------------------
# WebSocket kinds


Writer = Callable[[WebSocket, ClientReport], Awaitable[None]]


async def _write_batches(ws: WebSocket, report: ClientReport, first: bytes, frame: bytes) -> None:
    if first:
        await ws.send_raw(first)
        report.frames_sent += 1
        report.bytes_sent += len(first)
    batch = frame * FLOOD_BATCH_FRAMES
    while True:
        await ws.send_raw(batch)
        report.frames_sent += FLOOD_BATCH_FRAMES
        report.bytes_sent += len(batch)


async def _ping_flood(ws: WebSocket, report: ClientReport) -> None:
    await _write_batches(ws, report, b"", frame_bytes(OP_PING, PING_PAYLOAD))


async def _pong_flood(ws: WebSocket, report: ClientReport) -> None:
    await _write_batches(ws, report, b"", frame_bytes(OP_PONG, PING_PAYLOAD))


async def _fragments(ws: WebSocket, report: ClientReport) -> None:
    first = frame_bytes(OP_TEXT, b"", fin=False)
    await _write_batches(ws, report, first, frame_bytes(OP_CONTINUATION, b"", fin=False))


def _hostile_json() -> Iterator[bytes]:
    nested = frame_bytes(OP_TEXT, b"[" * JSON_NESTING_DEPTH + b"]" * JSON_NESTING_DEPTH)
    filler = b"a" * JSON_OVERSIZED_BYTES
    oversized = frame_bytes(OP_TEXT, b'{"type":"InjectUserMessage","content":"' + filler + b'"}')
    return itertools.cycle((nested, oversized))


async def _json(ws: WebSocket, report: ClientReport) -> None:
    for frame in _hostile_json():
        await ws.send_raw(frame)
        report.frames_sent += 1
        report.bytes_sent += len(frame)
        await trio.sleep(JSON_INTERVAL_S)


_WRITERS: Final[dict[Kind, Writer]] = {
    "ping-flood": _ping_flood,
    "pong-flood": _pong_flood,
    "fragments": _fragments,
    "json": _json,
}


async def _read_frames(ws: WebSocket, report: ClientReport) -> str:
    """Count what the target sends until it closes; returns how the connection ended."""
    while True:
        try:
            opcode, _, payload = await ws.receive_frame()
        except (Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            return "dropped"
        report.frames_received += 1
        report.bytes_received += len(payload)
        if opcode == OP_CLOSE:
            return f"ws {int.from_bytes(payload[:2], 'big') if len(payload) >= 2 else 1005}"
        if opcode not in (OP_TEXT, OP_BINARY, OP_CONTINUATION, OP_PING, OP_PONG):
            return f"opcode {opcode}"


async def _one_websocket(report: ClientReport, url: str, writer: Writer) -> None:
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            ws = await open_websocket(url, local_address=ATTACKER_ADDRESS)
    except HandshakeFailed as exc:
        report.connections += 1
        report.ended(f"http {exc.status}" if exc.status else "dropped", None)
        return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        # Accepted, then closed before any answer (a cap refuses at once): the target dropped it.
        report.connections += 1
        report.ended("dropped", 0.0)
        return
    except (OSError, trio.TooSlowError):
        report.connect_failures += 1
        return
    report.connections += 1
    opened = trio.current_time()
    ending, after = OPEN_AT_END, None
    try:
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal ending, after
                ending = await _read_frames(ws, report)
                after = trio.current_time() - opened
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            try:
                await writer(ws, report)
            except (Closed, trio.BrokenResourceError, trio.ClosedResourceError):
                # The target went away under a write; the reader says how, or it was a plain drop.
                await trio.sleep(CLOSE_WAIT_S)
                ending, after = "dropped", trio.current_time() - opened - CLOSE_WAIT_S
            nursery.cancel_scope.cancel()
    finally:
        report.ended(ending, after)
        await ws.abort()


# ---------------------------------------------------------------------------------------------------------------
# Socket kinds


def _slowloris_bytes(path: str, host: str) -> Iterator[bytes]:
    head = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    ).encode()
    padding = (f"X-Padding-{n}: x\r\n".encode() for n in itertools.count())
    for chunk in itertools.chain((head,), padding):
        for byte in chunk:
            yield bytes((byte,))


async def _read_until_closed(stream: trio.abc.ReceiveStream, report: ClientReport) -> str:
    answer = b""
    while True:
        try:
            data = await stream.receive_some(65_536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            status = answer.split(b" ", 2)
            if answer.startswith(b"HTTP/") and len(status) >= 2 and status[1].isdigit():
                return f"http {int(status[1])}"
            return "dropped"
        report.frames_received += 1
        report.bytes_received += len(data)
        answer = (answer + data)[:64]


async def _one_socket(report: ClientReport, host: str, port: int, path: str, trickle: bool) -> None:
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            stream = await trio.open_tcp_stream(host, port, local_address=ATTACKER_ADDRESS)
    except (OSError, trio.TooSlowError):
        report.connect_failures += 1
        return
    report.connections += 1
    opened = trio.current_time()
    ending, after = OPEN_AT_END, None
    try:
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal ending, after
                ending = await _read_until_closed(stream, report)
                after = trio.current_time() - opened
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            if trickle:
                for byte in _slowloris_bytes(path, host):
                    try:
                        await stream.send_all(byte)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        await trio.sleep(CLOSE_WAIT_S)
                        ending, after = "dropped", trio.current_time() - opened - CLOSE_WAIT_S
                        break
                    report.frames_sent += 1
                    report.bytes_sent += 1
                    await trio.sleep(SLOWLORIS_BYTE_INTERVAL_S)
            else:
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
    finally:
        report.ended(ending, after)
        await trio.aclose_forcefully(stream)


async def _reopening(connection: Callable[[], Awaitable[None]], delay_s: float) -> None:
    await trio.sleep(delay_s)
    while True:
        await connection()
        await trio.sleep(RECONNECT_PAUSE_S)


async def run_client(report: ClientReport, kind: Kind, url: str, sockets: int) -> None:
    """One hostile client until cancelled; everything it does is counted on ``report``."""
    if kind in SOCKET_KINDS:
        parts = urlsplit(url)
        host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
        trickle = kind == "slowloris"
        async with trio.open_nursery() as nursery:
            for index in range(sockets):

                async def connection() -> None:
                    await _one_socket(report, host, port, path, trickle)

                nursery.start_soon(_reopening, connection, OPEN_SPREAD_S * index / sockets)
    else:
        writer = _WRITERS[kind]

        async def websocket() -> None:
            await _one_websocket(report, url, writer)

        await _reopening(websocket, 0.0)


async def attack(url: str, plan: HostilePlan, stop: trio.Event, max_seconds: float) -> list[ClientReport]:
    """Run the plan's clients against ``url`` until ``stop`` is set or ``max_seconds`` pass."""
    reports = [ClientReport(index, plan.kind_of(index)) for index in range(plan.count)]
    with trio.move_on_after(max_seconds):
        async with trio.open_nursery() as nursery:
            for report in reports:
                nursery.start_soon(run_client, report, plan.kind_of(report.client), url, plan.sockets)
            await stop.wait()
            nursery.cancel_scope.cancel()
    return reports


# ---------------------------------------------------------------------------------------------------------------
# The clients' own process


class HostileRun:
    """The hostile clients' process, started beside a measurement and stopped (stdin closed) at its end."""

    def __init__(self, process: trio.Process, plan: HostilePlan, attacked: str) -> None:
        self._process = process
        self.plan = plan
        self.attacked = attacked

    @classmethod
    async def start(cls, url: str, plan: HostilePlan, attacked: str, max_seconds: float) -> HostileRun:
        command = [
            sys.executable,
            "-m",
            "bench.hostile",
            "--url",
            url,
            "--count",
            str(plan.count),
            "--kinds",
            ",".join(plan.kinds),
            "--sockets",
            str(plan.sockets),
            "--max-seconds",
            f"{max_seconds:g}",
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT
        )
        return cls(process, plan, attacked)

    @property
    def pid(self) -> int:
        return self._process.pid

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self._process.pid)

    async def finish(self) -> HostileOutcome:
        """Tell the clients to stop and collect their report."""
        process = self._process
        assert process.stdin is not None
        assert process.stdout is not None
        await process.stdin.aclose()
        output = bytearray()
        with trio.move_on_after(STOP_TIMEOUT_S):
            while chunk := await process.stdout.receive_some(65_536):
                output += chunk
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.returncode != 0 or not output:
            raise RuntimeError(f"the hostile clients' process failed (exit status {process.returncode})")
        document = json.loads(output)
        return HostileOutcome(
            plan=self.plan,
            attacked=self.attacked,
            clients=[ClientReport(**client) for client in document["clients"]],
            process_cpu_s=float(document["cpu_s"]),
            process_wall_s=float(document["wall_s"]),
        )

    async def kill(self) -> None:
        if self._process.returncode is None:
            self._process.kill()
            await self._process.wait()


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    plan = HostilePlan(args.count, parse_kinds(args.kinds), args.sockets)
    stop = trio.Event()
    began_wall, began_cpu = time.monotonic(), time.process_time()

    async def stop_at_end_of_input() -> None:
        stdin = trio.lowlevel.FdStream(os.dup(0))
        while await stdin.receive_some(4096):
            pass
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_at_end_of_input)
        reports = await attack(args.url, plan, stop, args.max_seconds)
        nursery.cancel_scope.cancel()
    return {
        "clients": [dataclasses.asdict(report) for report in reports],
        "cpu_s": time.process_time() - began_cpu,
        "wall_s": time.monotonic() - began_wall,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description="hostile clients (loopback only)")
    parser.add_argument("--url", required=True, help="ws:// URL of the target's component route")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS))
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    host = urlsplit(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("hostile clients talk to loopback only")
    document = trio.run(_main, args)
    sys.stdout.write(json.dumps(document, allow_nan=False) + "\n")


def close_times(report: ClientReport) -> tuple[float, float]:
    """Median and maximum seconds from opening to the target's close (NaN when it closed nothing)."""
    if not report.close_after_s:
        return math.nan, math.nan
    ordered = sorted(report.close_after_s)
    return ordered[len(ordered) // 2], ordered[-1]


if __name__ == "__main__":
    main()
