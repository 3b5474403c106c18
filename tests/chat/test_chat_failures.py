"""``python -m proxy chat`` explains each way of not getting a conversation: one sentence and its own exit status.

Loopback servers answer the failures: nothing listening, an HTTP status on the upgrade (a scripted server and the
real proxy with a token and an Origin allow-list), TLS against a plain server and against an untrusted
certificate. The DNS failure uses the ``.invalid`` top-level domain, which never resolves (RFC 2606).
"""

from __future__ import annotations

import io
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trustme
from trio_websocket import WebSocketRequest, serve_websocket

from proxy.chat import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ChatOptions,
    chat,
    main,
)
from proxy.config import Config, Limits, Upstream, UpstreamSource
from proxy.server import ProxyServer
from proxy.sim.server import SimOptions, serve_simulators

TOKEN = "s3cret-client-token-0123"


async def run_chat(**kwargs: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = await chat(ChatOptions(**kwargs), out, err)  # type: ignore[arg-type]
    return status, out.getvalue(), err.getvalue()


def one_sentence(err: str) -> str:
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


async def free_port() -> int:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_nothing_listening_names_the_address_and_how_to_start_the_proxy() -> None:
    port = await free_port()
    status, out, err = await run_chat(url=f"ws://127.0.0.1:{port}/openai?token={TOKEN}", text="hello")
    assert (status, out) == (EXIT_UNREACHABLE, "")
    assert one_sentence(err) == (
        f"Cannot connect to ws://127.0.0.1:{port}/openai: nothing is listening on 127.0.0.1:{port} "
        "(connection refused); start the proxy with 'python -m proxy' or check the port."
    )


async def test_a_host_name_that_does_not_resolve_says_so() -> None:
    status, _, err = await run_chat(url="ws://no-such-proxy.invalid:8080/openai", text="hello")
    assert status == EXIT_UNREACHABLE
    assert one_sentence(err) == (
        "Cannot connect to ws://no-such-proxy.invalid:8080/openai: the host name 'no-such-proxy.invalid' does not "
        "resolve; check the host in --url (and the network or DNS settings)."
    )


# -- HTTP statuses on the upgrade, from a scripted server ----------------------------------------------------------


@asynccontextmanager
async def refusing_server(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> AsyncIterator[int]:
    async def handle(request: WebSocketRequest) -> None:
        await request.reject(status, extra_headers=headers, body=body)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handle, "127.0.0.1", 0, None))
        yield server.port
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("status", "body", "headers", "options", "expected"),
    [
        (
            404, b"Not Found", [], {},
            "The server at 127.0.0.1:{port} has no WebSocket route '/openai' (HTTP 404: Not Found); the proxy's "
            "routes are /openai and /deepgram-proxy.",
        ),
        (
            401, b"Unauthorized", [], {},
            "The proxy at ws://127.0.0.1:{port}/openai refused the connection (HTTP 401: Unauthorized): it needs a "
            "client token; pass it with --token.",
        ),
        (
            401, b"Unauthorized", [], {"token": TOKEN},
            "The proxy at ws://127.0.0.1:{port}/openai refused the connection (HTTP 401: Unauthorized): the token "
            "given with --token was not accepted.",
        ),
        (
            403, b"Origin not allowed", [], {},
            "The proxy at ws://127.0.0.1:{port}/openai refused the connection (HTTP 403: Origin not allowed): it "
            "only admits allowed origins; pass one with --origin.",
        ),
        (
            403, b"Origin not allowed", [], {"origin": "https://elsewhere.example"},
            "The proxy at ws://127.0.0.1:{port}/openai refused the connection (HTTP 403: Origin not allowed): the "
            "origin 'https://elsewhere.example' is not allowed.",
        ),
        (
            503, b"Too many sessions", [(b"Retry-After", b"1")], {},
            "The proxy at ws://127.0.0.1:{port}/openai is not taking new sessions now (HTTP 503: Too many "
            "sessions); try again in 1 s.",
        ),
        (
            503, b"", [], {},
            "The proxy at ws://127.0.0.1:{port}/openai is not taking new sessions now (HTTP 503); try again later.",
        ),
        (
            400, b"bad\x00\x1b[31m request", [], {},
            "The server at ws://127.0.0.1:{port}/openai refused the WebSocket upgrade (HTTP 400: bad  [31m request).",
        ),
    ],
)  # fmt: skip
async def test_an_http_status_on_the_upgrade_is_one_sentence_with_advice(
    status: int, body: bytes, headers: list[tuple[bytes, bytes]], options: dict[str, str], expected: str
) -> None:
    async with refusing_server(status, body, headers) as port:
        code, out, err = await run_chat(url=f"ws://127.0.0.1:{port}/openai?token={TOKEN}", text="hello", **options)
    assert (code, out) == (EXIT_REFUSED, "")
    assert one_sentence(err) == expected.format(port=port)
    assert TOKEN not in err


# -- the real proxy: token and Origin allow-list ------------------------------------------------------------------


@asynccontextmanager
async def guarded_proxy() -> AsyncIterator[int]:
    """The proxy on loopback with a client token and an Origin allow-list, its OpenAI route on the simulator."""
    async with trio.open_nursery() as nursery:
        sim_port = await nursery.start(serve_simulators, "127.0.0.1", 0, SimOptions(speed=0, faults=""))
        config = Config(
            port=0,
            client_tokens=(TOKEN,),
            allowed_origins=("https://app.example",),
            openai=Upstream(f"ws://127.0.0.1:{sim_port}/v1/realtime", None, UpstreamSource.URL),
            limits=Limits(ping_interval_s=0),
        )
        port = await nursery.start(ProxyServer(config).serve)
        yield port
        nursery.cancel_scope.cancel()


