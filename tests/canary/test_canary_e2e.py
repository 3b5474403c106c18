"""End to end on loopback: ``python -m proxy`` with the simulators and a client token, spoken to over a real socket.

The conversation the canary checks is asserted here message by message, in the order docs/protocol.md (``/openai``,
"Text turn") and docs/deepgram.md document; then ``python -m proxy canary`` itself is run against the proxy, a dead
port and the proxy without its token.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trio
from trio_websocket import open_websocket_url

from proxy.canary import Outcome
from proxy.chat import settings_message
from tests.proxyproc import running_proxy

pytestmark = pytest.mark.e2e

TOKEN = "canary-test-token-0123456789"


@pytest.fixture(scope="module")
def proxy_port() -> Iterator[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEEPGRAM_", "PROXY_"))}
    env["PROXY_CLIENT_TOKENS"] = TOKEN
    with running_proxy(env=env) as (process, port):
        yield port
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=15)
        assert process.returncode == 0
        assert "Traceback" not in err
        assert TOKEN not in err


def canary(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    if token is not None:
        env["PROXY_CANARY_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "proxy", "canary", "--timeout", "30", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def conversation(url: str) -> list[str]:
    """Settings, then one InjectUserMessage once applied; the message types received until the reply is complete
    (a run of binary frames is one ``audio`` entry; ConversationText carries its role)."""
    seen: list[str] = []
    with trio.fail_after(30):
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps(settings_message(url)))
            while not ("AgentAudioDone" in seen and "ConversationText(assistant)" in seen):
                message = await ws.get_message()
                if isinstance(message, bytes):
                    if seen[-1:] != ["audio"]:
                        seen.append("audio")
                    continue
                event = json.loads(message)
                kind = event["type"]
                seen.append(f"{kind}({event['role']})" if kind == "ConversationText" else kind)
                if kind == "SettingsApplied":
                    await ws.send_message(json.dumps({"type": "InjectUserMessage", "content": "hello"}))
    return seen


DOCUMENTED_ORDER = {
    # Readiness, the user's echo at once, then the response: AgentStartedSpeaking before its first audio,
    # AgentDone with AgentAudioDone when its audio is done, the assistant text from the transcript at its end.
    "/openai": [
        "SettingsApplied",
        "ConversationText(user)",
        "AgentStartedSpeaking",
        "audio",
        "AgentDone",
        "AgentAudioDone",
        "ConversationText(assistant)",
    ],
    # Deepgram's agent: Welcome first, frames relayed unchanged and in order.
    "/deepgram-proxy": [
        "Welcome",
        "SettingsApplied",
        "ConversationText(user)",
        "AgentThinking",
        "ConversationText(assistant)",
        "AgentStartedSpeaking",
        "audio",
        "AgentAudioDone",
    ],
}


@pytest.mark.parametrize("path", ["/openai", "/deepgram-proxy"])
async def test_an_injected_message_gets_the_documented_reply_in_order(proxy_port: int, path: str) -> None:
    url = f"ws://127.0.0.1:{proxy_port}{path}?token={TOKEN}"
    assert await conversation(url) == DOCUMENTED_ORDER[path]


@pytest.mark.parametrize("path", ["/openai", "/deepgram-proxy"])
def test_the_canary_passes_against_a_running_proxy(proxy_port: int, path: str) -> None:
    result = canary("--url", f"ws://127.0.0.1:{proxy_port}{path}", token=TOKEN)
    assert result.returncode == Outcome.PASSED, result.stderr
    steps = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("ok")]
    assert sorted(steps) == sorted(["connect", "SettingsApplied", "ConversationText", "agent", "AgentAudioDone"])
    assert result.stdout.splitlines()[-1].startswith("passed in")
    assert TOKEN not in result.stdout + result.stderr


def test_the_canary_fails_clearly_against_a_dead_port() -> None:
    with socket.socket() as bound:  # bound but not listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        result = canary("--url", f"ws://127.0.0.1:{port}/openai")
    assert result.returncode == Outcome.UNREACHABLE
    assert result.stderr.startswith("FAIL  connect: cannot connect to ws://127.0.0.1:")
    assert "refused" in result.stderr.lower()


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
def test_the_canary_fails_clearly_without_the_token_the_proxy_requires(proxy_port: int, token: str | None) -> None:
    result = canary("--url", f"ws://127.0.0.1:{proxy_port}/openai", token=token)
    assert result.returncode == Outcome.UNAUTHORIZED
    assert result.stderr.strip() == (
        "FAIL  connect: the proxy refused the upgrade with HTTP 401 (a token is required or was not accepted)"
    )
    assert "wrong-token" not in result.stdout + result.stderr


def test_a_wrong_path_is_reported_as_a_rejected_upgrade(proxy_port: int) -> None:
    result = canary("--url", f"ws://127.0.0.1:{proxy_port}/nope", token=TOKEN)
    assert result.returncode == Outcome.REJECTED
    assert "HTTP 404" in result.stderr
