"""The OpenAI Realtime GA simulator: every event it sends validates against the official schema."""

from __future__ import annotations

import base64
import json

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from proxy.sim.server import SimOptions

from .helpers import OpenAIClient, connect, memory_connection, rms, silence, simulator, tone

PATH = "/v1/realtime?model=gpt-realtime"
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def user_text(text: str, item_id: str | None = None) -> dict[str, object]:
    item: dict[str, object] = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    if item_id:
        item["id"] = item_id
    return {"type": "conversation.item.create", "item": item}


def types(events: list[dict[str, object]]) -> list[object]:
    return [e["type"] for e in events]


async def open_session(ws, **session: object) -> OpenAIClient:  # type: ignore[no-untyped-def]
    client = OpenAIClient(ws)
    created = await client.next()
    assert created["type"] == "session.created"
    if session:
        await client.send({"type": "session.update", "session": {"type": "realtime", **session}})
        updated = await client.next()
        assert updated["type"] == "session.updated"
    return client


async def test_session_update_echoes_the_effective_session() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = OpenAIClient(ws)
        created = (await client.next())["session"]
        assert created["output_modalities"] == ["audio"]
        assert created["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "Be brief.",
                    "audio": {"input": {"turn_detection": None}, "output": {"voice": "cedar"}},
                },
            }
        )
        session = (await client.next())["session"]
        assert session["instructions"] == "Be brief."
        assert session["audio"]["input"]["turn_detection"] is None
        assert session["audio"]["output"]["voice"] == "cedar"
        assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}  # merged, not replaced
        assert session["id"] == created["id"]


async def test_text_turn_full_event_sequence() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await open_session(ws, output_modalities=["text"])
        await client.send(user_text("What is the time", "item_user_1"))
        added, done = await client.next(), await client.next()
        assert (added["type"], done["type"]) == ("conversation.item.added", "conversation.item.done")
        assert added["item"]["id"] == done["item"]["id"] == "item_user_1"
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert types(events) == [
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            *["response.output_text.delta"] * (len(events) - 9),
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "You said: What is the time."
        assert events[-5]["text"] == text
        response = events[-1]["response"]
        assert response["status"] == "completed"
        assert response["usage"]["total_tokens"] > 0
        assert response["output"][0]["content"] == [{"type": "output_text", "text": text}]
        assert len({e["event_id"] for e in client.seen}) == len(client.seen)


async def test_audio_turn_streams_non_silent_speech_with_a_transcript() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await open_session(ws)
        await client.send(user_text("hello there"))
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
        transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
        assert transcript == "You said: hello there."
        assert len(audio) > 24000  # more than half a second at 24 kHz PCM16
        assert rms(audio) > 1000
        order = types(events)
        assert order.index("response.output_audio.done") > max(
            i for i, t in enumerate(order) if t == "response.output_audio.delta"
        )
        assert order[-4:] == [
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        done = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
        assert done["transcript"] == transcript
        # Longer replies speak longer.
        await client.send(user_text("hello there this is a much longer sentence to say"))
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        longer = await client.until("response.done")
        audio2 = b"".join(base64.b64decode(e["delta"]) for e in longer if e["type"] == "response.output_audio.delta")
        assert len(audio2) > len(audio)


async def test_function_call_turn_and_tool_result() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await open_session(ws, tools=TOOLS, output_modalities=["text"])
        await client.send(user_text("Please call get_weather for Paris"))
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert "response.function_call_arguments.delta" in types(events)
        done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert done["name"] == "get_weather"
        assert json.loads(done["arguments"]) == {"city": "Please call get_weather for Paris"}
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
        assert deltas == done["arguments"]
        assert events[-1]["response"]["output"][0]["type"] == "function_call"
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": done["call_id"], "output": '{"temp":"21C"}'},
            }
        )
        added, item_done = await client.next(), await client.next()
        assert added["item"]["type"] == item_done["item"]["type"] == "function_call_output"
        await client.send({"type": "response.create"})
        follow_up = await client.until("response.done")
        text = next(e for e in follow_up if e["type"] == "response.output_text.done")["text"]
        assert '{"temp":"21C"}' in text


async def test_server_vad_turn_commits_transcribes_and_answers() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await open_session(
            ws, audio={"input": {"transcription": {"model": "gpt-4o-transcribe"}}}, output_modalities=["text"]
        )
        pcm = silence(500, 24000) + tone(1200, 24000) + silence(600, 24000)
        for i in range(0, len(pcm), 4800):
            await client.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + 4800]).decode()}
            )
        events = await client.until("response.done")
        order = types(events)
        assert order[:6] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.delta",
        ]
        started, stopped, committed = events[0], events[1], events[2]
        assert started["audio_start_ms"] == 500 - 300  # speech start minus prefix_padding_ms
        assert stopped["audio_end_ms"] == 500 + 1200 + 200  # speech end plus silence_duration_ms
        assert started["item_id"] == stopped["item_id"] == committed["item_id"] == events[3]["item"]["id"]
        assert events[3]["item"]["content"][0]["type"] == "input_audio"
        completed = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
        assert completed["transcript"] == "Hello this is."  # one word per 400 ms of speech
        reply = next(e for e in events if e["type"] == "response.output_text.done")["text"]
        assert reply == "I heard about 1 second of speech."  # 1.2 s of tone


