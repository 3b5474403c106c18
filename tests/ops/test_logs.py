"""Structured logs: the formats, the session fields (context variable, inherited by a session's tasks), trace ids
from the upgrade request, redaction in both formats, and one session followed through a real JSON-log run."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.lowlevel
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import open_websocket_url

from proxy import logs, redact
from tests.proxyproc import running_proxy

ROOT = Path(__file__).parents[2]
KEY = "sk-live-LOGS-never-shown-0123456789abcdef"
TOKEN = "client-token-LOGS-never-shown-42"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# -- trace ids ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ([(b"traceparent", TRACEPARENT.encode())], [], TRACE),
        ([(b"Traceparent", TRACEPARENT.encode()), (b"X-Trace-Id", b"other")], [], TRACE),
        ([(b"x-trace-id", b"t-1"), (b"x-request-id", b"r-1")], ["q-1"], "t-1"),
        ([(b"x-request-id", b"r-1")], ["q-1"], "r-1"),
        ([], ["q-1"], "q-1"),
        ([], [], None),
        # Invalid traceparents (W3C): all-zero ids, version ff, upper case, wrong lengths; the next source wins.
        ([(b"traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01"), (b"x-request-id", b"r-1")], [], "r-1"),
        ([(b"traceparent", f"00-{TRACE}-0000000000000000-01".encode())], [], None),
        ([(b"traceparent", f"ff-{TRACE}-00f067aa0ba902b7-01".encode())], [], None),
        ([(b"traceparent", f"00-{TRACE.upper()}-00f067aa0ba902b7-01".encode())], [], None),
        ([(b"traceparent", f"00-{TRACE}-00f067aa0ba902b7-01-extra".encode())], [], None),
        ([(b"traceparent", f"01-{TRACE}-00f067aa0ba902b7-01-future".encode())], [], TRACE),
        # Header ids: safe characters only, at most 128 of them.
        ([(b"x-trace-id", b"has space")], [], None),
        ([(b"x-trace-id", b"new\nline")], [], None),
        ([(b"x-trace-id", b"x" * 129)], [], None),
        ([(b"x-trace-id", b"x" * 128)], [], "x" * 128),
        ([(b"x-request-id", b"")], ["bad value"], None),
    ],
)
def test_the_trace_id_comes_from_the_first_valid_source(
    headers: list[tuple[bytes, bytes]], query: list[str], expected: str | None
) -> None:
    assert logs.trace_id_from(headers, query) == expected


@given(st.lists(st.tuples(st.sampled_from([b"traceparent", b"x-trace-id", b"x-request-id", b"other"]), st.binary())))
def test_a_trace_id_taken_from_a_request_is_always_short_and_safe(headers: list[tuple[bytes, bytes]]) -> None:
    found = logs.trace_id_from(headers)
    assert found is None or re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", found)


def test_a_generated_trace_id_has_the_w3c_shape() -> None:
    ids = {logs.new_trace_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch("[0-9a-f]{32}", trace) for trace in ids)


# -- formats and session fields -----------------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """A logger writing through a handler set up as :func:`proxy.logs.configure` sets up its own."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.SessionFilter())
    logger = logging.getLogger("proxy.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield stream, logger
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def use(logger: logging.Logger, formatter: logging.Formatter) -> None:
    for handler in logger.handlers:
        handler.setFormatter(formatter)


def test_json_is_one_object_per_line_with_the_session_fields(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, logger = captured
    use(logger, logs.JsonFormatter())
    logger.info("outside")
    token = logs.bind_session("c7", "openai", "203.0.113.9", TRACE)
    try:
        logger.warning("inside\nFORGED a line")
    finally:
        logs.unbind_session(token)
    outside, inside = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert set(outside) == {"ts", "level", "logger", "msg"}
    assert RFC3339_UTC.fullmatch(outside["ts"])
    assert inside == {
        "ts": inside["ts"],
        "level": "WARNING",
        "logger": "proxy.test.logs",
        "msg": "inside\nFORGED a line",
        "session_id": "c7",
        "route": "openai",
        "client": "203.0.113.9",
        "trace_id": TRACE,
    }


def test_text_carries_the_same_session_fields(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, logger = captured
    use(logger, logs.TextFormatter())
    token = logs.bind_session("c7", "openai", "203.0.113.9", TRACE)
    try:
        logger.info("hello")
    finally:
        logs.unbind_session(token)
    line = stream.getvalue().strip()
    assert line.endswith(f"INFO proxy.test.logs hello [session_id=c7 route=openai client=203.0.113.9 trace_id={TRACE}]")


def test_an_adapters_connection_id_is_shown_as_the_session_id(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, logger = captured
    use(logger, logs.TextFormatter())
    logging.LoggerAdapter(logger, {"connection_id": "c3", "trace_id": "t-3"}).info("from a core")
    assert stream.getvalue().strip().endswith("from a core [session_id=c3 trace_id=t-3]")


async def test_a_sessions_tasks_inherit_its_fields(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, logger = captured
    use(logger, logs.JsonFormatter())

    async def serve(session_id: str) -> None:
        logs.bind_session(session_id, "openai", "127.0.0.1", f"trace-{session_id}")
        async with trio.open_nursery() as nursery:  # the session's pumps, timers and upstream leg
            for leg in ("client", "upstream"):
                nursery.start_soon(lambda leg=leg: _log_later(logger, leg))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, "c1")
        nursery.start_soon(serve, "c2")
    logger.info("listener")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert sorted((r["session_id"], r["trace_id"], r["msg"]) for r in records[:-1]) == [
        ("c1", "trace-c1", "client"),
        ("c1", "trace-c1", "upstream"),
        ("c2", "trace-c2", "client"),
        ("c2", "trace-c2", "upstream"),
    ]
    assert "session_id" not in records[-1]  # the listener's own task never had a session bound


async def _log_later(logger: logging.Logger, leg: str) -> None:
    await trio.lowlevel.checkpoint()
    logger.info("%s", leg)


@pytest.mark.provokes_internal_error
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_redaction_applies_to_both_formats(
    log_format: str, capsys: pytest.CaptureFixture[str], internal_errors: list[logging.LogRecord]
) -> None:
    logger = logging.getLogger("proxy.test.redaction")
    try:
        logs.configure("INFO", log_format, [KEY, TOKEN])
        logger.warning("a key %s and a token %s", KEY, TOKEN)
        try:
            raise ValueError(f"upstream refused key {KEY} for token {TOKEN}")
        except ValueError:
            logger.exception("failed with %s", KEY[:20])
    finally:
        logs.unconfigure()
        redact.uninstall_log_redaction()
    err = capsys.readouterr().err
    assert err.count(redact.MASK) >= 2
    for secret in (KEY, TOKEN):
        assert secret not in err
        assert secret[8:20] not in err
    assert "ValueError" in err
    if log_format == "json":
        entries = [json.loads(line) for line in err.splitlines()]
        assert [e["level"] for e in entries] == ["WARNING", "ERROR"]
        assert "ValueError" in entries[1]["exc"]
    assert [r.levelname for r in internal_errors] == ["ERROR"]


# -- one session through a real JSON-log run ----------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEEPGRAM_", "PROXY_", "LOG_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _raw_upgrade(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Send an upgrade request by hand; the answer's status and headers (lower-case names)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), {k.lower(): v for k, v in fields.items()}


@pytest.fixture
def json_proxy() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``python -m proxy --log-format json`` on a free loopback port (embedded simulators, a client token)."""
    with running_proxy("--log-format", "json", env=_env(LOG_LEVEL="DEBUG", PROXY_CLIENT_TOKENS=TOKEN)) as running:
        yield running


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=30)


@pytest.mark.e2e
async def test_one_session_is_followed_through_a_json_log_run_by_its_id(
    json_proxy: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = json_proxy
    try:
        # A refusal echoes the request's id; a session's 101 echoes the traceparent's trace id.
        status, headers = await trio.to_thread.run_sync(
            _raw_upgrade, port, "/openai", {"X-Request-Id": "refused-request-1"}
        )
        assert (status, headers.get("x-trace-id")) == (401, "refused-request-1")
        url = f"ws://127.0.0.1:{port}/openai?token={TOKEN}"
        async with open_websocket_url(url, extra_headers=[(b"traceparent", TRACEPARENT.encode())]) as ws:
            assert (b"x-trace-id", TRACE.encode()) in ws.handshake_headers
            await ws.send_message(json.dumps({"type": "Settings", "agent": {"think": {"prompt": "Hi"}}}))
            while json.loads(await ws.get_message()).get("type") != "SettingsApplied":
                pass
            await ws.send_message(json.dumps({"type": "InjectUserMessage", "content": "hello"}))
            while True:
                message = await ws.get_message()
                if isinstance(message, str) and json.loads(message).get("type") == "AgentAudioDone":
                    break
    finally:
        out, err = await trio.to_thread.run_sync(_stop, process)
    assert process.returncode == 0, err[-2000:]
    entries = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(e) and RFC3339_UTC.fullmatch(e["ts"]) for e in entries)
    refused = [e for e in entries if e.get("trace_id") == "refused-request-1"]
    assert refused
    assert all(e["route"] == "openai" for e in refused)
    ours = [e for e in entries if e.get("trace_id") == TRACE]
    session_id = ours[0]["session_id"]
    session = [e for e in entries if e.get("session_id") == session_id]
    assert session == ours  # one id, one trace: the whole conversation and nothing else
    assert all((e["route"], e["client"]) == ("openai", "127.0.0.1") for e in session)
    messages = " | ".join(e["msg"] for e in session)
    assert "client connected" in messages
    assert "closed" in messages
    assert {e["logger"] for e in session} >= {"proxy.server"}
    assert TOKEN not in out + err
