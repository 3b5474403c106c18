"""Command line: ``python -m proxy [serve|simulate|chat|canary|config] ...`` (also the ``voice-agent-proxy`` script).

``serve`` (the default) runs the proxy. Routes without a key or URL are served by the embedded simulators, started
in-process on a loopback port, and the proxy says so at start-up. Keys are read from the environment only (a key
on a command line is visible to every user of the machine).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from . import config as config_module
from . import logs, redact, tls
from .audio import RESAMPLER_KINDS
from .config import Config, ConfigError, UpstreamSource

if TYPE_CHECKING:
    from collections.abc import Callable

    from .metrics import Metrics
    from .server import ProxyServer
    from .sim.server import SimOptions

    #: Opens the listening sockets (a worker binds the shared port itself); returns them and the port.
    Listen = Callable[[], tuple[list[trio.SocketListener], int]]
    #: Called once the server listens, instead of printing the ``listening on`` line.
    Started = Callable[[ProxyServer, int, trio.Nursery], None]

log = logging.getLogger("proxy")

SUBCOMMANDS = ("serve", "simulate", "chat", "canary", "config")
DISTRIBUTION = "voice-agent-proxy"

#: What ``--help`` says about each limit flag (the flags themselves come from config.LIMIT_SETTINGS).
_LIMIT_HELP: dict[str, str] = {
    "max_sessions": "concurrent WebSocket sessions; more get 503 (default 1000)",
    "max_connections": "open client connections, sessions included; must be above --max-sessions (default 2048)",
    "max_pending_handshakes": "connections still sending their request head; more are refused (default 128)",
    "max_connections_per_ip": "connections from one client address (default 64)",
    "handshake_timeout_s": "seconds from accept to a complete request head and its answer (default 10)",
    "drain_timeout_s": "seconds sessions may go on after SIGTERM before they get 1001 (default 20)",
    "max_session_s": "seconds one session may last before the proxy ends it cleanly (default 3540)",
    "shutdown_grace_s": "seconds sessions get to finish their 1001 close after the drain (default 5)",
    "max_fragments_per_message": "frames in one WebSocket message, empty ones included; more: close 1008 (default 128)",
    "max_control_frames_per_s": "pings and pongs a peer may send per second; more: close 1008 (default 20)",
    "client_max_message_bytes": "largest client message; more: close 1009 (default 1048576)",
    "upstream_max_message_bytes": "largest upstream message; more: the client gets 1011 (default 16777216)",
    "outbox_high_water_frames": "frames queued per leg before the other leg's reader pauses (default 256)",
    "outbox_high_water_bytes": "bytes queued per leg before the other leg's reader pauses (default 4194304)",
    "upstream_connect_timeout_s": "seconds for the upstream connect, TLS and handshake (default 10)",
    "send_timeout_s": "seconds a send may stay stuck before the session ends (default 30)",
    "close_timeout_s": "seconds for a WebSocket close handshake (default 2)",
    "ping_interval_s": "seconds between WebSocket pings on both legs; 0: none (default 20)",
    "ping_timeout_s": "seconds a ping may wait for an answer (default 20)",
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage is one ``--help`` away) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def version() -> str:
    """The installed distribution's version; a source tree that was never installed says so."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m proxy",
        description=(
            "Voice-agent proxy: /openai translates the component protocol to the OpenAI Realtime API, "
            "/deepgram-proxy passes it through to Deepgram; API keys stay on the server (environment only). "
            "Other commands: 'simulate' (serve the simulated upstreams), 'chat' (talk to a running proxy), "
            "'canary' (check a deployed proxy end to end), "
            "'config' (print the resolved configuration, secrets masked, and exit)."
        ),
        epilog="Every flag has an environment variable (flags win); docs/configuration.md lists them all.",
    )
    p.add_argument("--version", action="version", version=f"{DISTRIBUTION} {version()}")
    listening = p.add_argument_group("listening")
    listening.add_argument("--host", metavar="HOST", help="listen address (env PROXY_HOST, default 127.0.0.1)")
    listening.add_argument(
        "--port", metavar="PORT", help="listen port; 0 picks a free one (env PROXY_PORT, default 8080)"
    )
    listening.add_argument(
        "--workers",
        metavar="N|auto",
        help="worker processes sharing the port; 'auto': one per usable CPU (env PROXY_WORKERS, default 1)",
    )

    listening.add_argument(
        "--no-demo",
        action="store_true",
        default=None,
        help="do not serve the browser demo page on / and /demo (env PROXY_DEMO=0; served by default)",
    )

    logging_group = p.add_argument_group("logging")
    logging_group.add_argument(
        "--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR or CRITICAL (env LOG_LEVEL, default INFO)"
    )
    logging_group.add_argument(
        "--log-format",
        metavar="text|json",
        help="text (one readable line per record) or json (one object per line) (env LOG_FORMAT, default text)",
    )

    upstreams = p.add_argument_group("upstreams", "API keys are read from OPENAI_API_KEY and DEEPGRAM_API_KEY only")
    upstreams.add_argument(
        "--openai-url", metavar="URL", help="OpenAI Realtime WebSocket URL (env OPENAI_REALTIME_URL)"
    )
    upstreams.add_argument(
        "--deepgram-agent-url", metavar="URL", help="Deepgram Voice Agent URL (env DEEPGRAM_AGENT_URL)"
    )
    upstreams.add_argument("--deepgram-listen-url", metavar="URL", help="Deepgram Listen URL (env DEEPGRAM_LISTEN_URL)")
    upstreams.add_argument(
        "--deepgram-auth",
        metavar="header|subprotocol",
        help="how the Deepgram key is sent: 'header' (Authorization: Token, default) or 'subprotocol' "
        "(env DEEPGRAM_AUTH)",
    )

    upstreams.add_argument(
        "--resampler",
        choices=RESAMPLER_KINDS,
        help="/openai microphone 16 -> 24 kHz conversion: 'soxr' (anti-aliased, default) or 'linear' (the"
        " reference's interpolation, bit for bit) (env OPENAI_PROXY_RESAMPLER)",
    )

    clients = p.add_argument_group(
        "clients & auth", "secrets come from files or the environment, never from the command line"
    )
    clients.add_argument(
        "--allowed-origin",
        action="append",
        metavar="ORIGIN",
        help="browser Origin allowed to connect; repeatable (env PROXY_ALLOWED_ORIGINS, comma-separated; default any)",
    )
    clients.add_argument(
        "--no-function-call",
        dest="function_call",
        action="store_false",
        default=None,
        help="do not serve POST /function-call (env PROXY_FUNCTION_CALL=0)",
    )
    clients.add_argument(
        "--function",
        action="append",
        metavar="MODULE:CALLABLE",
        help="a handler for POST /function-call, named after the callable; repeatable"
        " (env PROXY_FUNCTIONS, comma-separated)",
    )
    clients.add_argument(
        "--trusted-proxies",
        metavar="CIDRS",
        help="comma-separated CIDRs whose X-Forwarded-For is believed (env PROXY_TRUSTED_PROXIES; default none)",
    )
    clients.add_argument(
        "--client-tokens-file",
        metavar="FILE",
        help="file of static client tokens, one a line (env PROXY_CLIENT_TOKENS_FILE, or PROXY_CLIENT_TOKENS)",
    )
    clients.add_argument(
        "--jwt-secrets-file",
        metavar="FILE",
        help="file of HS256 secrets for signed client tokens, one a line, any verifies"
        " (env PROXY_JWT_SECRETS_FILE, or PROXY_JWT_SECRETS)",
    )
    clients.add_argument(
        "--jwt-public-key-file",
        metavar="FILE",
        help="PEM public key (RSA: RS256, EC P-256: ES256) for signed client tokens (env PROXY_JWT_PUBLIC_KEY_FILE)",
    )
    clients.add_argument(
        "--jwt-audience", metavar="AUD", help="required 'aud' of signed client tokens (env PROXY_JWT_AUDIENCE)"
    )
    clients.add_argument(
        "--jwt-issuer", metavar="ISS", help="required 'iss' of signed client tokens (env PROXY_JWT_ISSUER)"
    )
    clients.add_argument(
        "--jwt-leeway-s",
        metavar="SECONDS",
        help="clock skew allowed on 'exp' and 'nbf' in seconds, 0 to 300 (env PROXY_JWT_LEEWAY_S, default 30)",
    )

    limits = p.add_argument_group("limits", "every limit also has its variable (shown in brackets)")
    for name, (flag, variable, parse) in config_module.LIMIT_SETTINGS.items():
        metavar = "SECONDS" if parse in (config_module.seconds, config_module.positive_seconds) else "N"
        limits.add_argument(flag, metavar=metavar, help=f"{_LIMIT_HELP.get(name, name)} [env {variable}]")

    compat = p.add_argument_group("compatibility", "options of the reference backend, same meaning")
    compat.add_argument(
        "--client-json-passthrough",
        action="store_true",
        default=None,
        help="forward unknown client JSON to OpenAI as is (env OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH=1; debugging)",
    )
    compat.add_argument(
        "--deferred-response-create-timeout-ms",
        metavar="MS",
        help="watchdog for response.create after a tool result (env OPENAI_PROXY_DEFERRED_RESPONSE_CREATE_TIMEOUT_MS,"
        " default 20000)",
    )
    compat.add_argument(
        "--deepgram-synthetic-audio-done",
        action="store_true",
        default=None,
        help="send the reference's one-shot synthetic AgentAudioDone on /deepgram-proxy"
        " (env DEEPGRAM_SYNTHETIC_AUDIO_DONE=1; off by default)",
    )
    listening.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="PEM certificate chain: serve wss:// and https:// on the port; with --tls-key; reloaded on SIGHUP"
        " (env PROXY_TLS_CERT)",
    )
    listening.add_argument(
        "--tls-key", metavar="FILE", help="PEM private key of --tls-cert, unencrypted (env PROXY_TLS_KEY)"
    )
    return p


