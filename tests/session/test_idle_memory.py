"""An idle session's footprint: Python heap (tracemalloc) and tasks, measured by ``bench.session_memory``.

The heap figure is deterministic for given Python and library versions (virtual clock, in-memory streams); the bound
leaves a margin for other versions but fails if a per-session task, parking lot or buffer allocated up front
comes back (the RSS per idle session the benchmark reports follows this figure).
"""

from __future__ import annotations

from bench.session_memory import measure

#: Before the cuts this harness measured about 61 KiB and 9 tasks per idle session; after them about 50 KiB and 6.
MAX_BYTES_PER_IDLE_SESSION = 54 * 1024
TASKS_PER_IDLE_SESSION = 6  # client reader, upstream leg/reader, timer, clock, a keepalive per leg


def test_idle_session_heap_and_tasks_are_bounded() -> None:
    result = measure(40, warmup=5)
    assert result.tasks_per_session == TASKS_PER_IDLE_SESSION
    assert result.bytes_per_session <= MAX_BYTES_PER_IDLE_SESSION, result.top
