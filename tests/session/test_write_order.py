"""Write order across the two legs: when one input produces frames for both, the client's are written first.

Each leg's byte stream records, at the moment the proxy writes to it, which leg was written; the tests read that
shared log, so they see the order across legs that neither peer alone can see.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream, wrap_server_stream

from proxy.config import Limits
from proxy.core import Frame
from proxy.openai.translator import Translator, TranslatorOptions
from proxy.session import Session, UpstreamTarget
from proxy.ws import WebSocket, connect
from tests.wsmem import RelayCore, accept_proxy_side


def recorded(stream: trio.StapledStream, leg: str, writes: list[str]) -> None:  # type: ignore[type-arg]
    """Append ``leg`` to ``writes`` each time the proxy writes bytes to ``stream``."""
    send_stream = stream.send_stream
    pump = send_stream.send_all_hook  # memory_stream_pair moves the bytes to the peer in this hook

    async def hook() -> None:
        writes.append(leg)
        if pump is not None:
            await pump()

    send_stream.send_all_hook = hook


@asynccontextmanager
async def observed_session(core: object) -> AsyncIterator[tuple[WebSocketConnection, WebSocketConnection, list[str]]]:
    """A Session between an in-memory browser and upstream; yields (browser, upstream, writes)."""
    writes: list[str] = []
    upstreams: trio.MemorySendChannel[WebSocketConnection]
    upstreams, accepted = trio.open_memory_channel[WebSocketConnection](1)
    async with trio.open_nursery() as nursery:
        browser_stream, proxy_client_stream = trio.testing.memory_stream_pair()
        recorded(proxy_client_stream, "client", writes)
        legs: list[WebSocket] = []

        async def accept() -> None:
            legs.append(await accept_proxy_side(proxy_client_stream))

        async with trio.open_nursery() as handshake:
            handshake.start_soon(accept)
            browser = await wrap_client_stream(nursery, browser_stream, "proxy.test", "/")  # type: ignore[arg-type]

        async def serve_upstream(stream: trio.abc.Stream) -> None:
            request = await wrap_server_stream(nursery, stream)
            await upstreams.send(await request.accept())

        async def connector(target: UpstreamTarget, limits: Limits) -> WebSocket:
            proxy_upstream_stream, upstream_stream = trio.testing.memory_stream_pair()
            recorded(proxy_upstream_stream, "upstream", writes)
            nursery.start_soon(serve_upstream, upstream_stream)
            return await connect(
                proxy_upstream_stream, "upstream.test", target.url, max_message_size=limits.upstream_max_message_bytes
            )

        session = Session(legs[0], core, UpstreamTarget("/v1/realtime"), Limits(ping_interval_s=0), connector=connector)  # type: ignore[arg-type]
        nursery.start_soon(session.run)
        up = await accepted.receive()
        yield browser, up, writes
        await browser.aclose()
        nursery.cancel_scope.cancel()


class BothLegsCore(RelayCore):
    """Relays, and answers the upstream frame ``both`` with one frame for each leg, upstream's queued first."""

    def upstream_message(self, message: Frame, now: float) -> None:
        if message == "both":
            self.to_upstream.append("for the upstream")
            self.to_client.append("for the client")
        else:
            super().upstream_message(message, now)


async def test_the_client_frame_is_written_before_the_upstream_frame_of_the_same_event() -> None:
    async with observed_session(BothLegsCore()) as (browser, up, writes):
        await up.send_message("both")
        assert await browser.get_message() == "for the client"
        assert await up.get_message() == "for the upstream"
        assert writes[-2:] == ["client", "upstream"]


async def receive_json(ws: WebSocketConnection) -> dict[str, object]:
    message = await ws.get_message()
    assert isinstance(message, str)
    event = json.loads(message)
    assert isinstance(event, dict)
    return event


async def test_a_tool_results_text_reaches_the_client_before_the_deferred_response_create_goes_upstream() -> None:
    """The reference's order after a tool result: ``ConversationText`` out first, then ``response.create``."""
    async with observed_session(Translator(TranslatorOptions())) as (browser, up, writes):
        await browser.send_message(json.dumps({"type": "Settings", "agent": {"think": {"prompt": "Hi"}}}))
        assert (await receive_json(up))["type"] == "session.update"
        await up.send_message(json.dumps({"type": "session.updated", "session": {"type": "realtime"}}))
        assert await receive_json(browser) == {"type": "SettingsApplied"}
        await up.send_message(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
        call = {"type": "response.function_call_arguments.done", "call_id": "c1", "name": "f", "arguments": "{}"}
        await up.send_message(json.dumps(call))
        await up.send_message(json.dumps({"type": "response.done", "response": {"id": "r1"}}))
        while (await receive_json(browser))["type"] != "AgentAudioDone":
            pass
        await browser.send_message(json.dumps({"type": "FunctionCallResponse", "id": "c1", "content": "42"}))
        assert (await receive_json(up))["type"] == "conversation.item.create"
        assert (await receive_json(browser))["type"] == "AgentThinking"
        before = len(writes)
        await up.send_message(json.dumps({"type": "response.output_text.done", "text": "It is 42."}))
        text = await receive_json(browser)
        assert (text["type"], text["role"], text["content"]) == ("ConversationText", "assistant", "It is 42.")
        assert (await receive_json(up))["type"] == "response.create"
        assert writes[before:] == ["client", "upstream"]
