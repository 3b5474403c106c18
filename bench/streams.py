"""Per-session bookkeeping shared by the sending and the receiving end (one process, one monotonic clock)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from . import speech
from .wire import MIC_FRAME_SAMPLES, TTS_CHUNK_SAMPLES, session_offset


class Stream:
    """One direction of one session: when each frame was sent, and what arrived.

    Audio content does not survive a translating proxy byte for byte (it is resampled and re-encoded), so frames
    are accounted by volume: frame ``k`` has arrived once the receiver holds at least ``k + 1/2`` frames' worth of
    bytes of this stream (``frame_bytes`` each, as the receiver sees them). Half a frame of slack lets a resampler
    keep its look-ahead without a frame counting as late; frame ``k`` can never be completed by output produced
    before frame ``k`` was sent. Where the bytes do survive (TTS audio, pass-through audio), ``expect`` holds the
    frames that were sent and every whole, aligned frame received is compared with the one due at its position:
    a frame delivered out of order, to the wrong session, or corrupted counts as *reordered*. A frame sent and
    never (fully) received is *lost*; bytes beyond every frame sent count as *duplicates*.
    """

    __slots__ = ("expect", "frame_bytes", "highest", "offset", "received_bytes", "reordered", "sent_at")

    def __init__(self, offset: int, frame_bytes: int, expect: Sequence[bytes] | None = None) -> None:
        self.offset = offset
        self.frame_bytes = frame_bytes
        self.expect = expect
        self.sent_at: list[float] = []
        self.highest = -1
        self.received_bytes = 0
        self.reordered = 0

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    @property
    def received(self) -> int:
        return self.highest + 1

    @property
    def duplicates(self) -> int:
        return max(0, self.received_bytes - self.sent * self.frame_bytes) // self.frame_bytes

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def next_index(self) -> int:
        """The index (into the table of frames its sender uses) of the next frame to send."""
        return self.offset + len(self.sent_at)

    def mark_sent(self, now: float) -> None:
        """Call right before sending the frame of :meth:`next_index`."""
        self.sent_at.append(now)

    def arrived(self, data: bytes, now: float) -> list[float]:
        """Account one message of this stream's audio; returns the one-way latency of each frame it completed."""
        size = self.frame_bytes
        expect = self.expect
        if expect is not None and len(data) == size and self.received_bytes % size == 0:
            seq = self.received_bytes // size
            if data != expect[(self.offset + seq) % len(expect)]:
                self.reordered += 1
        self.received_bytes += len(data)
        latencies: list[float] = []
        half = size // 2
        while self.highest + 1 < len(self.sent_at) and self.received_bytes >= (self.highest + 2) * size - half:
            self.highest += 1
            latencies.append(now - self.sent_at[self.highest])
        return latencies


@dataclass(eq=False)
class SessionRecord:
    """Everything measured about one benchmark session, written by both its client and its upstream end."""

    sid: int
    token: str
    #: The route decides what the upstream receives of a mic frame: 24 kHz audio (resampled by the proxy, or sent
    #: at 24 kHz by a Realtime client) on ``openai``, the component's own 16 kHz bytes on ``deepgram``.
    route: str = "openai"
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
        if self.route == "openai":
            self.mic = Stream(offset, MIC_FRAME_SAMPLES * 3)  # 24 kHz: 1.5 samples per 16 kHz sample, 2 bytes each
        else:
            self.mic = Stream(offset, MIC_FRAME_SAMPLES * 2, speech.mic_frames())
        self.tts = Stream(offset, TTS_CHUNK_SAMPLES * 2, speech.tts_chunks())

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

    def mic_arrived(self, record: SessionRecord, audio: bytes, now: float) -> None:
        latencies = record.mic.arrived(audio, now)
        if latencies and self.measuring:
            self.mic_latencies.extend(latencies)

    def tts_arrived(self, record: SessionRecord, audio: bytes, now: float) -> None:
        latencies = record.tts.arrived(audio, now)
        if latencies and self.measuring:
            self.tts_latencies.extend(latencies)
        if record.turn_sent_at is not None:
            if self.measuring:
                self.first_audio_latencies.append(now - record.turn_sent_at)
            record.turn_sent_at = None
