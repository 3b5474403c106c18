"""JavaScript-compatible readings of decoded JSON, as the reference backend (Node) reads client values.

``String.prototype.trim``, ``typeof x === "number"``, ``JSON.stringify`` (number format, property order, lone
surrogates) and optional chaining, for plain ``dict``/``list``/``str``/``int``/``float``/``bool``/``None`` values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, TypeGuard

#: The characters ``String.prototype.trim`` removes (WhiteSpace and LineTerminator of ECMA-262), which differ from
#: ``str.strip()``'s set (Python also strips U+001C-U+001F and U+0085, JavaScript also strips U+FEFF).
JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
MAX_SAFE_INTEGER: Final = 2**53 - 1
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


def property_of(obj: Any, key: str) -> Any:
    """``obj?.[key]`` for decoded JSON: only objects have properties (None when absent)."""
    return obj.get(key) if isinstance(obj, dict) else None


def text_of(value: Any) -> str:
    """The text a client value contributes where the reference concatenates it into a string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return js_json(value)
