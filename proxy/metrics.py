"""Prometheus metrics of the listener and its sessions (prometheus-client), rendered at ``/metrics``.

Two modes, chosen when the :class:`Metrics` object is built:

* **One process** (the default): every family lives in a registry owned by this server (never the library's global
  one, so two servers in one process never mix counts), with the process, platform and GC collectors of this process.
* **N workers** (``--workers``, :mod:`proxy.supervisor`): prometheus-client's multiprocess mode. Every worker writes
  its counters, gauges and histograms to memory-mapped files in one directory the supervisor creates for the run and
  removes at exit; whichever worker answers a scrape reads the whole directory, so ``/metrics`` reports the server,
  not the worker the connection happened to land on. We chose this over aggregating in the supervisor because a
  scrape then needs no round trip between processes and a worker that is stuck or restarting cannot hold a scrape up.
  When the supervisor reaps a worker it removes the files of its live gauges and folds its counters and histograms
  into one archive file per type (:func:`archive_dead_worker`), so its counts stay in the totals (counters never go
  backwards) and a crash loop does not pile up files. Scrapes hold a shared lock on the directory and the fold an
  exclusive one, so no scrape sees a dead worker's counts twice or not at all. The standard ``process_*`` families
  are read from ``/proc`` for every live worker and the supervisor, with a ``worker`` label (the worker's slot,
  ``0`` .. ``N-1``, or ``supervisor``): summed they give the server's CPU and memory; a restarted worker's counter
  starts again from zero, which Prometheus treats as the counter reset it is.

Hot-path rule: nothing here runs per frame. Frames are counted in plain integers on each session's
:class:`~proxy.session.SessionStats` and folded into the counters at scrape time, at session end, and (with workers)
once a second; the session shell reports the timing milestones through :class:`SessionClock`, whose per-message
checks are a flag test.

Label values are bounded: routes come from the route table, reasons and upstream failure codes from the proxy's own
vocabulary, close codes from a fixed set (anything else is ``other``).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .session import SessionStats

log = logging.getLogger("proxy.metrics")

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
#: Written by the supervisor into the metrics directory: which process serves which worker slot, and the restarts.
WORKERS_FILE = "workers.json"
_LOCK_FILE = "lock"

#: Close codes that get their own label value; anything else (an upstream's private 4xxx code) is "other".
_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
_SESSION_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
_LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)


def close_code_label(code: int) -> str:
    return str(code) if code in _CLOSE_CODES else "other"


def version() -> str:
    try:
        return metadata.version("voice-agent-proxy")
    except metadata.PackageNotFoundError:
        return "unknown"


def enable_multiprocess(directory: str) -> None:
    """Switch this process to prometheus-client's multiprocess mode (a worker, before its :class:`Metrics`)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    # The library picks its value class when it is first imported; a worker may have imported it earlier.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def _constant(pid: object) -> Callable[[], str]:
    return lambda: str(pid)


@contextlib.contextmanager
def _locked(directory: str, how: int) -> Iterator[None]:
    with open(os.path.join(directory, _LOCK_FILE), "a+b") as file:
        fcntl.flock(file, how)
        yield


def archive_dead_worker(directory: str, pid: int) -> None:
    """Fold a dead worker's counter and histogram files into the archive files of the directory (all additive)."""
    with _locked(directory, fcntl.LOCK_EX):
        for kind in ("counter", "histogram"):
            dead = os.path.join(directory, f"{kind}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))  # type: ignore[no-untyped-call]
            try:
                totals = {key: number for key, number, _ts in archive.read_all_values()}  # type: ignore[no-untyped-call]
                for key, number, timestamp, _pos in MmapedDict.read_all_values_from_file(dead):  # type: ignore[no-untyped-call]
                    archive.write_value(key, totals.get(key, 0.0) + number, timestamp)  # type: ignore[no-untyped-call]
            finally:
                archive.close()  # type: ignore[no-untyped-call]
            os.remove(dead)


class _WorkerFiles(Collector):
    """prometheus-client's multiprocess merge, skipping a file a worker has created but not yet sized.

    A worker starting (or restarting) creates its memory-mapped file and then writes its header; a scrape or another
    worker's start that reads the directory in between would fail on the empty file. Such a file has no values yet,
    so leaving it out of this one reading loses nothing.
    """

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read the files (they are read at each scrape)

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self._directory, "*.db")):
            try:
                if os.path.getsize(path) >= _MMAP_HEADER_BYTES:
                    files.append(path)
            except OSError:  # removed since the glob (a dead worker's file folded into the archive)
                continue
        merged: Iterable[Metric] = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


class _BuildInfo(Collector):
    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("voice_agent_proxy_build_info", "The proxy's version (always 1).", labels=["version"])
        info.add_metric([version()], 1.0)
        return [info]


