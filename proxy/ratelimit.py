"""Pacing of log lines about peers' faults (sans-IO: the caller passes the time).

A hostile peer can commit the same fault thousands of times a second; each one deserves a WARNING line, but not
thousands of them. Two pacers, for the two places such lines come from:

* :class:`WarningLimiter`, per session: the first ``burst`` warnings of each ``interval_s`` window are let through;
  the rest are counted and reported in one summary line, at the next warning after the window or when the session
  ends.
* :class:`LogThrottle`, per listener: at most one line per kind of refusal and interval, for faults that come once
  per connection (refused connections, failed accepts), however many connections commit them.
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


class LogThrottle:
    """At most one log line per key and interval; says how many it held back."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None: stay quiet. Otherwise log now; the number is how many lines were held back since the last one."""
        if now < self._next.get(key, float("-inf")):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self._interval_s
        return self._held.pop(key, 0)
