"""Configuration: one typed, immutable object built from flags and environment (flags win).

Every limit the proxy enforces is here, with its unit in the name, so operators find them in one place
(docs/configuration.md lists them).
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from urllib.parse import urlsplit

from .audio import DEFAULT_RESAMPLER, RESAMPLER_KINDS, ResamplerKind
from .auth import VerificationKey, load_public_key, secret_problem
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


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    # Every client TCP connection, sessions included: room above max_sessions for probes and handshakes.
    max_connections: int = 2048
    #: Connections whose request head is not complete yet; more are refused at once, never queued.
    max_pending_handshakes: int = 128
    #: Connections from one client address (the forwarded one behind a trusted proxy); below the pending cap so
    #: one address cannot take every handshake slot.
    max_connections_per_ip: int = 64
    #: One deadline from accept to the 101 (or the HTTP answer), however slowly the bytes trickle in.
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
    # OpenAI ends sessions at 60 minutes; we end them first, cleanly, with an Error the component understands
    # (a close with a reason alone where the route's protocol has no Error).
    max_session_s: float = 59 * 60.0
    #: After SIGTERM: how long open sessions may go on while the listener keeps answering (503 to new upgrades).
    drain_timeout_s: float = 20.0
    #: After the drain: how long sessions get to finish their 1001 close before they are cancelled.
    shutdown_grace_s: float = 5.0
    #: One ``POST /function-call`` handler's run; then the caller gets 504 and the handler is abandoned.
    function_call_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    #: "text" (one human-readable line per record) or "json" (one object per line; see proxy/logs.py).
    log_format: str = "text"
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
    #: /openai microphone conversion 16 -> 24 kHz: "soxr" (anti-aliased) or "linear" (bit-exact with the reference).
    resampler: ResamplerKind = DEFAULT_RESAMPLER
    deepgram_auth: str = "header"  # "header": Authorization: Token <key>; "subprotocol": ["token", key]
    deepgram_listen_params: tuple[str, ...] = DEFAULT_LISTEN_PARAMS
    #: ``POST /function-call`` is served (proxy/functions.py); ``functions``: extra handlers, ``module:callable``.
    function_call: bool = True
    functions: tuple[str, ...] = ()
    #: Browser origins allowed to open WebSockets (empty: any). Checked on the upgrade request.
    allowed_origins: tuple[str, ...] = ()
    #: Static client tokens (``?token=`` or the ``token`` subprotocol pair; see proxy/auth.py). Secrets: never logged.
    client_tokens: tuple[str, ...] = field(default=(), repr=False)
    #: Proxies whose ``X-Forwarded-For`` entries are believed (the client address is the right-most entry that is
    #: not one of these); empty: the header is ignored and the TCP peer is the client.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: HS256 shared secrets for signed client tokens; any one verifies (rotation). Secrets: never logged.
    jwt_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: RS256/ES256 public key for signed client tokens (the algorithm follows the key type).
    jwt_public_key: VerificationKey | None = None
    #: Required ``aud`` / ``iss`` of signed client tokens (None: a token must carry no ``aud``; ``iss`` unchecked).
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    #: Clock skew allowed on ``exp`` and ``nbf``.
    jwt_leeway_s: float = 30.0
    #: PEM certificate chain and private key: the port serves wss:// and https:// (proxy/tls.py); both or neither.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    limits: Limits = field(default_factory=Limits)
    #: Worker processes sharing the port (proxy/supervisor.py); 1: this process serves alone, no supervisor.
    workers: int = 1
    #: Serve the browser demo page on ``GET /`` and ``GET /demo`` (proxy/demo.py).
    demo: bool = True

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("TLS needs both a certificate and a key (--tls-cert and --tls-key, or neither)")

    def client_secrets(self) -> tuple[str, ...]:
        """Every client-side secret value (static tokens, JWT secrets): what log redaction must hide."""
        return (*self.client_tokens, *self.jwt_secrets)

    @property
    def url_scheme(self) -> str:
        """``wss`` when the port serves TLS, else ``ws`` (the ``listening on`` line and clients' URLs)."""
        return "wss" if self.tls_cert_file is not None else "ws"

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


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
#: Logging levels by name (WARN is accepted for WARNING).
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: tuple[str, ...] = ("text", "json")
DEEPGRAM_AUTH_MODES: tuple[str, ...] = ("header", "subprotocol")


def switch(value: str | None, name: str) -> bool:
    """An on/off variable: 1/true/yes/on or 0/false/no/off (any case; unset or blank is off); anything else is an
    error rather than a silent "off"."""
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be 1, true, yes, on, 0, false, no or off, got {value!r}")


def log_level(value: str, name: str) -> str:
    level = value.strip().upper()
    level = "WARNING" if level == "WARN" else level
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    """A parser for one of ``options`` (exact, after trimming and lower-casing)."""

    def parse(value: str, name: str) -> str:
        text = value.strip().lower()
        if text not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}, got {value!r}")
        return text

    return parse


