"""The client's ``Settings`` -> the ``session.update`` event, and client messages -> upstream conversation items.

Pure functions of their arguments. Client JSON is read with JavaScript semantics (``??``, truthiness, ``typeof``)
through :mod:`.javascript`, as the reference does; where it matters this is called out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ..protocol import component, openai
from .javascript import MAX_SAFE_INTEGER, is_finite_number, is_number, js_json, js_trim, property_of, text_of

DEFAULT_MODEL: Final = "gpt-realtime"
TOOL_RESULTS_SENTENCE: Final = "When you receive results from tool calls, use them in your reply to the user."
CONTEXT_HEADER: Final = "\n\nPrevious conversation:\n"
IDLE_TIMEOUT_MIN_MS: Final = 5_000
IDLE_TIMEOUT_MAX_MS: Final = 30_000
INPUT_FORMAT: Final = {"type": "audio/pcm", "rate": 24_000}
TRANSCRIPTION: Final = {"model": "gpt-4o-transcribe", "language": "en", "prompt": ""}
_OUTPUT_FORMAT_TYPES: Final = frozenset({"audio/pcm", "audio/pcmu", "audio/pcma"})
_MODALITIES: Final = frozenset({"text", "audio"})


def server_vad(idle_timeout_ms: int | None) -> dict[str, Any]:
    """The product default turn detection block, in the reference's key order."""
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 200,
        "idle_timeout_ms": idle_timeout_ms,
        "create_response": True,
        "interrupt_response": True,
    }


def idle_timeout_ms(value: Any) -> int | None:
    """``agent.idleTimeoutMs`` -> server-VAD ``idle_timeout_ms``: finite and >= 0, rounded half up, clamped."""
    if not is_finite_number(value) or value < 0:
        return None
    return min(max(math.floor(value + 0.5), IDLE_TIMEOUT_MIN_MS), IDLE_TIMEOUT_MAX_MS)


def _instructions(think: Any, agent: Any) -> str:
    base = text_of(property_of(think, "prompt"))
    messages = property_of(property_of(agent, "context"), "messages")
    instructions = base
    if isinstance(messages, list) and messages:
        lines = []
        for message in messages:
            role = property_of(message, "role")
            content = property_of(message, "content")
            role = role if role in ("user", "assistant") else "user"
            lines.append(f"{role}: {js_trim(text_of(content))}")
        block = CONTEXT_HEADER + "\n".join(lines)
        instructions = base + block if base else js_trim(block)
    functions = property_of(think, "functions")
    if isinstance(functions, list) and functions:
        instructions = instructions + "\n\n" + TOOL_RESULTS_SENTENCE if instructions else TOOL_RESULTS_SENTENCE
    return instructions


def audio_output(value: Any) -> dict[str, Any] | None:
    """``agent.sessionAudioOutput`` normalised to ``session.audio.output`` (None when nothing valid remains)."""
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    fmt = value.get("format")
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
    if isinstance(fmt_type, str) and js_trim(fmt_type) in _OUTPUT_FORMAT_TYPES:
        fmt_type = js_trim(fmt_type)
        out["format"] = {"type": fmt_type}
        rate = fmt.get("rate")  # type: ignore[union-attr]
        if fmt_type == "audio/pcm" and is_number(rate) and rate == 24_000:
            out["format"]["rate"] = 24_000
    speed = value.get("speed")
    if is_finite_number(speed) and 0.25 <= speed <= 1.5:
        out["speed"] = speed
    voice = value.get("voice")
    if isinstance(voice, str) and js_trim(voice):
        out["voice"] = js_trim(voice)
    elif isinstance(voice, dict) and isinstance(voice.get("id"), str) and js_trim(voice["id"]):
        out["voice"] = {"id": js_trim(voice["id"])}
    return out or None


def _tool(function: Any) -> dict[str, Any]:
    tool: dict[str, Any] = {"type": "function"}
    # JSON.stringify drops undefined: a missing name or description is omitted, a null one is kept.
    if isinstance(function, dict) and "name" in function:
        tool["name"] = function["name"]
    if isinstance(function, dict) and "description" in function:
        tool["description"] = function["description"]
    parameters = property_of(function, "parameters")
    tool["parameters"] = {} if parameters is None else parameters
    return tool


def max_output_tokens(value: Any) -> int | None:
    """A positive safe integer (``256.0`` counts, ``True`` does not)."""
    if not is_finite_number(value) or value != math.floor(value) or not 0 < value <= MAX_SAFE_INTEGER:
        return None
    return int(value)


