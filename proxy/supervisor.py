"""The multi-worker supervisor (``--workers N``): N worker processes serving one port, kept alive and drained together.

The supervisor is a small synchronous loop; the workers are forked from it and each runs the ordinary server
(:func:`proxy.cli.serve`) on its own listening socket, all bound to the same port with ``SO_REUSEPORT``, so the
kernel spreads new connections over the workers and no connection waits behind a busy one. The supervisor binds
the port first (without listening: such a socket takes no connections) to pick it once for ``--port 0`` and to
keep it reserved while workers restart. It prints ``listening on ws://HOST:PORT`` (``wss://`` with TLS) once
every worker listens.

* A worker that dies is started again after a delay that doubles with each quick death (``RESTART_FIRST_S`` up to
  ``RESTART_MAX_S``; a worker that ran ``STABLE_S`` resets it), so a crash loop costs a fork now and then, not a
  core. Every death is a WARNING with the exit status and is counted (``proxy_worker_restarts_total``).
* SIGTERM (or SIGINT) starts a drain in every worker at once (each applies the single-process rules: ``/ready``
  503, new upgrades 503, 1001 at the drain deadline); a second signal tells every worker to close its sessions
  now; a third makes them cancel what is left. The supervisor exits when the last worker is gone: 0 if every
  worker ended cleanly after the signal, 1 otherwise (a worker that could not start, or that failed while stopping).
* Workers never outlive the supervisor: each watches a pipe whose only writer is the supervisor, and drains when
  it reads end-of-file, which the kernel delivers however the supervisor ended (kill -9 included).
* Workers run in their own process group, so a Ctrl-C at a terminal reaches only the supervisor, which forwards it
  once (the terminal would otherwise deliver it to every process and the forward would count as a second signal).

Metrics: every worker writes to one directory of prometheus-client's multiprocess mode, created here for the run
and removed at exit (see :mod:`proxy.metrics`). The supervisor keeps ``workers.json`` in it (which pid serves
which slot, the restart count); when it reaps a worker it removes the worker's live-gauge files and folds its
counters into the directory's archive (so a crash loop cannot fill the disk).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import Config

if TYPE_CHECKING:
    import trio

    from .server import ProxyServer
    from .sim.server import SimOptions

log = logging.getLogger("proxy.supervisor")

RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
#: A worker that lived this long is considered healthy: its next death restarts it after the first delay again.
STABLE_S = 60.0
#: How often a worker folds its live counts (sessions' frames, connection gauges) into the shared metric files.
METRICS_REFRESH_S = 1.0


@dataclass(slots=True)
class RestartPolicy:
    """When to start a dead worker again (sans-IO: times are given, nothing sleeps)."""

    first_s: float = RESTART_FIRST_S
    max_s: float = RESTART_MAX_S
    stable_s: float = STABLE_S
    #: Quick deaths in a row, per slot.
    failures: dict[int, int] = field(default_factory=dict)

    def delay(self, slot: int, lived_s: float) -> float:
        """The delay before restarting ``slot``, whose worker just died after ``lived_s``."""
        failures = 0 if lived_s >= self.stable_s else self.failures.get(slot, 0)
        self.failures[slot] = failures + 1
        return min(self.first_s * 2.0**failures, self.max_s)


def describe_status(status: int) -> str:
    """A wait status in words: ``exit code 3`` or ``killed by SIGKILL``."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def bind_reuseport(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of ``host`` on ``port`` with ``SO_REUSEPORT`` (port 0: one port for all)."""
    sockets: list[socket.socket] = []
    seen: set[object] = set()
    try:
        for family, kind, proto, _name, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# -- the worker ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _WorkerSetup:
    slot: int
    port: int
    metrics_dir: str
    lifeline: int  # read end; end-of-file means the supervisor is gone
    ready: int  # write end; one line per worker that listens