log_format = choice(LOG_FORMATS)
deepgram_auth = choice(DEEPGRAM_AUTH_MODES)


def host(value: str, name: str) -> str:
    text = value.strip()
    if not text or any(ch.isspace() for ch in text) or len(text) > 255:
        raise ConfigError(f"{name} must be an address or host name, got {value!r}")
    return text


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


def port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer port, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be between 0 and 65535")
    return port


def seconds_from_ms(value: str, name: str) -> float:
    try:
        ms = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of milliseconds") from None
    if not math.isfinite(ms) or ms < 0:
        raise ConfigError(f"{name} must be a finite, non-negative number of milliseconds")
    return ms / 1000.0


def networks(value: str, name: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR blocks (host bits allowed: ``10.0.0.1/8`` means ``10.0.0.0/8``)."""
    parsed = []
    for item in _list(value):
        try:
            parsed.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name} must be comma-separated IP addresses or CIDR blocks, got {item!r}") from None
    return tuple(parsed)


def positive_int(value: str, name: str) -> int:
    """A whole number of at least 1 (a flag's or a variable's text)."""
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if number < 1:
        raise ConfigError(f"{name} must be at least 1")
    return number


#: More workers than this is a typo, not a machine.
MAX_WORKERS = 256


def workers(value: str, name: str) -> int:
    """A worker count, or ``auto``: one per CPU this process may run on."""
    if value.strip().lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    count = positive_int(value.strip(), name)
    if count > MAX_WORKERS:
        raise ConfigError(f"{name} must be at most {MAX_WORKERS}")
    return count


def seconds(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{name} must be a finite, non-negative number of seconds")
    return number


def positive_seconds(value: str, name: str) -> float:
    number = seconds(value, name)
    if number == 0:
        raise ConfigError(f"{name} must be more than 0 seconds")
    return number


#: Flag values :func:`_client_auth` reads (files are read, and every value checked, in one place).
_AUTH_OVERRIDES = frozenset(
    {"client_tokens_file", "jwt_secrets_file", "jwt_public_key_file", "jwt_audience", "jwt_issuer", "jwt_leeway_s"}
)
#: Secret and key files are small; a larger one is a wrong path.
MAX_AUTH_FILE_BYTES = 1 << 20


def _client_auth(env: Mapping[str, str], overrides: Mapping[str, object]) -> dict[str, object]:
    """Who may connect: static tokens, JWT secrets, the JWT public key, audience, issuer and leeway, checked.

    A flag (``*_file``) wins over its variable; a value list and a file for the same secrets are a conflict.
    """

    def setting(flag: str, variable: str) -> str | None:
        value = overrides.get(flag)
        return str(value) if value is not None else (env.get(variable) or None)

    tokens_file = setting("client_tokens_file", "PROXY_CLIENT_TOKENS_FILE")
    tokens = _secrets(env.get("PROXY_CLIENT_TOKENS"), tokens_file, "PROXY_CLIENT_TOKENS", "client tokens")
    secrets_file = setting("jwt_secrets_file", "PROXY_JWT_SECRETS_FILE")
    secrets = _secrets(env.get("PROXY_JWT_SECRETS"), secrets_file, "PROXY_JWT_SECRETS", "JWT secrets")
    for number, secret in enumerate(secrets, 1):
        problem = secret_problem(secret)
        if problem is not None:
            raise ConfigError(f"JWT secret #{number} {problem}")
    key_file = setting("jwt_public_key_file", "PROXY_JWT_PUBLIC_KEY_FILE")
    public_key = None
    if key_file is not None:
        try:
            public_key = load_public_key(_read(key_file, "JWT public key"))
        except ValueError as exc:
            raise ConfigError(f"the JWT public key file {key_file!r} {exc}") from None
    audience = setting("jwt_audience", "PROXY_JWT_AUDIENCE")
    issuer = setting("jwt_issuer", "PROXY_JWT_ISSUER")
    if (audience or issuer) and not secrets and public_key is None:
        raise ConfigError("a JWT audience or issuer is set but no JWT secret or public key is configured")
    leeway = overrides.get("jwt_leeway_s")
    leeway_s = float(leeway) if isinstance(leeway, int | float) else _leeway(env.get("PROXY_JWT_LEEWAY_S"))
    if not math.isfinite(leeway_s) or not 0 <= leeway_s <= 300:
        raise ConfigError("the JWT leeway must be between 0 and 300 seconds")
    return {
        "client_tokens": tokens,
        "jwt_secrets": secrets,
        "jwt_public_key": public_key,
        "jwt_audience": audience,
        "jwt_issuer": issuer,
        "jwt_leeway_s": leeway_s,
    }


def _leeway(value: str | None) -> float:
    if not value:
        return 30.0
    try:
        return float(value)
    except ValueError:
        raise ConfigError("PROXY_JWT_LEEWAY_S must be a number of seconds") from None


def _secrets(listed: str | None, path: str | None, variable: str, what: str) -> tuple[str, ...]:
    """Secrets from a comma-separated variable or from a file (one a line, ``#`` comments); never both."""
    if listed is not None and path is not None:
        raise ConfigError(f"set {variable} or a {what} file, not both")
    if path is not None:
        try:
            text = _read(path, what).decode()
        except UnicodeDecodeError:
            raise ConfigError(f"the {what} file {path!r} is not UTF-8 text") from None
        entries = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
        if not entries:
            raise ConfigError(f"the {what} file {path!r} holds no entries")
        return entries
    if listed is None:
        return ()
    entries = tuple(item.strip() for item in listed.split(","))
    if not any(entries):
        return ()  # set but blank: none configured, as before
    if not all(entries):
        raise ConfigError(f"{variable} has an empty entry")
    return entries


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_AUTH_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path!r}: {exc.strerror or 'error'}") from None
    if len(data) > MAX_AUTH_FILE_BYTES:
        raise ConfigError(f"the {what} file {path!r} is larger than {MAX_AUTH_FILE_BYTES} bytes")
    return data


def resampler_kind(value: str, name: str) -> ResamplerKind:
    kind = value.strip().lower()
    for known in RESAMPLER_KINDS:
        if kind == known:
            return known
    raise ConfigError(f"{name} must be one of {', '.join(RESAMPLER_KINDS)}, got {value!r}")


def parse_rate(value: str, name: str) -> float:
    """A finite number above 0 (a flag's or a variable's text)."""
    try:
        rate = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"{name} must be a finite number above 0")
    return rate


