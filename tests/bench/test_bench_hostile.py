"""The hostile mode: both phases reported, every hostile client exercised and accounted for (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from bench.hostile import KINDS, ClientReport, _read_frames, _read_until_closed, _slowloris_bytes
from bench.runner import PROBE_SESSIONS
from bench.ws import OP_CLOSE, OP_PING, OP_PONG, WebSocket, frame_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSIONS = 2
SOCKETS = 4


def _server_frame(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


async def test_a_websocket_client_ends_with_the_close_code_the_target_sent() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    report = ClientReport(0, "ping-flood")
    await theirs.send_all(_server_frame(OP_PONG, b"hostile!") + _server_frame(OP_CLOSE, (1008).to_bytes(2, "big")))
    ending = await _read_frames(WebSocket(ours, client=True), report)
    assert ending == "ws 1008"
    assert (report.frames_received, report.bytes_received) == (2, 10)


async def test_a_websocket_client_dropped_without_a_close_frame_is_told_apart() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    await theirs.aclose()
    assert await _read_frames(WebSocket(ours, client=True), ClientReport(0, "fragments")) == "dropped"


@pytest.mark.parametrize(
    ("answer", "ending"),
    [(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n", "http 408"), (b"", "dropped")],
)
async def test_a_socket_client_ends_with_the_http_status_the_target_answered(answer: bytes, ending: str) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    if answer:
        await theirs.send_all(answer)
    await theirs.aclose()
    report = ClientReport(0, "slowloris")
    assert await _read_until_closed(ours, report) == ending
    assert report.bytes_received == len(answer)


def test_slowloris_trickles_an_upgrade_head_that_never_ends() -> None:
    trickle = _slowloris_bytes("/openai", "127.0.0.1")
    head = b"".join(next(trickle) for _ in range(2_000))
    assert head.startswith(b"GET /openai HTTP/1.1\r\n")
    assert b"\r\n\r\n" not in head


def test_a_fragment_frame_has_its_fin_bit_clear() -> None:
    assert frame_bytes(OP_PING, b"")[0] == 0x89
    assert frame_bytes(0x0, b"", fin=False)[0] == 0x00


@pytest.mark.e2e
def test_hostile_mode_reports_a_quiet_and_a_hostile_phase_and_exercises_every_client(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--targets",
            "proxy",
            "--sessions",
            str(SESSIONS),
            "--duration",
            "1.5",
            "--turn-interval",
            "1",
            "--reply-seconds",
            "0.3",
            "--grace",
            "0.2",
            "--hostile",
            str(len(KINDS)),
            "--hostile-kinds",
            ",".join(KINDS),
            "--hostile-sockets",
            str(SOCKETS),
            "--quiet",
            "--json",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    document = json.loads(out.read_text())
    quiet, hostile = document["results"]
    assert (quiet["phase"], hostile["phase"]) == ("quiet", "hostile")
    assert quiet["hostile"] is None
    # Losses under attack are what the benchmark measures (exit status 1), not a failure of the benchmark.
    assert result.returncode == 0 or hostile["errors"] or hostile["mic_frames"]["lost"] or hostile["tts_frames"]["lost"]
    for phase in (quiet, hostile):
        assert phase["mic_frames"]["sent"] > 0
        # A few fresh sessions open mid-window in both phases; each got in or is counted with why not.
        new = phase["new_sessions"]
        assert new["ready"]["count"] + sum(new["failures"].values()) == new["attempted"] == PROBE_SESSIONS
    clients = hostile["hostile"]["clients"]
    assert [client["kind"] for client in clients] == list(KINDS)
    for client in clients:
        kind = client["kind"]
        assert client["connections"] >= 1, kind
        # Every connection ended exactly one way (closed by the target, or still open when the client stopped).
        assert sum(client["endings"].values()) == client["connections"], (kind, client["endings"])
        if kind != "idle":
            assert client["bytes_sent"] > 0, kind
            assert client["frames_sent"] > 0, kind
        if kind in ("slowloris", "idle"):
            assert client["connections"] >= SOCKETS, client
    assert "### Hostile: proxy" in result.stdout
    assert "| proxy | quiet | hostile | hostile / quiet |" in result.stdout
    assert "how they ended" in result.stdout
