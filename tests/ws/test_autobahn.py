"""The Autobahn TestSuite (run by kosoku) against proxy.ws, both sides, on loopback.

Server side: kosoku's fuzzingclient drives an echo server built on proxy.ws. Client side: an echo client built on
proxy.ws runs every case kosoku's fuzzingserver serves. Every case passes except the compression groups 12 and
13, which need permessage-deflate: the proxy declines the offer (a 101 without the extension), so those cases end
UNIMPLEMENTED with a clean closing handshake, and that is asserted too.
"""

from __future__ import annotations

import pytest

from tests.ws.autobahn import COMPRESSION_CASES, Outcome, run_fuzzingclient, run_fuzzingserver

pytestmark = pytest.mark.autobahn

#: Cases of the suite outside groups 12 and 13 (the same set on both sides).
NON_COMPRESSION_CASES = 301
COMPRESSION_CASE_COUNT = 216


def failures(outcome: Outcome) -> list[str]:
    return [
        f"{r.case_id}: {r.behavior.value}/{r.behavior_close.value}: {r.result} {r.result_close}" for r in outcome.failed
    ]


async def test_autobahn_server_side_passes_every_case() -> None:
    outcome = await run_fuzzingclient(["*"], COMPRESSION_CASES, concurrency=8)
    assert failures(outcome) == []
    assert len(outcome.passed) == NON_COMPRESSION_CASES


async def test_autobahn_client_side_passes_every_case() -> None:
    outcome = await run_fuzzingserver(["*"], COMPRESSION_CASES, concurrency=8)
    assert failures(outcome) == []
    assert len(outcome.passed) == NON_COMPRESSION_CASES


async def test_autobahn_compression_offers_are_declined_cleanly() -> None:
    outcome = await run_fuzzingclient(COMPRESSION_CASES, [], concurrency=8)
    results = outcome.passed + outcome.failed
    assert len(results) == COMPRESSION_CASE_COUNT
    for result in results:
        assert "sec-websocket-extensions" not in result.http_response.lower()
        assert (result.behavior.value, result.behavior_close.value) == ("UNIMPLEMENTED", "OK")
