"""``/deepgram-proxy`` (and the ``/v1/agent/converse`` / ``/v1/listen`` aliases): one route decision per upgrade.

Pure: configuration and the upgrade request in, a :class:`~proxy.routes.RouteDecision` (or an HTTP refusal) out.
"""

from __future__ import annotations

from .. import redact
from ..config import Config
from ..core import FailureKind, UpstreamFailure
from ..routes import Reject, RouteDecision, RouteRequest, session_logger, unavailable
from ..session import UpstreamTarget
from .passthrough import Passthrough
from .policy import (
    Service,
    configured_param_names,
    echo_subprotocol,
    filter_params,
    key_is_usable,
    refused_params,
    select_service,
    upstream_credentials,
    upstream_url,
)

CALLBACK_REFUSAL = (
    "Query parameters starting with 'callback' are not accepted: "
    "the proxy never lets a client choose where results are sent."
)


def deepgram_route(config: Config, request: RouteRequest, service: str | None) -> RouteDecision | Reject:
    """Decide one pass-through connection.

    ``service`` fixes the Deepgram API (the path aliases); None takes the first ``service`` query value, where
    ``transcription`` means Listen and anything else the Voice Agent. ``callback*`` parameters are refused with
    HTTP 400; of the rest only the allow-listed ones reach the upstream (none for the Voice Agent). A misconfigured
    upstream still accepts the client, then answers an ``Error`` (agent) and close 1011.
    """
    log = session_logger("proxy.deepgram", request)
    params = request.params()
    refused = refused_params(params)
    if refused:
        log.info("refused: callback query parameter")
        return Reject(400, CALLBACK_REFUSAL)
    chosen = select_service(params, service)
    if chosen is Service.TRANSCRIPTION:
        upstream, allowed = config.deepgram_listen, config.deepgram_listen_params
    else:
        upstream, allowed = config.deepgram_agent, ()
    limits = config.limits
    core = Passthrough(
        chosen,
        max_pending_frames=limits.outbox_high_water_frames,
        max_pending_bytes=limits.outbox_high_water_bytes,
        synthetic_audio_done=config.deepgram_synthetic_audio_done,
        log=log,
        redactor=redact.for_config(config),
    )
    subprotocol = echo_subprotocol(request.subprotocols, redact.config_secrets(config))
    if _offers_credentials(request):
        log.debug("client credentials are never forwarded upstream")
    failure = unavailable(upstream)
    if failure is None and upstream.key is not None and not key_is_usable(upstream.key, config.deepgram_auth):
        log.error("the Deepgram key contains characters that cannot be sent; check DEEPGRAM_API_KEY")
        failure = UpstreamFailure(FailureKind.CONFIG)
    if failure is not None:
        return RouteDecision(core, failure, subprotocol, {"service": chosen.value})
    query = filter_params(params, allowed, configured_param_names(upstream.url))
    if query.dropped:
        # Names only (values may be credentials or personal data), escaped and capped: they come from the client.
        names = sorted({name[:40] for name in query.dropped})[:20]
        log.debug("query parameters not forwarded: %r", names)
    headers, subprotocols = upstream_credentials(upstream.key, config.deepgram_auth)
    target = UpstreamTarget(upstream_url(upstream.url, query.forwarded), headers, subprotocols)
    return RouteDecision(core, target, subprotocol, {"service": chosen.value})


def _offers_credentials(request: RouteRequest) -> bool:
    if any(name.lower() == b"authorization" for name, _ in request.headers):
        return True
    return any(entry.lower() in ("token", "bearer") for entry in request.subprotocols)
