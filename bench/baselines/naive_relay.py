"""The naive relay: the WebSocket relay most people would write first, as a baseline.

Accept, open the upstream with trio-websocket's ``open_websocket_url`` (library defaults throughout), and copy
messages both ways with two tasks doing ``get_message`` -> ``send_message``. No parsing, no translation, no
limits, no keepalive: it only moves frames, so it bounds from below what any relay costs on this stack.

    python -m bench.baselines.naive_relay --port 0 --upstream ws://127.0.0.1:9000

The client's request path and query are appended to ``--upstream``. Prints ``listening on ws://HOST:PORT``.
"""

from __future__ import annotations

import argparse
import sys

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


async def _pump(source: WebSocketConnection, sink: WebSocketConnection, done: trio.CancelScope) -> None:
    try:
        while True:
            await sink.send_message(await source.get_message())
    except ConnectionClosed:
        pass
    done.cancel()


async def serve(host: str, port: int, upstream: str) -> None:
    async def relay(request: WebSocketRequest) -> None:
        client = await request.accept()
        try:
            async with (
                open_websocket_url(upstream.rstrip("/") + request.path) as server,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_pump, client, server, nursery.cancel_scope)
                nursery.start_soon(_pump, server, client, nursery.cancel_scope)
        except (OSError, HandshakeError):
            pass  # upstream unreachable: just close the client
        await client.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, relay, host, port, None)
        print(f"listening on ws://{host}:{server.port}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.naive_relay", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="ws:// base URL; the request path is appended")
    args = parser.parse_args(argv)
    try:
        trio.run(serve, args.host, args.port, args.upstream)
    except* KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