def managed_prompt(value: Any) -> dict[str, Any] | None:
    """``agent.think.managedPrompt`` -> ``session.prompt``: needs a non-blank string id."""
    if not isinstance(value, dict):
        return None
    prompt_id = value.get("id")
    if not isinstance(prompt_id, str) or not js_trim(prompt_id):
        return None
    prompt: dict[str, Any] = {"id": js_trim(prompt_id)}
    version = value.get("version")
    if isinstance(version, str) and js_trim(version):
        prompt["version"] = js_trim(version)
    variables = value.get("variables")
    if isinstance(variables, dict):
        prompt["variables"] = variables
    return prompt


def build_session(settings: component.Settings) -> dict[str, Any]:
    """The ``session`` object of the ``session.update`` for a Settings message, keys in the reference's order."""
    agent = settings.agent
    think = property_of(agent, "think")
    model = property_of(property_of(think, "provider"), "model")
    manual = property_of(agent, "useOpenAIManualAudioCommit") is True
    session: dict[str, Any] = {
        "type": "realtime",
        "model": DEFAULT_MODEL if model is None else model,
        "instructions": _instructions(think, agent),
        "audio": {
            "input": {
                "turn_detection": None if manual else server_vad(idle_timeout_ms(property_of(agent, "idleTimeoutMs"))),
                "format": dict(INPUT_FORMAT),
                "transcription": dict(TRANSCRIPTION),
            }
        },
    }
    output = audio_output(property_of(agent, "sessionAudioOutput"))
    if output is not None:
        session["audio"]["output"] = output
    functions = property_of(think, "functions")
    if isinstance(functions, list) and functions:
        session["tools"] = [_tool(f) for f in functions]
    if isinstance(think, dict) and "toolChoice" in think:
        session["tool_choice"] = think["toolChoice"]  # passed through unvalidated, as the reference does
    modalities = property_of(think, "outputModalities")
    if isinstance(modalities, list) and modalities:
        kept = [m for m in modalities if isinstance(m, str) and m in _MODALITIES]
        if kept:
            session["output_modalities"] = kept
    tokens = max_output_tokens(property_of(think, "maxOutputTokens"))
    if tokens is not None:
        session["max_output_tokens"] = tokens
    prompt = managed_prompt(property_of(think, "managedPrompt"))
    if prompt is not None:
        session["prompt"] = prompt
    return session


def session_update_event(settings: component.Settings) -> openai.SessionUpdate:
    """The ``session.update`` event for a Settings message."""
    return openai.SessionUpdate(session=build_session(settings))


def uses_server_vad(session: Mapping[str, Any]) -> bool:
    """True iff ``session.audio.input.turn_detection`` is an object of type ``server_vad``."""
    detection = property_of(property_of(session.get("audio"), "input"), "turn_detection")
    return isinstance(detection, dict) and detection.get("type") == "server_vad"


def has_context(settings: component.Settings) -> bool:
    messages = property_of(property_of(settings.agent, "context"), "messages")
    return isinstance(messages, list) and len(messages) > 0


def greeting(settings: component.Settings) -> str | None:
    """The greeting to show once the session is ready: a non-blank string, kept untrimmed."""
    value = property_of(settings.agent, "greeting")
    return value if isinstance(value, str) and js_trim(value) else None


def inject_text(message: component.InjectUserMessage) -> str:
    """The text of an InjectUserMessage (a missing content is ``""``)."""
    return text_of(message.content)


def user_message_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {} if item_id is None else {"id": item_id}
    item.update(type="message", role="user", content=[{"type": "input_text", "text": text}])
    return item


def function_call_output_text(message: component.FunctionCallResponse) -> str:
    """The tool result sent upstream: ``content`` if a non-empty string, else ``{"error":...}``, else ``result``
    (as is when a string, else its JSON), else ``""``. JSON is ``JSON.stringify``-compatible."""
    if isinstance(message.content, str) and message.content:
        return message.content
    if message.error is not None:
        return js_json({"error": message.error})
    if message.result is not None:
        return message.result if isinstance(message.result, str) else js_json(message.result)
    return ""


def function_call_output_item(message: component.FunctionCallResponse) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "function_call_output"}
    if message.id is not msgspec.UNSET:  # a missing id drops the key, as JSON.stringify drops undefined
        item["call_id"] = message.id
    item["output"] = function_call_output_text(message)
    return item
