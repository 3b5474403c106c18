"""TLS end to end: ``python -m proxy --tls-cert --tls-key`` as a subprocess with the embedded simulators, on
loopback, with a throwaway CA: a wss:// conversation, https:// /health, a plain ws:// client refused without a
traceback, SIGHUP swapping the certificate under an open session, and files that cannot serve as exit 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from proxy.chat import settings_message
from tests.proxyproc import running_proxy
from tests.server.test_tls import Certs, make_certs

pytestmark = pytest.mark.e2e


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


def simulator_env(**extra: str) -> dict[str, str]:
    """No keys and no upstream URLs: every route is served by the embedded simulators."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEEPGRAM_", "PROXY_"))}
    env.update(LOG_LEVEL="INFO", **extra)
    return env


@contextmanager
def tls_proxy(certs: Certs, *args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = simulator_env(PROXY_TLS_CERT=str(certs.cert_file), PROXY_TLS_KEY=str(certs.key_file))
    with running_proxy(*args, env=env, scheme="wss") as running:
        yield running


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, then everything the process wrote to stderr."""
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return err


def https_health(port: int, context: ssl.SSLContext) -> dict[str, str]:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", timeout=10, context=context) as response:
        assert response.status == 200
        return dict(json.loads(response.read()))


async def converse(port: int, context: ssl.SSLContext, text: str) -> list[str]:
    """Settings -> SettingsApplied -> InjectUserMessage -> the assistant's ConversationText; the types seen."""
    url = f"wss://127.0.0.1:{port}/openai"
    seen: list[str] = []
    async with open_websocket_url(url, ssl_context=context) as ws:
        await ws.send_message(json.dumps(settings_message(url)))
        with trio.fail_after(20):
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    seen.append("<audio>")
                    continue
                event = json.loads(message)
                seen.append(event["type"])
                if event["type"] == "SettingsApplied":
                    await ws.send_message(json.dumps({"type": "InjectUserMessage", "content": text}))
                if event["type"] == "ConversationText" and event["role"] == "assistant":
                    assert text in event["content"]
                    return seen


def test_a_wss_conversation_and_https_health_with_the_simulators(certs: Certs) -> None:
    with tls_proxy(certs) as (process, port):
        assert https_health(port, certs.client_context()) == {"status": "ok"}
        seen = trio.run(converse, port, certs.client_context(), "hello over tls")
        err = stop(process)
    assert seen.index("SettingsApplied") < seen.index("ConversationText")
    assert "Traceback" not in err


def plain_upgrade(port: int) -> bytes:
    """A ws:// upgrade request sent in the clear; everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET /openai HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def test_a_plain_ws_client_on_the_tls_port_fails_cleanly(certs: Certs) -> None:
    with tls_proxy(certs) as (process, port):
        assert not plain_upgrade(port).startswith(b"HTTP/")  # closed, nothing served in the clear
        with pytest.raises(OSError):  # plain http:// gets no HTTP answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
        assert https_health(port, certs.client_context()) == {"status": "ok"}
        err = stop(process)
    assert "Traceback" not in err
    assert " ERROR " not in err
    assert " WARNING proxy.server" not in err


def test_sighup_serves_the_new_certificate_while_an_open_session_goes_on(certs: Certs) -> None:
    async def scenario(process: subprocess.Popen[str], port: int) -> None:
        old = certs.client_context()
        url = f"wss://127.0.0.1:{port}/openai"
        async with open_websocket_url(url, ssl_context=old) as ws:
            await ws.send_message(json.dumps(settings_message(url)))
            with trio.fail_after(20):
                while json.loads(await ws.get_message())["type"] != "SettingsApplied":
                    pass
            certs.ca = certs.issue()
            new = certs.client_context()
            process.send_signal(signal.SIGHUP)
            with trio.fail_after(20):
                while True:  # the signal lands when it lands
                    try:
                        await trio.to_thread.run_sync(https_health, port, new)
                        break
                    except OSError:
                        await trio.sleep(0.05)
            with pytest.raises(OSError):
                await trio.to_thread.run_sync(https_health, port, old)
            # The session that was open across the reload still converses.
            await ws.send_message(json.dumps({"type": "InjectUserMessage", "content": "still here"}))
            with trio.fail_after(20):
                while True:
                    message = await ws.get_message()
                    if isinstance(message, str) and json.loads(message).get("role") == "assistant":
                        assert "still here" in json.loads(message)["content"]
                        break

    with tls_proxy(certs) as (process, port):
        trio.run(scenario, process, port)
        err = stop(process)
    assert "TLS certificate reloaded" in err
    assert "Traceback" not in err


def run_proxy(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "--port", "0", *args],
        env=simulator_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_bad_key_exits_2_with_one_line_and_no_key_material(certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_certs(tmp_path / "other")
    result = run_proxy("--tls-cert", str(certs.cert_file), "--tls-key", str(other.key_file))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("configuration error: the TLS key file")
    assert "does not match the certificate" in lines[0]
    key_body = [line for line in other.key_file.read_text().splitlines() if not line.startswith("-----")]
    assert not any(line in result.stderr for line in key_body)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"), {}, "cannot read the TLS"),
        (("--tls-cert", "CERT"), {}, "both a certificate and a key"),
        ((), {"OPENAI_PROXY_TLS_KEY_PATH": "KEY"}, "both a certificate and a key"),
    ],
)
def test_tls_settings_that_cannot_serve_exit_2(
    certs: Certs, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    files = {"CERT": str(certs.cert_file), "KEY": str(certs.key_file)}
    result = run_proxy(*(files.get(a, a) for a in args), **{k: files.get(v, v) for k, v in env.items()})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
