"""``python -m proxy`` as a real subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running_proxy(
    *args: str, env: Mapping[str, str], scheme: str = "ws"
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start the proxy with ``args`` and ``env``, wait for its ``listening on`` line, yield it and its port.

    The process is killed on the way out if the test has not stopped it; what the test asserts about its exit
    (status, log) it asserts itself.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--port", "0", *args],
        cwd=ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"listening on {scheme}://127.0.0.1:"), line
        yield process, int(line.rsplit(":", 1)[1])
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
