"""Per-session bookkeeping shared by the sending and the receiving end (one process, one monotonic clock)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .wire import SEQ_MODULUS, seq_value, session_offset, unwrap


class Stream:
    """One direction of one session: when each frame was sent, and what arrived.

    Arrival accounting is exact: a frame is *lost* if it was sent and never arrived, *reordered* if it arrived
    after a later frame of the same stream, a *duplicate* if it arrived twice.
    """

    __slots__ = ("duplicates", "highest", "missing", "offset", "received", "reordered", "sent_at")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.sent_at: list[float] = []
        self.highest = -1
        self.missing: set[int] = set()
        self.received = 0
        self.reordered = 0
        self.duplicates = 0

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    def next_value(self) -> int:
        """The sample value of the next frame to send (call :meth:`mark_sent` right before sending it)."""
        return seq_value(self.offset, len(self.sent_at))

    def mark_sent(self, now: float) -> None:
        self.sent_at.append(now)

    def arrived(self, value: int, now: float) -> float | None:
        """Account one arrival; returns its one-way latency in seconds (None for a frame never sent)."""
        seq = unwrap(value, self.offset, self.highest + 1)
        if seq < 0 or seq >= len(self.sent_at):
            self.duplicates += 1  # not a frame of this stream: counts against exactness
            return None
        if seq == self.highest + 1:
            self.highest = seq
        elif seq > self.highest:
            self.missing.update(range(self.highest + 1, seq))
            self.highest = seq
        elif seq in self.missing:
            self.missing.discard(seq)
            self.reordered += 1
        else:
            self.duplicates += 1
            return None
        self.received += 1
        return now - self.sent_at[seq]

    @property
    def lost(self) -> int:
        return len(self.sent_at) - self.received


@dataclass(eq=False)
class SessionRecord:
    """Everything measured about one benchmark session, written by both its client and its upstream end."""

    sid: int
    token: str
    mic: Stream = field(init=False)
    tts: Stream = field(init=False)
    ready_latency: float | None = None
    #: When the pending user turn was sent (None: no turn waiting for its first audio).
    turn_sent_at: float | None = None
    turns: int = 0
    responding: bool = False
    upstream_connected: bool = False
    errors: int = 0
    first_error: str = ""

    def __post_init__(self) -> None:
        offset = session_offset(self.sid)
        self.mic = Stream(offset)
        self.tts = Stream((offset + SEQ_MODULUS // 2 + 13) % SEQ_MODULUS)  # far from the mic values

    def settled(self) -> bool:
        """Nothing in flight: no turn waiting, no reply streaming, the last frame sent each way has arrived."""
        return (
            self.turn_sent_at is None
            and not self.responding
            and self.mic.highest == self.mic.sent - 1
            and self.tts.highest == self.tts.sent - 1
        )


@dataclass(eq=False)
class Phase:
    """One target measured with one workload: the sessions, and every sample and counter of the run."""

    run: int
    target: str
    route: str
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    #: Latency samples are kept only while measuring (after the warm-up).
    measuring: bool = False
    mic_latencies: list[float] = field(default_factory=list)
    tts_latencies: list[float] = field(default_factory=list)
    ready_latencies: list[float] = field(default_factory=list)
    first_audio_latencies: list[float] = field(default_factory=list)
    #: Every message the upstream received from the target / the clients received from the target.
    upstream_messages: int = 0
    client_messages: int = 0
    #: How late the generator's own open-loop sends were (a saturated generator invalidates the latencies).
    send_lag_max: float = 0.0
    late_sends: int = 0
    unmatched_upstream: int = 0
    #: Messages that could not be decoded (a target sending something malformed), at either end.
    malformed: int = 0

    def note_lag(self, lag: float) -> None:
        if lag > 0.005:
            self.late_sends += 1
        if lag > self.send_lag_max:
            self.send_lag_max = lag

    def mic_arrived(self, record: SessionRecord, value: int, now: float) -> None:
        latency = record.mic.arrived(value, now)
        if latency is not None and self.measuring:
            self.mic_latencies.append(latency)

    def tts_arrived(self, record: SessionRecord, value: int, now: float) -> None:
        latency = record.tts.arrived(value, now)
        if latency is not None and self.measuring:
            self.tts_latencies.append(latency)
        if record.turn_sent_at is not None:
            if self.measuring:
                self.first_audio_latencies.append(now - record.turn_sent_at)
            record.turn_sent_at = None
