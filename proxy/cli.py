"""Command line: ``python -m proxy [serve|simulate|chat|canary] ...``.

``serve`` (the default) runs the proxy. Routes without a key or URL are served by the embedded simulators, started
in-process on a loopback port, and the proxy says so at start-up. Keys are read from the environment only (a key
on a command line is visible to every user of the machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from . import config as config_module
from . import redact
from .config import Config, ConfigError, UpstreamSource

if TYPE_CHECKING:
    from .server import ProxyServer
    from .sim.server import SimOptions

log = logging.getLogger("proxy")

SUBCOMMANDS = ("serve", "simulate", "chat", "canary")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proxy",
        description=(
            "Voice-agent proxy: /openai translates the component protocol to the OpenAI Realtime API, "
            "/deepgram-proxy passes it through to Deepgram; API keys stay on the server. "
            "Other commands: 'simulate' (serve the simulated upstreams), 'chat' (talk to a running proxy), "
            "'canary' (check a deployed proxy end to end)."
        ),
    )
    p.add_argument("--host", help="listen address (env PROXY_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port; 0 picks a free one (env PROXY_PORT, default 8080)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (env LOG_LEVEL, default INFO)")
    p.add_argument("--openai-url", help="OpenAI Realtime WebSocket URL (env OPENAI_REALTIME_URL)")
    p.add_argument("--deepgram-agent-url", help="Deepgram Voice Agent URL (env DEEPGRAM_AGENT_URL)")
    p.add_argument("--deepgram-listen-url", help="Deepgram Listen URL (env DEEPGRAM_LISTEN_URL)")
    p.add_argument(
        "--client-json-passthrough",
        action="store_true",
        default=None,
        help="forward unknown client JSON to OpenAI as is (env OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH=1; debugging)",
    )
    p.add_argument(
        "--deferred-response-create-timeout-ms",
        type=float,
        help="watchdog for response.create after a tool result (env OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS,"
        " default 20000)",
    )
    p.add_argument(
        "--deepgram-synthetic-audio-done",
        action="store_true",
        default=None,
        help="send the reference's one-shot synthetic AgentAudioDone on /deepgram-proxy (off by default)",
    )
    p.add_argument(
        "--deepgram-auth",
        choices=("header", "subprotocol"),
        help="how the Deepgram key is sent: 'Authorization: Token' header (default) or the 'token' subprotocol",
    )
    p.add_argument("--max-sessions", type=int, help="concurrent WebSocket sessions (default 1000)")
    p.add_argument(
        "--max-connections", type=int, help="open client connections, sessions included (env PROXY_MAX_CONNECTIONS)"
    )
    p.add_argument(
        "--max-pending-handshakes",
        type=int,
        help="connections still sending their request head; more are refused (env PROXY_MAX_PENDING_HANDSHAKES)",
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=int,
        help="connections from one client address (env PROXY_MAX_CONNECTIONS_PER_IP)",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        help="seconds from accept to a complete request head and its answer (env PROXY_HANDSHAKE_TIMEOUT, default 10)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        help="seconds sessions may go on after SIGTERM before they get 1001 (env PROXY_DRAIN_TIMEOUT_S, default 20)",
    )
    p.add_argument(
        "--trusted-proxies",
        help="comma-separated CIDRs whose X-Forwarded-For is believed (env PROXY_TRUSTED_PROXIES; default none)",
    )
    p.add_argument(
        "--max-fragments-per-message",
        help="frames in one WebSocket message, empty ones included; more: close 1008 "
        "(env PROXY_MAX_FRAGMENTS_PER_MESSAGE, default 128)",
    )
    p.add_argument(
        "--max-control-frames-per-s",
        help="pings and pongs a peer may send per second; more: close 1008 "
        "(env PROXY_MAX_CONTROL_FRAMES_PER_S, default 20)",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        help="browser Origin allowed to connect; repeatable (env PROXY_ALLOWED_ORIGINS, comma-separated; default any)",
    )
    # Client credentials come from files (or the environment), never from the command line: ps shows it to all.
    p.add_argument(
        "--client-tokens-file",
        help="file of static client tokens, one a line (env PROXY_CLIENT_TOKENS_FILE, or PROXY_CLIENT_TOKENS)",
    )
    p.add_argument(
        "--jwt-secrets-file",
        help="file of HS256 secrets for signed client tokens, one a line, any verifies"
        " (env PROXY_JWT_SECRETS_FILE, or PROXY_JWT_SECRETS)",
    )
    p.add_argument(
        "--jwt-public-key-file",
        help="PEM public key (RSA: RS256, EC P-256: ES256) for signed client tokens (env PROXY_JWT_PUBLIC_KEY_FILE)",
    )
    p.add_argument("--jwt-audience", help="required 'aud' of signed client tokens (env PROXY_JWT_AUDIENCE)")
    p.add_argument("--jwt-issuer", help="required 'iss' of signed client tokens (env PROXY_JWT_ISSUER)")
    p.add_argument(
        "--jwt-leeway-s",
        type=float,
        help="clock skew allowed on 'exp' and 'nbf' in seconds (env PROXY_JWT_LEEWAY_S, default 30)",
    )
    return p


def build_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level.upper() if args.log_level else None,
        "openai_url": args.openai_url,
        "deepgram_agent_url": args.deepgram_agent_url,
        "deepgram_listen_url": args.deepgram_listen_url,
        "client_json_passthrough": args.client_json_passthrough,
        "deepgram_synthetic_audio_done": args.deepgram_synthetic_audio_done,
        "deepgram_auth": args.deepgram_auth,
        "allowed_origins": tuple(args.allowed_origin) if args.allowed_origin else None,
        "client_tokens_file": args.client_tokens_file,
        "jwt_secrets_file": args.jwt_secrets_file,
        "jwt_public_key_file": args.jwt_public_key_file,
        "jwt_audience": args.jwt_audience,
        "jwt_issuer": args.jwt_issuer,
        "jwt_leeway_s": args.jwt_leeway_s,
    }
    if args.deferred_response_create_timeout_ms is not None:
        if args.deferred_response_create_timeout_ms < 0:
            raise ConfigError("--deferred-response-create-timeout-ms must not be negative")
        overrides["deferred_response_create_timeout_s"] = args.deferred_response_create_timeout_ms / 1000
    if args.trusted_proxies is not None:
        overrides["trusted_proxies"] = config_module.networks(args.trusted_proxies, "--trusted-proxies")
    config = config_module.from_env(**overrides)
    if args.max_sessions is not None:
        if args.max_sessions < 1:
            raise ConfigError("--max-sessions must be at least 1")
        config = dataclasses.replace(config, limits=dataclasses.replace(config.limits, max_sessions=args.max_sessions))
    return _limits(config, args)


def _limits(config: Config, args: argparse.Namespace) -> Config:
    """The limits given by flags (they win over the environment), checked together."""
    changes: dict[str, float] = {}
    for name, (flag, _variable, parse) in config_module.LIMIT_SETTINGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            changes[name] = parse(str(value), flag)
    limits = dataclasses.replace(config.limits, **changes)  # type: ignore[arg-type]
    if limits.max_connections <= limits.max_sessions:
        raise ConfigError("max connections must be above max sessions (every session is a connection)")
    return dataclasses.replace(config, limits=limits)


def setup_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Log to stderr; every record is redacted (``secrets`` and token-shaped text) before any handler sees it."""
    redactor = redact.Redactor(secrets)
    redact.install_log_redaction(redactor)
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, redact.RedactingFilter) for existing in handler.filters):
            handler.addFilter(redact.RedactingFilter(redactor))