#: Limits an operator sets by flag or variable (flags win): Limits field -> (flag, variable, parser of the text).
#: The command line makes one flag of each entry (proxy/cli.py), so a limit added here is settable both ways.
LIMIT_SETTINGS: dict[str, tuple[str, str, Callable[[str, str], float]]] = {
    "max_sessions": ("--max-sessions", "PROXY_MAX_SESSIONS", positive_int),
    "max_connections": ("--max-connections", "PROXY_MAX_CONNECTIONS", positive_int),
    "max_pending_handshakes": ("--max-pending-handshakes", "PROXY_MAX_PENDING_HANDSHAKES", positive_int),
    "max_connections_per_ip": ("--max-connections-per-ip", "PROXY_MAX_CONNECTIONS_PER_IP", positive_int),
    "handshake_timeout_s": ("--handshake-timeout", "PROXY_HANDSHAKE_TIMEOUT", positive_seconds),
    "drain_timeout_s": ("--drain-timeout", "PROXY_DRAIN_TIMEOUT_S", seconds),
    "shutdown_grace_s": ("--shutdown-grace", "PROXY_SHUTDOWN_GRACE_S", seconds),
    "max_session_s": ("--max-session-duration", "PROXY_MAX_SESSION_DURATION_S", positive_seconds),
    "max_fragments_per_message": ("--max-fragments-per-message", "PROXY_MAX_FRAGMENTS_PER_MESSAGE", positive_int),
    "max_control_frames_per_s": ("--max-control-frames-per-s", "PROXY_MAX_CONTROL_FRAMES_PER_S", parse_rate),
    "client_max_message_bytes": ("--client-max-message-bytes", "PROXY_CLIENT_MAX_MESSAGE_BYTES", positive_int),
    "upstream_max_message_bytes": ("--upstream-max-message-bytes", "PROXY_UPSTREAM_MAX_MESSAGE_BYTES", positive_int),
    "outbox_high_water_frames": ("--outbox-high-water-frames", "PROXY_OUTBOX_HIGH_WATER_FRAMES", positive_int),
    "outbox_high_water_bytes": ("--outbox-high-water-bytes", "PROXY_OUTBOX_HIGH_WATER_BYTES", positive_int),
    "upstream_connect_timeout_s": (
        "--upstream-connect-timeout",
        "PROXY_UPSTREAM_CONNECT_TIMEOUT_S",
        positive_seconds,
    ),
    "send_timeout_s": ("--send-timeout", "PROXY_SEND_TIMEOUT_S", positive_seconds),
    "close_timeout_s": ("--close-timeout", "PROXY_CLOSE_TIMEOUT_S", positive_seconds),
    "ping_interval_s": ("--ping-interval", "PROXY_PING_INTERVAL_S", seconds),  # 0: no pings
    "ping_timeout_s": ("--ping-timeout", "PROXY_PING_TIMEOUT_S", positive_seconds),
    "function_call_timeout_s": ("--function-call-timeout", "PROXY_FUNCTION_CALL_TIMEOUT_S", positive_seconds),
}


