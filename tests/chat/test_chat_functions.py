"""``chat`` answers a client-side function call through the proxy's ``POST /function-call``: the whole tool round
trip through the real server and the embedded simulators, on both routes."""

from __future__ import annotations

import io
import json

import pytest
import trio

from proxy import chat_functions
from proxy.chat import ChatOptions, chat, settings_message
from tests.deepgram.test_sdk_aliases import proxy_before_simulators


@pytest.mark.parametrize("route", ["/openai", "/deepgram-proxy"])
async def test_chat_answers_a_function_call_through_the_endpoint(route: str) -> None:
    async with proxy_before_simulators() as port:
        out, err = io.StringIO(), io.StringIO()
        with trio.fail_after(30):
            status = await chat(
                ChatOptions(url=f"ws://127.0.0.1:{port}{route}", text="Please get current time.", text_only=True),
                out,
                err,
            )
    assert status == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert "(calling get_current_time)" in lines
    # The simulators' follow-up reply quotes the function's answer: the built-in's ISO time, not an error.
    assert lines[-1].startswith("The function returned: 20")
    assert "Error" not in out.getvalue()


def test_the_settings_declare_the_built_in() -> None:
    for url in ("ws://h:1/openai", "ws://h:1/deepgram-proxy"):
        assert settings_message(url)["agent"]["think"]["functions"] == chat_functions.DECLARED


async def test_an_endpoint_that_is_off_answers_the_agent_with_an_error() -> None:
    async with proxy_before_simulators(function_call=False) as port:
        out, err = io.StringIO(), io.StringIO()
        with trio.fail_after(30):
            status = await chat(
                ChatOptions(url=f"ws://127.0.0.1:{port}/openai", text="Please get current time.", text_only=True),
                out,
                err,
            )
    assert status == 0, err.getvalue()
    assert out.getvalue().splitlines()[-1] == "The function returned: Error: the function endpoint answered HTTP 404"


def test_the_response_message_is_the_components() -> None:
    assert json.loads(chat_functions.response_message({"id": "1", "name": "x"}, "Error: e")) == {
        "type": "FunctionCallResponse",
        "id": "1",
        "name": "x",
        "content": "Error: e",
    }
