"""proxy.admission without sockets: the caps, client addresses behind trusted proxies, and paced log lines."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.admission import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    MAX_PENDING_HANDSHAKES,
    Admission,
    Ticket,
    normalise,
)
from proxy.config import Limits, networks
from proxy.ratelimit import LogThrottle
from tests.fuzzing import fuzz_settings

LB = networks("10.0.0.0/8, 2001:db8::/32", "test")


def admission(**limits: int) -> Admission:
    return Admission(Limits(**limits), LB)  # type: ignore[arg-type]


def test_each_cap_refuses_with_its_own_reason() -> None:
    caps = admission(max_connections=3, max_pending_handshakes=2, max_connections_per_ip=2)
    first = caps.admit("192.0.2.1")
    assert isinstance(first, Ticket)
    second = caps.admit("192.0.2.1")
    assert isinstance(second, Ticket)
    assert caps.admit("192.0.2.1") == MAX_CONNECTIONS_PER_IP
    # The pending table is full, held by the newcomer's own address: nobody to evict for it.
    caps.release(second)
    second = caps.admit("192.0.2.2")
    assert isinstance(second, Ticket)
    assert caps.admit("192.0.2.2") == MAX_PENDING_HANDSHAKES  # as many as anyone: it waits its turn
    caps.head_read(first)
    caps.head_read(second)
    assert isinstance(caps.admit("192.0.2.3"), Ticket)
    assert caps.admit("192.0.2.4") == MAX_CONNECTIONS
    caps.release(first)
    assert isinstance(caps.admit("192.0.2.1"), Ticket)


def test_a_full_pending_table_evicts_the_oldest_of_the_address_holding_most_for_a_new_address() -> None:
    caps = admission(max_pending_handshakes=4, max_connections_per_ip=10)
    evicted: list[int] = []
    hog = []
    for n in range(3):
        ticket = caps.admit("192.0.2.66")
        assert isinstance(ticket, Ticket)
        ticket.on_evict = functools.partial(evicted.append, n)
        hog.append(ticket)
    other = caps.admit("192.0.2.7")
    assert isinstance(other, Ticket)
    assert caps.pending == 4
    # The hog's own newcomers are refused: it holds the most.
    assert caps.admit("192.0.2.66") == MAX_PENDING_HANDSHAKES
    # A new address takes the hog's oldest slot.
    newcomer = caps.admit("192.0.2.8")
    assert isinstance(newcomer, Ticket)
    assert evicted == [0]
    assert hog[0].evicted
    assert not hog[0].pending
    assert (caps.pending, caps.open, caps.pending_from("192.0.2.66")) == (4, 5, 2)
    # Still its connection until the shell closes it (the per-address count goes on until release).
    assert caps.connections_from("192.0.2.66") == 3
    caps.release(hog[0])
    assert caps.connections_from("192.0.2.66") == 2
    # 192.0.2.7 holds 1, the hog 2: the next eviction is the hog's next oldest, never an address's only slot
    # while another holds more.
    assert isinstance(caps.admit("192.0.2.7"), Ticket)
    assert evicted == [0, 1]
    # Now 192.0.2.7 holds the most (2; the others 1 each): its own newcomers wait.
    assert caps.admit("192.0.2.7") == MAX_PENDING_HANDSHAKES
    assert not other.evicted
    assert not newcomer.evicted


def test_an_address_over_its_connection_cap_evicts_nobody() -> None:
    caps = admission(max_pending_handshakes=2, max_connections_per_ip=1)
    first = caps.admit("192.0.2.1")
    second = caps.admit("192.0.2.2")
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    assert caps.admit("192.0.2.1") == MAX_CONNECTIONS_PER_IP
    assert not first.evicted
    assert not second.evicted


def test_a_ticket_evicted_before_its_shell_ran_is_marked_and_releases_cleanly() -> None:
    caps = admission(max_pending_handshakes=2, max_connections_per_ip=5)
    first, second = caps.admit("192.0.2.1"), caps.admit("192.0.2.1")
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    third = caps.admit("192.0.2.2")
    assert isinstance(third, Ticket)
    assert first.evicted
    assert first.on_evict is None
    for ticket in (first, second, third):
        caps.release(ticket)
    assert (caps.open, caps.pending, caps.pending_from("192.0.2.1"), caps.connections_from("192.0.2.1")) == (0,) * 4


def test_a_trusted_proxy_is_not_capped_per_address_until_its_client_is_known() -> None:
    caps = admission(max_connections_per_ip=1)
    tickets = [caps.admit("10.1.2.3") for _ in range(5)]
    assert all(isinstance(t, Ticket) for t in tickets)
    first, second = tickets[0], tickets[1]
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    assert caps.claim(first, "203.0.113.7")
    assert not caps.claim(second, "203.0.113.7")
    assert caps.claim(second, "198.51.100.1")
    caps.release(first)
    assert caps.connections_from("203.0.113.7") == 0


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.1", [b"203.0.113.7"], "192.0.2.1"),  # untrusted peer: the header is ignored
        ("10.0.0.5", [], "10.0.0.5"),  # trusted peer without the header
        ("10.0.0.5", [b"203.0.113.7"], "203.0.113.7"),
        ("10.0.0.5", [b"1.1.1.1, 203.0.113.7"], "203.0.113.7"),  # the client's own entries prove nothing
        ("10.0.0.5", [b"203.0.113.7, 10.9.9.9"], "203.0.113.7"),  # a chain of trusted proxies
        ("10.0.0.5", [b"198.51.100.1", b"203.0.113.7, 10.9.9.9"], "203.0.113.7"),  # several header lines
        ("10.0.0.5", [b"10.1.1.1, 10.2.2.2"], "10.1.1.1"),  # only proxies: the left-most
        ("10.0.0.5", [b"203.0.113.7:4711"], "203.0.113.7"),
        ("10.0.0.5", [b"[2001:db9::1]:443"], "2001:db9::1"),
        ("10.0.0.5", [b"unknown"], "10.0.0.5"),
        ("10.0.0.5", [b"203.0.113.7, garbage, 10.9.9.9"], "10.9.9.9"),
        ("::ffff:10.0.0.5", [b"203.0.113.7"], "203.0.113.7"),  # an IPv4-mapped peer is its IPv4 address
        ("::ffff:192.0.2.1", [], "192.0.2.1"),
    ],
)
def test_the_client_address(peer: str, forwarded: list[bytes], client: str) -> None:
    assert admission().client_address(peer, forwarded) == client


@fuzz_settings(200)
@pytest.mark.fuzz
@given(st.lists(st.binary(max_size=80), max_size=4))
def test_an_untrusted_peer_is_its_own_client_whatever_it_forwards(forwarded: list[bytes]) -> None:
    assert admission().client_address("192.0.2.1", forwarded) == "192.0.2.1"


@fuzz_settings(200)
@pytest.mark.fuzz
@given(st.lists(st.binary(max_size=80), max_size=4))
def test_a_forwarded_client_is_never_taken_from_left_of_an_untrusted_entry(forwarded: list[bytes]) -> None:
    """Whatever a client prepends, the answer is the entry the nearest trusted proxy wrote (or a proxy)."""
    honest = admission().client_address("10.0.0.5", [b"203.0.113.7"])
    assert admission().client_address("10.0.0.5", [*forwarded, b"203.0.113.7"]) == honest == "203.0.113.7"


@fuzz_settings(200)
@pytest.mark.fuzz
@given(
    st.lists(
        st.tuples(st.sampled_from(["admit", "head", "claim", "release"]), st.integers(0, 5), st.integers(0, 3)),
        max_size=60,
    )
)
def test_the_counts_stay_within_the_caps_and_return_to_zero(steps: list[tuple[str, int, int]]) -> None:
    caps = admission(max_connections=6, max_pending_handshakes=4, max_connections_per_ip=2)
    peers = ["192.0.2.1", "192.0.2.2", "10.0.0.1", "10.0.0.2", "::ffff:192.0.2.1", "2001:db8::1"]
    clients = ["203.0.113.1", "203.0.113.2", "192.0.2.1", "198.51.100.1"]
    live: list[Ticket] = []
    for action, which, client in steps:
        if action == "admit":
            address = normalise(peers[which])
            was_free = caps.pending_from(address) == 0 and caps.open < 6
            was_free = was_free and (caps.is_trusted(address) or caps.connections_from(address) < 2)
            outcome = caps.admit(peers[which])
            if isinstance(outcome, Ticket):
                live.append(outcome)
            # An address with no pending handshake is never refused for lack of pending slots.
            assert outcome != MAX_PENDING_HANDSHAKES or not was_free
        elif live:
            ticket = live[which % len(live)]
            if action == "head":
                caps.head_read(ticket)
            elif action == "claim" and not ticket.pending:
                caps.claim(ticket, clients[client])
            elif action == "release":
                caps.release(ticket)
                live.remove(ticket)
        assert caps.open == len(live) <= 6
        assert caps.pending == sum(t.pending for t in live) <= 4
        assert sum(caps.pending_from(p) for p in {normalise(p) for p in peers}) == caps.pending
        for address in {*clients, "192.0.2.1", "192.0.2.2"}:
            assert caps.connections_from(address) <= 2
    for ticket in live:
        caps.release(ticket)
    assert (caps.open, caps.pending) == (0, 0)
    assert all(caps.connections_from(a) == 0 for a in {*clients, "192.0.2.1", "192.0.2.2"})


def test_the_log_throttle_allows_one_line_per_interval_and_counts_the_rest() -> None:
    throttle = LogThrottle(10.0)
    assert throttle.allow("a", 0.0) == 0
    assert throttle.allow("a", 5.0) is None
    assert throttle.allow("b", 5.0) == 0  # kinds are paced apart
    assert throttle.allow("a", 9.9) is None
    assert throttle.allow("a", 10.0) == 2
    assert throttle.allow("a", 20.0) == 0