def main(argv: list[str]) -> int:
    if argv and argv[0] == "simulate":
        from .sim.server import main as simulate

        return simulate(argv[1:])
    if argv and argv[0] == "chat":
        from .chat import main as chat

        return chat(argv[1:])
    if argv and argv[0] == "canary":
        from .canary import main as canary

        return canary(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    args = _parser().parse_args(argv)
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    sim_options = None
    if config.uses_simulator():
        from .sim.server import SimOptions

        try:
            sim_options = SimOptions()
        except ValueError as exc:
            print(f"configuration error: simulator: {exc}", file=sys.stderr)
            return 2
    setup_logging(config.log_level, redact.config_secrets(config))
    failed: OSError | None = None
    try:
        trio.run(serve, config, sim_options)
    except* KeyboardInterrupt:
        pass
    except* OSError as group:
        failed = _first(group)
    if failed is not None:
        print(f"cannot listen on {config.host}:{config.port}: {failed.strerror or failed}", file=sys.stderr)
        return 1
    return 0


def _first(group: BaseExceptionGroup[OSError]) -> OSError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, OSError)
    return exc


def _announce_upstreams(config: Config) -> None:
    for route, upstream in (
        ("/openai", config.openai),
        ("/deepgram-proxy (agent)", config.deepgram_agent),
        ("/deepgram-proxy (transcription)", config.deepgram_listen),
    ):
        if upstream.source is UpstreamSource.SIMULATOR:
            log.warning("%s is served by the EMBEDDED SIMULATOR (no key or URL configured)", route)
        elif upstream.source is UpstreamSource.MISCONFIGURED:
            log.error("%s: the API key variable is set but blank; the route will answer an error", route)
        else:
            log.info("%s -> %s (%s)", route, upstream.url.split("?")[0], upstream.source.value)


async def serve(config: Config, sim_options: SimOptions | None = None) -> None:
    """Run the proxy (and the embedded simulators it needs) until a signal ends it.

    SIGTERM starts a drain (see :meth:`~proxy.server.ProxyServer.shutdown`): the listener keeps answering until the
    sessions end or the drain timeout passes. A second SIGTERM, or SIGINT, ends the drain now: sessions get 1001
    and the shutdown grace. Any signal after that cancels what is left.
    """
    from .server import ProxyServer

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            if config.uses_simulator():
                from .sim.server import SimOptions, serve_simulators

                sim_port = await nursery.start(serve_simulators, "127.0.0.1", 0, sim_options or SimOptions())
                config = config.with_simulator_port("127.0.0.1", sim_port)
                print(
                    "NOTE: routes without an API key or URL are served by the embedded simulators "
                    f"on ws://127.0.0.1:{sim_port} (no real model is called)",
                    file=sys.stderr,
                    flush=True,
                )
            _announce_upstreams(config)
            server = ProxyServer(config)
            port = await nursery.start(_serve_then_stop, server, nursery.cancel_scope)
            print(f"listening on ws://{config.host}:{port}", flush=True)
            ending = False
            async for signum in signals:
                if signum == signal.SIGTERM and not server.draining:
                    server.shutdown()
                elif not ending:
                    log.info("%s: closing sessions now", signal.Signals(signum).name)
                    ending = True
                    server.shutdown(drain_timeout_s=0)
                else:
                    nursery.cancel_scope.cancel()


async def _serve_then_stop(
    server: ProxyServer, scope: trio.CancelScope, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until the drain ends, then stop everything else (the simulators, the signal loop)."""
    try:
        await server.serve(task_status=task_status)
    finally:
        scope.cancel()
