"""How deeply a JSON text nests, found without parsing it: the bound checked before any recursive work.

The proxy's own code walks decoded client and upstream JSON recursively (the JavaScript-compatible ``js_json``,
type descriptions, ``repr`` in log lines), and msgspec decodes into ``Any`` recursively too. A peer could nest a few
hundred levels and exhaust the interpreter's recursion limit inside those walks. :func:`too_deep` answers in two
steps: counting brackets (C speed; a frame with no more opening brackets than the bound cannot nest deeper), and
only then a scan that skips JSON strings. Sizes are bounded before this, by each leg's maximum message size.
"""

from __future__ import annotations

import re
from typing import Final

#: The deepest nesting of objects and arrays accepted in a JSON message. Real messages nest a dozen levels (tool
#: parameter schemas included); the recursive walks stay far below the interpreter's recursion limit at this bound.
MAX_JSON_DEPTH: Final = 64

# A JSON string (escapes included) or one bracket; text between tokens is skipped by the scanner in C.
_TOKENS: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def too_deep(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``text`` nests objects/arrays more than ``max_depth`` levels (counted as if it were valid JSON).

    Unbalanced or invalid text is never reported shallower than it is; an unterminated string counts the brackets
    after its quote, which can only over-count.
    """
    if isinstance(text, bytes):
        if text.count(b"[") + text.count(b"{") <= max_depth:
            return False
        text = text.decode(errors="replace")
    elif text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > max_depth:
                return True
        elif token == "]" or token == "}":
            depth = max(depth - 1, 0)
    return False
