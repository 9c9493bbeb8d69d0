"""The daemon: listeners, admission, housekeeping, signals, shutdown.

How this works: ``Server.run`` opens the TCP and UNIX-socket listeners on
an asyncio loop (uvloop when installed), admits each connection (the
connection limit, the client's security context from ``security.peer``,
then ``kv_cache:connect`` through the engine), and ticks the engine once a
second (delayed flushes, expiry sweep; with async durability, a sync every
``sync_interval``). With ``-Z`` the TCP listeners speak TLS (``tls``); a
verified client certificate is one of the identity facts. SIGTERM and
SIGINT stop accepting, let the batch in flight commit and its replies go
out, close the store and return 0; SIGHUP reloads the security policy
(and the TLS certificate).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from ..engine import Engine, Session
from ..security import SecurityError
from .lanes import WriteLane
from .shared import SharedStats
from .tls import HANDSHAKE_TIMEOUT
from .workers import bind
from .connection import Connection

log = logging.getLogger("securecache")


@dataclass
class Listen:
    """Where to listen and how many clients to take."""

    addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 11211
    unix_path: str | None = None
    unix_mask: int = 0o700
    max_connections: int = 1024
    auth: bool = False
    idle_timeout: int = 0
    request_timeout: float = 30.0   # a request must arrive whole this soon
    sync_interval: float = 1.0
    protocol: str = "auto"          # -B: auto (by the first byte), ascii, binary
    backlog: int = 1024             # -b
    tls: object = None              # -Z: a tls.TLS for the TCP listeners


class Server:
    """One daemon process serving one engine."""

    def __init__(self, engine: Engine, identity, listen: Listen, *,
                 sockets=None, shared: SharedStats | None = None,
                 threads: int = 1) -> None:
        """``identity(sock)`` gives a client's (context or None to refuse,
        the facts that identified it). ``sockets``: listeners bound
        already (a worker's); else ``serve`` binds them. ``shared``: the
        daemon's counters; ``threads``: how many workers share them."""
        self.engine = engine
        self.identity = identity
        self.listen = listen
        self.sockets = sockets
        self.threads = threads
        engine.shared = shared or SharedStats(1)
        self.watchers: dict[Connection, frozenset] = {}
        self.watch_gid = 0
        engine.emit = self._emit
        self.connections: set[Connection] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.total_connections = 0
        self.accepted: dict[str, float] = {}  # listener -> its last accept
        self.opened = time.monotonic()        # the listeners opened
        self.rejected_connections = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.lane: WriteLane | None = None
        self.unlink_unix = False
        self.turn_end_scheduled = False
        self.outgoing: list[Connection] = []
        self.stopping: asyncio.Event | None = None
        self.exit_status = 0
        engine.server_stats = self.stats_rows

    # ------------------------------------------------------- admission
    def admit(self, conn: Connection, transport) -> Session | None:
        """The session of a new client, or None to refuse it."""
        self.total_connections += 1
        sock = transport.get_extra_info("socket")
        peername = transport.get_extra_info("peername")
        conn.peer = _describe(sock, peername)
        conn.listen_addr = _describe(sock, transport.get_extra_info(
            "sockname"))
        self.accepted[conn.listen_addr] = time.monotonic()
        if len(self.connections) >= self.listen.max_connections:
            self.rejected_connections += 1
            transport.write(b"ERROR Too many open connections\r\n")
            return None
        # a TLS transport: the verified client certificate, else None
        scontext, facts = self.identity(sock,
                                        transport.get_extra_info("peercert"))
        if scontext is None:
            self.rejected_connections += 1
            log.warning("refused %s: no security context", conn.peer)
            return None
        session = Session(scontext, peer=conn.peer, facts=facts,
                          fd=sock.fileno() if sock is not None else -1)
        if not self.engine.connect(session):          # kv_cache:connect
            self.rejected_connections += 1
            return None
        self.connections.add(conn)
        return session

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.watchers.pop(conn, None) is not None:
            self.engine.watching = bool(self.watchers)

    # --------------------------------------------------------- watchers
    def add_watcher(self, conn: Connection, kinds: frozenset) -> None:
        """``conn`` asked to watch (its kv_cache:getattr was checked)."""
        self.watchers[conn] = kinds
        self.engine.watching = True

    def _emit(self, kind: str, event, tcontext: str) -> None:
        """An event to every watcher of its kind that may getattr the item
        (a listing, not an attempt: not audited)."""
        self.watch_gid += 1
        event.gid, event.ts = self.watch_gid, time.time()
        has_perm = self.engine.mac.has_perm
        for conn, kinds in list(self.watchers.items()):
            # kv_item:getattr of the watcher on the item's label.
            if kind in kinds and has_perm(conn.session.scontext, tcontext,
                                          "kv_item", "getattr", audit=False):
                conn.send_event(event)

    # ----------------------------------------------------------- stats
    def stats_rows(self, group: str) -> list[tuple[str, object]]:
        now = time.monotonic()
        if group == "conns":
            # (fd, peer, its listener, the client's context, seconds since
            # its last command): the engine shows each client what it may.
            return [(conn.transport.get_extra_info("socket").fileno(),
                     conn.peer, conn.listen_addr, conn.session.scontext,
                     int(now - conn.last_command))
                    for conn in list(self.connections)]
        if group == "listeners":
            # (fd, address, seconds since it last accepted a client)
            return [(sock.fileno(), address,
                     int(now - self.accepted.get(address, self.opened)))
                    for sock in self.sockets or ()
                    for address in [_describe(sock, sock.getsockname())]]
        return [("max_connections", self.listen.max_connections),
                ("curr_connections", len(self.connections)),
                ("total_connections", self.total_connections),
                ("rejected_connections", self.rejected_connections),
                ("bytes_read", self.bytes_read),
                ("bytes_written", self.bytes_written),
                ("threads", self.threads),
                ("group_commits", self.lane.groups if self.lane else 0),
                ("group_requests", self.lane.requests if self.lane else 0)]

    # ------------------------------------------------------- lifecycle
    async def serve(self) -> None:
        """Listen until a stop signal; then shut down cleanly."""
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        threaded = self.engine.storage.durability == "fsync"
        # py-lmdb releases the GIL in every LMDB call (its
        # enable_drop_gil() is a no-op kept for old callers): a commit's or
        # a sync's fsync on the storage thread never stops the loop.
        self.lane = WriteLane(self.engine, loop, self._fault,
                              threaded=threaded)
        self.engine.reader_opened = self._reader_opened
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            await self._open_listeners()
        except OSError as error:
            log.error("cannot listen: %s", error)
            self.exit_status = 1
            await self._shutdown()
            return
        log.info("ready")
        ticker = asyncio.ensure_future(self._tick())
        ticker.add_done_callback(self._ticker_done)
        self._publisher = loop.call_later(PUBLISH_INTERVAL, self._publish)
        await self.stopping.wait()
        ticker.cancel()
        self._publisher.cancel()
        await self._shutdown()

    async def _open_listeners(self) -> None:
        owned = self.sockets is None
        if owned:
            self.sockets = bind(self.listen, 1)[0]
        loop = asyncio.get_running_loop()
        factory = lambda: Connection(self)  # noqa: E731
        for sock in self.sockets:
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(factory, sock=sock)
                log.info("listening on unix socket %s", self.listen.unix_path)
            else:
                tls = self.listen.tls
                server = await loop.create_server(
                    factory, sock=sock, ssl=tls.context if tls else None,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT if tls else None)
                log.info("listening on %s port %d%s", *sock.getsockname()[:2],
                         f" (TLS: {tls.describe()})" if tls else "")
            self.servers.append(server)
        self.unlink_unix = owned
        self.opened = time.monotonic()

    def _publish(self) -> None:
        """Share this worker's counters with the others, now and then."""
        self.engine.publish()
        self._publisher = asyncio.get_running_loop().call_later(
            PUBLISH_INTERVAL, self._publish)

    def _reader_opened(self) -> None:
        """The engine took a read snapshot: drop it at the end of this
        loop turn, so that the next turn's reads see newer commits."""
        self._at_turn_end()

    def queue_output(self, conn: Connection) -> None:
        """``conn`` has output to write at the end of this loop turn (watch
        lines, replies queued behind a commit's; a connection writes the
        replies of its own walk at once)."""
        self.outgoing.append(conn)
        self._at_turn_end()

    def _at_turn_end(self) -> None:
        if not self.turn_end_scheduled:
            self.turn_end_scheduled = True
            asyncio.get_running_loop().call_soon(self._turn_end)

    def _turn_end(self) -> None:
        """Every client served in this turn has been read: write what was
        queued for the end of the turn, then drop the read snapshot."""
        self.turn_end_scheduled = False
        outgoing, self.outgoing = self.outgoing, []
        for conn in outgoing:
            conn.flush()
        self.engine.release_reader()

    async def _tick(self) -> None:
        last_sync = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.listen.sync_interval))
            await self.lane.job(self.engine.housekeeping)
            # the fetches beyond its batch: one job each, groups between
            for _ in range(self.engine.fetch_batches()):
                await self.lane.job(self.engine.record_fetches)
            if self.engine.shutdown_requested:
                self.stopping.set()
            now = time.monotonic()
            if self.engine.storage.durability != "fsync" and \
                    now - last_sync >= self.listen.sync_interval:
                await self.lane.job(self._sync_job)
                last_sync = now
            self._close_idle(now)

    def _sync_job(self):
        storage = self.engine.storage
        return lambda: storage.sync()

    def _ticker_done(self, ticker: asyncio.Future) -> None:
        if not ticker.cancelled() and ticker.exception() is not None:
            self._fault(ticker.exception())     # housekeeping must not die

    def _close_idle(self, now: float) -> None:
        """Close connections idle since their last whole request (memcached's
        idle_timeout) and those whose request never finishes arriving."""
        timeout = self.listen.idle_timeout
        for conn in list(self.connections):
            if (timeout and conn.idle(now, timeout)) or \
                    conn.stalled(now, self.listen.request_timeout):
                conn.close()

    def _fault(self, error: BaseException) -> None:
        log.critical("engine fault, stopping: %r", error, exc_info=error)
        self.exit_status = 70
        self.stopping.set()

    def _reload(self) -> None:
        log.info("SIGHUP: reloading the security policy")
        try:
            self.engine.mac.reload()
        except SecurityError as error:
            log.error("policy reload failed, keeping the old one: %s", error)
        if self.listen.tls:
            self.listen.tls.reload()          # memcached's refresh_certs

    async def _shutdown(self) -> None:
        log.info("shutting down")
        for server in self.servers:
            server.close()
        if not self.exit_status:
            await self.lane.drain()
        for conn in list(self.connections):
            conn.close()
        await asyncio.sleep(0)
        self.lane.close()
        self.engine.release_reader()
        self.engine.publish()
        self.engine.storage.sync()
        self.engine.storage.close()
        self.engine.mac.close()            # the last audit summary, if any
        path = self.listen.unix_path
        if self.unlink_unix and path and os.path.exists(path):
            os.unlink(path)
        log.info("stopped")


def _describe(sock: socket.socket | None, peername) -> str:
    if sock is not None and sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    if isinstance(peername, tuple):
        return f"tcp:{peername[0]}:{peername[1]}"
    return str(peername)


SWITCH_INTERVAL = 0.0002
PUBLISH_INTERVAL = 0.1    # seconds between two shares of this worker's counters


def run(server: Server) -> int:
    """Run the server to completion on uvloop (or asyncio); exit status."""
    # The storage thread needs the GIL for a few microseconds between
    # waits for the disk; Python's default 5 ms switch interval would make
    # every write group wait that long behind a busy event loop.
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:                      # uvloop is optional at run time
        runner = asyncio.run
    runner(server.serve())
    return server.exit_status
