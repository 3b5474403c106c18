"""Process-wide counters of the listener and its sessions, rendered in the Prometheus text format at ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field

from .session import SessionStats


@dataclass(slots=True)
class Metrics:
    sessions_active: dict[str, int] = field(default_factory=dict)
    sessions_total: dict[str, int] = field(default_factory=dict)
    rejected_total: dict[str, int] = field(default_factory=dict)
    #: accept(2) failures that the listener rode out (EMFILE and friends), by errno name.
    accept_errors_total: dict[str, int] = field(default_factory=dict)
    client_frames_total: int = 0
    upstream_frames_total: int = 0
    upstream_failures_total: dict[str, int] = field(default_factory=dict)
    client_close_codes: dict[int, int] = field(default_factory=dict)
    session_errors_total: int = 0

    def count_rejected(self, reason: str) -> None:
        self.rejected_total[reason] = self.rejected_total.get(reason, 0) + 1

    def render(self, live: list[SessionStats], *, connections_open: int = 0, handshakes_pending: int = 0) -> str:
        client = self.client_frames_total + sum(s.client_frames for s in live)
        upstream = self.upstream_frames_total + sum(s.upstream_frames for s in live)
        lines = [
            "# HELP proxy_sessions_active Open WebSocket sessions.",
            "# TYPE proxy_sessions_active gauge",
            *(f'proxy_sessions_active{{route="{r}"}} {n}' for r, n in sorted(self.sessions_active.items())),
            "# HELP proxy_sessions_total Sessions started.",
            "# TYPE proxy_sessions_total counter",
            *(f'proxy_sessions_total{{route="{r}"}} {n}' for r, n in sorted(self.sessions_total.items())),
            "# HELP proxy_connections_open Client TCP connections open, sessions included.",
            "# TYPE proxy_connections_open gauge",
            f"proxy_connections_open {connections_open}",
            "# HELP proxy_handshakes_pending Client connections whose request head is not complete yet.",
            "# TYPE proxy_handshakes_pending gauge",
            f"proxy_handshakes_pending {handshakes_pending}",
            "# HELP proxy_rejected_total Connections and upgrade requests refused, by reason.",
            "# TYPE proxy_rejected_total counter",
            *(f'proxy_rejected_total{{reason="{r}"}} {n}' for r, n in sorted(self.rejected_total.items())),
            "# HELP proxy_accept_errors_total Failed accepts (out of file descriptors or memory), by errno.",
            "# TYPE proxy_accept_errors_total counter",
            *(f'proxy_accept_errors_total{{errno="{e}"}} {n}' for e, n in sorted(self.accept_errors_total.items())),
            "# HELP proxy_frames_total Frames received, by leg.",
            "# TYPE proxy_frames_total counter",
            f'proxy_frames_total{{leg="client"}} {client}',
            f'proxy_frames_total{{leg="upstream"}} {upstream}',
            "# HELP proxy_upstream_failures_total Upstream connections that failed, by error code.",
            "# TYPE proxy_upstream_failures_total counter",
            *(
                f'proxy_upstream_failures_total{{code="{c}"}} {n}'
                for c, n in sorted(self.upstream_failures_total.items())
            ),
            "# HELP proxy_client_close_total Client closes sent by the proxy, by code.",
            "# TYPE proxy_client_close_total counter",
            *(f'proxy_client_close_total{{code="{c}"}} {n}' for c, n in sorted(self.client_close_codes.items())),
            "# HELP proxy_session_errors_total Sessions that ended with an internal error.",
            "# TYPE proxy_session_errors_total counter",
            f"proxy_session_errors_total {self.session_errors_total}",
        ]
        return "\n".join(lines) + "\n"