class _Workers(Collector):
    """Per-worker process families and the supervisor's restart count, from the supervisor's status file."""

    def __init__(self, directory: str) -> None:
        self._path = os.path.join(directory, WORKERS_FILE)

    def _status(self) -> dict[str, object]:
        try:
            with open(self._path, encoding="utf-8") as file:
                status = json.load(file)
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    def collect(self) -> Iterable[Metric]:
        status = self._status()
        pids = status.get("pids")
        families: dict[str, Metric] = {}
        for slot, pid in pids.items() if isinstance(pids, dict) else ():
            for family in ProcessCollector(pid=_constant(pid), registry=None).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": str(slot)}, sample.value)
        yield from families.values()
        workers = GaugeMetricFamily("proxy_workers", "Worker processes running now.")
        workers.add_metric([], float(len(pids) - 1 if isinstance(pids, dict) and pids else 0))
        yield workers
        restarts = status.get("restarts", 0)
        family = Metric("proxy_worker_restarts", "Workers that died and were started again.", "counter")
        family.add_sample("proxy_worker_restarts_total", {}, float(restarts) if isinstance(restarts, int) else 0.0)
        yield family


#: A memory-mapped value file starts with its used size and padding; shorter means not written yet.
_MMAP_HEADER_BYTES = 8


