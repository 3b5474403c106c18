"""Fault scripts: what a simulated upstream does wrong on one connection.

A script is a ``;``-separated list of steps, each ``kind[:arg[:arg...]]``. Whitespace around steps is ignored;
an empty script means "behave". The kinds:

``delay:<type>:<seconds>``
    Wait before sending every outgoing message of ``type`` (or before handling every incoming one of that type).
``drop:<type>``
    Never send outgoing messages of ``type``; ignore incoming ones of that type (so ``drop:response.create``
    leaves a request unanswered).
``close_after:<n>[:<code>[:<reason>]]``
    Once ``n`` messages have been sent, close with ``code`` (default 1011) and ``reason`` (default empty; it may
    contain ``:`` but not ``;``, at most 123 UTF-8 bytes).
``abort_after:<n>``
    Once ``n`` messages have been sent, drop the TCP connection without a close frame.
``garbage_after:<n>``
    Once ``n`` messages have been sent, send one text frame that is not JSON.
``slow_read:<seconds>``
    Wait this long before reading each incoming message (the peer sees backpressure).
``reject:<status>``
    Answer the WebSocket handshake with this HTTP status (100-599, not 101).
``hang_handshake[:<seconds>]``
    Never answer the handshake (gives up after ``seconds``, default 600, or when the peer goes away).

Message types are the ``type`` field of JSON messages, or ``binary`` for binary frames. Each kind may appear at
most once per type (``delay``/``drop``) or once overall (the others). Example:
``delay:session.updated:2.5;close_after:3:4001:bye;drop:response.create``.

This module is pure: the parser and the script object carry no I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Final

MAX_REASON_BYTES: Final = 123
MAX_SECONDS: Final = 3600.0
DEFAULT_CLOSE_CODE: Final = 1011
DEFAULT_HANG_SECONDS: Final = 600.0
_TYPE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_UNSENDABLE: Final = frozenset({1004, 1005, 1006, 1015})


class FaultScriptError(ValueError):
    """A fault script that does not parse; the message says which step and why."""


@dataclass(frozen=True)
class CloseAfter:
    count: int
    code: int = DEFAULT_CLOSE_CODE
    reason: str = ""


@dataclass(frozen=True)
class FaultScript:
    """The parsed form of a script. ``FaultScript()`` is the empty script."""

    delays: tuple[tuple[str, float], ...] = ()
    drops: frozenset[str] = field(default_factory=frozenset)
    close_after: CloseAfter | None = None
    abort_after: int | None = None
    garbage_after: int | None = None
    slow_read: float | None = None
    reject: int | None = None
    hang_handshake: float | None = None

    def delay_for(self, message_type: str | None) -> float:
        for kind, seconds in self.delays:
            if kind == message_type:
                return seconds
        return 0.0

    def drops_type(self, message_type: str | None) -> bool:
        return message_type is not None and message_type in self.drops

    def __bool__(self) -> bool:
        return self != FaultScript()

    def format(self) -> str:
        """The canonical script text; ``parse_faults(script.format()) == script``."""
        steps = [f"delay:{t}:{_num(s)}" for t, s in self.delays]
        steps += [f"drop:{t}" for t in sorted(self.drops)]
        if self.close_after is not None:
            c = self.close_after
            steps.append(f"close_after:{c.count}:{c.code}" + (f":{c.reason}" if c.reason else ""))
        if self.abort_after is not None:
            steps.append(f"abort_after:{self.abort_after}")
        if self.garbage_after is not None:
            steps.append(f"garbage_after:{self.garbage_after}")
        if self.slow_read is not None:
            steps.append(f"slow_read:{_num(self.slow_read)}")
        if self.reject is not None:
            steps.append(f"reject:{self.reject}")
        if self.hang_handshake is not None:
            steps.append(f"hang_handshake:{_num(self.hang_handshake)}")
        return ";".join(steps)


def _num(value: float) -> str:
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(float(value))


def _seconds(text: str, step: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultScriptError(f"{step!r}: {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise FaultScriptError(f"{step!r}: seconds must be between 0 and {MAX_SECONDS:g}")
    return value


def _count(text: str, step: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise FaultScriptError(f"{step!r}: {text!r} is not a message count (a non-negative integer)")
    return int(text)


def _type(text: str, step: str) -> str:
    if not _TYPE.fullmatch(text):
        raise FaultScriptError(f"{step!r}: {text!r} is not a message type")
    return text


def _close_code(text: str, step: str) -> int:
    if not text.isdigit() or len(text) != 4:
        raise FaultScriptError(f"{step!r}: close code {text!r} is not a 4-digit number")
    code = int(text)
    if code in _UNSENDABLE or not 1000 <= code <= 4999 or 1016 <= code <= 2999:
        raise FaultScriptError(f"{step!r}: close code {code} may not be sent (use 1000-1003, 1007-1014, 3000-4999)")
    return code


def _arity(args: list[str], low: int, high: int, step: str, usage: str) -> None:
    if not low <= len(args) <= high:
        raise FaultScriptError(f"{step!r}: expected {usage}")


def parse_faults(text: str | None) -> FaultScript:
    """Parse and validate a fault script (see the module docstring). Raises :class:`FaultScriptError`."""
    if text is None or not text.strip():
        return FaultScript()
    if len(text) > 4096:
        raise FaultScriptError("fault script is longer than 4096 characters")
    delays: dict[str, float] = {}
    drops: set[str] = set()
    singles: dict[str, object] = {}
    for raw in text.split(";"):
        step = raw.strip()
        if not step:
            continue
        kind, *args = step.split(":")
        if kind == "close_after" and len(args) > 3:
            args = [*args[:2], ":".join(args[2:])]
        if kind in singles or (
            kind in ("delay", "drop") and args and args[0] in (delays if kind == "delay" else drops)
        ):
            raise FaultScriptError(f"{step!r}: repeated step")
        match kind:
            case "delay":
                _arity(args, 2, 2, step, "delay:<type>:<seconds>")
                delays[_type(args[0], step)] = _seconds(args[1], step)
            case "drop":
                _arity(args, 1, 1, step, "drop:<type>")
                drops.add(_type(args[0], step))
            case "close_after":
                _arity(args, 1, 3, step, "close_after:<n>[:<code>[:<reason>]]")
                reason = args[2] if len(args) > 2 else ""
                if len(reason.encode()) > MAX_REASON_BYTES:
                    raise FaultScriptError(f"{step!r}: the close reason is longer than {MAX_REASON_BYTES} bytes")
                code = _close_code(args[1], step) if len(args) > 1 else DEFAULT_CLOSE_CODE
                singles[kind] = CloseAfter(_count(args[0], step), code, reason)
            case "abort_after" | "garbage_after":
                _arity(args, 1, 1, step, f"{kind}:<n>")
                singles[kind] = _count(args[0], step)
            case "slow_read":
                _arity(args, 1, 1, step, "slow_read:<seconds>")
                singles[kind] = _seconds(args[0], step)
            case "reject":
                _arity(args, 1, 1, step, "reject:<status>")
                status = args[0]
                if not status.isdigit() or len(status) != 3 or not 100 <= int(status) <= 599 or status == "101":
                    raise FaultScriptError(f"{step!r}: {status!r} is not an HTTP status other than 101")
                singles[kind] = int(status)
            case "hang_handshake":
                _arity(args, 0, 1, step, "hang_handshake[:<seconds>]")
                singles[kind] = _seconds(args[0], step) if args else DEFAULT_HANG_SECONDS
            case _:
                raise FaultScriptError(
                    f"{step!r}: unknown fault {kind!r} (known: delay, drop, close_after, abort_after, "
                    "garbage_after, slow_read, reject, hang_handshake)"
                )
    return FaultScript(
        delays=tuple(sorted(delays.items())),
        drops=frozenset(drops),
        close_after=singles.get("close_after"),  # type: ignore[arg-type]
        abort_after=singles.get("abort_after"),  # type: ignore[arg-type]
        garbage_after=singles.get("garbage_after"),  # type: ignore[arg-type]
        slow_read=singles.get("slow_read"),  # type: ignore[arg-type]
        reject=singles.get("reject"),  # type: ignore[arg-type]
        hang_handshake=singles.get("hang_handshake"),  # type: ignore[arg-type]
    )
