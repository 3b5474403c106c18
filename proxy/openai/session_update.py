"""Pure mappings between the component protocol and OpenAI Realtime GA events.

Everything here is a function of its arguments: the ``Settings`` -> ``session.update`` mapping, the tool-result
text of a ``FunctionCallResponse``, the upstream ``error`` -> component ``Error`` mapping, and the text extractors
the translator uses for assistant ``ConversationText``. JSON values arriving from the client are plain
``dict``/``list``/``str``/``int``/``float``/``bool``/``None``; the reference reads them with JavaScript semantics
(``??``, truthiness, ``typeof``), which is mirrored here and called out where it matters.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final, TypeGuard

import msgspec

from ..protocol import component, openai
from ..redact import SHAPES_ONLY

# ---------------------------------------------------------------------------------------------------------------
# JavaScript-compatible helpers

#: The characters ``String.prototype.trim`` removes (WhiteSpace and LineTerminator of ECMA-262), which differ from
#: ``str.strip()``'s set (Python also strips U+001C-U+001F and U+0085, JavaScript also strips U+FEFF).
JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_MAX_SAFE_INTEGER: Final = 2**53 - 1
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def js_trim(text: str) -> str:
    """``text.trim()`` as JavaScript does it."""
    return text.strip(JS_WHITESPACE)


def is_number(value: object) -> TypeGuard[int | float]:
    """``typeof value === "number"`` for decoded JSON (``bool`` is not a number)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite_number(value: object) -> TypeGuard[int | float]:
    return is_number(value) and math.isfinite(value)


def _js_number(value: float | int) -> str:
    """``JSON.stringify`` of a number: shortest round-trip digits, JavaScript's exponent thresholds."""
    if isinstance(value, int):
        if abs(value) <= 2**53:
            return str(value)
        value = float(value)
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    decimal = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, decimal.digits))
    exponent = decimal.exponent
    assert isinstance(exponent, int)
    while len(digits) > 1 and digits.endswith("0"):
        digits = digits[:-1]
        exponent += 1
    k = len(digits)
    n = k + exponent  # value = 0.digits * 10**n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        body = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def _js_string(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False)
    # JSON.stringify (ES2019) escapes lone surrogates instead of emitting unencodable text.
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _is_array_index(key: str) -> bool:
    return key.isascii() and key.isdigit() and (key == "0" or key[0] != "0") and int(key) < 2**32 - 1


def js_json(value: Any) -> str:
    """``JSON.stringify(value)`` for decoded JSON: compact separators, non-ASCII kept, JavaScript number format and
    JavaScript property order (integer-like keys first, ascending)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _js_string(value)
    if isinstance(value, int | float):
        return _js_number(value)
    if isinstance(value, Mapping):
        keys = [str(k) for k in value]
        indexed = sorted((k for k in keys if _is_array_index(k)), key=int)
        ordered = indexed + [k for k in keys if not _is_array_index(k)] if indexed else keys
        return "{" + ",".join(f"{_js_string(k)}:{js_json(value[k])}" for k in ordered) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(js_json(v) for v in value) + "]"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _get(obj: Any, key: str) -> Any:
    """``obj?.[key]`` for decoded JSON: only objects have properties (None when absent)."""
    return obj.get(key) if isinstance(obj, dict) else None


def _text_of(value: Any) -> str:
    """The text a client value contributes where the reference concatenates it into a string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return js_json(value)


# ---------------------------------------------------------------------------------------------------------------
# Settings -> session.update

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
    base = _text_of(_get(think, "prompt"))
    messages = _get(_get(agent, "context"), "messages")
    instructions = base
    if isinstance(messages, list) and messages:
        lines = []
        for message in messages:
            role = _get(message, "role")
            content = _get(message, "content")
            role = role if role in ("user", "assistant") else "user"
            lines.append(f"{role}: {js_trim(_text_of(content))}")
        block = CONTEXT_HEADER + "\n".join(lines)
        instructions = base + block if base else js_trim(block)
    functions = _get(think, "functions")
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
    parameters = _get(function, "parameters")
    tool["parameters"] = {} if parameters is None else parameters
    return tool


