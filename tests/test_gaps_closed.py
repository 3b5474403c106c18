"""Rules the requirement table listed as untested: configuration parsing, defaults, and small mapping corners."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from proxy.cli import _parser, build_config
from proxy.config import Limits, UpstreamSource, from_env
from proxy.openai.session_update import audio_output, function_call_output_text
from proxy.protocol.component import FunctionCallResponse
from proxy.server import ProxyServer


def test_command_line_flags_reach_the_configuration() -> None:
    args = _parser().parse_args(
        [
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example",
            "--max-sessions",
            "7",
            "--deepgram-auth",
            "subprotocol",
            "--deepgram-synthetic-audio-done",
            "--client-json-passthrough",
            "--deferred-response-create-timeout-ms",
            "1500",
        ]
    )
    config = build_config(args)
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.limits.max_sessions == 7
    assert config.deepgram_auth == "subprotocol"
    assert config.deepgram_synthetic_audio_done is True
    assert config.client_json_passthrough is True
    assert config.deferred_response_create_timeout_s == 1.5


def test_list_variables_are_parsed_from_the_environment() -> None:
    config = from_env(
        {
            "PROXY_ALLOWED_ORIGINS": " https://a.example , https://b.example ,",
            "PROXY_CLIENT_TOKENS": "t1,t2",
            "DEEPGRAM_SYNTHETIC_AUDIO_DONE": "true",
        }
    )
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.client_tokens == ("t1", "t2")
    assert config.deepgram_synthetic_audio_done is True


def test_sessions_end_before_openais_60_minute_limit_by_default() -> None:
    assert Limits().max_session_s == 59 * 60


def test_error_wins_over_result_in_a_tool_result() -> None:
    message = FunctionCallResponse(id="c1", result={"ok": True}, error="boom")
    assert function_call_output_text(message) == '{"error":"boom"}'


def test_audio_output_keeps_format_speed_voice_order_and_inclusive_speed_bounds() -> None:
    out = audio_output({"voice": "marin", "speed": 1.5, "format": {"type": "audio/pcm", "rate": 24000}})
    assert out is not None
    assert list(out) == ["format", "speed", "voice"]
    low = audio_output({"speed": 0.25})
    assert low == {"speed": 0.25}
    assert audio_output({"speed": 1.51}) is None


async def test_openai_route_with_a_blank_key_answers_a_configuration_error_and_stays_up() -> None:
    config = from_env({"OPENAI_API_KEY": "   ", "DEEPGRAM_AGENT_URL": "ws://127.0.0.1:9/x"}, port=0)
    assert config.openai.source is UpstreamSource.MISCONFIGURED
    server = ProxyServer(config)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        for _ in range(2):  # the process serves the next connection the same way
            async with open_websocket_url(f"ws://127.0.0.1:{port}/openai") as ws:
                error = json.loads(await ws.get_message())
                assert error["code"] == "proxy_configuration_error"
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1011
        nursery.cancel_scope.cancel()