def _text(args: argparse.Namespace, flag: str, parse: Callable[[str, str], Any]) -> Any:
    """A flag's text parsed by the same rule as its variable (None when the flag is not given)."""
    value = getattr(args, flag[2:].replace("-", "_"))
    return None if value is None else parse(str(value), flag)


def build_config(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    """The configuration from ``env`` (default: the process environment) and the flags, which win; every value
    is checked here, so a mistake is one ConfigError naming the flag or variable."""
    overrides: dict[str, Any] = {
        "host": _text(args, "--host", config_module.host),
        "port": _text(args, "--port", config_module.port),
        "log_level": _text(args, "--log-level", config_module.log_level),
        "log_format": _text(args, "--log-format", config_module.log_format),
        "openai_url": args.openai_url,
        "deepgram_agent_url": args.deepgram_agent_url,
        "deepgram_listen_url": args.deepgram_listen_url,
        "client_json_passthrough": args.client_json_passthrough,
        "deepgram_synthetic_audio_done": args.deepgram_synthetic_audio_done,
        "deepgram_auth": _text(args, "--deepgram-auth", config_module.deepgram_auth),
        "resampler": _text(args, "--resampler", config_module.resampler_kind),
        "allowed_origins": tuple(args.allowed_origin) if args.allowed_origin else None,
        "function_call": args.function_call,
        "functions": tuple(args.function) if args.function else None,
        "client_tokens_file": args.client_tokens_file,
        "jwt_secrets_file": args.jwt_secrets_file,
        "jwt_public_key_file": args.jwt_public_key_file,
        "jwt_audience": args.jwt_audience,
        "jwt_issuer": args.jwt_issuer,
        "jwt_leeway_s": _text(args, "--jwt-leeway-s", config_module.seconds),
        "deferred_response_create_timeout_s": _text(
            args, "--deferred-response-create-timeout-ms", config_module.seconds_from_ms
        ),
        "trusted_proxies": _text(args, "--trusted-proxies", config_module.networks),
        "workers": _text(args, "--workers", config_module.workers),
        "demo": False if args.no_demo else None,
        "tls_cert_file": args.tls_cert,
        "tls_key_file": args.tls_key,
    }
    limits = {}
    for name, (flag, _variable, parse) in config_module.LIMIT_SETTINGS.items():
        value = _text(args, flag, parse)
        if value is not None:
            limits[name] = value
    config = config_module.from_env(env, limits=limits, **overrides)
    tls.check(config)  # the certificate and key load, or start-up stops here
    if config.function_call:
        from .functions import registry

        registry(config.functions)  # every handler imports, or start-up stops here
    return config


def setup_logging(level: str, secrets: Iterable[str] = (), log_format: str = "text") -> None:
    """Log to stderr in ``log_format``; every record is redacted (``secrets`` and token-shaped text) before any
    handler sees it (see proxy/logs.py)."""
    logs.configure(level, log_format, secrets)


def main(argv: list[str] | None = None) -> int:
    """The ``voice-agent-proxy`` console script and ``python -m proxy``: the exit status (2: bad configuration)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "simulate":
        from .sim.server import main as simulate

        return simulate(argv[1:])
    if argv and argv[0] == "chat":
        from .chat import main as chat

        return chat(argv[1:])
    if argv and argv[0] == "canary":
        from .canary import main as canary

        return canary(argv[1:])
    show = bool(argv) and argv[0] == "config"
    if argv and argv[0] in ("serve", "config"):
        argv = argv[1:]
    args = _parser().parse_args(argv)
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if show:
        from .config_report import render

        sys.stdout.write(render(config, args, os.environ))
        return 0
    sim_options = None
    if config.uses_simulator():
        from .sim.server import SimOptions

        try:
            sim_options = SimOptions()
        except ValueError as exc:
            print(f"configuration error: simulator: {exc}", file=sys.stderr)
            return 2
    setup_logging(config.log_level, redact.config_secrets(config), config.log_format)
    if config.workers > 1:
        from .supervisor import supervise

        return supervise(config, sim_options)
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


async def serve(
    config: Config,
    sim_options: SimOptions | None = None,
    *,
    listen: Listen | None = None,
    metrics: Metrics | None = None,
    started: Started | None = None,
) -> None:
    """Run the proxy (and the embedded simulators it needs) until a signal ends it.

    SIGTERM starts a drain (see :meth:`~proxy.server.ProxyServer.shutdown`): the listener keeps answering until the
    sessions end or the drain timeout passes. A second SIGTERM, or SIGINT, ends the drain now: sessions get 1001
    and the shutdown grace. Any signal after that cancels what is left. SIGHUP reloads the TLS certificate.

    A worker of :mod:`proxy.supervisor` passes ``listen``, ``metrics`` and ``started``; by default the server opens
    its own listeners, keeps its own metrics and prints the ``listening on`` line.
    """
    from .server import ProxyServer

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            if config.uses_simulator():
                from .sim.server import SimOptions, serve_simulators

                sim_port = await nursery.start(serve_simulators, "127.0.0.1", 0, sim_options or SimOptions())
                config = config.with_simulator_port("127.0.0.1", sim_port)
                # A log record, not a bare print, so a JSON log stays one object per line.
                log.warning(
                    "NOTE: routes without an API key or URL are served by the embedded simulators "
                    "on ws://127.0.0.1:%d (no real model is called)",
                    sim_port,
                )
            _announce_upstreams(config)
            server = ProxyServer(config, metrics=metrics)
            port = await nursery.start(_serve_then_stop, server, nursery.cancel_scope, listen)
            if started is None:
                print(f"listening on {config.url_scheme}://{config.host}:{port}", flush=True)
            else:
                started(server, port, nursery)
            ending = False
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if server.tls is None:
                        log.info("SIGHUP: no TLS certificate configured, nothing to reload")
                    else:
                        server.tls.reload()
                elif signum == signal.SIGTERM and not server.draining:
                    server.shutdown()
                elif not ending:
                    log.info("%s: closing sessions now", signal.Signals(signum).name)
                    ending = True
                    server.shutdown(drain_timeout_s=0)
                else:
                    nursery.cancel_scope.cancel()


async def _serve_then_stop(
    server: ProxyServer,
    scope: trio.CancelScope,
    listen: Listen | None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until the drain ends, then stop everything else (the simulators, the signal loop)."""
    try:
        if listen is None:
            await server.serve(task_status=task_status)
        else:
            listeners, port = listen()
            await server.serve_listeners(listeners, port, task_status=task_status)
    finally:
        scope.cancel()
