"""Who may connect: the Origin allow-list, static client tokens and signed client tokens (JWTs), decided without I/O.

The server hands :meth:`ClientGate.check` the parts of a WebSocket upgrade that matter (headers, query, route name,
offered subprotocols) and the wall-clock time; the answer is :class:`Refused` (an HTTP status, a generic message and
a short reason word for logs and metrics) or :class:`Admitted` (the subprotocols the route may see, the one to echo,
and a principal that is safe to log). Every rule about admission lives here; nothing here logs or does I/O.

Rules, in order:

* more than one ``Origin`` header is refused (403) whatever else is configured: a request must not let two
  parties judge it on different headers;
* with an Origin allow-list, the one ``Origin`` must be on it (403);
* with static tokens or JWT keys configured, the request carries exactly one credential (401 otherwise), either as
  the ``token`` query parameter or as a subprotocol pair ``["token", <credential>]`` (or ``["bearer", ...]``), the
  form Deepgram's own clients use. Either kind admits: a static token (compared in constant time) or a JWT signed
  with a configured key. In the subprotocol form the credential entry is removed before the route sees the list
  and the scheme word is echoed, never the credential.

Signed tokens: HS256 with any configured shared secret (several secrets allow rotation), RS256 or ES256 with the
configured public key. The algorithm is pinned by key type before any verification: ``none`` is never accepted and
an HS256 token is never checked against the public key (the algorithm-confusion attack). ``exp`` is required;
``exp``, ``nbf`` and ``aud``/``iss`` (when configured) are checked with a small leeway. Optional claims narrow a
token further: ``origin`` must equal the request's ``Origin``, ``route`` the route name (``openai``, ``deepgram``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

if TYPE_CHECKING:
    from .config import Config

#: Credentials longer than this are refused before any decoding (a JWT with a few claims is well under 1 KiB).
MAX_TOKEN_BYTES = 4096
#: A JWT header segment longer than this is refused before it is parsed: headers are tiny, and a long one could
#: only be an attempt to make the JSON parser work (deep nesting) before the signature is checked.
MAX_JWT_HEADER_CHARS = 512
#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash; a shorter one falls to offline guessing.
MIN_SECRET_BYTES = 32
#: RSA keys below this size are refused at start (NIST SP 800-131A).
MIN_RSA_BITS = 2048
#: Subprotocol entries that announce a credential in the next entry.
CREDENTIAL_SCHEMES: frozenset[str] = frozenset({"token", "bearer"})
#: How much of a token's ``sub`` claim the principal shows.
MAX_PRINCIPAL_CHARS = 32


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key for signed client tokens and the one algorithm it verifies (``RS256`` or ``ES256``)."""

    algorithm: str
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = field(compare=False)

    def __repr__(self) -> str:
        return f"VerificationKey({self.algorithm})"