def max_output_tokens(value: Any) -> int | None:
    """A positive safe integer (``256.0`` counts, ``True`` does not)."""
    if not is_finite_number(value) or value != math.floor(value) or not 0 < value <= _MAX_SAFE_INTEGER:
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
    think = _get(agent, "think")
    model = _get(_get(think, "provider"), "model")
    manual = _get(agent, "useOpenAIManualAudioCommit") is True
    session: dict[str, Any] = {
        "type": "realtime",
        "model": DEFAULT_MODEL if model is None else model,
        "instructions": _instructions(think, agent),
        "audio": {
            "input": {
                "turn_detection": None if manual else server_vad(idle_timeout_ms(_get(agent, "idleTimeoutMs"))),
                "format": dict(INPUT_FORMAT),
                "transcription": dict(TRANSCRIPTION),
            }
        },
    }
    output = audio_output(_get(agent, "sessionAudioOutput"))
    if output is not None:
        session["audio"]["output"] = output
    functions = _get(think, "functions")
    if isinstance(functions, list) and functions:
        session["tools"] = [_tool(f) for f in functions]
    if isinstance(think, dict) and "toolChoice" in think:
        session["tool_choice"] = think["toolChoice"]  # passed through unvalidated, as the reference does
    modalities = _get(think, "outputModalities")
    if isinstance(modalities, list) and modalities:
        kept = [m for m in modalities if isinstance(m, str) and m in _MODALITIES]
        if kept:
            session["output_modalities"] = kept
    tokens = max_output_tokens(_get(think, "maxOutputTokens"))
    if tokens is not None:
        session["max_output_tokens"] = tokens
    prompt = managed_prompt(_get(think, "managedPrompt"))
    if prompt is not None:
        session["prompt"] = prompt
    return session


def session_update_event(settings: component.Settings) -> openai.SessionUpdate:
    """The ``session.update`` event for a Settings message."""
    return openai.SessionUpdate(session=build_session(settings))


def uses_server_vad(session: Mapping[str, Any]) -> bool:
    """True iff ``session.audio.input.turn_detection`` is an object of type ``server_vad``."""
    detection = _get(_get(session.get("audio"), "input"), "turn_detection")
    return isinstance(detection, dict) and detection.get("type") == "server_vad"


def has_context(settings: component.Settings) -> bool:
    messages = _get(_get(settings.agent, "context"), "messages")
    return isinstance(messages, list) and len(messages) > 0


def greeting(settings: component.Settings) -> str | None:
    """The greeting to show once the session is ready: a non-blank string, kept untrimmed."""
    value = _get(settings.agent, "greeting")
    return value if isinstance(value, str) and js_trim(value) else None


# ---------------------------------------------------------------------------------------------------------------
# Client messages -> upstream items


def inject_text(message: component.InjectUserMessage) -> str:
    """The text of an InjectUserMessage (a missing content is ``""``)."""
    return _text_of(message.content)


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


# ---------------------------------------------------------------------------------------------------------------
# Client-facing errors

ALLOWED_CLIENT_TYPES_DESCRIPTION: Final = "Settings, InjectUserMessage, FunctionCallResponse. KeepAlive is ignored."
DISALLOWED_CODE: Final = "disallowed_client_message_type"
UNPARSABLE_CLIENT_CODE: Final = "unparsable_client_message"
UNPARSABLE_CLIENT_DESCRIPTION: Final = (
    "Client text frame is not a JSON object. Text frames must carry component JSON messages; "
    "microphone audio must be sent in binary frames."
)
CLIENT_MESSAGE_FAILED_CODE: Final = "client_message_failed"
CLIENT_MESSAGE_FAILED_DESCRIPTION: Final = "The proxy could not process a client message; it was not forwarded."
UNMAPPED_UPSTREAM_CODE: Final = "unmapped_upstream_event"
UNMAPPED_UPSTREAM_DESCRIPTION: Final = "Proxy received upstream message that could not be parsed as JSON."
CLOSED_BEFORE_READY_CODE: Final = "upstream_closed_before_session_ready"
QUEUE_OVERFLOW_CODE: Final = "client_queue_overflow"
TOO_DEEP_CLIENT_CODE: Final = "client_message_too_deep"
UNKNOWN_ERROR_CODE: Final = "unknown"
UNKNOWN_ERROR_DESCRIPTION: Final = "Unknown error"
_CLOSE_REASON_LIMIT: Final = 120
#: Bounds on peer text echoed in an ``Error``: real types and codes are short words, real messages a few sentences.
MAX_ECHOED_TYPE_CHARS: Final = 200
MAX_UPSTREAM_CODE_CHARS: Final = 200
MAX_UPSTREAM_MESSAGE_CHARS: Final = 2000
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]+")