def _worker(config: Config, sim_options: SimOptions | None, setup: _WorkerSetup) -> int:
    """A worker's life after the fork: the ordinary server on its own SO_REUSEPORT listener."""
    import trio

    from . import cli
    from .metrics import Metrics, enable_multiprocess

    enable_multiprocess(setup.metrics_dir)
    metrics = Metrics(setup.metrics_dir)

    def listen() -> tuple[list[trio.SocketListener], int]:
        listeners = []
        for sock in bind_reuseport(config.host, setup.port):
            sock.listen(socket.SOMAXCONN)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        return listeners, setup.port

    def started(server: ProxyServer, _port: int, nursery: trio.Nursery) -> None:
        nursery.start_soon(_watch_lifeline, server, setup.lifeline)
        nursery.start_soon(_refresh_metrics, server)
        os.write(setup.ready, f"{setup.slot}\n".encode())

    failed: OSError | None = None
    try:
        trio.run(functools.partial(cli.serve, config, sim_options, listen=listen, metrics=metrics, started=started))
    except* KeyboardInterrupt:
        pass
    except* OSError as group:
        failed = cli._first(group)
    if failed is not None:
        print(f"cannot listen on {config.host}:{setup.port}: {failed.strerror or failed}", file=sys.stderr, flush=True)
        return 1
    return 0


async def _watch_lifeline(server: ProxyServer, fd: int) -> None:
    import trio

    await trio.lowlevel.wait_readable(fd)  # nothing is ever written: readable means the supervisor is gone
    log.warning("the supervisor is gone; draining")
    server.shutdown()


async def _refresh_metrics(server: ProxyServer) -> None:
    """Keep this worker's live counts in the shared files, for scrapes that another worker answers."""
    import trio

    while True:
        await trio.sleep(METRICS_REFRESH_S)
        server.refresh_metrics()


# -- the supervisor -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    pid: int | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    ready: bool = False


