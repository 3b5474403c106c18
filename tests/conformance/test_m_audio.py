"""Reference integration catalogue (§12.2): microphone audio (gating, manual commit scheduling, server VAD) and
TTS audio to the client.

The reference runs these with real timers (400 ms debounce, 600 ms max-coalesce). Here the assertions are on
order and counts; waits are generous upper bounds, and the exact timer values are tested elsewhere with a mock
clock.
"""

from __future__ import annotations

import base64

import pytest
import trio

from .client import MANUAL_SETTINGS, VAD_SETTINGS, connect
from .common import no_client_errors, no_protocol_errors, ready, settle
from .conftest import ProxyProcess
from .upstream import Conn, FakeUpstream, Scenario

pytestmark = pytest.mark.e2e  # real proxy processes on loopback


FIRST_COMMIT_MIN_BYTES = 48_000  # 1 s at 24 kHz: the proxy's threshold for the first commit of a connection


def bytes_before(conn: Conn, index: int) -> int:
    """24 kHz bytes appended before the ``index``-th commit (since the previous one)."""
    total = 0
    seen = 0
    for r in conn.received:
        if r.type == "input_audio_buffer.commit":
            if seen == index:
                return total
            seen += 1
            total = 0
        elif r.type == "input_audio_buffer.append":
            total += len(base64.b64decode(r.payload["audio"]))
    raise AssertionError(f"no commit #{index}: {conn.summary()}")


