"""TLS termination on the listener (proxy/tls.py): wss:// and https:// on one port, TLS 1.2 or newer with ALPN
http/1.1, the handshake inside the handshake deadline and the admission slots, reload without dropping sessions, and
clear one-line errors for files that cannot serve. A throwaway CA per test, real loopback sockets."""

from __future__ import annotations

import datetime
import json
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme
from cryptography.hazmat.primitives import serialization
from trio_websocket import open_websocket_url

from proxy import config as config_module
from proxy.cli import _parser, build_config
from proxy.config import Config, ConfigError, Limits
from proxy.server import ProxyServer
from proxy.tls import ServerTLS, TLSFiles, server_context
from tests.server.test_server import echo_upstream, proxy


@dataclass
class Certs:
    ca: trustme.CA
    cert_file: Path
    key_file: Path

    @property
    def files(self) -> TLSFiles:
        return TLSFiles(str(self.cert_file), str(self.key_file))

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        context.set_alpn_protocols(["h2", "http/1.1"])  # as browsers offer: the server must choose http/1.1
        return context

    def issue(self, ca: trustme.CA | None = None) -> trustme.CA:
        """Write a new leaf (from ``ca`` or a new CA) over the same files; the CA that signed it."""
        ca = ca or trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        leaf.cert_chain_pems[0].write_to_path(str(self.cert_file))
        leaf.private_key_pem.write_to_path(str(self.key_file))
        return ca


def make_certs(directory: Path) -> Certs:
    certs = Certs(trustme.CA(), directory / "cert.pem", directory / "key.pem")
    certs.issue(certs.ca)
    return certs


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


def tls_config(certs: Certs, **limits: float) -> Config:
    return Config(
        port=0,
        tls_cert_file=str(certs.cert_file),
        tls_key_file=str(certs.key_file),
        limits=Limits(ping_interval_s=0, **limits),  # type: ignore[arg-type]
    )


@dataclass
class Answer:
    status: int
    body: bytes
    version: str | None
    alpn: str | None


async def https_get(port: int, path: str, context: ssl.SSLContext) -> Answer:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1", https_compatible=True)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        version, alpn = stream.version(), stream.selected_alpn_protocol()
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return Answer(int(head.split()[1]), body, version, alpn)


@asynccontextmanager
async def tls_proxy(config: Config) -> AsyncIterator[tuple[ProxyServer, int]]:
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (server, port):
        yield server, port


# -- serving ---------------------------------------------------------------------------------------------------


async def test_https_health_and_wss_session_on_one_port(certs: Certs) -> None:
    async with tls_proxy(tls_config(certs)) as (server, port):
        answer = await https_get(port, "/health", certs.client_context())
        assert (answer.status, json.loads(answer.body)) == (200, {"status": "ok"})
        assert answer.alpn == "http/1.1"
        assert answer.version in ("TLSv1.2", "TLSv1.3")
        async with open_websocket_url(f"wss://127.0.0.1:{port}/relay", ssl_context=certs.client_context()) as ws:
            await ws.send_message("over tls")
            assert await ws.get_message() == "over tls"
            assert server.session_count == 1
    assert server.metrics.rejected_total == {}


