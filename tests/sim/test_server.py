"""The simulators' server: routing, the command line, and a full exchange between real processes."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest
import trio
from trio_websocket import ConnectionRejected

from proxy.sim.server import SimOptions, main

from .helpers import connect, simulator


async def test_unknown_paths_are_refused_with_404() -> None:
    async with simulator() as port:
        for path in ("/", "/v1/realtime/extra", "/openai"):
            with pytest.raises(ConnectionRejected) as rejected:
                async with connect(port, path):
                    pass
            assert rejected.value.status_code == 404


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="speed"):
        SimOptions(speed=-1, faults="")
    with pytest.raises(ValueError, match="session_max_s"):
        SimOptions(session_max_s=0, faults="")


def test_bad_fault_script_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--faults", "explode", "--port", "0"]) == 2
    assert "unknown fault" in capsys.readouterr().err


@pytest.mark.e2e
async def test_simulate_and_chat_processes_talk() -> None:
    """``python -m proxy simulate --port 0`` announces its port; ``python -m proxy chat`` gets a reply from it."""
    command = [sys.executable, "-m", "proxy", "simulate", "--port", "0", "--speed", "0"]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(partial(trio.run_process, command, stdout=subprocess.PIPE, check=False))
        try:
            with trio.fail_after(20):
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive_some(1)
            assert line.startswith(b"listening on ws://127.0.0.1:")
            url = line.split()[-1].decode() + "/v1/agent/converse"
            with trio.fail_after(20):
                result = await trio.run_process(
                    [sys.executable, "-m", "proxy", "chat", "--url", url, "--text", "hi there"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            assert result.returncode == 0, result.stderr
            assert result.stdout.decode().strip() == "You said: hi there."
        finally:
            process.terminate()
