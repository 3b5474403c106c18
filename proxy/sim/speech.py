"""Intelligible speech for the simulated agents' replies, when the optional ``speech`` extra is installed.

The extra is ``espeakng-loader``: a wheel that ships ``libespeak-ng`` (GPL-3.0) and its voice data. The library
is driven through ctypes in synchronous mode: ``espeak_Synth`` returns once the whole text is spoken, having
handed the 22,050 Hz PCM16 samples to a callback. The result is converted to the rate the session asked for with
:func:`proxy.audio.convert_rate`.

libespeak-ng keeps global state and is not thread-safe, so there is one engine per process behind a lock, and
:func:`render` runs it in a worker thread under a capacity limiter of one: the event loop never waits for a
synthesis. Results are kept in a bounded LRU cache keyed by (text, rate), so a reply said again costs nothing.

Without the extra (or when the library fails to load) :func:`render` returns the tones of
:func:`proxy.sim.synth.speak`, as before.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import OrderedDict
from typing import Final

import trio

from .. import audio
from . import synth

log = logging.getLogger("proxy.sim")

ENGINE_RATE: Final = 22_050  # what libespeak-ng produces
MAX_TEXT_CHARS: Final = 1_000  # a longer reply is spoken up to here (bounds the work and the cached audio)
CACHE_ENTRIES: Final = 64
CACHE_BYTES: Final = 32 * 1024 * 1024
WORDS_PER_MINUTE: Final = 175  # espeak-ng's default speaking rate, stated so it cannot drift between versions
VOICE: Final = b"en-us"
RANDOM_SEED: Final = 1

_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_POS_CHARACTER: Final = 1
_CHARS_UTF8: Final = 1
_RATE_PARAMETER: Final = 1  # espeakRATE
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SpeechUnavailable(Exception):
    """The ``speech`` extra is not installed or its library could not be initialised."""


class _Engine:
    """libespeak-ng in synchronous mode (one per process; every call holds :attr:`lock`)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise SpeechUnavailable("the speech extra is not installed") from None
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data = espeakng_loader.get_data_path().encode()
        except (OSError, RuntimeError) as exc:
            raise SpeechUnavailable(f"libespeak-ng could not be loaded: {exc}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if rate != ENGINE_RATE:
            raise SpeechUnavailable(f"libespeak-ng did not initialise (it returned {rate})")
        if lib.espeak_SetVoiceByName(VOICE) != 0:
            raise SpeechUnavailable("libespeak-ng has no English voice")
        lib.espeak_SetParameter(_RATE_PARAMETER, WORDS_PER_MINUTE, 0)
        self._lib = lib
        self._pieces: list[bytes] = []
        # Kept on the instance: the library holds only the C pointer, the callback must outlive every call.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: int | None) -> int:
        if wav and count > 0:
            self._pieces.append(ctypes.string_at(wav, count * 2))
        return 0  # 0: go on

    def synthesise(self, text: str) -> bytes:
        """``text`` as 22,050 Hz PCM16 mono (empty if the library produced nothing)."""
        encoded = text.encode()
        with self.lock:
            self._pieces = []
            self._lib.espeak_SetSynthCallback(self._callback)  # ours, even if the library was initialised again
            # A fixed seed for the voice's random jitter. Other state carries from one call to the next, so a
            # text's audio can still differ by a few milliseconds; the cache keeps a repeated reply identical.
            self._lib.espeak_ng_SetRandSeed(RANDOM_SEED)
            status = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            pieces, self._pieces = self._pieces, []
        if status != 0:
            raise SpeechUnavailable(f"libespeak-ng failed to synthesise (status {status})")
        return b"".join(pieces)


#: False: always the tones, even with the extra installed (the suite's tests of exact virtual times set it, as a
#: worker thread lets a mock clock run ahead while it synthesises).
enabled = True
_engine: _Engine | None = None
_engine_failed = False
_engine_lock = threading.Lock()


def _get_engine() -> _Engine | None:
    """The process's engine, created on first use; None when speech is unavailable (said once, at INFO)."""
    global _engine, _engine_failed
    if not enabled:
        return None
    with _engine_lock:
        if _engine is None and not _engine_failed:
            try:
                _engine = _Engine()
            except SpeechUnavailable as exc:
                _engine_failed = True
                log.info("simulated replies use tones: %s (pip install 'voice-agent-proxy[speech]')", exc)
        return _engine


def available() -> bool:
    """True when replies are spoken by libespeak-ng (loads it on first call)."""
    return _get_engine() is not None


class _Cache:
    """A least-recently-used map (text, rate) -> PCM16, bounded in entries and in bytes."""

    def __init__(self, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            pcm = self._items.get(key)
            if pcm is not None:
                self._items.move_to_end(key)
            return pcm

    def put(self, key: tuple[str, int], pcm: bytes) -> None:
        with self._lock:
            if key in self._items or len(pcm) > self.max_bytes:
                return
            self._items[key] = pcm
            self._bytes += len(pcm)
            while len(self._items) > self.entries or self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


cache: Final = _Cache()
# One synthesis at a time per event loop (the engine is serialised anyway); a RunVar, as a limiter belongs to a run.
_limiter: Final = trio.lowlevel.RunVar[trio.CapacityLimiter]("speech_limiter")


def _normalise(text: str) -> str:
    return " ".join(text.split())[:MAX_TEXT_CHARS]


def speak(text: str, rate: int) -> bytes:
    """``text`` spoken as PCM16 mono at ``rate`` Hz, blocking: speech when available, else the tones.

    Never empty. Cached per (text, rate) when spoken by the engine.
    """
    text = _normalise(text)
    engine = _get_engine()
    if engine is None or not text:
        return synth.speak(text, rate)
    key = (text, rate)
    pcm = cache.get(key)
    if pcm is None:
        raw = engine.synthesise(text)
        pcm = audio.convert_rate(raw, ENGINE_RATE, rate) if raw else b""
        if not pcm:
            return synth.speak(text, rate)
        cache.put(key, pcm)
    return pcm


def _run_limiter() -> trio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(1)
        _limiter.set(limiter)
        return limiter


async def render(text: str, rate: int) -> bytes:
    """:func:`speak` in a worker thread (one synthesis at a time), so the event loop never waits for it."""
    if enabled and _engine is None and not _engine_failed:
        # Loading the library and its voice takes about 0.1 s: in the thread too.
        await trio.to_thread.run_sync(_get_engine, limiter=_run_limiter())
    if _get_engine() is None:
        return synth.speak(text, rate)  # the tones are cheap: no thread
    cached = cache.get((_normalise(text), rate))
    if cached is not None:
        return cached  # no thread for a reply said before
    return await trio.to_thread.run_sync(speak, text, rate, limiter=_run_limiter())
