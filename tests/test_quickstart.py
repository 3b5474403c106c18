"""The README's quick start, as a new user runs it: no keys, `python -m proxy`, then `python -m proxy chat`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.proxyproc import running_proxy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def proxy_port() -> Iterator[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEEPGRAM_", "PROXY_"))}
    with running_proxy(env=env) as (process, port):
        yield port
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=15)
        assert process.returncode == 0
        assert "simulator" in err.lower(), "the proxy must say loudly that it serves simulated upstreams"


def chat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "chat", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("path", ["/openai", "/deepgram-proxy"])
def test_chat_through_the_proxy_prints_a_spoken_reply(proxy_port: int, path: str, tmp_path: Path) -> None:
    wav = tmp_path / "reply.wav"
    result = chat("--url", f"ws://127.0.0.1:{proxy_port}{path}", "--text", "hello", "--save-audio", str(wav))
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout.lower()
    with wave.open(str(wav)) as reply:
        assert (reply.getnchannels(), reply.getsampwidth(), reply.getframerate()) == (1, 2, 24_000)
        samples = np.frombuffer(reply.readframes(reply.getnframes()), dtype="<i2")
    assert len(samples) > 24_000 // 4, "at least a quarter second of speech"
    assert np.abs(samples.astype(np.int32)).max() > 1000, "the reply must not be silence"


def test_chat_reports_a_refused_connection_clearly() -> None:
    result = chat("--url", "ws://127.0.0.1:9/openai", "--text", "hello", "--timeout", "5")
    assert result.returncode != 0
    assert result.stderr.strip()
