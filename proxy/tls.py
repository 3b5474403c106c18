"""TLS termination on the proxy's one port: ``wss://`` for the routes and ``https://`` for the HTTP endpoints.

A function of the configuration that any listener applies to the streams it accepts (:meth:`ServerTLS.wrap`), so
the accept path is the same with and without TLS. What the server context enforces: TLS 1.2 or newer, ALPN
``http/1.1`` (the only protocol served: WebSocket upgrades and the small HTTP answers), no renegotiation, the
default cipher choice of the Python ``ssl`` module.

The TLS handshake happens inside the connection's handshake deadline and while it holds its admission slot (see
:mod:`proxy.server`), so a client that opens a socket and never finishes TLS costs what any slow client costs, and
no more. A failed handshake (a plain-HTTP client on the TLS port, a scanner, an old TLS version) is counted and
logged at DEBUG: it is internet noise, not our fault.

:meth:`ServerTLS.reload` re-reads the certificate and key (SIGHUP): connections accepted afterwards use the new
pair, open ones keep theirs; a pair that does not load leaves the old one in place with a WARNING.

Error messages name the files and the problem, never their contents.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass

import trio
from cryptography import x509

from .config import Config, ConfigError
from .transport import SocketTransport

__all__ = ["ServerTLS", "TLSFiles", "accept_tls", "files_from_config", "server_context"]

log = logging.getLogger("proxy.tls")

#: PEM files of a certificate chain and a key are small; a larger file is a wrong path.
MAX_PEM_BYTES = 1 << 20
ALPN_PROTOCOLS = ("http/1.1",)
#: A certificate this close to its end is announced with a WARNING at every load.
EXPIRY_WARNING_S = 14 * 86400.0


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Where the server's certificate chain (leaf first) and its private key are, both PEM."""

    cert_file: str
    key_file: str


class _EncryptedKey(Exception):
    """Raised by the password callback: the server never prompts for a key's passphrase."""


def _no_passphrase() -> bytes:
    raise _EncryptedKey


def _check_pem(path: str, what: str, markers: tuple[bytes, ...]) -> None:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS {what} file {path!r}: {exc.strerror or 'error'}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"the TLS {what} file {path!r} is larger than {MAX_PEM_BYTES} bytes")
    if not any(marker in data for marker in markers):
        raise ConfigError(f"the TLS {what} file {path!r} holds no PEM {what}")


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """A server-side context for ``files``; :class:`ConfigError` with a one-line reason if they cannot serve."""
    _check_pem(files.cert_file, "certificate", (b"-----BEGIN CERTIFICATE-----",))
    _check_pem(files.key_file, "key", (b"PRIVATE KEY-----",))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    try:
        context.load_cert_chain(files.cert_file, files.key_file, password=_no_passphrase)
    except _EncryptedKey:
        raise ConfigError(
            f"the TLS key file {files.key_file!r} is encrypted; give an unencrypted key (protect it by file mode)"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"the TLS key file {files.key_file!r} does not match the certificate in {files.cert_file!r}"
            ) from None
        # exc.reason is an OpenSSL reason code (e.g. "PEM_LIB"), never file contents.
        raise ConfigError(
            f"cannot load the TLS certificate {files.cert_file!r} with the key {files.key_file!r}: "
            f"{exc.reason or 'not a valid PEM certificate chain and private key'}"
        ) from None
    return context


def files_from_config(config: Config) -> TLSFiles | None:
    """The configured pair, or None without TLS (:class:`Config` holds both or neither)."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    return TLSFiles(config.tls_cert_file, config.tls_key_file)


def check(config: Config) -> None:
    """Start-up validation, without logging: :class:`ConfigError` unless the configured pair (if any) can serve."""
    files = files_from_config(config)
    if files is not None:
        server_context(files)


def expiry_problem(cert_file: str, now: float) -> str | None:
    """Why the (leaf) certificate in ``cert_file`` needs attention soon, or None."""
    try:
        with open(cert_file, "rb") as file:
            leaf = x509.load_pem_x509_certificate(file.read(MAX_PEM_BYTES))
    except (OSError, ValueError):
        return None  # it loaded into the context a moment ago; nothing more to say
    left_s = leaf.not_valid_after_utc.timestamp() - now
    if left_s <= 0:
        return f"the TLS certificate in {cert_file!r} has expired"
    if left_s < EXPIRY_WARNING_S:
        return f"the TLS certificate in {cert_file!r} expires in {left_s / 86400:.1f} days"
    return None


class ServerTLS:
    """The listener's TLS: wraps accepted streams with the current context; :meth:`reload` swaps the context."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self._context = server_context(files)
        #: Successful reloads since start (the tests and the log read it).
        self.reloads = 0
        self._check_expiry()

    @classmethod
    def from_config(cls, config: Config) -> ServerTLS | None:
        """None when the configuration asks for no TLS; :class:`ConfigError` when its files cannot serve."""
        files = files_from_config(config)
        return None if files is None else cls(files)

    def _check_expiry(self) -> None:
        problem = expiry_problem(self.files.cert_file, time.time())
        if problem is not None:
            log.warning("%s; replace it and send SIGHUP", problem)

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    def wrap(self, stream: trio.SocketStream) -> trio.SSLStream[SocketTransport]:
        """The server side of TLS over a freshly accepted connection; the handshake runs on first use."""
        # https_compatible: a peer that closes without close_notify (common for HTTP clients; WebSocket has its
        # own close handshake) is an end of stream, not an error.
        return trio.SSLStream(SocketTransport.take_over(stream), self._context, server_side=True, https_compatible=True)

    def reload(self) -> bool:
        """Load the files again; on failure keep serving the previous pair (WARNING) and return False."""
        try:
            context = server_context(self.files)
        except ConfigError as exc:
            log.warning("TLS reload failed, still serving the previous certificate: %s", exc)
            return False
        self._context = context
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.files.cert_file)
        self._check_expiry()
        return True


async def accept_tls(stream: trio.SSLStream[SocketTransport]) -> bool:
    """Complete the server side of the handshake; False (logged at DEBUG) if the peer does not speak TLS to us."""
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        reason = cause.reason if isinstance(cause, ssl.SSLError) and cause.reason else "connection lost"
        log.debug("TLS handshake failed: %s", reason)
        return False
    return True
