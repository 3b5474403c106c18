"""The Deepgram pass-through: a sans-IO relay core (:mod:`.passthrough`), its query/credential policy
(:mod:`.policy`) and the route that wires them to the server (:mod:`.route`, imported by the server)."""

from .passthrough import Passthrough
from .policy import Service

__all__ = ["Passthrough", "Service"]