def allowed_client_types_description() -> str:
    return ALLOWED_CLIENT_TYPES_DESCRIPTION


def describe_client_type(value: Any) -> str:
    """How a client JSON ``type`` appears in the disallowed-type description (bounded: a client may send a
    megabyte of it, and every Error is redacted and encoded)."""
    if value is None:
        return "(missing type)"
    return bounded_text(value if isinstance(value, str) else js_json(value), MAX_ECHOED_TYPE_CHARS)


def bounded_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def disallowed_description(type_name: str) -> str:
    return (
        f'Disallowed client message type "{type_name}" for OpenAI proxy (Issue #533). '
        f"Allowed: {ALLOWED_CLIENT_TYPES_DESCRIPTION} "
        "Enable OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH=1 only for legacy debugging."
    )


def too_deep_client_description(max_depth: int) -> str:
    return f"Client message nests objects or arrays more than {max_depth} levels deep; it was not processed."


def redact(text: str) -> str:
    """Mask anything shaped like an API key or token (the shapes of :mod:`proxy.redact`; configured secrets are
    masked by the translator's redactor on the way out)."""
    return SHAPES_ONLY(text)


def sanitize_reason(reason: str | None, limit: int = _CLOSE_REASON_LIMIT) -> str:
    """A close reason fit for a client message: no control characters, no key-shaped text, bounded."""
    if not reason:
        return ""
    text = " ".join(redact(_CONTROL_CHARS.sub(" ", reason)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def closed_before_ready_description(code: int | None, reason: str | None) -> str:
    shown = 1006 if code is None else code
    cleaned = sanitize_reason(reason)
    suffix = f", reason: {cleaned}" if cleaned else ""
    return f"Upstream closed before session ready (code {shown}{suffix}). Session may not have been applied."


def error_from_upstream(detail: openai.ErrorDetail | None) -> component.Error:
    """Upstream ``error`` -> component ``Error``: a null, missing, empty or non-string code is ``unknown``; the
    message text is never used to guess a code."""
    code = detail.code if detail is not None else None
    message = detail.message if detail is not None else None
    return component.Error(
        description=(
            redact(bounded_text(message, MAX_UPSTREAM_MESSAGE_CHARS))
            if isinstance(message, str) and message
            else UNKNOWN_ERROR_DESCRIPTION
        ),
        code=bounded_text(code, MAX_UPSTREAM_CODE_CHARS) if isinstance(code, str) and code else UNKNOWN_ERROR_CODE,
    )


# ---------------------------------------------------------------------------------------------------------------
# Upstream events -> component messages


def _first_text(part: Mapping[str, Any]) -> str | None:
    for value in (
        part.get("text"),
        part.get("transcript"),
        _get(part.get("output_text"), "text"),
        _get(part.get("input_text"), "text"),
        part.get("content"),
    ):
        if isinstance(value, str) and js_trim(value):
            return js_trim(value)
    return None


def part_text(part: Any) -> str | None:
    """The text of one content part: a function-call summary, else the first non-blank textual field."""
    if not isinstance(part, dict):
        return None
    if part.get("type") == "function_call":
        name = part.get("name")
        name = name if isinstance(name, str) and name else "function"
        arguments = part.get("arguments")
        arguments = js_trim(arguments) if isinstance(arguments, str) else ""
        return f"Function call: {name}({arguments})"
    return _first_text(part)


def _parts(content: Any) -> Iterable[Any]:
    if isinstance(content, list):
        return content
    return () if content is None else (content,)


def _join_parts(content: Any) -> str | None:
    texts = [t for t in map(part_text, _parts(content)) if t is not None]
    return "\n".join(texts) if texts else None


def assistant_item_text(item: openai.Item | None) -> str | None:
    """Assistant ConversationText content for a ``conversation.item.*`` item (None for other roles or no text)."""
    if item is None or item.role != "assistant":
        return None
    return _join_parts(item.content)


def output_text_done_text(event: openai.ResponseOutputTextDone, accumulated: str = "") -> str | None:
    """``output_text.done`` text: its ``text``, else ``part.text``, else the accumulated deltas (all trimmed)."""
    for value in (event.text, _get(event.part, "text"), accumulated):
        if isinstance(value, str) and js_trim(value):
            return js_trim(value)
    return None


def response_done_text(event: openai.ResponseDone, accumulated: str = "") -> str | None:
    """``response.done`` text: the accumulated deltas, else the assistant parts of ``response.output``."""
    if js_trim(accumulated):
        return js_trim(accumulated)
    output = _get(event.response, "output")
    if not isinstance(output, list):
        return None
    texts = [
        text
        for item in output
        if _get(item, "role") == "assistant"
        for text in map(part_text, _parts(_get(item, "content")))
        if text is not None
    ]
    return "\n".join(texts) if texts else None


def output_text_delta(value: Any) -> str:
    """The text a ``response.output_text.delta`` contributes (a string, or an object's ``text``/``delta``)."""
    if isinstance(value, str):
        return value
    for key in ("text", "delta"):
        inner = _get(value, key)
        if isinstance(inner, str) and inner:
            return inner
    return ""


def function_call_request(event: openai.ResponseFunctionCallArgumentsDone) -> component.FunctionCallRequest:
    """One FunctionCallRequest per ``function_call_arguments.done`` (defaults: id ``""``, name ``function``)."""
    return component.FunctionCallRequest(
        functions=[
            component.FunctionCall(
                id=event.call_id if isinstance(event.call_id, str) else "",
                name=event.name if isinstance(event.name, str) and event.name else "function",
                arguments=event.arguments if isinstance(event.arguments, str) else "",
                client_side=True,
            )
        ]
    )


def function_call_summary(name: Any, arguments: Any) -> str:
    """``Function call: name(args)`` as the item mapper renders a function-call part."""
    text = part_text({"type": "function_call", "name": name, "arguments": arguments})
    assert text is not None
    return text


def transcript_done_text(event: openai.ResponseOutputAudioTranscriptDone) -> str:
    """The untrimmed transcript of ``output_audio_transcript.done`` (``""`` when missing)."""
    return event.transcript if isinstance(event.transcript, str) else ""


def utterance_end(event: openai.InputAudioBufferSpeechStopped) -> component.UtteranceEnd:
    """``speech_stopped`` -> UtteranceEnd. ``last_word_end`` (seconds) is the upstream's own field when it is a
    number, else the GA ``audio_end_ms`` / 1000, else 0."""
    channel = event.channel if isinstance(event.channel, list) and event.channel else [0, 1]
    if is_number(event.last_word_end):
        last_word_end = event.last_word_end
    elif is_number(event.audio_end_ms):
        last_word_end = event.audio_end_ms / 1000
    else:
        last_word_end = 0
    return component.UtteranceEnd(channel=channel, last_word_end=last_word_end)


def _channels(
    event: openai.InputAudioTranscriptionCompleted | openai.InputAudioTranscriptionDelta,
) -> tuple[Any, list[Any]]:
    if isinstance(event.channel_index, list) and event.channel_index:
        channel_index = event.channel_index
    else:
        channel_index = [event.channel] if is_number(event.channel) else [0]
    channel = event.channel if is_number(event.channel) else channel_index[0]
    return channel, channel_index


def _timing(event: openai.InputAudioTranscriptionCompleted | openai.InputAudioTranscriptionDelta) -> tuple[Any, Any]:
    start = event.start if is_finite_number(event.start) else 0
    duration: Any = event.duration if is_finite_number(event.duration) else 0
    usage = getattr(event, "usage", None)
    if not is_finite_number(event.duration) and _get(usage, "type") == "duration":
        seconds = _get(usage, "seconds")
        if is_finite_number(seconds):
            duration = seconds
    return start, duration


def transcript_message(
    event: openai.InputAudioTranscriptionCompleted | openai.InputAudioTranscriptionDelta, text: str, final: bool
) -> component.Transcript:
    """A component Transcript (interim for deltas, final for completed)."""
    channel, channel_index = _channels(event)
    start, duration = _timing(event)
    alternatives = [component.TranscriptAlternative(transcript=text, confidence=1, words=[])]
    upstream_alternatives = getattr(event, "alternatives", None) if final else None
    if isinstance(upstream_alternatives, list) and upstream_alternatives:
        alternatives = []
        for alt in upstream_alternatives:
            own = _get(alt, "transcript")
            confidence = _get(alt, "confidence")
            words = _get(alt, "words")
            alternatives.append(
                component.TranscriptAlternative(
                    transcript=own if isinstance(own, str) else text,
                    confidence=confidence if is_number(confidence) else 1,
                    words=words if isinstance(words, list) else [],
                )
            )
    return component.Transcript(
        transcript=text,
        is_final=final,
        speech_final=final,
        channel=channel,
        channel_index=channel_index,
        start=start,
        duration=duration,
        alternatives=alternatives,
    )
