"""A per-session limit on warnings about a peer's faults (sans-IO: the caller passes the time).

A hostile peer can commit the same fault thousands of times a second; each one deserves a WARNING line, but not
thousands of them. The first ``burst`` warnings of each ``interval_s`` window are let through; the rest are counted
and reported in one summary line, at the next warning after the window or when the session ends.
"""

from __future__ import annotations

from typing import Final

DEFAULT_BURST: Final = 10
DEFAULT_INTERVAL_S: Final = 60.0


class WarningLimiter:
    """Decides which peer-fault warnings of one session are logged."""

    __slots__ = ("_burst", "_interval_s", "_logged", "_suppressed", "_window_start")

    def __init__(self, burst: int = DEFAULT_BURST, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if burst < 1 or interval_s <= 0:
            raise ValueError("burst must be at least 1 and interval_s positive")
        self._burst = burst
        self._interval_s = interval_s
        self._window_start: float | None = None
        self._logged = 0
        self._suppressed = 0

    def admit(self, now: float) -> tuple[bool, int]:
        """One more warning at ``now``: (log it?, warnings suppressed in the window that just ended, to report
        first; 0 when there is nothing to report)."""
        ended = 0
        if self._window_start is None or now - self._window_start >= self._interval_s:
            ended = self._suppressed
            self._window_start = now
            self._logged = 0
            self._suppressed = 0
        if self._logged < self._burst:
            self._logged += 1
            return True, ended
        self._suppressed += 1
        return False, ended

    def drain(self) -> int:
        """Warnings suppressed and not yet reported (the session is ending); resets the count."""
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
