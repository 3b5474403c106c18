"""How an open upstream leg ended, judged by the blame policy in proxy/core.py for every route's core.

An upstream that proxy/ws cut off for breaking the protocol or a limit (1009: a message over the size limit) is
an upstream failure: an ``Error`` where the client's protocol has one, then 1011, never a code that blames the
client. A close the upstream sent itself is relayed.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from proxy.core import Close, FailureKind, SessionCore, upstream_ended
from proxy.deepgram.passthrough import Passthrough
from proxy.deepgram.policy import Service
from proxy.openai.translator import Translator

CORES: dict[str, tuple[Callable[[], SessionCore], list[str]]] = {
    "openai": (Translator, ["upstream_protocol_error"]),
    "deepgram-agent": (
        lambda: Passthrough(Service.AGENT, max_pending_frames=8, max_pending_bytes=1000),
        ["upstream_protocol_error"],
    ),
    "deepgram-listen": (lambda: Passthrough(Service.TRANSCRIPTION, max_pending_frames=8, max_pending_bytes=1000), []),
}


def errors(core: SessionCore) -> list[str]:
    return [json.loads(frame)["code"] for frame in core.to_client if isinstance(frame, str)]


@pytest.mark.parametrize("route", list(CORES))
@pytest.mark.parametrize("code", [1002, 1007, 1009])
def test_an_upstream_cut_off_by_the_proxy_is_an_upstream_failure(route: str, code: int) -> None:
    make, expected = CORES[route]
    core = make()
    core.upstream_opened(0.0)
    close, failure = upstream_ended(core, code, "message too big", False, 1.0)
    assert close == Close(1011, "Upstream protocol error")
    assert failure is not None
    assert (failure.kind, failure.close_code) == (FailureKind.PROTOCOL, code)
    assert errors(core) == expected


@pytest.mark.parametrize("route", list(CORES))
def test_a_close_the_upstream_sent_is_relayed(route: str) -> None:
    make, _expected = CORES[route]
    core = make()
    core.upstream_opened(0.0)
    # Its own 1009 would blame the client across the proxy: relayed as 1011, but not reported as our cut-off.
    assert upstream_ended(core, 1009, "too big", True, 1.0) == (Close(1011, ""), None)
    core = make()
    core.upstream_opened(0.0)
    assert upstream_ended(core, 4000, "bye", True, 1.0) == (Close(4000, "bye"), None)
