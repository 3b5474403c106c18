"""The generator's honest sessions come from many loopback addresses, so the proxy under test keeps its default
per-address cap and the hostile clients' own address stands apart."""

from __future__ import annotations

from collections import Counter

from bench.clients import HONEST_ADDRESSES, honest_address
from bench.hostile import ATTACKER_ADDRESS
from bench.runner import _proxy_env
from proxy.config import Limits


def test_a_thousand_sessions_stay_within_the_default_per_address_cap() -> None:
    per_address = Counter(honest_address(sid) for sid in range(1000))
    assert max(per_address.values()) <= Limits().max_connections_per_ip
    assert ATTACKER_ADDRESS not in HONEST_ADDRESSES


def test_the_benchmarks_proxy_keeps_the_default_per_address_cap() -> None:
    assert "PROXY_MAX_CONNECTIONS_PER_IP" not in _proxy_env("ws://127.0.0.1:1")
