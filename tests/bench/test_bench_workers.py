"""``python -m bench.workers`` end to end, briefly: a run per worker count, sessions and CPU per worker reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def test_the_workers_benchmark_reports_every_worker(tmp_path: Path) -> None:
    out = tmp_path / "workers.json"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "bench.workers"),
            *("--workers", "2", "--sessions", "4", "--duration", "2", "--json", str(out)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = json.loads(out.read_text())
    assert run["workers"] == 2
    assert run["sessions_ready"] == 4
    assert len(run["sessions_per_worker"]) == len(run["cpu_per_worker_s"]) == 2
    # Every session was held by one worker at its peak; the peaks are sampled apart, so a short-lived probe
    # connection of the benchmark (its readiness check) can add one to a worker's peak.
    assert 4 <= sum(run["sessions_per_worker"]) <= 5
    assert run["cpu_per_session_second"] > 0
    assert "projected sessions per core" in result.stdout