async def test_m22_no_commit_when_appended_audio_under_100ms(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.send_audio(500)
        await conn.wait_type("input_audio_buffer.append")
        await trio.sleep(0.8)  # past the 400 ms debounce and the 600 ms max-coalesce
        assert conn.count("input_audio_buffer.commit") == 0
        assert conn.appended_bytes() == [748]  # 250 samples at 16 kHz -> 374 at 24 kHz


async def test_m23_reschedules_audio_commit_after_response_ends_when_debounce_fired_during_response(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    # The reference holds text.done for 600 ms and sends the next audio at 500 ms; here the next audio follows
    # the first commit, and text.done comes 900 ms after the audio, so the debounce surely fires mid-response.
    upstream.scenario = Scenario(response_mode="audio_first", audio_first_delay=0.9)
    async with ready(proxy, upstream) as (client, conn):
        await client.send_audio(40_000)
        await conn.wait_type("input_audio_buffer.commit")
        await client.send_audio(9_600)
        await client.send_audio(9_600)
        await conn.wait_type("input_audio_buffer.commit", count=2, timeout=5)
        # The second commit waited for the first response to end.
        assert conn.of_type("input_audio_buffer.commit")[1].at >= conn.sent_of_type("response.output_text.done")[0].at
        no_protocol_errors(conn)


async def test_m24_commits_pending_audio_below_api_minimum_after_response_ends_orphan_tail(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(response_mode="audio_first", audio_first_delay=0.9)
    async with ready(proxy, upstream) as (client, conn):
        await client.send_audio(40_000)
        await conn.wait_type("input_audio_buffer.commit")  # the reference sends the tail at 550 ms
        await client.send_audio(1_800)  # 2 700 bytes at 24 kHz: below the API's 100 ms minimum
        await conn.wait_type("input_audio_buffer.commit", count=2, timeout=5)
        # Padded with silence up to 100 ms, so the commit is valid (the mock flags a short commit).
        assert bytes_before(conn, 1) >= 4800
        no_protocol_errors(conn)


async def test_m25_first_commit_only_after_first_commit_byte_threshold(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.send_audio(20_000)
        await trio.sleep(0.55)
        assert conn.count("input_audio_buffer.commit") == 0
        await client.send_audio(20_000)
        await conn.wait_type("input_audio_buffer.commit", timeout=3)
        await conn.wait_type("response.create")
        await settle(0.5)
        assert conn.count("input_audio_buffer.commit") == 1
        assert bytes_before(conn, 0) >= FIRST_COMMIT_MIN_BYTES
        types = conn.types()
        assert types.index("input_audio_buffer.commit") + 1 == types.index("response.create")
        no_protocol_errors(conn)


async def test_m26_continuous_250ms_chunks_yield_commit_within_bounded_wait(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Chunks every 250 ms keep resetting the 400 ms debounce; the max-coalesce timer still commits while the
    audio keeps flowing."""
    async with ready(proxy, upstream) as (client, conn):
        committed_while_streaming = False
        for _ in range(18):  # 4.5 s of audio at most
            await client.send_audio(8_000)
            await trio.sleep(0.25)
            if conn.count("input_audio_buffer.commit"):
                committed_while_streaming = True
                break
        assert committed_while_streaming, conn.summary()
        assert bytes_before(conn, 0) >= FIRST_COMMIT_MIN_BYTES
        no_protocol_errors(conn)


async def test_m27_client_close_with_pending_mic_audio_must_not_drop_commit(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        for _ in range(6):
            await client.send_audio(4_000)
            await trio.sleep(0.25)
        await trio.sleep(0.6)  # the debounce fires, but 36 000 bytes are below the first-commit threshold
        assert conn.count("input_audio_buffer.commit") == 0
        closed_at = trio.current_time()
    await conn.wait_closed(timeout=5)
    assert conn.count("input_audio_buffer.commit") >= 1, conn.summary()
    commit = conn.of_type("input_audio_buffer.commit")[0]
    assert commit.at >= closed_at
    assert bytes_before(conn, 0) >= FIRST_COMMIT_MIN_BYTES  # padded with silence up to the threshold
    types = conn.types()
    assert types[types.index("input_audio_buffer.commit") + 1] == "response.create"


async def test_m28_default_server_vad_appends_without_commit(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    async with ready(proxy, upstream, VAD_SETTINGS) as (client, conn):
        turn_detection = conn.of_type("session.update")[0].payload["session"]["audio"]["input"]["turn_detection"]
        assert turn_detection["type"] == "server_vad"
        assert turn_detection["create_response"] is True
        assert turn_detection["interrupt_response"] is True
        assert turn_detection["idle_timeout_ms"] == 10000
        # The reference streams for 3.5 s; 2 s is well past both commit timers.
        for _ in range(8):
            await client.send_audio(8_000)
            await trio.sleep(0.25)
        await trio.sleep(0.7)
        assert conn.count("input_audio_buffer.append") == 8
        assert conn.count("input_audio_buffer.commit") == 0
        assert conn.count("response.create") == 0


async def test_m29_no_append_before_session_updated_audio_gated_queued_then_flushed(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(enforce_session_before_context=True)  # session.updated comes 50 ms late
    async with connect(proxy.url()) as client:
        await client.send(MANUAL_SETTINGS)
        await client.send_audio(960)
        conn = await upstream.connection(0)
        await conn.wait_type("input_audio_buffer.append")
        types = conn.types()
        assert types.index("session.update") < types.index("input_audio_buffer.append")
        assert conn.of_type("input_audio_buffer.append")[0].at >= conn.sent_of_type("session.updated")[0].at
        no_protocol_errors(conn)


async def test_m30_session_update_before_input_audio_buffer_append_in_upstream_order(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.send_audio(960)
        await conn.wait_type("input_audio_buffer.append")
        types = conn.types()
        assert types.index("session.update") < types.index("input_audio_buffer.append")
        no_protocol_errors(conn)


async def test_m31_firm_audio_connection_no_error_after_short_audio(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.send_audio(4_800)
        # The reference watches for 12 s. Nothing is scheduled in this state beyond the 400/600 ms commit
        # timers, so 2.5 s covers every timer the proxy could fire.
        await trio.sleep(2.5)
        no_client_errors(client)
        assert client.closed is None
        assert conn.count("input_audio_buffer.commit") == 0
        no_protocol_errors(conn)


async def test_m34_binary_to_append_and_after_debounce_commit_and_response_create(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.send_audio(40_000)
        await client.wait_assistant_text("Hello from mock")
        types = conn.types()
        assert types.index("input_audio_buffer.append") < types.index("input_audio_buffer.commit")
        assert types.index("input_audio_buffer.commit") < types.index("response.create")
        assert conn.count("input_audio_buffer.commit") == 1
        assert conn.appended_bytes() == [59_998]
        no_protocol_errors(conn)


async def test_m35_at_most_one_response_create_per_turn_until_response_completes(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(response_delay=0.6)
    async with ready(proxy, upstream) as (client, conn):
        await client.send_audio(40_000)
        await trio.sleep(0.25)
        await client.send_audio(4_800)
        await client.wait_assistant_text("Hello from mock")
        # Checked when the response completes: nothing more may have been committed or created before that.
        assert conn.count("response.create") == 1
        assert conn.count("input_audio_buffer.commit") == 1
        no_protocol_errors(conn)


async def test_m36_only_output_audio_delta_is_sent_as_binary(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    upstream.scenario = Scenario(response_mode="audio_first")
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject("Hello")
        text = await client.wait_assistant_text("Hello from mock")
        before = client.frames[: text.index + 1]
        binary = [f for f in before if f.binary]
        assert len(binary) == 1
        assert binary[0].json is None
        assert len([f for f in before if f.json is not None]) >= 2
        assert all(f.json is not None for f in before if not f.binary), client.transcript()
        assert client.unexpected_types() == []


async def test_m37_sends_binary_pcm_to_client_when_upstream_sends_output_audio_delta(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(response_audio=True)
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject("Hello")
        text = await client.wait_assistant_text("Hello from mock")
        binary = [f for f in client.frames[: text.index] if f.binary]
        assert [f.data for f in binary] == [bytes(320)]


async def test_m65_output_audio_done_sends_no_raw_message_to_client(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(response_audio=True)
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject("Hello")
        text = await client.wait_assistant_text("Hello from mock")
        assert len([f for f in client.frames[: text.index] if f.binary]) == 1
        await settle()
        assert not client.json_frames("response.output_audio.done")
        assert client.unexpected_types() == []


async def test_m66_single_agent_done_and_agent_audio_done_when_pcm_precedes_output_text_done(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Deviation 5 also requires no duplicate for the response once it has fully ended."""
    upstream.scenario = Scenario(response_mode="audio_first")
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        assert len(client.json_frames("AgentDone")) == 1, client.transcript()
        assert len(client.json_frames("AgentAudioDone")) == 1, client.transcript()
        binary = client.index_of(lambda f: f.binary)
        assert client.index_of(lambda f: f.type == "AgentAudioDone") > binary
        await settle()
        assert len(client.json_frames("AgentDone")) == 1, client.transcript()
        assert len(client.json_frames("AgentAudioDone")) == 1, client.transcript()
