"""Admission before the handshake, sans-IO: caps on connections, and which client a connection belongs to.

Three caps keep idle or slow sockets from crowding out everyone else; over any of them a connection is refused at
once, never queued:

* open connections (sessions included);
* connections whose request head is not complete yet ("pending handshakes");
* connections per client address.

The pending-handshake table is shared, so one address must not be able to fill it and lock everyone else out
(per-address caps are no help behind a trusted proxy, or when the cap was raised): when it is full, a newcomer from
an address holding fewer pending slots than the address holding the most takes the place of that address's oldest
pending connection, which is evicted (:attr:`Ticket.evicted`, ``on_evict``). A newcomer from the address holding the
most is refused instead. So a new address always gets a slot, and the hog's share shrinks toward everyone else's.
Pending slots are counted by TCP peer, trusted proxies included.

The client address is the TCP peer, unless the peer is a trusted proxy: then it is the right-most
``X-Forwarded-For`` entry that is not itself a trusted proxy (entries further left were written by whoever the
proxy talked to, so they prove nothing). A connection from a trusted proxy is not counted against the proxy's own
address: behind a load balancer every peer is the balancer. Its forwarded address is only known once the head is
read, so it is counted then (:meth:`Admission.claim`), for WebSocket upgrades, the connections that stay.

:class:`LogThrottle` keeps per-connection complaints to one log line per interval. No Trio here: time is passed in.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .config import IPNetwork, Limits

#: ``proxy_rejected_total`` reasons for the three caps.
MAX_CONNECTIONS = "max_connections"
MAX_PENDING_HANDSHAKES = "max_pending_handshakes"
MAX_CONNECTIONS_PER_IP = "max_connections_per_ip"
#: ``proxy_rejected_total`` reason for a pending handshake evicted to make room for another address.
PENDING_EVICTED = "pending_handshake_evicted"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(slots=True, eq=False)
class Ticket:
    """One admitted connection's share of the counts; handed back to :meth:`Admission.release` exactly once."""

    peer: str
    #: The address this connection is counted under; None while it is not counted per address (trusted proxy).
    counted_as: str | None
    #: The TCP peer's address as pending handshakes are counted (the peer's, trusted proxies included).
    pending_as: str
    pending: bool = True
    #: Set when the connection lost its pending-handshake slot to another address: it is to be closed at once.
    evicted: bool = False
    #: Called once on eviction (the shell cancels the head read); None until the shell sets it.
    on_evict: Callable[[], None] | None = None


class Admission:
    """Counts open connections, pending handshakes and connections per client address against :class:`Limits`."""

    def __init__(self, limits: Limits, trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        self._limits = limits
        self._trusted = tuple(trusted_proxies)
        self._per_address: dict[str, int] = {}
        #: Pending tickets by TCP peer address, each in accept order (a dict is an ordered set here).
        self._pending_by: dict[str, dict[Ticket, None]] = {}
        self.open = 0
        self.pending = 0

    def admit(self, peer: str) -> Ticket | str:
        """A connection was accepted from ``peer``: its ticket, or the reason to refuse it.

        When the pending table is full this may evict another address's oldest pending connection (see the module
        docstring); the evicted ticket's ``on_evict`` has been called by the time this returns.
        """
        limits = self._limits
        if self.open >= limits.max_connections:
            return MAX_CONNECTIONS
        parsed = parse_address(peer)
        address = peer if parsed is None else str(parsed)
        trusted = parsed is not None and any(parsed in network for network in self._trusted)
        counted_as = None if trusted else address
        if counted_as is not None and self._per_address.get(counted_as, 0) >= limits.max_connections_per_ip:
            return MAX_CONNECTIONS_PER_IP
        if self.pending >= limits.max_pending_handshakes and not self._evict_for(address):
            return MAX_PENDING_HANDSHAKES
        self.open += 1
        self.pending += 1
        if counted_as is not None:
            self._per_address[counted_as] = self._per_address.get(counted_as, 0) + 1
        ticket = Ticket(peer, counted_as, address)
        self._pending_by.setdefault(address, {})[ticket] = None
        return ticket

    def _evict_for(self, address: str) -> bool:
        """Free one pending slot for a newcomer from ``address``, if another address holds more; False if not."""
        if not self._pending_by:
            return False
        hog = max(self._pending_by, key=lambda held_by: len(self._pending_by[held_by]))
        if len(self._pending_by[hog]) <= len(self._pending_by.get(address, ())):
            return False  # the newcomer's own address holds the most (or as many): it waits its turn
        victim = next(iter(self._pending_by[hog]))
        self.head_read(victim)
        victim.evicted = True
        if victim.on_evict is not None:
            victim.on_evict()
        return True

    def pending_from(self, peer: str) -> int:
        """Pending handshakes from a TCP peer address."""
        return len(self._pending_by.get(normalise(peer), ()))

    def head_read(self, ticket: Ticket) -> None:
        """The handshake phase is over for this connection (head complete, refused, evicted, or gone)."""
        if ticket.pending:
            ticket.pending = False
            self.pending -= 1
            held = self._pending_by[ticket.pending_as]
            del held[ticket]
            if not held:
                del self._pending_by[ticket.pending_as]  # the table holds only addresses with pending connections

    def claim(self, ticket: Ticket, client: str) -> bool:
        """Count a connection from a trusted proxy under its forwarded ``client``; False if that address is full."""
        if ticket.counted_as is not None:
            return True  # counted under its TCP peer since accept
        count = self._per_address.get(client, 0)
        if count >= self._limits.max_connections_per_ip:
            return False
        self._per_address[client] = count + 1
        ticket.counted_as = client
        return True

    def release(self, ticket: Ticket) -> None:
        self.head_read(ticket)
        self.open -= 1
        if ticket.counted_as is not None:
            left = self._per_address[ticket.counted_as] - 1
            if left:
                self._per_address[ticket.counted_as] = left
            else:
                del self._per_address[ticket.counted_as]  # the table holds only addresses with connections
            ticket.counted_as = None

    def connections_from(self, address: str) -> int:
        return self._per_address.get(address, 0)

    def is_trusted(self, address: str) -> bool:
        parsed = parse_address(address)
        return parsed is not None and any(parsed in network for network in self._trusted)

    def client_address(self, peer: str, forwarded_for: Iterable[bytes]) -> str:
        """The TCP peer, or behind trusted proxies the right-most ``X-Forwarded-For`` entry not itself trusted."""
        if not self.is_trusted(peer):
            return normalise(peer)
        entries = [entry.strip() for value in forwarded_for for entry in value.decode("latin-1").split(",")]
        client = normalise(peer)
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None:
                # Not an address (``unknown``, garbage): what is left of it cannot be trusted either.
                break
            client = str(address)
            if not any(address in network for network in self._trusted):
                break
        return client


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> IPAddress | None:
    """An IP address as peers and proxies write it (IPv4-mapped IPv6 is the IPv4 address); None if it is not one.

    Cached (bounded): parsing is most of the cost of admitting a connection, and a reconnect storm repeats one address.
    """
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise(peer: str) -> str:
    address = parse_address(peer)
    return peer if address is None else str(address)
