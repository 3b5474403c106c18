"""A driver for the sans-IO translator: feed it JSON and bytes, read back what went to each peer."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.audio import ResamplerKind
from proxy.core import Close, Frame
from proxy.openai.translator import Translator, TranslatorOptions
from proxy.redact import SHAPES_ONLY, Redactor

MANUAL: dict[str, Any] = {"type": "Settings", "agent": {"useOpenAIManualAudioCommit": True, "think": {"prompt": "Hi"}}}
VAD: dict[str, Any] = {"type": "Settings", "agent": {"think": {"prompt": "Hi"}, "idleTimeoutMs": 10000}}
SESSION_UPDATED: dict[str, Any] = {"type": "session.updated", "session": {"type": "realtime"}}


def kind(frame: Frame) -> str:
    """The ``type`` of a JSON text frame, or ``<binary>``."""
    if isinstance(frame, bytes):
        return "<binary>"
    return str(json.loads(frame)["type"])


def kinds(frames: list[Frame]) -> list[str]:
    return [kind(f) for f in frames]


def parsed(frames: list[Frame]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in frames if isinstance(f, str)]


def of_kind(frames: list[Frame], name: str) -> list[dict[str, Any]]:
    return [json.loads(f) for f in frames if isinstance(f, str) and json.loads(f)["type"] == name]


def audio_delta(data: bytes) -> dict[str, Any]:
    return {"type": "response.output_audio.delta", "delta": base64.b64encode(data).decode()}


def text_done(text: str = "Hello from mock") -> dict[str, Any]:
    return {"type": "response.output_text.done", "response_id": "resp_1", "item_id": "item_1", "text": text}


def item_event(
    kind_: str = "added",
    *,
    item_id: str | None = "item_mock_1",
    role: str | None = "user",
    type_: str = "message",
    content: Any = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"type": type_, "status": "completed"}
    if item_id is not None:
        item["id"] = item_id
    if role is not None:
        item["role"] = role
    if content is None and type_ == "message":
        content = [{"type": "input_text", "text": "hi"}] if role == "user" else []
    if content is not None:
        item["content"] = content
    return {"type": f"conversation.item.{kind_}", "item": item}


def assistant_item(text: str, kind_: str = "done", item_id: str = "item_mock_response_1") -> dict[str, Any]:
    return item_event(kind_, item_id=item_id, role="assistant", content=[{"type": "output_text", "text": text}])


@dataclass
class Step:
    """What one call produced."""

    client: list[Frame] = field(default_factory=list)
    upstream: list[Frame] = field(default_factory=list)

    @property
    def client_kinds(self) -> list[str]:
        return kinds(self.client)

    @property
    def upstream_kinds(self) -> list[str]:
        return kinds(self.upstream)


class Harness:
    """One translator, its virtual clock, and everything it has sent so far.

    The translator resamples with the reference's linear interpolator unless ``resampler`` says otherwise, so the
    reference-parity assertions on audio bytes and sizes hold exactly.
    """

    def __init__(
        self,
        options: TranslatorOptions | None = None,
        *,
        opened: bool = True,
        redactor: Redactor = SHAPES_ONLY,
        resampler: ResamplerKind = "linear",
    ) -> None:
        options = replace(options if options is not None else TranslatorOptions(), resampler=resampler)
        self.core = Translator(options, redactor=redactor)
        self.now = 0.0
        self.client: list[Frame] = []
        self.upstream: list[Frame] = []
        self.log: list[tuple[str, Step]] = []
        if opened:
            self.open()

    def _take(self, label: str) -> Step:
        step = Step(self.core.to_client, self.core.to_upstream)
        self.core.to_client, self.core.to_upstream = [], []
        self.client += step.client
        self.upstream += step.upstream
        self.log.append((label, step))
        return step

    def open(self) -> Step:
        self.core.upstream_opened(self.now)
        return self._take("open")

    def send(self, message: dict[str, Any] | str | bytes) -> Step:
        frame: Frame = json.dumps(message) if isinstance(message, dict | list) else message
        self.core.client_message(frame, self.now)
        return self._take("client")

    def up(self, event: dict[str, Any] | str | bytes) -> Step:
        frame: Frame = json.dumps(event) if isinstance(event, dict) else event
        self.core.upstream_message(frame, self.now)
        return self._take("upstream")

    def advance(self, seconds: float) -> Step:
        return self.advance_to(self.now + seconds)

    def advance_to(self, when: float) -> Step:
        """Move the clock to ``when``, firing each deadline at its exact time on the way."""
        total = Step()
        while (deadline := self.core.next_deadline()) is not None and deadline <= when:
            self.now = deadline
            self.core.timer_fired(deadline)
            step = self._take(f"timer@{deadline:.3f}")
            total.client += step.client
            total.upstream += step.upstream
        self.now = when
        return total

    def close_client(self, code: int | None = 1000, reason: str | None = "") -> tuple[Close, Step]:
        close = self.core.client_closed(code, reason, self.now)
        return close, self._take("client_closed")

    def close_upstream(self, code: int | None = 1000, reason: str | None = "") -> tuple[Close, Step]:
        close = self.core.upstream_closed(code, reason, self.now)
        return close, self._take("upstream_closed")

    def fire(self) -> Step:
        """Call ``timer_fired`` once at the current time (however many deadlines are due)."""
        self.core.timer_fired(self.now)
        return self._take(f"timer@{self.now:.3f}")

    def ready(self, settings: dict[str, Any] | None = None) -> Step:
        """Settings, then the upstream's session.updated."""
        self.send(settings if settings is not None else MANUAL)
        return self.up(SESSION_UPDATED)

    def upstream_kinds(self) -> list[str]:
        return kinds(self.upstream)

    def client_kinds(self) -> list[str]:
        return kinds(self.client)

    def sent_item_ids(self) -> list[str]:
        return [e["item"]["id"] for e in of_kind(self.upstream, "conversation.item.create") if "id" in e["item"]]
