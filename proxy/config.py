"""Configuration: one typed, immutable object built from flags and environment (flags win).

Every limit the proxy enforces is here, with its unit in the name, so operators find them in one place
(docs/configuration.md lists them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from urllib.parse import urlsplit

from .ws.frames import DEFAULT_MAX_CONTROL_FRAMES_PER_S, DEFAULT_MAX_FRAGMENTS_PER_MESSAGE

OPENAI_DEFAULT_URL = "wss://api.openai.com/v1/realtime?model=gpt-realtime"
DEEPGRAM_AGENT_DEFAULT_URL = "wss://agent.deepgram.com/v1/agent/converse"
DEEPGRAM_LISTEN_DEFAULT_URL = "wss://api.deepgram.com/v1/listen"

#: Listen API query parameters a client may set (everything else is dropped before the upstream).
DEFAULT_LISTEN_PARAMS: tuple[str, ...] = (
    "model",
    "language",
    "encoding",
    "sample_rate",
    "channels",
    "interim_results",
    "punctuate",
    "smart_format",
    "endpointing",
    "utterance_end_ms",
    "vad_events",
    "keyterm",
    "keywords",
    "diarize",
    "numerals",
    "profanity_filter",
    "redact",
    "multichannel",
    "version",
    "tier",
)


class ConfigError(ValueError):
    """A configuration value is missing or invalid. The message never contains a secret."""


class UpstreamSource(Enum):
    URL = "configured URL"
    PROVIDER = "provider default URL"
    SIMULATOR = "embedded simulator"
    #: A key variable is set but blank: the route answers a configuration error instead of guessing.
    MISCONFIGURED = "misconfigured (blank key)"


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where one route's upstream is, and the key to present there (None: send no credentials)."""

    url: str
    key: str | None
    source: UpstreamSource

    def __repr__(self) -> str:  # never print the key
        return f"Upstream(url={self.url!r}, key={'set' if self.key else 'none'}, source={self.source.name})"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on everything a session can hold or wait for."""

    max_sessions: int = 1000
    max_pending_handshakes: int = 128
    handshake_timeout_s: float = 10.0
    client_max_message_bytes: int = 1 << 20
    upstream_max_message_bytes: int = 16 << 20
    #: Frames in one WebSocket message, empty ones included (both legs); one more is closed with 1008.
    max_fragments_per_message: int = DEFAULT_MAX_FRAGMENTS_PER_MESSAGE
    #: Pings and pongs a peer may send per second, in bursts of up to one second's worth (both legs); else 1008.
    max_control_frames_per_s: float = DEFAULT_MAX_CONTROL_FRAMES_PER_S
    outbox_high_water_frames: int = 256
    outbox_high_water_bytes: int = 4 << 20
    upstream_connect_timeout_s: float = 10.0
    send_timeout_s: float = 30.0
    close_timeout_s: float = 2.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    # OpenAI ends sessions at 60 minutes; we end them first, cleanly, with an Error the component understands.
    max_session_s: float = 59 * 60.0
    shutdown_grace_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    openai: Upstream = field(default_factory=lambda: Upstream(OPENAI_DEFAULT_URL, None, UpstreamSource.SIMULATOR))
    deepgram_agent: Upstream = field(
        default_factory=lambda: Upstream(DEEPGRAM_AGENT_DEFAULT_URL, None, UpstreamSource.SIMULATOR)
    )
    deepgram_listen: Upstream = field(
        default_factory=lambda: Upstream(DEEPGRAM_LISTEN_DEFAULT_URL, None, UpstreamSource.SIMULATOR)
    )
    client_json_passthrough: bool = False
    deferred_response_create_timeout_s: float = 20.0
    deepgram_synthetic_audio_done: bool = False
    deepgram_auth: str = "header"  # "header": Authorization: Token <key>; "subprotocol": ["token", key]
    deepgram_listen_params: tuple[str, ...] = DEFAULT_LISTEN_PARAMS
    #: Browser origins allowed to open WebSockets (empty: any). Checked on the upgrade request.
    allowed_origins: tuple[str, ...] = ()
    #: Client tokens accepted in ``?token=`` (empty: no client authentication). Secrets: never logged.
    client_tokens: tuple[str, ...] = field(default=(), repr=False)
    limits: Limits = field(default_factory=Limits)

    def uses_simulator(self) -> bool:
        return UpstreamSource.SIMULATOR in (
            self.openai.source,
            self.deepgram_agent.source,
            self.deepgram_listen.source,
        )

    def with_simulator_port(self, host: str, port: int) -> Config:
        """Point every simulator-served route at an embedded simulator listening on ``host:port``."""
        base = f"ws://{host}:{port}"
        updates: dict[str, Upstream] = {}
        for name, path in (
            ("openai", "/v1/realtime?model=gpt-realtime"),
            ("deepgram_agent", "/v1/agent/converse"),
            ("deepgram_listen", "/v1/listen"),
        ):
            upstream: Upstream = getattr(self, name)
            if upstream.source is UpstreamSource.SIMULATOR:
                updates[name] = Upstream(base + path, None, UpstreamSource.SIMULATOR)
        return replace(self, **updates)  # type: ignore[arg-type]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _key(env: Mapping[str, str], name: str) -> str | None:
    """The trimmed key; "" when the variable is set but blank (a misconfiguration), None when unset."""
    value = env.get(name)
    return None if value is None else value.strip()


def _choose(url: str | None, key: str | None, default_url: str, name: str) -> Upstream:
    """DESIGN "Upstream choice": explicit URL as given; else a key means the provider; else the simulator."""
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"{name} must be a ws:// or wss:// URL with a host")
        return Upstream(url, key or None, UpstreamSource.URL)
    if key:
        return Upstream(default_url, key, UpstreamSource.PROVIDER)
    if key == "":
        return Upstream(default_url, None, UpstreamSource.MISCONFIGURED)
    return Upstream(default_url, None, UpstreamSource.SIMULATOR)


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def _port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer port, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be between 0 and 65535")
    return port


def _seconds_from_ms(value: str, name: str) -> float:
    try:
        ms = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of milliseconds") from None
    if not math.isfinite(ms) or ms < 0:
        raise ConfigError(f"{name} must be a finite, non-negative number of milliseconds")
    return ms / 1000.0


def parse_count(value: str, name: str) -> int:
    """A whole number of at least 1 (a flag's or a variable's text)."""
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if count < 1:
        raise ConfigError(f"{name} must be at least 1")
    return count


def parse_rate(value: str, name: str) -> float:
    """A finite number above 0 (a flag's or a variable's text)."""
    try:
        rate = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"{name} must be a finite number above 0")
    return rate


def _websocket_limits(env: Mapping[str, str], limits: Limits) -> Limits:
    fragments = env.get("PROXY_MAX_FRAGMENTS_PER_MESSAGE")
    if fragments:
        limits = replace(limits, max_fragments_per_message=parse_count(fragments, "PROXY_MAX_FRAGMENTS_PER_MESSAGE"))
    control = env.get("PROXY_MAX_CONTROL_FRAMES_PER_S")
    if control:
        limits = replace(limits, max_control_frames_per_s=parse_rate(control, "PROXY_MAX_CONTROL_FRAMES_PER_S"))
    return limits


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Config:
    """Build a Config from the environment, then apply ``overrides`` (already-parsed flag values; None = unset)."""
    env = os.environ if env is None else env
    port_text = env.get("PROXY_PORT") or env.get("OPENAI_PROXY_PORT") or "8080"
    values: dict[str, object] = {
        "host": env.get("PROXY_HOST") or "127.0.0.1",
        "port": _port(port_text, "PROXY_PORT"),
        "log_level": (env.get("LOG_LEVEL") or "INFO").upper(),
        "client_json_passthrough": _truthy(env.get("OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH")),
        "deepgram_synthetic_audio_done": _truthy(env.get("DEEPGRAM_SYNTHETIC_AUDIO_DONE")),
        "allowed_origins": _list(env.get("PROXY_ALLOWED_ORIGINS")),
        "client_tokens": _list(env.get("PROXY_CLIENT_TOKENS")),
    }
    timeout = env.get("OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS")
    if timeout:
        values["deferred_response_create_timeout_s"] = _seconds_from_ms(
            timeout, "OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS"
        )
    urls = {
        "openai_url": env.get("OPENAI_REALTIME_URL"),
        "deepgram_agent_url": env.get("DEEPGRAM_AGENT_URL"),
        "deepgram_listen_url": env.get("DEEPGRAM_LISTEN_URL"),
    }
    keys = {"openai_key": _key(env, "OPENAI_API_KEY"), "deepgram_key": _key(env, "DEEPGRAM_API_KEY")}
    for name, value in overrides.items():
        if value is None:
            continue
        if name in urls:
            urls[name] = str(value)
        elif name in keys:
            keys[name] = str(value).strip()
        else:
            values[name] = value
    limits = values.get("limits", Limits())
    assert isinstance(limits, Limits)
    values["limits"] = _websocket_limits(env, limits)
    values["openai"] = _choose(urls["openai_url"], keys["openai_key"], OPENAI_DEFAULT_URL, "OPENAI_REALTIME_URL")
    values["deepgram_agent"] = _choose(
        urls["deepgram_agent_url"], keys["deepgram_key"], DEEPGRAM_AGENT_DEFAULT_URL, "DEEPGRAM_AGENT_URL"
    )
    values["deepgram_listen"] = _choose(
        urls["deepgram_listen_url"], keys["deepgram_key"], DEEPGRAM_LISTEN_DEFAULT_URL, "DEEPGRAM_LISTEN_URL"
    )
    config = Config(**values)  # type: ignore[arg-type]
    if config.deepgram_auth not in ("header", "subprotocol"):
        raise ConfigError("deepgram auth must be 'header' or 'subprotocol'")
    return config