def load_public_key(pem: bytes) -> VerificationKey:
    """Parse a PEM public key; ``ValueError`` with one sentence when it is unusable."""
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    except Exception:  # cryptography raises its own UnsupportedAlgorithm for odd key types
        raise ValueError("holds a key type that cannot verify tokens (use RSA or EC P-256)") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"holds an RSA key shorter than {MIN_RSA_BITS} bits")
        return VerificationKey("RS256", key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("holds an EC key on a curve other than P-256 (ES256 needs P-256)")
        return VerificationKey("ES256", key)
    raise ValueError("holds a key type that cannot verify tokens (use RSA or EC P-256)")


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot be an HS256 secret (words that never quote it), or None when it can."""
    if not secret.strip():
        return "is empty"
    if secret.lstrip().startswith(("-----BEGIN", "ssh-")):
        return "looks like a public or private key, not a shared secret"
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    return None


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """The parts of a WebSocket upgrade that decide admission. Header names are lower case; repeats are kept."""

    headers: tuple[tuple[bytes, bytes], ...] = ()
    query: str = ""
    route: str = ""
    subprotocols: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Admitted:
    """The client may connect.

    ``subprotocols``: the offered list without the credential entry (what the route may look at and echo);
    ``echo``: the scheme word to echo when the credential came as a subprotocol pair and the route picks none;
    ``principal``: who connected, safe to log (``anonymous``, ``token#2``, ``jwt:'user-17'``).
    """

    subprotocols: tuple[str, ...]
    echo: str | None = None
    principal: str = "anonymous"


@dataclass(frozen=True, slots=True)
class Refused:
    """Refuse the upgrade: ``status`` and a generic ``message`` for the client, ``reason`` (one short word, never
    derived from the request) for the log line and the ``proxy_rejected_total`` label."""

    status: int
    message: str
    reason: str

    @property
    def metric_reason(self) -> str:
        """``forbidden_<reason>`` for 403, ``unauthorized_<reason>`` for 401."""
        return f"{'forbidden' if self.status == 403 else 'unauthorized'}_{self.reason}"


def _forbidden(reason: str) -> Refused:
    return Refused(403, "Origin not allowed", reason)


def _unauthorized(reason: str) -> Refused:
    return Refused(401, "Unauthorized", reason)


@dataclass(frozen=True, slots=True)
class ClientGate:
    """Every admission rule of one configuration. Build it with :meth:`from_config`; :meth:`check` per upgrade."""

    allowed_origins: tuple[str, ...] = ()
    tokens: tuple[bytes, ...] = field(default=(), repr=False)
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    public_key: VerificationKey | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 30.0

    @classmethod
    def from_config(cls, config: Config) -> ClientGate:
        return cls(
            allowed_origins=config.allowed_origins,
            tokens=tuple(token.encode() for token in config.client_tokens),
            secrets=tuple(secret.encode() for secret in config.jwt_secrets),
            public_key=config.jwt_public_key,
            audience=config.jwt_audience,
            issuer=config.jwt_issuer,
            leeway_s=config.jwt_leeway_s,
        )

    @property
    def verifies_jwts(self) -> bool:
        return bool(self.secrets) or self.public_key is not None

    @property
    def requires_credential(self) -> bool:
        return bool(self.tokens) or self.verifies_jwts

    def check(self, request: ClientRequest, now: float) -> Admitted | Refused:
        """Admit or refuse one upgrade; ``now`` is the wall-clock time in seconds since the epoch."""
        origins = [value.decode("latin-1") for name, value in request.headers if name == b"origin"]
        if len(origins) > 1:
            return _forbidden("origin_duplicate")
        origin = origins[0] if origins else None
        if self.allowed_origins and origin not in self.allowed_origins:
            return _forbidden("origin")
        if not self.requires_credential:
            return Admitted(request.subprotocols)
        found = _credential(request)
        if isinstance(found, Refused):
            return found
        credential, subprotocols, echo = found
        offered = credential.encode("utf-8", "replace")
        if len(offered) > MAX_TOKEN_BYTES:
            return _unauthorized("too_long")
        # Every token is compared (no early exit), as digests: constant time in the content and the length.
        digest = hashlib.sha256(offered).digest()
        matches = [hmac.compare_digest(digest, hashlib.sha256(token).digest()) for token in self.tokens]
        if any(matches):
            return Admitted(subprotocols, echo, f"token#{matches.index(True) + 1}")
        if not self.verifies_jwts:
            return _unauthorized("bad_token")
        claims = self._verify(credential, now)
        if isinstance(claims, Refused):
            return claims
        if "origin" in claims and (origin is None or claims["origin"] != origin):
            return _unauthorized("origin_claim")
        if "route" in claims and claims["route"] != request.route:
            return _unauthorized("route_claim")
        return Admitted(subprotocols, echo, _principal(claims))

    def _verify(self, token: str, now: float) -> dict[str, Any] | Refused:
        """The claims of a JWT whose signature, algorithm, ``aud``, ``iss`` and times are good, or a refusal."""
        if len(token.partition(".")[0]) > MAX_JWT_HEADER_CHARS:
            return _unauthorized("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return _unauthorized("malformed")
        algorithm = header.get("alg")
        keys: tuple[bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey, ...]
        # Pinned by key type: shared secrets verify HS256 only, the public key only its own algorithm.
        if algorithm == "HS256" and self.secrets:
            keys = self.secrets
        elif self.public_key is not None and algorithm == self.public_key.algorithm:
            keys = (self.public_key.key,)
        else:
            return _unauthorized("algorithm")
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.audience,
                    issuer=self.issuer,
                    # Times are checked below against the caller's clock, so tests can pin it.
                    options={"require": ["exp"], "verify_exp": False, "verify_nbf": False, "verify_iat": False},
                )
            except jwt.InvalidSignatureError:
                continue  # rotation: another secret may have signed it
            except jwt.PyJWTError as exc:
                return _unauthorized(_reason(exc))
            return self._check_times(claims, now)
        return _unauthorized("bad_signature")

    def _check_times(self, claims: dict[str, Any], now: float) -> dict[str, Any] | Refused:
        expires, not_before = claims["exp"], claims.get("nbf")
        if not _is_time(expires) or (not_before is not None and not _is_time(not_before)):
            return _unauthorized("claims")
        if expires <= now - self.leeway_s:
            return _unauthorized("expired")
        if not_before is not None and not_before > now + self.leeway_s:
            return _unauthorized("not_yet_valid")
        return claims


def _credential(request: ClientRequest) -> tuple[str, tuple[str, ...], str | None] | Refused:
    """The one credential a request carries, the subprotocols without it, and the scheme word to echo."""
    found = [value for name, value in parse_qsl(request.query, keep_blank_values=True) if name == "token"]
    echo: str | None = None
    kept: list[str] = []
    offered = request.subprotocols
    index = 0
    while index < len(offered):
        entry = offered[index]
        kept.append(entry)
        if entry.lower() in CREDENTIAL_SCHEMES:
            if index + 1 == len(offered):
                return _unauthorized("malformed")
            found.append(offered[index + 1])
            echo = entry
            index += 1  # the credential itself is never kept, so the route can neither echo nor forward it
        index += 1
    if not found or found == [""]:
        return _unauthorized("missing")
    if len(found) > 1:
        return _unauthorized("duplicate")
    return found[0], tuple(kept), echo


def _is_time(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def _reason(exc: jwt.PyJWTError) -> str:
    """A short word for a verification failure (a bounded set: it becomes a metric label)."""
    for kind, reason in (
        (jwt.InvalidAudienceError, "audience"),
        (jwt.InvalidIssuerError, "issuer"),
        (jwt.MissingRequiredClaimError, "missing_claim"),
        (jwt.InvalidAlgorithmError, "algorithm"),
        (jwt.DecodeError, "malformed"),
    ):
        if isinstance(exc, kind):
            return reason
    return "invalid"


def _principal(claims: dict[str, Any]) -> str:
    """``jwt:'<sub>'``, the subject cut to :data:`MAX_PRINCIPAL_CHARS` printable characters."""
    subject = claims.get("sub")
    if not isinstance(subject, str):
        return "jwt"
    shown = "".join(c if c.isprintable() else "?" for c in subject[:MAX_PRINCIPAL_CHARS])
    return f"jwt:{shown!r}" + ("..." if len(subject) > MAX_PRINCIPAL_CHARS else "")
