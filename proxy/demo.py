"""The browser demo page: one static page served on ``GET /`` and ``GET /demo`` (off with ``--no-demo``).

The page (``proxy/static/``) is a minimal client of the component protocol, so it talks to the proxy exactly as the
component does. This module is sans-IO: it maps a request path to the answer's status, body and headers, and the
listener sends it. The files are read once, from the installed package, and never from a path the client names.

Every answer carries a strict Content-Security-Policy: scripts, styles and the microphone worklet only from this
origin, WebSockets only back to it, no framing, no inline code. The files are revalidated on every load
(``no-cache`` with a strong ETag, 304 when it matches) so an upgraded proxy never serves a stale page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

#: Paths that serve the page itself.
PAGE_PATHS = frozenset({"/", "/demo", "/demo/"})

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "media-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CACHE_CONTROL = b"no-cache"

#: Request path -> (file in proxy/static, content type).
_FILES: dict[str, tuple[str, bytes]] = {
    "/demo/demo.js": ("demo.js", b"text/javascript; charset=utf-8"),
    "/demo/mic-worklet.js": ("mic-worklet.js", b"text/javascript; charset=utf-8"),
    "/demo/demo.css": ("demo.css", b"text/css; charset=utf-8"),
    "/demo/icon.svg": ("icon.svg", b"image/svg+xml"),
    **dict.fromkeys(PAGE_PATHS, ("demo.html", b"text/html; charset=utf-8")),
}

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode()),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    # The page may ask for the microphone (its own origin only) and nothing else.
    (b"Permissions-Policy", b"microphone=(self), camera=(), geolocation=()"),
)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: bytes
    etag: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: bytes
    headers: tuple[tuple[bytes, bytes], ...]


def _load() -> dict[str, Asset]:
    static = resources.files("proxy") / "static"
    assets: dict[str, Asset] = {}
    for path, (name, content_type) in _FILES.items():
        body = (static / name).read_bytes()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        assets[path] = Asset(body, content_type, etag)
    return assets


class DemoPages:
    """The demo's files, loaded once; :meth:`answer` is None for a path that is not one of them."""

    def __init__(self) -> None:
        self._assets = _load()

    def __contains__(self, path: str) -> bool:
        return path in self._assets

    def answer(self, path: str, if_none_match: bytes | None = None) -> Answer | None:
        asset = self._assets.get(path)
        if asset is None:
            return None
        headers = (*SECURITY_HEADERS, (b"ETag", asset.etag))
        if if_none_match is not None and _matches(if_none_match, asset.etag):
            return Answer(304, b"", asset.content_type, headers)
        return Answer(200, asset.body, asset.content_type, headers)


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 weak comparison over a list of entity tags (``*`` matches anything)."""
    tags = [tag.strip().removeprefix(b"W/") for tag in if_none_match.split(b",")]
    return b"*" in tags or etag in tags
