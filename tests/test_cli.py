"""``python -m proxy`` as a real subprocess on loopback: start-up line, health, signals, errors, no secret leaks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from proxy.cli import main
from tests import proxyproc

FAKE_KEY = "sk-test-DO-NOT-LEAK-0123456789"


def proxy_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEEPGRAM_", "PROXY_"))}
    env.update(
        OPENAI_REALTIME_URL="ws://127.0.0.1:9/v1/realtime",
        DEEPGRAM_AGENT_URL="ws://127.0.0.1:9/v1/agent/converse",
        DEEPGRAM_LISTEN_URL="ws://127.0.0.1:9/v1/listen",
        OPENAI_API_KEY=FAKE_KEY,
        LOG_LEVEL="DEBUG",
    )
    env.update(extra)
    return env


@contextmanager
def running_proxy(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], int]]:
    with proxyproc.running_proxy(*args, env=env or proxy_env()) as running:
        yield running


def test_help_lists_the_interface(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--openai-url", "--deepgram-synthetic-audio-done", "simulate", "chat"):
        assert flag in out


def test_starts_prints_the_real_port_answers_health_and_stops_on_sigterm() -> None:
    with running_proxy() as (process, port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert response.status == 200
            assert response.read() == b'{"status":"ok"}'
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert FAKE_KEY not in out + err
    assert "sk-test" not in out + err


def test_invalid_configuration_exits_2_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy"],
        env=proxy_env(PROXY_PORT="not-a-port"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "PROXY_PORT" in result.stderr


def test_a_port_in_use_exits_1_with_a_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "proxy", "--port", str(port)],
            env=proxy_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_an_invalid_simulator_fault_script_is_a_configuration_error() -> None:
    env = {k: v for k, v in proxy_env().items() if not k.startswith(("OPENAI_", "DEEPGRAM_"))}
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--port", "0"],
        env={**env, "PROXY_SIM_FAULTS": "explode:now"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "simulator" in result.stderr
