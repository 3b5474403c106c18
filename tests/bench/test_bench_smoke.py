"""``python -m bench`` end to end, briefly: every target measured, every frame accounted for (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.procs import group_members

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSIONS = 3

pytestmark = pytest.mark.e2e


def _run(tmp_path: Path, *extra: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--sessions",
            str(SESSIONS),
            "--duration",
            "3",
            "--turn-interval",
            "1",
            "--reply-seconds",
            "0.5",
            "--grace",
            "0.3",
            "--quiet",
            "--json",
            str(out),
            *extra,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text()), result.stdout


def _assert_exact(result: dict[str, Any]) -> None:
    name = result["target"]
    assert result["sessions_ready"] == SESSIONS, name
    assert result["errors"] == 0, (name, result["first_error"])
    for direction in ("mic_frames", "tts_frames"):
        frames = result[direction]
        assert frames["sent"] > 0, (name, direction)
        assert frames["received"] == frames["sent"], (name, direction, frames)
        assert (frames["lost"], frames["reordered"], frames["duplicates"]) == (0, 0, 0), (name, direction, frames)
    for latency in ("mic", "tts", "ready", "first_audio"):
        assert result[latency]["count"] > 0, (name, latency)
        assert result[latency]["p99"] is not None, (name, latency)


def test_openai_route_all_three_targets(tmp_path: Path) -> None:
    document, table = _run(tmp_path)
    results = {r["target"]: r for r in document["results"]}
    assert list(results) == ["direct", "naive", "proxy"]
    for result in results.values():
        _assert_exact(result)
    # The relays' own processes are measured; the direct target has none.
    for name in ("naive", "proxy"):
        for key in ("cpu_us_per_message", "cpu_us_per_audio_message", "rss_per_session_kib", "rss_peak_kib"):
            assert results[name][key] is not None, (name, key)
    assert results["direct"]["cpu_us_per_message"] is None
    # The markdown table shows the three targets side by side, with every row.
    assert "| | **direct** | **naive** | **proxy** |" in table
    for row in (
        "mic -> upstream",
        "upstream -> client",
        "added p99 vs direct",
        "CPU µs per audio message",
        "RSS KiB per idle session",
        "messages/s",
        "lost / reordered",
    ):
        assert row in table


def test_deepgram_route_through_the_proxy(tmp_path: Path) -> None:
    document, _ = _run(tmp_path, "--route", "deepgram", "--targets", "direct,proxy")
    assert [r["target"] for r in document["results"]] == ["direct", "proxy"]
    for result in document["results"]:
        _assert_exact(result)


def test_a_target_command_is_measured_as_its_process_tree_and_its_whole_group_is_stopped(tmp_path: Path) -> None:
    """``--target-cmd``: placeholders expanded, port waited for, CPU and memory of the tree, the group stopped."""
    marker = tmp_path / "group"
    # A wrapper shell with a stray child: both belong to the target's process group and must be gone afterwards.
    command = f"echo $$ > {marker}; sleep 600 & {{python}} -m proxy --port {{port}}"
    document, table = _run(tmp_path, "--targets", "direct,wrapped", "--target-cmd", f"wrapped={command}")
    results = {r["target"]: r for r in document["results"]}
    assert list(results) == ["direct", "wrapped"]
    for result in results.values():
        _assert_exact(result)
    for key in ("cpu_us_per_audio_message", "rss_per_session_kib", "rss_peak_kib"):
        assert results["wrapped"][key] is not None, key
    assert "| | **direct** | **wrapped** |" in table
    assert group_members(int(marker.read_text())) == []


@pytest.mark.parametrize("value", ["nameless", "Bad Name=x", "proxy=python -m proxy", "x="])
def test_a_malformed_target_command_is_refused(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--target-cmd", value, "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--target-cmd" in result.stderr


def test_repeated_runs_are_all_kept_and_summarised(tmp_path: Path) -> None:
    document, table = _run(tmp_path, "--targets", "direct,proxy", "--repeat", "2")
    assert [[r["target"] for r in run] for run in document["runs"]] == [["direct", "proxy"]] * 2
    for run in document["runs"]:
        for result in run:
            _assert_exact(result)
    assert document["runs"][1][1]["sessions_per_core"] is not None
    assert "| 2 runs: median (min-max) | **direct** | **proxy** |" in table
    assert "projected real-time sessions per core" in table
