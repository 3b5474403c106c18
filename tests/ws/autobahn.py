"""Echo peers built on proxy.ws for the Autobahn TestSuite (run by kosoku), on loopback.

:func:`serve_echo` is a WebSocket echo server (kosoku's fuzzingclient drives it: our server side);
:func:`run_echo_client` is the Autobahn test client protocol (``/getCaseCount``, ``/runCase``, ``/updateReports``)
against kosoku's fuzzingserver (our client side). kosoku runs on asyncio, so it runs in a worker thread with its own
event loop; these peers run in Trio.

The peers raise the proxy's per-message limits to what the suite sends (16 MiB messages, 4 MiB in 64-byte
fragments): the suite checks the protocol, and the limits have their own tests.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import kosoku
import trio

from proxy.ws import ConnectionClosed, WebSocket, connect
from tests.wsmem import answer_upgrade

AGENT = "proxy.ws"
MAX_MESSAGE_BYTES = 16 << 20
MAX_FRAGMENTS = 1 << 20
#: Compression (permessage-deflate) is never negotiated: the proxy declines the offer.
COMPRESSION_CASES = ("12.*", "13.*")


@dataclass(frozen=True)
class Outcome:
    passed: list[kosoku._kosoku.CaseResult]
    failed: list[kosoku._kosoku.CaseResult]


def _outcome(results: Sequence[kosoku._kosoku.CaseResult]) -> Outcome:
    return Outcome([r for r in results if r.passed], [r for r in results if not r.passed])


async def _echo(ws: WebSocket) -> None:
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass
    finally:
        with trio.move_on_after(2):
            await ws.aclose()


async def _serve_one(stream: trio.SocketStream) -> None:
    buffered = await answer_upgrade(stream)
    ws = WebSocket(
        stream,
        client=False,
        max_message_size=MAX_MESSAGE_BYTES,
        max_fragments_per_message=MAX_FRAGMENTS,
        buffered=buffered,
    )
    await _echo(ws)


async def serve_echo(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """An echo server on a free loopback port (reported through ``task_status``)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(_serve_one, listeners)


def _in_asyncio_thread(main: Callable[[], object]) -> object:
    return asyncio.run(main())  # type: ignore[arg-type]


async def run_fuzzingclient(cases: Sequence[str], exclude: Sequence[str], *, concurrency: int) -> Outcome:
    """kosoku's fuzzingclient against our echo server; every case's result."""
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(serve_echo)

        async def drive() -> list[kosoku._kosoku.CaseResult]:
            try:
                return await kosoku.run_fuzzingclient(
                    f"ws://127.0.0.1:{port}", list(cases), list(exclude), concurrency=concurrency
                )
            except kosoku.FailureError as failure:
                return list(failure.results)

        results = await trio.to_thread.run_sync(_in_asyncio_thread, drive)
        nursery.cancel_scope.cancel()
    assert isinstance(results, list)
    return _outcome(results)


async def _open(port: int, resource: str) -> WebSocket:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        return await connect(
            stream,
            f"127.0.0.1:{port}",
            resource,
            max_message_size=MAX_MESSAGE_BYTES,
            max_fragments_per_message=MAX_FRAGMENTS,
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def run_echo_client(port: int, *, concurrency: int = 1) -> None:
    """The Autobahn test client protocol: ask for the number of cases, echo each case (``concurrency`` at a time:
    several cases mostly wait on the suite's own timers), ask for the reports."""
    ws = await _open(port, "/getCaseCount")
    count = int(await ws.get_message())
    with trio.move_on_after(2):
        await ws.aclose()
    slots = trio.Semaphore(concurrency)

    async def run_case(case: int) -> None:
        try:
            await _echo(await _open(port, f"/runCase?case={case}&agent={AGENT}"))
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        for case in range(1, count + 1):
            await slots.acquire()
            nursery.start_soon(run_case, case)
    ws = await _open(port, f"/updateReports?agent={AGENT}")
    with trio.move_on_after(2):
        await ws.aclose()


async def run_fuzzingserver(cases: Sequence[str], exclude: Sequence[str], *, concurrency: int) -> Outcome:
    """Our echo client against kosoku's fuzzingserver; every case's result."""
    ports: queue.SimpleQueue[int] = queue.SimpleQueue()

    async def serve() -> list[kosoku._kosoku.CaseResult]:
        async with kosoku.run_fuzzingserver(list(cases), list(exclude), host="127.0.0.1", port=0) as server:
            ports.put(server.port)
            try:
                return await server.get_result()
            except kosoku.FailureError as failure:
                return list(failure.results)

    results: list[object] = []

    async def in_thread() -> None:
        results.append(await trio.to_thread.run_sync(_in_asyncio_thread, serve))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(in_thread)
        port = await trio.to_thread.run_sync(ports.get)
        await run_echo_client(port, concurrency=concurrency)
    outcome = results[0]
    assert isinstance(outcome, list)
    return _outcome(outcome)


__all__ = ["COMPRESSION_CASES", "Outcome", "run_fuzzingclient", "run_fuzzingserver"]
