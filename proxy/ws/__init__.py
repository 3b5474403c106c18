"""The proxy's own WebSocket layer (RFC 6455): a sans-IO codec and handshake, and a thin Trio connection.

Both legs of every session use it. See :mod:`proxy.ws.connection` for why it reads in the caller's task.
"""

from .connection import CloseReason, ConnectionClosed, ConnectionRejected, WebSocket, connect
from .handshake import HandshakeFailed, Refusal, Upgrade, accept_response, parse_upgrade

__all__ = [
    "CloseReason",
    "ConnectionClosed",
    "ConnectionRejected",
    "HandshakeFailed",
    "Refusal",
    "Upgrade",
    "WebSocket",
    "accept_response",
    "connect",
    "parse_upgrade",
]
