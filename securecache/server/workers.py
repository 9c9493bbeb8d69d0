"""Listening sockets and worker processes (``-t N``).

How this works: ``bind`` opens every listener before anything serves, so
that a port in use is one clear error at start. With one worker the daemon
serves in its own process. With ``-t N`` the process becomes a supervisor:
it binds one TCP socket per worker and address with ``SO_REUSEPORT`` (the
kernel spreads new connections over them) and one UNIX socket that every
worker accepts on, maps the shared counters (``shared.SharedStats``), and
forks the workers. Each worker opens the LMDB environment after the fork
(LMDB is multi-process safe; its writer lock orders the workers' write
groups, so cas values and label ids stay unique) and serves until told to
stop. The supervisor forwards SIGHUP (policy reload) and SIGTERM/SIGINT
(clean stop) to every worker, logs a worker that dies and starts another
in its place on the same sockets, and stops the daemon when a worker stops
by itself (the ``shutdown`` command) or keeps dying at start.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import time

from .shared import SharedStats

log = logging.getLogger("securecache")

PR_SET_PDEATHSIG = 1
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
STOP_GRACE = 30.0         # seconds workers get to stop before SIGKILL
QUICK_DEATH = 2.0         # a worker dead this soon after start...
QUICK_DEATHS = 5          # ...this many times in a row stops the daemon


def bind(listen, workers: int) -> list[list[socket.socket]]:
    """Per worker, its listening sockets (OSError if one cannot be had)."""
    unix = _unix_socket(listen) if listen.unix_path else None
    sets = []
    for _ in range(workers):
        tcp = [_tcp_socket(address, listen.port, listen.backlog,
                           reuse_port=workers > 1)
               for address in listen.addresses]
        sets.append(tcp + ([unix] if unix is not None else []))
    return sets


def _tcp_socket(address: str, port: int, backlog: int,
                reuse_port: bool) -> socket.socket:
    info = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                              flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(info[4])
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _unix_socket(listen) -> socket.socket:
    path = listen.unix_path
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~listen.unix_mask)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(listen.backlog)
    sock.setblocking(False)
    return sock


def _die_with(supervisor: int) -> None:
    """A worker gets SIGTERM when its supervisor dies, however it dies
    (a SIGKILLed supervisor must not leave workers serving on its port)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != supervisor:                # it died before prctl
        os._exit(0)


class Supervisor:
    """Forks ``count`` workers and keeps them running (see module doc)."""

    def __init__(self, count: int, serve_worker, listen,
                 sockets: list[list[socket.socket]] | None = None) -> None:
        """``serve_worker(sockets, shared, slot)`` serves in a worker until
        it stops and returns the worker's exit status; ``sockets``: what
        ``bind`` gave (before dropping root), else ``run`` binds."""
        self.count = count
        self.serve_worker = serve_worker
        self.listen = listen
        self.shared = SharedStats(count)
        self.sockets: list[list[socket.socket]] = sockets or []
        self.children: dict[int, int] = {}          # pid -> slot
        self.started: dict[int, float] = {}         # slot -> start time
        self.quick_deaths = 0
        self.stopping = False
        self.exit_status = 0

    def run(self) -> int:
        """Serve until stopped; the daemon's exit status."""
        try:
            self.sockets = self.sockets or bind(self.listen, self.count)
        except OSError as error:
            log.error("cannot listen: %s", error)
            return 1
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        for slot in range(self.count):
            self._start(slot)
        log.info("supervising %d workers", self.count)
        while self.children:
            signum = signal.sigwaitinfo(SIGNALS).si_signo
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum == signal.SIGHUP:
                self._forward(signal.SIGHUP)
            else:
                self._stop(0)
        self._close()
        return self.exit_status

    def _start(self, slot: int) -> None:
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:                                   # the worker
            status = 70
            try:
                _die_with(supervisor)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
                self.shared.slot = slot
                status = self.serve_worker(self.sockets[slot], self.shared,
                                           slot)
            finally:
                logging.shutdown()
                os._exit(status)
        self.children[pid] = slot
        self.started[slot] = time.monotonic()

    def _reap(self) -> None:
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            if slot is None:
                continue
            self.shared.retire(slot)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                self.exit_status = max(self.exit_status, code)
            elif code == 0:
                log.info("worker %d stopped (shutdown): stopping", pid)
                self._stop(0)
            else:
                self._replace(pid, slot, code)

    def _replace(self, pid: int, slot: int, code: int) -> None:
        quick = time.monotonic() - self.started[slot] < QUICK_DEATH
        self.quick_deaths = self.quick_deaths + 1 if quick else 0
        if self.quick_deaths >= QUICK_DEATHS:
            log.critical("worker %d exited with %d, workers keep dying at "
                         "start: stopping", pid, code)
            self._stop(70)
            return
        log.error("worker %d exited with %d: starting another", pid, code)
        self._start(slot)

    def _forward(self, signum: int) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _stop(self, status: int) -> None:
        if not self.stopping:
            self.stopping = True
            self.exit_status = status
            self._forward(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children and time.monotonic() < deadline:
            time.sleep(0.02)
            self._reap()
        if self.children:
            log.error("workers did not stop in %.0f s: killing them",
                      STOP_GRACE)
            self._forward(signal.SIGKILL)
            while self.children:
                self._reap()
                time.sleep(0.01)

    def _close(self) -> None:
        for sockets in self.sockets:
            for sock in sockets:
                sock.close()
        path = self.listen.unix_path
        try:
            if path and os.path.exists(path):
                os.unlink(path)
        except OSError as error:          # after -u: maybe not ours to remove
            log.warning("cannot remove %s: %s", path, error)
        log.info("stopped")
