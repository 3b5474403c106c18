"""When the simulators send each frame of a reply: real-time pacing, or bursts faster than real time.

Frames of a reply are produced with an offset on the reply's playback timeline (a 100 ms audio chunk at 0.3 s
is the fourth one). Real speech services do not send audio at playback pace: the first part of a reply arrives at
once and the rest faster than it plays, so a client must buffer it (and an interruption must clear that buffer).
:class:`Pacing` maps the playback offset to a send time with two numbers:

* ``head_start_s``: this much of the reply's playback timeline leaves at once (0: none);
* ``speed``: after it, the timeline advances this many times faster than real time (1: real time; 0: no pacing
  at all, everything at once).

``Pacing(speed=1, head_start_s=0)`` is strict real-time pacing (:data:`REAL_TIME`).

Pure: no Trio here; the simulators' shell sleeps until :meth:`Pacing.due`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

#: Defaults of the embedded simulators and ``python -m proxy simulate``: a reply's first second at once, the
#: rest at twice real time, so a client sees audio arrive ahead of playback as it does from the real services.
DEFAULT_SPEED: Final = 2.0
DEFAULT_HEAD_START_MS: Final = 1000
SPEED_VARIABLE: Final = "PROXY_SIM_SPEED"
HEAD_START_VARIABLE: Final = "PROXY_SIM_HEAD_START_MS"


@dataclass(frozen=True, slots=True)
class Pacing:
    speed: float = DEFAULT_SPEED
    head_start_s: float = DEFAULT_HEAD_START_MS / 1000

    def __post_init__(self) -> None:
        if not math.isfinite(self.speed) or self.speed < 0:
            raise ValueError("speed must be a finite number >= 0")
        if not math.isfinite(self.head_start_s) or self.head_start_s < 0:
            raise ValueError("head start must be a finite number of milliseconds >= 0")

    def due(self, offset_s: float) -> float:
        """Seconds after the start of the reply at which the frame at ``offset_s`` of its timeline is sent."""
        if self.speed == 0:
            return 0.0
        return max(0.0, offset_s - self.head_start_s) / self.speed


REAL_TIME: Final = Pacing(speed=1.0, head_start_s=0.0)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text[:40]!r}") from None


def speed_from(env: Mapping[str, str] | None = None) -> float:
    """``PROXY_SIM_SPEED``, else the default; validated by :class:`Pacing`."""
    return _number(os.environ if env is None else env, SPEED_VARIABLE, DEFAULT_SPEED)


def head_start_from(env: Mapping[str, str] | None = None) -> float:
    """``PROXY_SIM_HEAD_START_MS`` in seconds, else the default; validated by :class:`Pacing`."""
    return _number(os.environ if env is None else env, HEAD_START_VARIABLE, DEFAULT_HEAD_START_MS) / 1000
