"""What the simulated agents answer: replies that follow the conversation, deterministically.

The simulated "model" answers the user's latest turn from the whole conversation so far:

* a typed message is repeated back, in wording that changes from turn to turn (so a client can tell replies apart);
* a spoken turn is answered with its length ("I heard about 2 seconds of speech."): the simulators do not
  recognise speech, and saying so keeps a tester from mistaking the invented transcript for recognition;
* a question about the conversation itself ("what did I say?", "what did I ask before?", "do you remember ...")
  is answered from memory: what the user said before this turn, and how many turns there were;
* an empty message gets an invitation to speak.

Tool calls are decided elsewhere (:func:`proxy.sim.synth.named_function`): a reply is only the text.

Pure: the same conversation always gives the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: Wordings of the echo, used in turn: the first turn's is the one clients have always seen.
_ECHOES: Final = (
    "You said: {words}.",
    "I heard you say: {words}.",
    "Got it. You said: {words}.",
    "Understood: {words}.",
)
_ABOUT_THE_CONVERSATION: Final = re.compile(
    r"\bwhat (did|have|was it) i\b.*\b(say|said|ask|asked|tell|told|mention|mentioned|type|typed)\b"
    r"|\bwhat was my\b|\bdo you remember\b|\bwhat have we (talked|spoken) about\b|\bmy (last|previous|first) "
    r"(message|question)\b",
    re.IGNORECASE,
)
_QUOTE_LIMIT: Final = 80


@dataclass(frozen=True, slots=True)
class UserTurn:
    """One turn of the user: typed ``text``, or ``speech_ms`` of audio (the simulators do not recognise words)."""

    text: str | None = None
    speech_ms: float | None = None

    def described(self) -> str:
        if self.speech_ms is not None:
            return f"about {_seconds(self.speech_ms)} of speech"
        return f'"{_quote(self.text or "")}"'


def _seconds(ms: float) -> str:
    n = max(1, round(ms / 1000))
    return f"{n} second" + ("" if n == 1 else "s")


def _quote(text: str) -> str:
    words = " ".join(text.split()).rstrip(".!? ")
    return words if len(words) <= _QUOTE_LIMIT else words[: _QUOTE_LIMIT - 1].rstrip() + "…"


def asks_about_the_conversation(text: str) -> bool:
    return _ABOUT_THE_CONVERSATION.search(text) is not None


def answer(conversation: Sequence[UserTurn]) -> str:
    """The reply to the last turn of ``conversation`` (the user's turns, oldest first)."""
    if not conversation:
        return "How can I help you?"
    current, earlier = conversation[-1], conversation[:-1]
    if current.speech_ms is not None:
        return f"I heard about {_seconds(current.speech_ms)} of speech."
    text = current.text or ""
    if asks_about_the_conversation(text):
        return recall(earlier)
    words = _quote(text)
    if not words:
        return "I did not catch that."
    return _ECHOES[len(earlier) % len(_ECHOES)].format(words=words)


def recall(earlier: Sequence[UserTurn]) -> str:
    """An answer from memory about the turns before the question."""
    if not earlier:
        return "This is the first thing you have said to me."
    last = earlier[-1].described()
    if len(earlier) == 1:
        return f"Before this you said {last}."
    return f"Before this you said {last}; you started with {earlier[0].described()} ({len(earlier)} turns so far)."