class Metrics:
    """Every metric family of one server. Methods are what the listener and the session shell report."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        # The families are written to by this process; the registry that renders /metrics reads them (one process)
        # or the files of every worker (multiprocess mode, where the objects are registered nowhere).
        own = None if multiprocess_dir else CollectorRegistry(auto_describe=True)
        self.registry: CollectorRegistry = own or CollectorRegistry(auto_describe=True)
        self._sessions_active = Gauge(
            "proxy_sessions_active", "Open WebSocket sessions.", ["route"], registry=own, multiprocess_mode="livesum"
        )
        self._sessions = Counter("proxy_sessions", "Sessions started.", ["route"], registry=own)
        self._connections_open = Gauge(
            "proxy_connections_open",
            "Client TCP connections open, sessions included.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self._handshakes_pending = Gauge(
            "proxy_handshakes_pending",
            "Client connections whose request head is not complete yet.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self._rejected = Counter(
            "proxy_rejected", "Connections and upgrade requests refused, by reason.", ["reason"], registry=own
        )
        self._accept_errors = Counter(
            "proxy_accept_errors",
            "Failed accepts (out of file descriptors or memory), by errno.",
            ["errno"],
            registry=own,
        )
        self._frames = Counter("proxy_frames", "Frames received, by leg.", ["leg"], registry=own)
        self._upstream_failures = Counter(
            "proxy_upstream_failures", "Upstream connections that failed, by error code.", ["code"], registry=own
        )
        self._client_closes = Counter(
            "proxy_client_close", "Client closes sent by the proxy, by code.", ["code"], registry=own
        )
        self._sessions_closed = Counter(
            "proxy_sessions_closed",
            "Sessions ended, by route, close code and who closed the client leg (proxy or client).",
            ["route", "code", "by"],
            registry=own,
        )
        self._session_errors = Counter(
            "proxy_session_errors", "Sessions that ended with an internal error.", registry=own
        )
        self._session_seconds = Histogram(
            "proxy_session_duration_seconds",
            "How long sessions lasted, from the 101 to the end.",
            ["route"],
            buckets=_SESSION_BUCKETS_S,
            registry=own,
        )
        self._settings_seconds = Histogram(
            "proxy_settings_applied_seconds",
            "From the 101 to the SettingsApplied the client got.",
            ["route"],
            buckets=_LATENCY_BUCKETS_S,
            registry=own,
        )
        self._upstream_connect_seconds = Histogram(
            "proxy_upstream_connect_seconds",
            "Time to open the upstream WebSocket (TCP, TLS and handshake), successful connects only.",
            ["route"],
            buckets=_LATENCY_BUCKETS_S,
            registry=own,
        )
        self._first_audio_seconds = Histogram(
            "proxy_inject_first_audio_seconds",
            "From an InjectUserMessage to the first agent audio the client got after it.",
            ["route"],
            buckets=_LATENCY_BUCKETS_S,
            registry=own,
        )
        for leg in ("client", "upstream"):
            self._frames.labels(leg)  # present (at 0) from the start
        self._session_errors.inc(0)
        #: Frames of live sessions already folded into the counter, by ``id(stats)``.
        self._folded: dict[int, tuple[int, int]] = {}
        if multiprocess_dir:
            self.registry.register(_WorkerFiles(multiprocess_dir))
            self.registry.register(_Workers(multiprocess_dir))
        else:
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_BuildInfo())

    # -- what the listener reports --------------------------------------------------------------------------------

    def count_rejected(self, reason: str) -> None:
        self._rejected.labels(reason).inc()

    def count_accept_error(self, errno_name: str) -> None:
        self._accept_errors.labels(errno_name).inc()

    def count_client_close(self, code: int) -> None:
        """A client closed by the proxy outside a session (an upgrade that ended with the drain)."""
        self._client_closes.labels(close_code_label(code)).inc()

    def count_session_error(self) -> None:
        self._session_errors.inc()

    def session_started(self, route: str) -> None:
        self._sessions.labels(route).inc()
        self._sessions_active.labels(route).inc()

    def session_ended(
        self, route: str, stats: SessionStats, client_close: int | None, duration_s: float, relayed: int | None = None
    ) -> None:
        """A session ended. ``client_close``: the code the proxy closed the client with (None: the client closed
        first, and ``relayed`` is its code as passed on upstream)."""
        self._sessions_active.labels(route).dec()
        self._fold(stats)
        self._folded.pop(id(stats), None)
        for code, n in stats.upstream_failures.items():
            self._upstream_failures.labels(code).inc(n)
        if client_close is not None:
            label = close_code_label(client_close)
            self._client_closes.labels(label).inc()
            self._sessions_closed.labels(route, label, "proxy").inc()
        else:
            self._sessions_closed.labels(
                route, "none" if relayed is None else close_code_label(relayed), "client"
            ).inc()
        self._session_seconds.labels(route).observe(duration_s)

    def clock(self, route: str, opened_at: float, now: Callable[[], float]) -> SessionClock:
        return SessionClock(self, route, opened_at, now)

    def refresh(self, live: Iterable[SessionStats], *, connections_open: int, handshakes_pending: int) -> None:
        """Bring what is counted outside the families (live sessions' frames, the admission gauges) up to date."""
        for stats in live:
            self._fold(stats)
        self._connections_open.set(connections_open)
        self._handshakes_pending.set(handshakes_pending)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        with _locked(self.multiprocess_dir, fcntl.LOCK_SH):
            return generate_latest(self.registry)

    def _fold(self, stats: SessionStats) -> None:
        client, upstream = self._folded.get(id(stats), (0, 0))
        if stats.client_frames != client:
            self._frames.labels("client").inc(stats.client_frames - client)
        if stats.upstream_frames != upstream:
            self._frames.labels("upstream").inc(stats.upstream_frames - upstream)
        self._folded[id(stats)] = (stats.client_frames, stats.upstream_frames)

    # -- read back (this process's own counts; tests and logs) ----------------------------------------------------

    @property
    def rejected_total(self) -> dict[str, int]:
        return self._by_label(self._rejected, "reason")

    @property
    def client_close_codes(self) -> dict[str, int]:
        return self._by_label(self._client_closes, "code")

    @property
    def session_errors_total(self) -> int:
        return int(sum(s.value for m in self._session_errors.collect() for s in m.samples if s.name.endswith("_total")))

    @staticmethod
    def _by_label(counter: Counter, label: str) -> dict[str, int]:
        return {
            s.labels[label]: int(s.value)
            for m in counter.collect()
            for s in m.samples
            if s.name.endswith("_total") and s.value
        }


class SessionClock:
    """Timing milestones of one session, fed by the session shell (:class:`proxy.session.Milestones`).

    Detection reads the component protocol's message names, which both routes speak; it looks at a client-bound
    text frame only until the first SettingsApplied, and at client-bound frames for audio only while an
    InjectUserMessage waits for its first audio, so a session in full flow pays a flag test per batch.
    """

    __slots__ = ("_inject_at", "_metrics", "_now", "_opened_at", "_route", "_settings_pending")

    def __init__(self, metrics: Metrics, route: str, opened_at: float, now: Callable[[], float]) -> None:
        self._metrics = metrics
        self._route = route
        self._opened_at = opened_at
        self._now = now
        self._settings_pending = True
        self._inject_at: float | None = None

    def upstream_connected(self, seconds: float) -> None:
        self._metrics._upstream_connect_seconds.labels(self._route).observe(seconds)

    def client_text(self, text: str) -> None:
        if self._inject_at is None and "InjectUserMessage" in text:
            self._inject_at = self._now()

    def to_client(self, frames: list[str | bytes]) -> None:
        if self._settings_pending:
            for frame in frames:
                if isinstance(frame, str) and "SettingsApplied" in frame:
                    self._settings_pending = False
                    self._metrics._settings_seconds.labels(self._route).observe(self._now() - self._opened_at)
                    break
        if self._inject_at is not None:
            for frame in frames:
                if isinstance(frame, bytes):
                    self._metrics._first_audio_seconds.labels(self._route).observe(self._now() - self._inject_at)
                    self._inject_at = None
                    break


def iter_families(text: str) -> Iterator[Metric]:
    """Parse /metrics text with prometheus-client's own parser (for tests and the benchmark)."""
    from prometheus_client.parser import text_string_to_metric_families

    return iter(text_string_to_metric_families(text))