async def test_token_and_origin_admit_a_conversation_through_the_real_proxy() -> None:
    async with guarded_proxy() as port:
        url = f"ws://127.0.0.1:{port}/openai"
        status, out, err = await run_chat(url=url, text="hello", token=TOKEN, origin="https://app.example")
        assert (status, out, err) == (EXIT_OK, "You said: hello.\n", "")

        status, _, err = await run_chat(url=url, text="hello", token=TOKEN)
        assert status == EXIT_REFUSED
        assert "(HTTP 403: Origin not allowed): it only admits allowed origins; pass one with --origin." in err

        status, _, err = await run_chat(url=url, text="hello", origin="https://app.example")
        assert status == EXIT_REFUSED
        assert "HTTP 401" in err
        assert "pass it with --token" in err

        status, _, err = await run_chat(url=url, text="hello", token="wrong-" + TOKEN, origin="https://app.example")
        assert status == EXIT_REFUSED
        assert "the token given with --token was not accepted" in err
        assert TOKEN not in err

        status, _, err = await run_chat(url=f"ws://127.0.0.1:{port}/nope", text="hello")
        assert status == EXIT_REFUSED
        assert "has no WebSocket route '/nope' (HTTP 404" in err


# -- TLS ----------------------------------------------------------------------------------------------------------


async def test_wss_to_a_plain_server_is_a_tls_failure_with_the_hint_to_use_ws() -> None:
    async with refusing_server(404, b"", []) as port:
        status, _, err = await run_chat(url=f"wss://127.0.0.1:{port}/openai", text="hello", timeout=5)
    assert status == EXIT_UNREACHABLE
    sentence = one_sentence(err)
    assert sentence.startswith(f"Cannot connect to wss://127.0.0.1:{port}/openai: the TLS handshake failed (")
    assert sentence.endswith("); if the server speaks plain WebSocket, use a ws:// URL.")


@asynccontextmanager
async def tls_server(ca: trustme.CA) -> AsyncIterator[int]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handle(request: WebSocketRequest) -> None:
        await request.reject(404, body=b"Not Found")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handle, "127.0.0.1", 0, server_context))
        yield server.port
        nursery.cancel_scope.cancel()


async def test_an_untrusted_certificate_is_named_as_such() -> None:
    async with tls_server(trustme.CA()) as port:
        status, _, err = await run_chat(url=f"wss://127.0.0.1:{port}/openai", text="hello", timeout=5)
    assert status == EXIT_UNREACHABLE
    sentence = one_sentence(err)
    assert sentence.startswith(f"Cannot connect to wss://127.0.0.1:{port}/openai: the server's TLS certificate is not")
    assert "trusted (" in sentence


async def test_a_trusted_certificate_gets_through_to_the_http_answer() -> None:
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with tls_server(ca) as port:
        status, _, err = await run_chat(
            url=f"wss://127.0.0.1:{port}/openai", text="hello", timeout=5, ssl_context=client_context
        )
    assert status == EXIT_REFUSED
    assert "(HTTP 404: Not Found)" in err


# -- the server goes quiet or away ----------------------------------------------------------------------------------


async def test_a_server_that_never_answers_the_upgrade_times_out_as_unreachable() -> None:
    async def mute(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        status, _, err = await run_chat(url=f"ws://127.0.0.1:{port}/openai", text="hello", timeout=0.3)
        nursery.cancel_scope.cancel()
    assert status == EXIT_UNREACHABLE
    assert one_sentence(err) == (
        f"Cannot connect to ws://127.0.0.1:{port}/openai: no answer to the WebSocket upgrade within 0.3 s."
    )


async def test_a_server_that_is_not_a_websocket_server_is_named() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        status, _, err = await run_chat(url=f"ws://127.0.0.1:{port}/openai", text="hello", timeout=5)
        nursery.cancel_scope.cancel()
    assert status in (EXIT_UNREACHABLE,)
    assert "closed the connection during the WebSocket upgrade" in one_sentence(err)


# -- usage -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/openai", "ws:///openai", "ws://127.0.0.1:99999/openai"])
async def test_a_url_that_is_not_a_websocket_url_is_a_usage_error(url: str) -> None:
    status, _, err = await run_chat(url=url, text="hello")
    assert status == EXIT_USAGE
    one_sentence(err)


def test_the_exit_statuses_are_listed_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for line in ("0  the reply", "1  the agent answered", "2  a wrong option", "3  no connection", "4  the server"):
        assert line in text
    assert "--token" in text
    assert "--origin" in text


def test_a_wrong_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-such-flag"]) == EXIT_USAGE
    assert main(["--text", "x", "--timeout", "0"]) == EXIT_USAGE


def test_a_missing_audio_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--audio", "/nonexistent/in.wav", "--url", "ws://127.0.0.1:1/openai"]) == EXIT_USAGE
    assert "cannot read /nonexistent/in.wav" in capsys.readouterr().err


@pytest.mark.e2e
async def test_a_refused_connection_in_a_real_process_exits_3_with_one_line() -> None:
    port = await free_port()
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "proxy", "chat", "--url", f"ws://127.0.0.1:{port}/openai", "--text", "hi"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == EXIT_UNREACHABLE
    assert result.stdout == b""
    assert result.stderr.decode().count("\n") == 1
    assert b"connection refused" in result.stderr


assert EXIT_FAILED == 1
