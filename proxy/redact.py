"""The one redaction step: secrets out of everything a client receives that we did not write, and out of every log.

A :class:`Redactor` is built once from the configured secrets (API keys, client tokens; any iterable of strings,
so more kinds can be added in :func:`config_secrets`) and masks

* each secret's exact value and any slice of it 8 characters or longer (a key cut by a truncation, or quoted in
  part, still gives nothing useful away);
* bearer-token-shaped text whatever its value: ``sk-…``/``rk-…``/``pk-…`` keys, the value after ``Bearer`` or
  ``Token``, and JWT-shaped ``eyJ…`` strings.

It is cheap enough for the pass-through's hot path. The pre-check costs the same whatever the number of secrets:
an 8-byte run shared with a secret covers one whole 4-byte window of the text at an offset divisible by 4, so the
text's UTF-8 is read as 4-byte integers (in C) and compared, as a set, with every 4-byte window of every secret.
Only a hit leads to the exact search (substring searches for each secret's 4-character pieces at offsets 0, 4, 8, …,
one of which any 8-character slice contains, then a character-by-character extension). The shapes have their own
substring pre-check.

Logs: :func:`install_log_redaction` makes the redactor a true choke point for the process's log records: a log
record factory redacts every record as it is created (message with its arguments, exception and stack text), so
every handler sees redacted records, pytest's capture included; :class:`RedactingFilter`, which
``setup_logging`` puts on its handlers, catches records made some other way (``logging.makeLogRecord``).

Text is matched as it is on the wire: a secret hidden by JSON ``\\u`` escapes or URL encoding is not recognised.
"""

from __future__ import annotations

import logging
import re
import struct
import sys
import traceback
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .config import Config

#: What a masked secret is replaced with.
MASK: Final = "[redacted]"
#: Slices of a secret this long or longer are masked wherever they appear.
MIN_SLICE_CHARS: Final = 8
#: The length of an aligned piece: any MIN_SLICE_CHARS slice of a secret contains one whole aligned piece.
_PIECE_CHARS: Final = MIN_SLICE_CHARS // 2
#: Secrets shorter than this are not matched at all (masking every "abc" would wreck every message); the
#: configuration refuses such tokens anyway.
MIN_SECRET_CHARS: Final = 4

# Key-, bearer- and JWT-shaped text: masked whatever its value. The bearer value must be long enough not to eat
# ordinary prose ("token limit exceeded").
_SHAPES: Final = re.compile(
    r"\b(?P<prefix>sk|rk|pk)-[A-Za-z0-9_\-*]{4,}"
    r"|\b(?P<scheme>[Bb]earer|BEARER|[Tt]oken|TOKEN)(?P<gap>\s+|=|:\s*)[A-Za-z0-9._~+/\-]{16,}=*"
    r"|\beyJ[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]*){0,2}"
)
#: Substrings at least one of which every match of _SHAPES contains.
_SHAPE_HINTS: Final = ("k-", "earer", "EARER", "oken", "OKEN", "eyJ")
_WORD: Final = "I"  # the pre-check reads text as native 4-byte unsigned integers
assert struct.calcsize(_WORD) == _PIECE_CHARS


def _mask_shape(match: re.Match[str]) -> str:
    if match.group("prefix"):
        return match.group("prefix") + "-***"
    if match.group("scheme"):
        return match.group("scheme") + match.group("gap") + MASK
    return MASK