async def test_new_speech_interrupts_the_active_response() -> None:
    # Real-time pacing keeps the response active while we speak.
    options = SimOptions(speed=1.0, head_start_s=0, faults="")
    async with simulator(options) as port, connect(port, PATH) as ws:
        client = await open_session(ws)
        await client.send(user_text("tell me a long story about many things please"))
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        pcm = tone(300, 24000)
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
        events = await client.until("response.done")
        assert "input_audio_buffer.speech_started" in types(events)
        assert events[-1]["response"]["status"] == "cancelled"
        assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"


async def test_manual_commit_and_clear() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await open_session(ws, audio={"input": {"turn_detection": None}})
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(tone(50, 24000)).decode()})
        await client.send({"type": "input_audio_buffer.commit", "event_id": "evt_c1"})
        error = await client.next()
        assert error["type"] == "error"
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == "evt_c1"
        assert "50.00ms" in error["error"]["message"]
        await client.send({"type": "input_audio_buffer.clear"})
        assert (await client.next())["type"] == "input_audio_buffer.cleared"
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(tone(300, 24000)).decode()})
        await client.send({"type": "input_audio_buffer.commit"})
        assert types(await client.until("conversation.item.done")) == [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]


@pytest.mark.parametrize(
    ("event", "code", "message_part"),
    [
        ({"type": "no.such.event"}, "invalid_value", "Invalid value: 'no.such.event'"),
        ({"event_id": "x"}, "missing_required_parameter", "'type'"),
        ({"type": "session.update", "session": {"instructions": "x"}}, "missing_required_parameter", "'session.type'"),
        (
            {"type": "session.update", "session": {"type": "realtime", "modalities": ["text"]}},
            "unknown_parameter",
            "session.modalities",
        ),
        (
            {"type": "session.update", "session": {"type": "realtime", "instructions": 3}},
            "invalid_type",
            "session.instructions",
        ),
        (
            {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio", "text"]}},
            "invalid_value",
            "Supported combinations",
        ),
        ({"type": "response.cancel"}, "response_cancel_not_active", "no active response"),
        ({"type": "conversation.item.create"}, "missing_required_parameter", "'item'"),
    ],
)
async def test_invalid_client_events_get_the_real_error(event: dict[str, object], code: str, message_part: str) -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await open_session(ws)
        await client.send(event)
        error = await client.next()
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == code
        assert message_part in error["error"]["message"]
        assert "param" in error["error"]
        await client.send({"type": "input_audio_buffer.clear"})  # the session survives
        assert (await client.next())["type"] == "input_audio_buffer.cleared"


async def test_non_json_is_an_error() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await open_session(ws)
        await ws.send_message("not json")
        assert (await client.next())["error"]["code"] == "invalid_json"


async def test_response_create_during_a_response_is_refused() -> None:
    async with simulator(SimOptions(speed=1.0, head_start_s=0, faults="")) as port, connect(port, PATH) as ws:
        client = await open_session(ws)
        await client.send(user_text("hello"))
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        created = (await client.until("response.created"))[-1]
        await client.send({"type": "response.create"})
        events = await client.until("error")
        error = events[-1]["error"]
        assert error["code"] == "conversation_already_has_active_response"
        assert created["response"]["id"] in error["message"]
        await client.send({"type": "response.cancel"})
        done = (await client.until("response.done"))[-1]
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"


async def test_auth_is_required_when_configured() -> None:
    options = SimOptions(speed=0, openai_key="sk-sim-test", faults="")
    async with simulator(options) as port:
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(port, PATH):
                pass
        assert rejected.value.status_code == 401
        assert b"sk-sim-test" not in (rejected.value.body or b"")
        with pytest.raises(ConnectionRejected) as wrong:
            async with connect(port, PATH, extra_headers=[(b"authorization", b"Bearer sk-wrong")]):
                pass
        assert wrong.value.status_code == 401
        async with connect(port, PATH, extra_headers=[(b"authorization", b"Bearer sk-sim-test")]) as ws:
            assert (await OpenAIClient(ws).next())["type"] == "session.created"


async def test_session_expires_at_the_configured_maximum(autojump_clock: trio.testing.MockClock) -> None:
    options = SimOptions(speed=0, session_max_s=120, faults="")
    async with memory_connection(PATH, options) as ws:
        client = OpenAIClient(ws)
        start = trio.current_time()
        await client.next()
        error = await client.next(timeout=200)
        assert trio.current_time() - start == pytest.approx(120)
        assert error["error"]["code"] == "session_expired"
        assert error["error"]["message"] == "Your session hit the maximum duration of 2 minutes."
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        assert ws.closed is not None
        assert ws.closed.code == 1000


async def test_audio_is_paced_in_real_time(autojump_clock: trio.testing.MockClock) -> None:
    """At speed 1 each 100 ms delta leaves 100 ms after the previous one; at speed 2, 50 ms."""
    for speed, step in ((1.0, 0.1), (2.0, 0.05)):
        async with memory_connection(PATH, SimOptions(speed=speed, head_start_s=0, faults="")) as ws:
            client = await open_session(ws)
            await client.send(user_text("hello world"))
            await client.until("conversation.item.done")
            await client.send({"type": "response.create"})
            start = trio.current_time()
            times, audio = [], b""
            while True:
                event = await client.next()
                if event["type"] == "response.output_audio.delta":
                    times.append(trio.current_time() - start)
                    audio += base64.b64decode(event["delta"])
                if event["type"] == "response.done":
                    end = trio.current_time() - start
                    break
            assert times == pytest.approx([i * step for i in range(len(times))])
            assert end == pytest.approx(len(audio) / 48000 / speed)
