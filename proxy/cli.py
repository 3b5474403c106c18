"""Command line: ``python -m proxy [serve|simulate|chat] ...``.

``serve`` (the default) runs the proxy. Routes without a key or URL are served by the embedded simulators, started
in-process on a loopback port, and the proxy says so at start-up. Keys are read from the environment only (a key
on a command line is visible to every user of the machine).
"""

from __future__ import annotations

import argparse
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

SUBCOMMANDS = ("serve", "simulate", "chat")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proxy",
        description=(
            "Voice-agent proxy: /openai translates the component protocol to the OpenAI Realtime API, "
            "/deepgram-proxy passes it through to Deepgram; API keys stay on the server. "
            "Other commands: 'simulate' (serve the simulated upstreams), 'chat' (talk to a running proxy)."
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
        "--allowed-origin",
        action="append",
        help="browser Origin allowed to connect; repeatable (env PROXY_ALLOWED_ORIGINS, comma-separated; default any)",
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
    }
    if args.deferred_response_create_timeout_ms is not None:
        if args.deferred_response_create_timeout_ms < 0:
            raise ConfigError("--deferred-response-create-timeout-ms must not be negative")
        overrides["deferred_response_create_timeout_s"] = args.deferred_response_create_timeout_ms / 1000
    config = config_module.from_env(**overrides)
    if args.max_sessions is not None:
        if args.max_sessions < 1:
            raise ConfigError("--max-sessions must be at least 1")
        from dataclasses import replace

        config = replace(config, limits=replace(config.limits, max_sessions=args.max_sessions))
    return config


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
    """Run the proxy (and the embedded simulators it needs) until SIGINT/SIGTERM, then drain."""
    from .server import ProxyServer

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
        port = await nursery.start(server.serve)
        print(f"listening on ws://{config.host}:{port}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if server.session_count == 0 or server.draining:
                    break
                server.shutdown()
                nursery.start_soon(_exit_when_idle, server, nursery.cancel_scope)
            nursery.cancel_scope.cancel()


async def _exit_when_idle(server: ProxyServer, scope: trio.CancelScope) -> None:
    deadline = trio.current_time() + server.config.limits.shutdown_grace_s + 1
    while server.session_count and trio.current_time() < deadline:  # noqa: ASYNC110 - polls a plain counter
        await trio.sleep(0.05)
    scope.cancel()