def _limits_from_env(env: Mapping[str, str], overrides: Mapping[str, float]) -> Limits:
    changes = dict(overrides)
    for name, (_flag, variable, parse) in LIMIT_SETTINGS.items():
        if name not in changes and (text := env.get(variable, "").strip()):
            changes[name] = parse(text, variable)
    return replace(Limits(), **changes)  # type: ignore[arg-type]


def from_env(
    env: Mapping[str, str] | None = None, *, limits: Mapping[str, float] | None = None, **overrides: object
) -> Config:
    """Build a Config from the environment, then apply ``overrides`` (already-parsed flag values; None = unset) and
    ``limits`` (already-parsed flag values of LIMIT_SETTINGS, by Limits field)."""
    env = os.environ if env is None else env
    port_text = env.get("PROXY_PORT") or env.get("OPENAI_PROXY_PORT") or "8080"
    values: dict[str, object] = {
        "host": host(env["PROXY_HOST"], "PROXY_HOST") if env.get("PROXY_HOST") else "127.0.0.1",
        "port": port(port_text, "PROXY_PORT" if env.get("PROXY_PORT") else "OPENAI_PROXY_PORT"),
        "log_level": log_level(env.get("LOG_LEVEL") or "INFO", "LOG_LEVEL"),
        "log_format": log_format(env.get("LOG_FORMAT") or "text", "LOG_FORMAT"),
        "deepgram_auth": deepgram_auth(env.get("DEEPGRAM_AUTH") or "header", "DEEPGRAM_AUTH"),
        "client_json_passthrough": switch(
            env.get("OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH"), "OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH"
        ),
        "deepgram_synthetic_audio_done": switch(
            env.get("DEEPGRAM_SYNTHETIC_AUDIO_DONE"), "DEEPGRAM_SYNTHETIC_AUDIO_DONE"
        ),
        # On unless turned off: unset means on here, unlike the other switches.
        "demo": env.get("PROXY_DEMO") is None or switch(env["PROXY_DEMO"], "PROXY_DEMO"),
        "allowed_origins": _list(env.get("PROXY_ALLOWED_ORIGINS")),
        "function_call": switch(env.get("PROXY_FUNCTION_CALL") or "1", "PROXY_FUNCTION_CALL"),
        "functions": _list(env.get("PROXY_FUNCTIONS")),
        "trusted_proxies": networks(env.get("PROXY_TRUSTED_PROXIES", ""), "PROXY_TRUSTED_PROXIES"),
        "workers": workers(env.get("PROXY_WORKERS") or "1", "PROXY_WORKERS"),
        # The reference's names are aliases.
        "tls_cert_file": env.get("PROXY_TLS_CERT") or env.get("OPENAI_PROXY_TLS_CERT_PATH") or None,
        "tls_key_file": env.get("PROXY_TLS_KEY") or env.get("OPENAI_PROXY_TLS_KEY_PATH") or None,
        "resampler": resampler_kind(env.get("OPENAI_PROXY_RESAMPLER") or DEFAULT_RESAMPLER, "OPENAI_PROXY_RESAMPLER"),
    }
    values["limits"] = _limits_from_env(env, limits or {})
    values.update(_client_auth(env, overrides))
    timeout = env.get("OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS")
    if timeout:
        values["deferred_response_create_timeout_s"] = seconds_from_ms(
            timeout, "OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS"
        )
    urls = {
        "openai_url": env.get("OPENAI_REALTIME_URL"),
        "deepgram_agent_url": env.get("DEEPGRAM_AGENT_URL"),
        "deepgram_listen_url": env.get("DEEPGRAM_LISTEN_URL"),
    }
    keys = {"openai_key": _key(env, "OPENAI_API_KEY"), "deepgram_key": _key(env, "DEEPGRAM_API_KEY")}
    for name, value in overrides.items():
        if value is None or name in _AUTH_OVERRIDES:
            continue
        if name in urls:
            urls[name] = str(value)
        elif name in keys:
            keys[name] = str(value).strip()
        else:
            values[name] = value
    values["openai"] = _choose(urls["openai_url"], keys["openai_key"], OPENAI_DEFAULT_URL, "OPENAI_REALTIME_URL")
    values["deepgram_agent"] = _choose(
        urls["deepgram_agent_url"], keys["deepgram_key"], DEEPGRAM_AGENT_DEFAULT_URL, "DEEPGRAM_AGENT_URL"
    )
    values["deepgram_listen"] = _choose(
        urls["deepgram_listen_url"], keys["deepgram_key"], DEEPGRAM_LISTEN_DEFAULT_URL, "DEEPGRAM_LISTEN_URL"
    )
    config = Config(**values)  # type: ignore[arg-type]
    if config.deepgram_auth not in DEEPGRAM_AUTH_MODES:
        raise ConfigError("deepgram auth must be 'header' or 'subprotocol'")
    if config.limits.max_connections <= config.limits.max_sessions:
        raise ConfigError("max connections must be above max sessions (every session is a connection)")
    return config