class Redactor:
    """Masks configured secrets (and slices of them) and token-shaped text. Immutable; safe to share."""

    __slots__ = ("_pieces", "_secrets", "_short", "_windows")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        unique = {secret for secret in secrets if secret and len(secret) >= MIN_SECRET_CHARS}
        #: Longest first, so a secret that contains another is masked whole.
        self._secrets: tuple[str, ...] = tuple(sorted(unique, key=len, reverse=True))
        #: Only the exact value of a secret shorter than MIN_SLICE_CHARS is masked.
        self._short = tuple(secret for secret in self._secrets if len(secret) < MIN_SLICE_CHARS)
        # Every 4-byte window of every longer secret's UTF-8, as the integers the pre-check compares.
        windows: set[int] = set()
        for secret in self._secrets:
            if len(secret) >= MIN_SLICE_CHARS:
                data = secret.encode("utf-8", "surrogatepass")
                windows.update(int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(len(data) - 3))
        self._windows = frozenset(windows)
        # Aligned piece -> (secret, offset of the piece in it) for every place it occurs in a secret.
        pieces: dict[str, list[tuple[str, int]]] = {}
        for secret in self._secrets:
            if len(secret) < MIN_SLICE_CHARS:
                continue  # only the exact value of a short secret is masked
            for offset in range(0, len(secret) - _PIECE_CHARS + 1, _PIECE_CHARS):
                piece = secret[offset : offset + _PIECE_CHARS]
                for start in _occurrences(secret, piece):
                    places = pieces.setdefault(piece, [])
                    if (secret, start) not in places:
                        places.append((secret, start))
        self._pieces: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = tuple(
            (piece, tuple(places)) for piece, places in pieces.items()
        )

    def __repr__(self) -> str:  # never print the secrets
        return f"Redactor({len(self._secrets)} secret(s))"

    def __call__(self, text: str) -> str:
        """``text`` with every secret, 8+ character slice of a secret and token-shaped string masked."""
        if not text:
            return text
        spans = self._secret_spans(text)
        if spans:
            text = _apply(text, spans)
        for hint in _SHAPE_HINTS:
            if hint in text:
                return _SHAPES.sub(_mask_shape, text)
        return text

    def _may_hold_a_slice(self, text: str) -> bool:
        """The pre-check: False guarantees that no 8+ character slice of a secret is in ``text``."""
        if not self._windows or len(text) < MIN_SLICE_CHARS:
            return False
        data = text.encode("utf-8", "surrogatepass")
        return not self._windows.isdisjoint(memoryview(data)[: len(data) & ~3].cast(_WORD))

    def _secret_spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for secret in self._short:
            if secret in text:
                spans.extend((start, start + len(secret)) for start in _occurrences(text, secret))
        if not self._may_hold_a_slice(text):
            return spans
        for piece, places in self._pieces:
            if piece not in text:  # the cheap pre-check: one substring search per aligned piece
                continue
            for at in _occurrences(text, piece):
                for secret, offset in places:
                    span = _extend(text, at, secret, offset)
                    if span is not None:
                        spans.append(span)
        return spans

    def contains_secret(self, text: str) -> bool:
        """Whether ``text`` holds a configured secret or an 8+ character slice of one (for tests and checks)."""
        return bool(self._secret_spans(text))


def _occurrences(text: str, needle: str) -> Iterable[int]:
    start = text.find(needle)
    while start != -1:
        yield start
        start = text.find(needle, start + 1)


def _extend(text: str, at: int, secret: str, offset: int) -> tuple[int, int] | None:
    """The longest stretch of ``text`` around ``at`` that matches ``secret`` aligned so that ``text[at]`` is
    ``secret[offset]``; None if it is shorter than MIN_SLICE_CHARS."""
    left = 0
    while left < offset and at - left - 1 >= 0 and text[at - left - 1] == secret[offset - left - 1]:
        left += 1
    right = _PIECE_CHARS
    while offset + right < len(secret) and at + right < len(text) and text[at + right] == secret[offset + right]:
        right += 1
    if left + right < MIN_SLICE_CHARS:
        return None
    return at - left, at + right


def _apply(text: str, spans: list[tuple[int, int]]) -> str:
    spans.sort()
    out: list[str] = []
    position = 0
    for start, end in spans:
        if end <= position:
            continue  # inside a span already masked
        if start >= position:
            out.append(text[position:start])
            out.append(MASK)
        position = end
    out.append(text[position:])
    return "".join(out)


#: Masks token-shaped text only: for cores built without configuration (tests, tools).
SHAPES_ONLY: Final = Redactor(())


def config_secrets(config: Config) -> tuple[str, ...]:
    """Every secret in ``config`` the proxy must never show: the one place that lists them (API keys, static client
    tokens, JWT shared secrets)."""
    keys = (config.openai.key, config.deepgram_agent.key, config.deepgram_listen.key)
    return tuple(secret for secret in (*keys, *config.client_secrets()) if secret)


@lru_cache(maxsize=8)
def _shared(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def for_config(config: Config) -> Redactor:
    """The redactor for ``config``'s secrets, built once and shared by every session of that configuration."""
    return _shared(config_secrets(config))


# -- logs -------------------------------------------------------------------------------------------------------

_REDACTED_MARK: Final = "_proxy_redacted"
_log_redactor: Redactor = SHAPES_ONLY
_base_factory: Callable[..., logging.LogRecord] | None = None


def redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    """Redact one record in place: the formatted message (its arguments are merged into it), exception and stack."""
    if getattr(record, _REDACTED_MARK, False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what can be shown; logging reports the rest
        message = str(record.msg)
    record.msg = redactor(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redactor(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor(record.stack_info)
    setattr(record, _REDACTED_MARK, True)


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _base_factory is not None
    record = _base_factory(*args, **kwargs)
    redact_record(record, _log_redactor)
    return record


def install_log_redaction(redactor: Redactor) -> None:
    """Redact every log record created from now on with ``redactor`` (a later call replaces the redactor)."""
    global _log_redactor, _base_factory
    _log_redactor = redactor
    if _base_factory is None:
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_redacting_factory)


def uninstall_log_redaction() -> None:
    """Restore the record factory found by :func:`install_log_redaction` (tests)."""
    global _log_redactor, _base_factory
    if _base_factory is not None:
        logging.setLogRecordFactory(_base_factory)
    _base_factory = None
    _log_redactor = SHAPES_ONLY


class RedactingFilter(logging.Filter):
    """A handler filter that redacts records the record factory did not see (it never drops a record)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self.redactor)
        return True
