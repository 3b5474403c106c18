"""Random interleavings of client and upstream events; the reference §8.1 invariants hold after every step."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from proxy.openai.state import illegal_combinations
from tests.openai.harness import MANUAL, SESSION_UPDATED, VAD, Harness, Step, kinds

COMPONENT_TYPES = {
    "SettingsApplied",
    "ConversationText",
    "AgentStartedSpeaking",
    "AgentDone",
    "AgentAudioDone",
    "AgentThinking",
    "FunctionCallRequest",
    "UserStartedSpeaking",
    "UtteranceEnd",
    "Transcript",
    "Error",
}
RESPONSE_ENDS = {"response.output_text.done", "response.done"}


class TranslatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness()
        self.session_ready = False
        self.session_updates = 0
        self.settings_applied = 0
        self.expected_settings_applied = 0
        self.end_since_last_create = True
        self.client_closed = False
        self.violations: list[str] = []

    # -- bookkeeping ----------------------------------------------------------------------------------------------

    def check(self, step: Step, *, client_settings: bool = False, upstream: dict[str, Any] | None = None) -> None:
        up = step.upstream_kinds
        down = step.client_kinds
        event_type = upstream.get("type") if upstream else None
        if self.client_closed:
            assert step.client == [], "nothing reaches a closed client"
            assert step.upstream == [], "nothing goes upstream after the client closed"
            return
        # At most one session.update, only ever from a Settings.
        self.session_updates += up.count("session.update")
        assert self.session_updates <= 1
        # No audio, inject or tool output upstream before session.updated.
        if event_type == "session.updated":
            self.session_ready = True
        if not self.session_ready:
            assert "input_audio_buffer.append" not in up
            assert "conversation.item.create" not in up
        # SettingsApplied: once per session.updated, once per Settings that was not forwarded, never otherwise.
        applied = down.count("SettingsApplied")
        if client_settings:
            assert applied == (0 if "session.update" in up else 1)
        elif event_type == "session.updated":
            assert applied == 1
        else:
            assert applied == 0
        # Never two response.create without a response end in between; a commit is always followed by one.
        if event_type in RESPONSE_ENDS:
            self.end_since_last_create = True
        for i, name in enumerate(up):
            if name == "response.create":
                assert self.end_since_last_create, f"second response.create without a response end: {up}"
                self.end_since_last_create = False
            if name == "input_audio_buffer.commit":
                assert up[i + 1 : i + 2] == ["response.create"]
        # Binary to the client only from audio deltas, byte for byte.
        binary = [f for f in step.client if isinstance(f, bytes)]
        if event_type == "response.output_audio.delta" and upstream and upstream["delta"]:
            assert binary == [base64.b64decode(upstream["delta"])]
        else:
            assert binary == []
        # Only component messages, AgentDone always paired with AgentAudioDone.
        assert set(down) <= COMPONENT_TYPES | {"<binary>"}
        for i, name in enumerate(down):
            if name == "AgentDone":
                assert down[i + 1 : i + 2] == ["AgentAudioDone"]
        for frame in step.upstream:
            assert isinstance(frame, str)
            json.loads(frame)

    def client(self, message: dict[str, Any] | str | bytes, *, settings_: bool = False) -> None:
        if self.client_closed:
            return  # the shell stops feeding client frames once the client is gone
        self.check(self.h.send(message), client_settings=settings_)

    def upstream(self, event: dict[str, Any] | str) -> None:
        parsed = event if isinstance(event, dict) else None
        if isinstance(event, str):
            try:
                decoded = json.loads(event)
            except ValueError:
                decoded = None
            parsed = decoded if isinstance(decoded, dict) else None
        self.check(self.h.up(event), upstream=parsed)

    @initialize(start=st.sampled_from(["fresh", "manual", "vad", "vad"]))
    def start(self, start: str) -> None:
        """Most runs start from a ready session, so that deep response interleavings are reached often."""
        if start != "fresh":
            self.client(json.loads(json.dumps(MANUAL if start == "manual" else VAD)), settings_=True)
            self.upstream(SESSION_UPDATED)

    # -- client rules ---------------------------------------------------------------------------------------------

    @rule(manual=st.booleans(), greeting=st.booleans())
    def client_settings(self, manual: bool, greeting: bool) -> None:
        settings_ = json.loads(json.dumps(MANUAL if manual else VAD))
        if greeting:
            settings_["agent"]["greeting"] = "Hello!"
        self.client(settings_, settings_=True)

    @rule(text=st.sampled_from(["hi", "", "ça va?"]))
    def client_inject(self, text: str) -> None:
        self.client({"type": "InjectUserMessage", "content": text})

    @rule(call=st.sampled_from(["call_1", "call_2"]), shape=st.sampled_from(["content", "result", "error"]))
    def client_function_call_response(self, call: str, shape: str) -> None:
        value: Any = {"t": 1} if shape == "result" else "x"
        self.client({"type": "FunctionCallResponse", "id": call, shape: value})

    @rule()
    def client_keepalive(self) -> None:
        self.client({"type": "KeepAlive"})

    @rule(size=st.sampled_from([0, 1, 3, 500, 4000, 8000, 40000]))
    def client_audio(self, size: int) -> None:
        self.client(bytes(range(256)) * (size // 256) + bytes(size % 256))

    @rule(frame=st.sampled_from(['{"type":"Custom"}', "[]", "{}", "not json", "null", '{"type":5}']))
    def client_other_text(self, frame: str) -> None:
        self.client(frame)

    @precondition(lambda self: not self.client_closed)
    @rule()
    def client_close(self) -> None:
        self.h.close_client()
        self.client_closed = True

    # -- upstream rules -------------------------------------------------------------------------------------------

    @rule()
    def session_updated(self) -> None:
        self.upstream(SESSION_UPDATED)

    @rule(
        kind=st.sampled_from(["created", "added", "done"]),
        id_choice=st.sampled_from(["echo_last", "echo_first", "item_mock_1", "none", "other"]),
        shape=st.sampled_from(
            ["user_text", "user_text", "user_text", "user_audio", "assistant", "function_call_output"]
        ),
    )
    def item(self, kind: str, id_choice: str, shape: str) -> None:
        ids = self.h.sent_item_ids()
        shapes: dict[str, dict[str, Any]] = {
            "user_text": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            "user_audio": {"type": "message", "role": "user", "content": [{"type": "input_audio"}]},
            "assistant": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Yo"}]},
            "function_call_output": {"type": "function_call_output", "call_id": "call_1", "output": "x"},
        }
        item = shapes[shape]
        if id_choice == "echo_last" and ids:
            item["id"] = ids[-1]
        elif id_choice == "echo_first" and ids:
            item["id"] = ids[0]
        elif id_choice in ("item_mock_1", "other"):
            item["id"] = id_choice
        self.upstream({"type": f"conversation.item.{kind}", "item": item})

    @rule()
    def response_created(self) -> None:
        self.upstream({"type": "response.created", "response": {"id": "resp"}})

    @rule(data=st.sampled_from([b"", b"\x01\x00", b"\x00\x00" * 160]))
    def audio_delta(self, data: bytes) -> None:
        self.upstream({"type": "response.output_audio.delta", "delta": base64.b64encode(data).decode()})

    @rule()
    def audio_done(self) -> None:
        self.upstream({"type": "response.output_audio.done"})

    @rule(text=st.sampled_from(["Hello from mock", "", "Other"]))
    def text_done(self, text: str) -> None:
        self.upstream({"type": "response.output_text.done", "text": text})

    @rule(with_text=st.booleans())
    def response_done(self, with_text: bool) -> None:
        output = (
            [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done"}]}]
            if with_text
            else []
        )
        self.upstream({"type": "response.done", "response": {"status": "completed", "output": output}})

    @rule()
    def function_call_arguments_done(self) -> None:
        self.upstream({"type": "response.function_call_arguments.done", "call_id": "call_1", "name": "f"})

    @rule(code=st.sampled_from(["idle_timeout", "server_error", None, "conversation_already_has_active_response"]))
    def error(self, code: str | None) -> None:
        self.upstream({"type": "error", "error": {"code": code, "message": "m"}})

    @rule(frame=st.sampled_from(["garbage", '{"type":"unheard.of"}', '{"type":"response.done","response":5}']))
    def upstream_garbage(self, frame: str) -> None:
        self.upstream(frame)

    @rule(speech=st.sampled_from(["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"]))
    def speech(self, speech: str) -> None:
        self.upstream({"type": speech})

    # -- time -----------------------------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.05, 0.25, 0.4, 0.6, 1.0, 5.0, 21.0]))
    def advance(self, seconds: float) -> None:
        target = self.h.now + seconds
        while (deadline := self.h.core.next_deadline()) is not None and deadline <= target:
            assert deadline >= self.h.now - 1e-9, "a deadline in the past"
            self.h.now = deadline
            self.check(self.h.fire())
        self.h.now = target

    @invariant()
    def deadlines_are_never_stale(self) -> None:
        deadline = self.h.core.next_deadline()
        assert deadline is None or deadline > self.h.now - 1e-9 or self.client_closed

    @invariant()
    def the_machines_are_in_a_legal_combination(self) -> None:
        assert illegal_combinations(self.h.core.snapshot()) == []

    @invariant()
    def client_frames_are_text_json_or_tts_bytes(self) -> None:
        assert all(k in COMPONENT_TYPES | {"<binary>"} for k in kinds(self.h.client[-8:]))


TranslatorMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_translator_invariants_hold_under_random_interleavings = TranslatorMachine.TestCase
