"""``POST /function-call`` over loopback against the real server: the built-in, registered handlers (sync in a
thread, async), every refusal status, CORS and its preflight, client auth as for upgrades, the switch, and the
start-up check of ``--function``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
import trio

from proxy import functions
from proxy.config import Config, ConfigError, Limits
from proxy.server import ProxyServer

HANDLERS = "tests.server.function_handlers"
SPECS = tuple(f"{HANDLERS}:{name}" for name in ("echo", "as_json", "async_echo", "refuse", "broken", "blocks"))


@asynccontextmanager
async def server(**overrides: Any) -> AsyncIterator[int]:
    limits = Limits(ping_interval_s=0, function_call_timeout_s=0.2)
    config = replace(Config(port=0, functions=SPECS, limits=limits), **overrides)
    proxy = ProxyServer(config)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.serve)
        yield port
        nursery.cancel_scope.cancel()


async def request(
    port: int,
    body: bytes | None = None,
    *,
    method: str = "POST",
    path: str = "/function-call",
    content_type: str | None = "application/json",
    headers: tuple[tuple[str, str], ...] = (),
    content_length: int | None = None,
) -> tuple[int, dict[str, str], bytes]:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if body is not None or content_length is not None:
        lines.append(f"Content-Length: {len(body or b'') if content_length is None else content_length}")
    lines += [f"{name}: {value}" for name, value in headers]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    head_lines = head.decode().split("\r\n")
    parsed = dict(line.split(": ", 1) for line in head_lines[1:])
    return int(head_lines[0].split()[1]), {k.lower(): v for k, v in parsed.items()}, payload


def call(name: str, arguments: object = None, call_id: str = "call_1") -> bytes:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return json.dumps({"id": call_id, "name": name, "arguments": text}).encode()


async def test_the_built_in_tells_the_time_in_a_zone() -> None:
    async with server() as port:
        status, headers, body = await request(port, call("get_current_time", {"timezone": "Asia/Tokyo"}))
        _, _, utc = await request(port, call("get_current_time"))
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert datetime.fromisoformat(json.loads(body)["content"]).utcoffset().total_seconds() == 9 * 3600  # type: ignore[union-attr]
    assert datetime.fromisoformat(json.loads(utc)["content"]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]


async def test_an_unknown_zone_is_an_error_answer() -> None:
    async with server() as port:
        status, _, body = await request(port, call("get_current_time", {"timezone": "Mars/Olympus"}))
    assert status == 200
    assert json.loads(body) == {"error": "Unknown time zone: Mars/Olympus"}


async def test_registered_handlers_sync_async_and_json_results() -> None:
    async with server() as port:
        answers = [
            await request(port, call("echo", {"text": "hi"})),
            await request(port, call("async_echo", {"text": "hi"})),
            await request(port, call("as_json", {"b": 1, "a": 2})),
        ]
    assert [(status, json.loads(body)) for status, _, body in answers] == [
        (200, {"content": "hi"}),
        (200, {"content": "async hi"}),
        (200, {"content": '{"seen":["a","b"]}'}),
    ]


async def test_handler_errors_failures_and_timeouts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with server() as port:
        refused = await request(port, call("refuse"))
        failed = await request(port, call("broken"))
        late = await request(port, call("blocks"))
        after = await request(port, call("echo", {"text": "still serving"}))
    assert (refused[0], json.loads(refused[2])) == (200, {"error": "not today"})
    assert (failed[0], json.loads(failed[2])) == (500, {"error": "Function failed"})
    assert (late[0], json.loads(late[2])) == (504, {"error": "Function timed out"})
    assert json.loads(after[2]) == {"content": "still serving"}
    assert "secret-result-data" not in caplog.text
    assert "still serving" not in caplog.text  # results are never logged


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "Body is not JSON"),
        (b"[]", 400, "Body must be a JSON object"),
        (b'{"id":"c","name":"echo"}', 400, "id, name and arguments (a JSON string) are required"),
        (
            b'{"id":"c","name":"echo","arguments":{"text":"x"}}',
            400,
            "id, name and arguments (a JSON string) are required",
        ),
        (b'{"id":"c","name":"echo","arguments":"{bad"}', 400, "arguments is not a JSON string"),
        (b'{"id":"c","name":"echo","arguments":"[1]"}', 400, "arguments must encode a JSON object"),
        (b'{"id":"c","name":"nope","arguments":"{}"}', 404, "Unknown function: nope"),
    ],
)
async def test_bad_requests(body: bytes, status: int, error: str) -> None:
    async with server() as port:
        answer = await request(port, body)
    assert (answer[0], json.loads(answer[2])) == (status, {"error": error})


async def test_size_type_method_and_length_refusals() -> None:
    async with server() as port:
        too_big = await request(port, b"", content_length=functions.MAX_BODY_BYTES + 1)
        at_cap = await request(port, call("echo", {"text": "x" * (functions.MAX_BODY_BYTES - 100)}))
        wrong_type = await request(port, call("echo"), content_type="text/plain")
        no_type = await request(port, call("echo"), content_type=None)
        charset = await request(port, call("echo", {"text": "ok"}), content_type="application/json; charset=utf-8")
        get = await request(port, None, method="GET")
        no_length = await request(port, None)
    assert too_big[0] == 413
    assert at_cap[0] == 200
    assert wrong_type[0] == no_type[0] == 415
    assert json.loads(charset[2]) == {"content": "ok"}
    assert get[0] == 405
    assert no_length[0] == 411


async def test_cors_for_allowed_origins_and_the_preflight() -> None:
    origin = "https://app.example"
    async with server(allowed_origins=(origin,)) as port:
        ok = await request(port, call("echo", {"text": "x"}), headers=(("Origin", origin),))
        preflight = await request(port, None, method="OPTIONS", content_type=None, headers=(("Origin", origin),))
        other = await request(port, call("echo"), headers=(("Origin", "https://evil.example"),))
        other_preflight = await request(
            port, None, method="OPTIONS", content_type=None, headers=(("Origin", "https://evil.example"),)
        )
    assert ok[0] == 200
    assert ok[1]["access-control-allow-origin"] == origin
    assert preflight[0] == 204
    assert preflight[1]["access-control-allow-origin"] == origin
    assert "POST" in preflight[1]["access-control-allow-methods"]
    assert "Content-Type" in preflight[1]["access-control-allow-headers"]
    assert other[0] == 403
    assert "access-control-allow-origin" not in other[1]
    assert other_preflight[0] == 403


async def test_client_tokens_apply_as_for_upgrades() -> None:
    token = "client-token-0123456789abcdef"
    async with server(client_tokens=(token,)) as port:
        without = await request(port, call("echo", {"text": "x"}))
        wrong = await request(port, call("echo", {"text": "x"}), path="/function-call?token=wrong-token-000000")
        right = await request(port, call("echo", {"text": "x"}), path=f"/function-call?token={token}")
    assert without[0] == 401
    assert wrong[0] == 401
    assert token.encode() not in wrong[2]
    assert (right[0], json.loads(right[2])) == (200, {"content": "x"})


async def test_refused_calls_are_logged_paced_not_once_each(caplog: pytest.LogCaptureFixture) -> None:
    # A client guessing tokens is a peer's fault that repeats per request: one WARNING per interval, not per call.
    caplog.set_level(logging.INFO)
    async with server(client_tokens=("client-token-0123456789abcdef",)) as port:
        for attempt in range(20):
            path = f"/function-call?token=guess-{attempt}"
            status, _, _ = await request(port, call("echo", {"text": "x"}), path=path)
            assert status == 401
    refusals = [r for r in caplog.records if "function call refused" in r.getMessage()]
    assert len(refusals) == 1
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in refusals)
    assert "guess-" not in caplog.text


async def test_the_endpoint_can_be_switched_off() -> None:
    async with server(function_call=False) as port:
        status, _, _ = await request(port, call("get_current_time"))
    assert status == 404


def test_function_specs_are_checked() -> None:
    assert functions.load_spec(f"{HANDLERS}:echo")[0] == "echo"
    for spec in ("nocolon", f"{HANDLERS}:missing", "no.such.module:x", f"{HANDLERS}:not_callable"):
        with pytest.raises(ConfigError):
            functions.registry((spec,), use_entry_points=False)


def test_a_bad_function_flag_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--port", "0", "--function", "no.such.module:x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no.such.module" in result.stderr


def test_the_environment_and_flags_configure_it() -> None:
    from proxy.config import from_env

    config = from_env({"PROXY_FUNCTIONS": f"{HANDLERS}:echo, {HANDLERS}:refuse", "PROXY_FUNCTION_CALL": "0"})
    assert config.functions == (f"{HANDLERS}:echo", f"{HANDLERS}:refuse")
    assert config.function_call is False
    assert from_env({}).function_call is True
    with pytest.raises(ConfigError):
        from_env({"PROXY_FUNCTION_CALL": "maybe"})


def test_entry_points_register_handlers_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    points = [
        EntryPoint("shout", f"{HANDLERS}:async_echo", functions.ENTRY_POINT_GROUP),
        EntryPoint("echo", f"{HANDLERS}:refuse", functions.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(functions, "entry_points", lambda group: points if group == functions.ENTRY_POINT_GROUP else [])
    handlers = functions.registry((f"{HANDLERS}:echo",))
    assert handlers["shout"].__name__ == "async_echo"
    assert handlers["echo"].__name__ == "echo"  # --function is registered after the entry points
    assert handlers["get_current_time"] is functions.get_current_time
    points.append(EntryPoint("gone", "no.such.module:x", functions.ENTRY_POINT_GROUP))
    with pytest.raises(ConfigError, match="'gone' does not load"):
        functions.registry()


async def test_an_oversized_body_that_is_sent_still_gets_its_413() -> None:
    body = call("echo", {"text": "x" * (2 * functions.MAX_BODY_BYTES)})
    async with server() as port:
        status, _, answer = await request(port, body)
    assert (status, json.loads(answer)) == (413, {"error": f"Body larger than {functions.MAX_BODY_BYTES} bytes"})
