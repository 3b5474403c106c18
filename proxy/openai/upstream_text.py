"""Upstream events -> component messages: the text of assistant items and responses, transcripts, utterance ends
and function-call requests. Pure functions; the translator decides when each is sent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..protocol import component, openai
from .javascript import is_finite_number, is_number, js_trim, property_of


def _first_text(part: Mapping[str, Any]) -> str | None:
    for value in (
        part.get("text"),
        part.get("transcript"),
        property_of(part.get("output_text"), "text"),
        property_of(part.get("input_text"), "text"),
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
    for value in (event.text, property_of(event.part, "text"), accumulated):
        if isinstance(value, str) and js_trim(value):
            return js_trim(value)
    return None


def response_done_text(event: openai.ResponseDone, accumulated: str = "") -> str | None:
    """``response.done`` text: the accumulated deltas, else the assistant parts of ``response.output``."""
    if js_trim(accumulated):
        return js_trim(accumulated)
    output = property_of(event.response, "output")
    if not isinstance(output, list):
        return None
    texts = [
        text
        for item in output
        if property_of(item, "role") == "assistant"
        for text in map(part_text, _parts(property_of(item, "content")))
        if text is not None
    ]
    return "\n".join(texts) if texts else None


def output_text_delta(value: Any) -> str:
    """The text a ``response.output_text.delta`` contributes (a string, or an object's ``text``/``delta``)."""
    if isinstance(value, str):
        return value
    for key in ("text", "delta"):
        inner = property_of(value, key)
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
    if not is_finite_number(event.duration) and property_of(usage, "type") == "duration":
        seconds = property_of(usage, "seconds")
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
            own = property_of(alt, "transcript")
            confidence = property_of(alt, "confidence")
            words = property_of(alt, "words")
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
