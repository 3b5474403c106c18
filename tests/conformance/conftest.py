"""Fixtures: real ``python -m proxy`` processes on loopback (one per configuration and test module) and the
scripted fake upstream (one per test, with per-connection records).

The fake upstream listens on one loopback socket that lives for the whole run, so the proxies can be pointed at it
when they start; each test serves it afresh with its own scenario.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from .upstream import FakeUpstream, listening_socket

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A fake key: it must reach the upstream as a Bearer token and nowhere else (no log line, no client frame).
FAKE_API_KEY = "sk-conformance-FAKE-7f3a9c1e5b2d4680"
START_TIMEOUT_S = 20.0


@dataclass
class ProxyProcess:
    """A running proxy: its port and its captured output."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path

    def url(self, path: str = "/openai", query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def output(self) -> str:
        """Everything the process wrote so far (stdout then stderr)."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def proxy_env(upstream_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "DEEPGRAM_", "PROXY_", "LOG_LEVEL", "E2E_", "CAPTURE_"))
    }
    env.update(
        OPENAI_REALTIME_URL=upstream_url,
        OPENAI_API_KEY=FAKE_API_KEY,
        DEEPGRAM_AGENT_URL="ws://127.0.0.1:9/unused",
        DEEPGRAM_LISTEN_URL="ws://127.0.0.1:9/unused",
        LOG_LEVEL="DEBUG",
        PYTHONUNBUFFERED="1",
        # The reference-parity catalogue asserts the reference's audio bytes: select its interpolator.
        OPENAI_PROXY_RESAMPLER="linear",
    )
    env.update(extra)
    return env


def start_proxy(name: str, workdir: Path, env: dict[str, str], args: tuple[str, ...] = ("--port", "0")) -> ProxyProcess:
    """Start ``python -m proxy`` and wait for its ``listening on ws://HOST:PORT`` line."""
    stdout_path = workdir / f"{name}.stdout"
    stderr_path = workdir / f"{name}.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "proxy", *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=err)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        lines = stdout_path.read_text(errors="replace").splitlines()
        if lines and lines[0].startswith("listening on ws://") and stdout_path.read_bytes().endswith(b"\n"):
            port = int(lines[0].rsplit(":", 1)[1])
            return ProxyProcess(name, proc, port, stdout_path, stderr_path)
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            raise RuntimeError(
                f"proxy {name!r} did not start (exit {proc.returncode}); stdout {stdout_path.read_text()!r}; "
                f"stderr tail {stderr_path.read_text()[-2000:]!r}"
            )
        time.sleep(0.02)


@pytest.fixture(scope="session")
def upstream_socket() -> Iterator[socket.socket]:
    sock = listening_socket()
    yield sock
    sock.close()


@pytest.fixture(scope="session")
def upstream_url(upstream_socket: socket.socket) -> str:
    return f"ws://127.0.0.1:{upstream_socket.getsockname()[1]}/v1/realtime?model=gpt-realtime"


@pytest.fixture(scope="session")
def refused_url() -> Iterator[str]:
    """A loopback port that refuses connections (bound, never listening, so no one else can take it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"ws://127.0.0.1:{sock.getsockname()[1]}/v1/realtime"
    sock.close()


def _module_proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]
) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp(f"{request.module.__name__.rsplit('.', 1)[-1]}-{name}")
    proxy = start_proxy(name, workdir, env)
    try:
        yield proxy
    finally:
        proxy.stop()
    output = proxy.output()
    assert FAKE_API_KEY not in output, f"the API key leaked into the output of proxy {name!r}"


@pytest.fixture(scope="module")
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream_url: str
) -> Iterator[ProxyProcess]:
    """The proxy with its default configuration."""
    yield from _module_proxy(request, tmp_path_factory, "default", proxy_env(upstream_url))


@pytest.fixture(scope="module")
def passthrough_proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream_url: str
) -> Iterator[ProxyProcess]:
    """The proxy with OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH=1."""
    env = proxy_env(upstream_url, OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH="1")
    yield from _module_proxy(request, tmp_path_factory, "passthrough", env)


@pytest.fixture(scope="module")
def watchdog_proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream_url: str
) -> Iterator[ProxyProcess]:
    """The proxy with a 500 ms deferred response.create watchdog (the reference's third proxy)."""
    env = proxy_env(upstream_url, OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS="500")
    yield from _module_proxy(request, tmp_path_factory, "watchdog", env)


@pytest.fixture(scope="module")
def refused_proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, refused_url: str
) -> Iterator[ProxyProcess]:
    """A proxy whose upstream port refuses connections."""
    yield from _module_proxy(request, tmp_path_factory, "refused", proxy_env(refused_url))


@pytest.fixture
async def upstream(upstream_socket: socket.socket, nursery: trio.Nursery) -> AsyncIterator[FakeUpstream]:
    """The fake upstream for one test; set ``upstream.scenario`` before the proxy connects."""
    fake = FakeUpstream()
    await nursery.start(fake.serve, upstream_socket)
    yield fake
    # The proxy must end every upstream session once its client has gone (no leaked upstream sessions); this
    # also keeps one test's sessions from overlapping the next test.
    await fake.wait_all_closed(3.0)
    nursery.cancel_scope.cancel()
    leaked = [c.index for c in fake.connections if not c.closed.is_set()]
    assert leaked == [], f"upstream connection(s) {leaked} still open 3 s after the test's clients closed"
