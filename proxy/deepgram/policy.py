"""What a client may ask of the Deepgram pass-through, decided without I/O.

* which service (Voice Agent or Listen) a connection goes to;
* which query parameters reach Deepgram (an allow-list; ``callback`` parameters are refused outright, because
  Deepgram would POST results to a URL the client chose, billed to the server's key);
* how the server's key is presented upstream (``Authorization: Token`` or the ``token`` subprotocol);
* which of the client's offered subprotocols is echoed on accept (never one that looks like a credential).

Nothing the client sends as a credential (``token`` query parameter, ``Authorization`` header, subprotocols) is
ever forwarded: the upstream request is built from configuration plus allow-listed parameters only.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class Service(Enum):
    """The Deepgram API a connection is relayed to."""

    AGENT = "agent"
    TRANSCRIPTION = "transcription"


#: Parameters that belong to the proxy and never go upstream, whatever the allow-list says.
PROXY_PARAMS: frozenset[str] = frozenset({"service", "token"})

#: Subprotocol entries that announce a credential in the next entry (Deepgram's ``["token", key]`` form, and the
#: bearer variant some clients use for temporary tokens).
_CREDENTIAL_SCHEMES: frozenset[str] = frozenset({"token", "bearer"})

#: Longer subprotocol values are treated as opaque credentials (API keys are 40 hex characters, JWTs longer);
#: registered subprotocol names are short words.
MAX_ECHOED_SUBPROTOCOL_CHARS = 32

# RFC 7230 token characters: what a Sec-WebSocket-Protocol entry may contain.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Visible ASCII and spaces: what may follow "Token " in an Authorization header without breaking the request.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")


def select_service(params: Sequence[tuple[str, str]], service: str | None) -> Service:
    """The service for a connection: ``service`` if the route fixes it, else the first ``service`` parameter.

    As in the reference, only ``transcription`` selects Listen; anything else (absent, ``agent``, unknown) is the
    Voice Agent.
    """
    if service is None:
        service = next((value for name, value in params if name == "service"), None)
    return Service.TRANSCRIPTION if service == "transcription" else Service.AGENT


def refused_params(params: Iterable[tuple[str, str]]) -> list[str]:
    """Names of parameters that make the request unacceptable: anything starting with ``callback``."""
    return [name for name, _ in params if name.lower().startswith("callback")]


@dataclass(frozen=True, slots=True)
class QueryDecision:
    """The parameters that go upstream (in client order, repeats kept) and the names that were dropped."""

    forwarded: tuple[tuple[str, str], ...]
    dropped: tuple[str, ...]


def filter_params(
    params: Iterable[tuple[str, str]], allowed: Iterable[str], configured: Iterable[str] = ()
) -> QueryDecision:
    """Keep allow-listed parameters in order; drop proxy parameters, unknown ones and ones the operator fixed.

    ``configured`` are the names already in the configured upstream URL: the operator's value wins, so a client
    cannot add a second, conflicting value.
    """
    allow = frozenset(allowed) - PROXY_PARAMS - frozenset(configured)
    forwarded: list[tuple[str, str]] = []
    dropped: list[str] = []
    for name, value in params:
        if name in allow and not name.lower().startswith("callback"):
            forwarded.append((name, value))
        else:
            dropped.append(name)
    return QueryDecision(tuple(forwarded), tuple(dropped))


def configured_param_names(url: str) -> frozenset[str]:
    """Names of the query parameters already present in a configured upstream URL."""
    return frozenset(name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True))


def upstream_url(base: str, params: Sequence[tuple[str, str]]) -> str:
    """``base`` (its own path and query kept, any fragment dropped) plus ``params``, freshly percent-encoded."""
    parts = urlsplit(base)
    extra = urlencode(list(params))
    query = "&".join(part for part in (parts.query, extra) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def key_is_usable(key: str, mode: str) -> bool:
    """Whether ``key`` can be put on the wire in ``mode`` without breaking (or being smuggled into) the request."""
    pattern = _TOKEN if mode == "subprotocol" else _HEADER_VALUE
    return pattern.fullmatch(key) is not None


def upstream_credentials(key: str | None, mode: str) -> tuple[tuple[tuple[bytes, bytes], ...], tuple[str, ...]]:
    """Headers and subprotocols that present the server's key upstream; both empty when there is no key."""
    if not key:
        return (), ()
    if mode == "subprotocol":
        return (), ("token", key)
    return ((b"Authorization", b"Token " + key.encode("ascii")),), ()


def echo_subprotocol(offered: Sequence[str], keys: Iterable[str | None] = ()) -> str | None:
    """The subprotocol to accept the client with, or None.

    Browsers fail a connection when the server picks none of the offered subprotocols, so the first offered one
    is echoed, as the reference does, unless it looks like a credential: the entry after ``token``/``bearer``, a
    value equal to one of the server's ``keys``, or anything longer than ``MAX_ECHOED_SUBPROTOCOL_CHARS``. Then the
    next acceptable entry is used (a client offering ``["token", "<key>"]`` gets ``token``). The value is never
    used for anything else.
    """
    secrets = [key.encode() for key in keys if key]
    previous = ""
    for entry in offered:
        after_scheme = previous.lower() in _CREDENTIAL_SCHEMES
        previous = entry
        if after_scheme or len(entry) > MAX_ECHOED_SUBPROTOCOL_CHARS or not _TOKEN.fullmatch(entry):
            continue
        if any(hmac.compare_digest(entry.encode(), secret) for secret in secrets):
            continue
        return entry
    return None