async def test_a_tls_1_2_client_is_served_and_nothing_older_is_allowed(certs: Certs) -> None:
    context = certs.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    async with tls_proxy(tls_config(certs)) as (server, port):
        answer = await https_get(port, "/health", context)
        assert (answer.status, answer.version) == (200, "TLSv1.2")
        assert server.tls is not None
        assert server.tls.context.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_a_plain_http_client_on_the_tls_port_is_closed_cleanly(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with tls_proxy(tls_config(certs)) as (server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"GET /openai HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            data = b""
            with trio.fail_after(5):
                try:
                    while chunk := await stream.receive_some():
                        data += chunk
                except trio.BrokenResourceError:
                    pass  # a reset is a clean refusal too
        assert not data.startswith(b"HTTP/")
        # The listener goes on serving.
        assert (await https_get(port, "/health", certs.client_context())).status == 200
    assert server.metrics.rejected_total == {"tls_handshake": 1}
    assert server.admission.open == 0
    assert all(record.exc_info is None for record in caplog.records)
    assert all(record.levelno < logging.WARNING for record in caplog.records if record.name.startswith("proxy"))


async def test_a_bad_request_head_over_tls_gets_its_http_answer(certs: Certs) -> None:
    async with tls_proxy(tls_config(certs)) as (server, port):
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, certs.client_context(), server_hostname="127.0.0.1", https_compatible=True)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            data = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert server.metrics.rejected_total == {"bad_request": 1}


async def test_a_client_that_never_finishes_tls_holds_its_slot_only_until_the_handshake_deadline(
    certs: Certs, autojump_clock: trio.abc.Clock
) -> None:
    config = tls_config(certs, handshake_timeout_s=7.0, max_pending_handshakes=1)
    async with tls_proxy(config) as (server, port):
        start = trio.current_time()
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        await idle.send_all(b"\x16\x03\x01\x00")  # the first bytes of a ClientHello, and no more
        await trio.sleep(6.9)
        assert (server.admission.pending, server.admission.open) == (1, 1)
        # The one pending slot is taken: another connection is refused at once.
        refused = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(1):
            assert await refused.receive_some() == b""
        await refused.aclose()
        # The server gives up on the idle one exactly at its deadline and frees its slots.
        assert await idle.receive_some() == b""
        assert trio.current_time() - start == pytest.approx(7.0)
        assert (server.admission.pending, server.admission.open) == (0, 0)
        await idle.aclose()
    assert server.metrics.rejected_total == {"max_pending_handshakes": 1, "handshake_timeout": 1}


# -- reload ----------------------------------------------------------------------------------------------------


async def test_reload_serves_the_new_certificate_and_keeps_open_sessions(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_proxy(tls_config(certs)) as (server, port):
        assert server.tls is not None
        async with open_websocket_url(f"wss://127.0.0.1:{port}/relay", ssl_context=certs.client_context()) as ws:
            await ws.send_message("before")
            assert await ws.get_message() == "before"
            old_ca = certs.ca
            certs.ca = certs.issue()
            assert server.tls.reload()
            # New handshakes present the new certificate: only its CA verifies it.
            assert (await https_get(port, "/health", certs.client_context())).status == 200
            stale = Certs(old_ca, certs.cert_file, certs.key_file).client_context()
            with pytest.raises(trio.BrokenResourceError):
                await https_get(port, "/health", stale)
            # The session opened before the reload goes on.
            await ws.send_message("after")
            assert await ws.get_message() == "after"
            # A pair that does not load leaves the current one in place.
            certs.key_file.write_text("not a key\n")
            caplog.set_level(logging.WARNING)
            assert not server.tls.reload()
            assert (await https_get(port, "/health", certs.client_context())).status == 200
            await ws.send_message("still")
            assert await ws.get_message() == "still"
    assert server.tls.reloads == 1
    warnings = [r for r in caplog.records if r.name == "proxy.tls" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "still serving the previous certificate" in warnings[0].getMessage()
    assert warnings[0].exc_info is None


# -- configuration ---------------------------------------------------------------------------------------------


def test_without_tls_settings_there_is_no_tls() -> None:
    assert ServerTLS.from_config(Config()) is None
    assert ProxyServer(Config(), routes={}).tls is None


@pytest.mark.parametrize(
    ("cert", "key"), [("PROXY_TLS_CERT", "PROXY_TLS_KEY"), ("OPENAI_PROXY_TLS_CERT_PATH", "OPENAI_PROXY_TLS_KEY_PATH")]
)
def test_tls_files_come_from_the_environment_and_the_reference_names(cert: str, key: str) -> None:
    config = config_module.from_env({cert: "/c.pem", key: "/k.pem"})
    assert (config.tls_cert_file, config.tls_key_file) == ("/c.pem", "/k.pem")


def test_flags_win_over_the_environment(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_TLS_CERT", "/nowhere/cert.pem")
    monkeypatch.setenv("PROXY_TLS_KEY", "/nowhere/key.pem")
    args = _parser().parse_args(["--tls-cert", str(certs.cert_file), "--tls-key", str(certs.key_file)])
    config = build_config(args)
    assert (config.tls_cert_file, config.tls_key_file) == (str(certs.cert_file), str(certs.key_file))


@pytest.mark.parametrize("given", [{"PROXY_TLS_CERT": "/c.pem"}, {"PROXY_TLS_KEY": "/k.pem"}])
def test_a_certificate_without_a_key_or_the_reverse_is_refused(given: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="both a certificate and a key"):
        config_module.from_env(given)
    with pytest.raises(ConfigError, match="both a certificate and a key"):
        Config(tls_cert_file="/c.pem")


@pytest.mark.parametrize(("days", "expected"), [(3, "expires in 3.0 days"), (-1, "has expired"), (60, None)])
def test_a_certificate_near_its_end_is_announced_at_load_and_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, days: int, expected: str | None
) -> None:
    ca = trustme.CA()
    not_after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days, minutes=1)
    leaf = ca.issue_cert("127.0.0.1", not_after=not_after)
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    caplog.set_level(logging.WARNING, logger="proxy.tls")
    tls = ServerTLS(TLSFiles(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")))
    assert tls.reload()
    warnings = [r.getMessage() for r in caplog.records if r.name == "proxy.tls"]
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 2
        assert all(expected in w and "replace it and send SIGHUP" in w for w in warnings)


def key_lines(certs: Certs) -> list[str]:
    return [line for line in certs.key_file.read_text().splitlines() if line and not line.startswith("-----")]


def test_a_missing_file_is_named(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the TLS certificate file '.*missing\.pem': No such file"):
        server_context(TLSFiles(str(tmp_path / "missing.pem"), str(certs.key_file)))
    with pytest.raises(ConfigError, match="cannot read the TLS key file"):
        server_context(TLSFiles(str(certs.cert_file), str(tmp_path / "missing.pem")))


def test_files_swapped_are_named_without_their_contents(certs: Certs) -> None:
    with pytest.raises(ConfigError, match="holds no PEM certificate") as raised:
        server_context(TLSFiles(str(certs.key_file), str(certs.cert_file)))
    assert not any(line in str(raised.value) for line in key_lines(certs))


def test_a_key_of_another_certificate_is_a_mismatch(certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_certs(tmp_path / "other")
    with pytest.raises(ConfigError, match="does not match the certificate") as raised:
        server_context(TLSFiles(str(certs.cert_file), str(other.key_file)))
    assert not any(line in str(raised.value) for line in key_lines(other))


def test_an_encrypted_key_is_refused_without_a_prompt(certs: Certs) -> None:
    key = serialization.load_pem_private_key(certs.key_file.read_bytes(), None)
    certs.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(ConfigError, match="is encrypted"):
        server_context(certs.files)


def test_a_damaged_key_is_one_line_without_key_material(certs: Certs) -> None:
    lines = certs.key_file.read_text().splitlines()
    certs.key_file.write_text("\n".join([lines[0], lines[1][::-1], *lines[2:]]) + "\n")
    with pytest.raises(ConfigError, match="cannot load the TLS certificate") as raised:
        server_context(certs.files)
    message = str(raised.value)
    assert "\n" not in message
    assert not any(line in message for line in key_lines(certs))