class Supervisor:
    def __init__(self, config: Config, sim_options: SimOptions | None, port: int, metrics_dir: str) -> None:
        self.config = config
        self.sim_options = sim_options
        self.port = port
        self.metrics_dir = metrics_dir
        self.slots = [_Slot() for _ in range(config.workers)]
        self.policy = RestartPolicy()
        self.restarts = 0
        self.signals_seen = 0
        self.stopping = False
        self.failed = False
        self._pending_signals: list[int] = []
        self._lifeline_r, self._lifeline_w = os.pipe()
        self._ready_r, self._ready_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._ready_r, False)
        self._ready_buffer = b""
        self._inherited: list[int] = []

    # -- processes ------------------------------------------------------------------------------------------------

    def start(self, slot: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.setpgid(0, 0)
                signal.set_wakeup_fd(-1)
                for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_DFL)
                for fd in (self._lifeline_w, self._ready_r, self._wake_r, self._wake_w, *self._inherited):
                    os.close(fd)
                setup = _WorkerSetup(slot, self.port, self.metrics_dir, self._lifeline_r, self._ready_w)
                code = _worker(self.config, self.sim_options, setup)
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        state = self.slots[slot]
        state.pid, state.started_at, state.restart_at, state.ready = pid, time.monotonic(), None, False
        self._write_status()

    def _signal_workers(self, signum: int) -> None:
        for state in self.slots:
            if state.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state.pid, signum)

    def _reap(self) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        from .metrics import archive_dead_worker

        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            slot = next((i for i, s in enumerate(self.slots) if s.pid == pid), None)
            if slot is None:
                continue
            state = self.slots[slot]
            state.pid = None
            how = describe_status(status)
            clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            if self.stopping:
                if not clean:
                    self.failed = True
                    log.warning("worker %d (pid %d) ended while stopping: %s", slot, pid, how)
            elif not state.ready and not any(s.ready for s in self.slots) and self.restarts == 0:
                # A worker that dies before the first one listens cannot start (a taken port, a bad address).
                log.error("worker %d (pid %d) could not start: %s", slot, pid, how)
                self.failed = True
                self._stop(signal.SIGINT)
            else:
                archive_dead_worker(self.metrics_dir, pid)
                delay = self.policy.delay(slot, time.monotonic() - state.started_at)
                self.restarts += 1
                state.restart_at = time.monotonic() + delay
                log.warning("worker %d (pid %d) died: %s; starting it again in %.1f s", slot, pid, how, delay)
            self._write_status()

    def _stop(self, signum: int) -> None:
        self.stopping = True
        for state in self.slots:
            state.restart_at = None
        self._signal_workers(signum)

    def _on_signal(self, signum: int) -> None:
        self.signals_seen += 1
        if self.signals_seen == 1:
            log.info("%s: draining every worker", signal.Signals(signum).name)
            self._stop(signal.SIGTERM)
        else:
            log.info("%s: closing every worker's sessions now", signal.Signals(signum).name)
            self._stop(signal.SIGINT)

    def _write_status(self) -> None:
        pids = {str(i): s.pid for i, s in enumerate(self.slots) if s.pid is not None}
        status = {"pids": {**pids, "supervisor": os.getpid()}, "restarts": self.restarts}
        temporary = os.path.join(self.metrics_dir, "workers.json.tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(status, file)
        os.replace(temporary, os.path.join(self.metrics_dir, "workers.json"))

    # -- the loop -------------------------------------------------------------------------------------------------

    def run(self, inherited: list[int]) -> int:
        self._inherited = inherited
        handled = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {number: signal.getsignal(number) for number in handled}
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        for number in handled:
            signal.signal(number, lambda received, _frame: self._pending_signals.append(received))
        try:
            for slot in range(len(self.slots)):
                self.start(slot)
            announced = False
            while any(s.pid is not None for s in self.slots) or (
                not self.stopping and any(s.restart_at is not None for s in self.slots)
            ):
                self._wait()
                while self._pending_signals:
                    signum = self._pending_signals.pop(0)
                    if signum == signal.SIGCHLD:
                        self._reap()
                    elif signum == signal.SIGHUP:
                        # Each worker reloads its own TLS certificate; a restarted worker reads the files anew.
                        log.info("SIGHUP: passed to every worker")
                        self._signal_workers(signal.SIGHUP)
                    else:
                        self._on_signal(signum)
                self._read_ready()
                if not announced and not self.stopping and all(s.ready for s in self.slots):
                    announced = True
                    print(f"listening on {self.config.url_scheme}://{self.config.host}:{self.port}", flush=True)
                now = time.monotonic()
                for slot, state in enumerate(self.slots):
                    if not self.stopping and state.restart_at is not None and state.restart_at <= now:
                        self.start(slot)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for number, handler in previous.items():
                signal.signal(number, handler)
            for fd in (self._lifeline_r, self._lifeline_w, self._ready_r, self._ready_w, self._wake_r, self._wake_w):
                os.close(fd)
        return 1 if self.failed else 0

    def _wait(self) -> None:
        due = [s.restart_at for s in self.slots if s.restart_at is not None]
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
        if self._pending_signals:
            timeout = 0.0
        readable, _, _ = select.select([self._wake_r, self._ready_r], [], [], timeout)
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)

    def _read_ready(self) -> None:
        try:
            self._ready_buffer += os.read(self._ready_r, 4096)
        except BlockingIOError:
            return
        *lines, self._ready_buffer = self._ready_buffer.split(b"\n")
        for line in lines:
            slot = int(line)
            self.slots[slot].ready = True
            log.info("worker %d (pid %s) listening", slot, self.slots[slot].pid)


def supervise(config: Config, sim_options: SimOptions | None = None) -> int:
    """Run ``config.workers`` workers on one port until a signal ends them; the process exit code."""
    try:
        reserved = bind_reuseport(config.host, config.port)
    except OSError as exc:
        print(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    port = reserved[0].getsockname()[1]
    metrics_dir = tempfile.mkdtemp(prefix="voice-agent-proxy-metrics-")
    try:
        supervisor = Supervisor(config, sim_options, port, metrics_dir)
        return supervisor.run([sock.fileno() for sock in reserved])
    finally:
        for sock in reserved:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
