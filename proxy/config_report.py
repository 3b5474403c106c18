"""``python -m proxy config``: every setting as resolved, where it came from, and no secret.

Each row names a setting, its value and its source: ``flag --x``, ``env VAR`` or ``default``. Secrets (API keys,
client tokens, JWT secrets) are shown as ``set``/``unset`` or a count, never as a value; the whole text then goes
through the configuration's redactor too, so a secret pasted into a URL or an audience does not show either.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import redact
from .config import LIMIT_SETTINGS, Config, Upstream, UpstreamSource


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    value: str
    source: str


def _key(upstream: Upstream) -> str:
    if upstream.source is UpstreamSource.MISCONFIGURED:
        return "blank (misconfigured)"
    return "set (masked)" if upstream.key else "unset"


def _count(values: tuple[object, ...]) -> str:
    return f"{len(values)} set (masked)" if values else "none"


def _optional(value: object) -> str:
    return "none" if value is None or value == () else str(value)


def _upstream(upstream: Upstream) -> str:
    return f"{upstream.url} ({upstream.source.value})"


#: Setting name -> (flag or None, variables, how to show the resolved value).
_SETTINGS: tuple[tuple[str, str | None, tuple[str, ...], Callable[[Config], str]], ...] = (
    ("host", "--host", ("PROXY_HOST",), lambda c: c.host),
    ("demo", "--no-demo", ("PROXY_DEMO",), lambda c: "on" if c.demo else "off"),
    ("port", "--port", ("PROXY_PORT", "OPENAI_PROXY_PORT"), lambda c: str(c.port)),
    ("log_level", "--log-level", ("LOG_LEVEL",), lambda c: c.log_level),
    ("log_format", "--log-format", ("LOG_FORMAT",), lambda c: c.log_format),
    ("openai_upstream", "--openai-url", ("OPENAI_REALTIME_URL",), lambda c: _upstream(c.openai)),
    ("openai_api_key", None, ("OPENAI_API_KEY",), lambda c: _key(c.openai)),
    ("deepgram_agent_upstream", "--deepgram-agent-url", ("DEEPGRAM_AGENT_URL",), lambda c: _upstream(c.deepgram_agent)),
    (
        "deepgram_listen_upstream",
        "--deepgram-listen-url",
        ("DEEPGRAM_LISTEN_URL",),
        lambda c: _upstream(c.deepgram_listen),
    ),
    ("deepgram_api_key", None, ("DEEPGRAM_API_KEY",), lambda c: _key(c.deepgram_agent)),
    ("deepgram_auth", "--deepgram-auth", ("DEEPGRAM_AUTH",), lambda c: c.deepgram_auth),
    ("allowed_origins", "--allowed-origin", ("PROXY_ALLOWED_ORIGINS",), lambda c: ",".join(c.allowed_origins) or "any"),
    ("function_call", "--no-function-call", ("PROXY_FUNCTION_CALL",), lambda c: "on" if c.function_call else "off"),
    ("functions", "--function", ("PROXY_FUNCTIONS",), lambda c: ",".join(c.functions) or "none"),
    (
        "trusted_proxies",
        "--trusted-proxies",
        ("PROXY_TRUSTED_PROXIES",),
        lambda c: ",".join(map(str, c.trusted_proxies)) or "none",
    ),
    (
        "client_tokens",
        "--client-tokens-file",
        ("PROXY_CLIENT_TOKENS_FILE", "PROXY_CLIENT_TOKENS"),
        lambda c: _count(c.client_tokens),
    ),
    (
        "jwt_secrets",
        "--jwt-secrets-file",
        ("PROXY_JWT_SECRETS_FILE", "PROXY_JWT_SECRETS"),
        lambda c: _count(c.jwt_secrets),
    ),
    ("jwt_public_key", "--jwt-public-key-file", ("PROXY_JWT_PUBLIC_KEY_FILE",), lambda c: _optional(c.jwt_public_key)),
    ("jwt_audience", "--jwt-audience", ("PROXY_JWT_AUDIENCE",), lambda c: _optional(c.jwt_audience)),
    ("jwt_issuer", "--jwt-issuer", ("PROXY_JWT_ISSUER",), lambda c: _optional(c.jwt_issuer)),
    ("jwt_leeway_s", "--jwt-leeway-s", ("PROXY_JWT_LEEWAY_S",), lambda c: f"{c.jwt_leeway_s:g}"),
    (
        "client_json_passthrough",
        "--client-json-passthrough",
        ("OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH",),
        lambda c: "on" if c.client_json_passthrough else "off",
    ),
    (
        "deferred_response_create_timeout_ms",
        "--deferred-response-create-timeout-ms",
        ("OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS",),
        lambda c: f"{c.deferred_response_create_timeout_s * 1000:g}",
    ),
    (
        "deepgram_synthetic_audio_done",
        "--deepgram-synthetic-audio-done",
        ("DEEPGRAM_SYNTHETIC_AUDIO_DONE",),
        lambda c: "on" if c.deepgram_synthetic_audio_done else "off",
    ),
)


def _limit(name: str) -> Callable[[Config], str]:
    def show(config: Config) -> str:
        value = getattr(config.limits, name)
        return str(value) if isinstance(value, int) else f"{value:g}"

    return show


def rows(config: Config, args: argparse.Namespace, env: Mapping[str, str]) -> list[Row]:
    """Every setting with its resolved value and its source (flags win over variables)."""
    table = [
        *_SETTINGS,
        *((f"limits.{name}", flag, (variable,), _limit(name)) for name, (flag, variable, _) in LIMIT_SETTINGS.items()),
    ]
    found = []
    for name, flag, variables, show in table:
        source = "default"
        if flag is not None and getattr(args, flag[2:].replace("-", "_"), None) is not None:
            source = f"flag {flag}"
        else:
            for variable in variables:
                if env.get(variable) is not None and (env[variable].strip() or variable.endswith("_API_KEY")):
                    source = f"env {variable}"
                    break
        found.append(Row(name, show(config), source))
    return found


def render(config: Config, args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """The rows as aligned text, one setting a line, redacted."""
    table = rows(config, args, env)
    width = max(len(row.name) for row in table)
    value_width = min(60, max(len(row.value) for row in table))
    text = "".join(f"{row.name:<{width}}  {row.value:<{value_width}}  {row.source}\n" for row in table)
    return redact.for_config(config)(text)
