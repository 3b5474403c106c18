"""The naive translator: the /openai route as most people would first write it, as a like-for-like baseline.

It does the work the proxy's /openai route cannot avoid, written plainly: trio-websocket on both legs (library
defaults), two tasks copying messages, the standard library's ``json`` both ways, base64 both ways, and the
16 kHz -> 24 kHz conversion as linear interpolation with ``numpy.interp``, one small state per connection. It
translates only what the benchmark's workload needs: ``Settings`` -> ``session.update`` (the prompt becomes the
instructions), ``session.updated`` -> ``SettingsApplied``, binary mic audio -> ``input_audio_buffer.append``,
``InjectUserMessage`` -> ``conversation.item.create`` + ``response.create``, audio deltas -> binary frames, and
the transcript / audio done events -> ``ConversationText`` / ``AgentAudioDone``. No limits, no validation, no
keepalive, no timers. So "x the naive translator" compares implementations of the same job, not workloads.

    python -m bench.baselines.naive_translator --port 0 --upstream ws://127.0.0.1:9000/v1/realtime

Prints ``listening on ws://HOST:PORT``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


class LinearResampler:
    """16 kHz -> 24 kHz PCM16 by linear interpolation, carrying the last sample and the read position."""

    def __init__(self) -> None:
        self.last: npt.NDArray[np.float64] | None = None
        self.position = 0.0  # read position of the next output sample, in input samples from ``last``

    def push(self, data: bytes) -> bytes:
        samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64)
        if self.last is not None:
            samples = np.concatenate((self.last, samples))
        if samples.size < 2:
            self.last = samples
            return b""
        positions = np.arange(self.position, samples.size - 1, 2 / 3)
        out = np.interp(positions, np.arange(samples.size), samples)
        next_position = positions[-1] + 2 / 3 if positions.size else self.position
        keep = int(next_position)
        self.last = samples[keep:]
        self.position = next_position - keep
        converted: bytes = np.round(out).astype("<i2").tobytes()
        return converted


async def _client_to_upstream(client: WebSocketConnection, upstream: WebSocketConnection) -> None:
    resampler = LinearResampler()
    while True:
        message = await client.get_message()
        if isinstance(message, bytes):
            audio = base64.b64encode(resampler.push(message)).decode()
            await upstream.send_message(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            continue
        event = json.loads(message)
        kind = event.get("type")
        if kind == "Settings":
            prompt = event.get("agent", {}).get("think", {}).get("prompt", "")
            session = {
                "type": "realtime",
                "instructions": prompt,
                "output_modalities": ["audio"],
                "audio": {
                    "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": {"type": "server_vad"}},
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}},
                },
            }
            await upstream.send_message(json.dumps({"type": "session.update", "session": session}))
        elif kind == "InjectUserMessage":
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": event["content"]}]}
            await upstream.send_message(json.dumps({"type": "conversation.item.create", "item": item}))
            await upstream.send_message(json.dumps({"type": "response.create"}))


async def _upstream_to_client(upstream: WebSocketConnection, client: WebSocketConnection) -> None:
    applied = False
    while True:
        event = json.loads(await upstream.get_message())
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            await client.send_message(base64.b64decode(event["delta"]))
        elif kind == "session.updated" and not applied:
            applied = True
            await client.send_message(json.dumps({"type": "SettingsApplied"}))
        elif kind == "response.output_audio_transcript.done":
            text = {"type": "ConversationText", "role": "assistant", "content": event.get("transcript", "")}
            await client.send_message(json.dumps(text))
        elif kind == "response.output_audio.done":
            await client.send_message(json.dumps({"type": "AgentAudioDone"}))
        elif kind == "error":
            await client.send_message(json.dumps({"type": "Error", "description": str(event.get("error"))}))


Copier = Callable[[WebSocketConnection, WebSocketConnection], Awaitable[None]]


async def _pump(task: Copier, source: WebSocketConnection, sink: WebSocketConnection, done: trio.CancelScope) -> None:
    with contextlib.suppress(ConnectionClosed):
        await task(source, sink)
    done.cancel()


async def serve(host: str, port: int, upstream: str) -> None:
    async def translate(request: WebSocketRequest) -> None:
        client = await request.accept()
        try:
            async with open_websocket_url(upstream) as server, trio.open_nursery() as nursery:
                nursery.start_soon(_pump, _client_to_upstream, client, server, nursery.cancel_scope)
                nursery.start_soon(_pump, _upstream_to_client, server, client, nursery.cancel_scope)
        except (OSError, HandshakeError):
            pass  # upstream unreachable: just close the client
        await client.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, translate, host, port, None)
        print(f"listening on ws://{host}:{server.port}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.baselines.naive_translator", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="ws:// URL of the Realtime endpoint")
    args = parser.parse_args(argv)
    try:
        trio.run(serve, args.host, args.port, args.upstream)
    except* KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
