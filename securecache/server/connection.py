"""One client connection: its requests in order, its replies in order.

How this works: ``data_received`` feeds the codec and walks the complete
requests it yields. While the connection has no write of its own in
flight, each read is answered at once from the engine's read snapshot
(``engine.read``) and its reply rendered on the spot; the first request
that writes opens a group part: it and everything parsed after it go to
the ``WriteLane`` (``submit``), which runs them in its next group commit.
Whatever arrives while that part is in flight waits in ``backlog``, so a
client reads its own writes; when the lane hands the replies back
(``group_done``) they are written and the backlog is walked the same way.
The replies of one walk leave together, one ``write``, as soon as the walk
ends (``_send``): a reply never waits for the other clients' requests of
the loop turn. (Writing every reply at the end of the turn instead cost
more CPU per request and a longer tail: see docs/performance.md.) A walk
that ends at the client's own write holds the replies before it
(``held``) and they leave with the write's, so a pipelined chunk costs
one ``write``, as memcached's replies to one read leave in one. Watch
lines are queued (``_write``) and written at the end of the turn.

Flow control: reading pauses while the transport's write buffer is above
its high-water mark (the client is not reading its replies) and while the
backlog is full. A client's half-close (EOF) is answered like memcached
does: every request received before it gets its reply, then the
connection closes. The codec is chosen from the first byte (0x80: binary,
else text and meta); its input buffer is bounded by the protocol's limits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from ..engine.core import LATER, WRITE
from ..protocol import events as ev
from ..protocol.binary import BinaryCodec, is_binary
from ..protocol.events import NEED_DATA, ProtocolError
from ..protocol.text import TextCodec

log = logging.getLogger("securecache")

WRITE_HIGH_WATER = 1 << 20
REPLY_SLICE = 256 << 10   # reply bytes of one walk before they are written
MAX_QUEUE = 4096          # requests parsed but not yet answered...
MAX_QUEUED_BYTES = 4 << 20  # ...and the bytes they carry
LINGER = 2.0              # seconds a closing connection drains its input


class Connection(asyncio.Protocol):
    """An asyncio protocol object per client."""

    def __init__(self, server) -> None:
        self.server = server
        self.engine = server.engine
        self.codec = None       # chosen from the first byte, as memcached does
        self.transport: asyncio.Transport | None = None
        self.session = None
        self.part: list | None = None      # entries for the lane, not taken
        self.flight: list | None = None    # entries the lane is running
        self.backlog: deque = deque()      # entries behind them
        self.ended = False      # quit or a closing error: parse no more
        self.closing = False
        self.eof = False
        self.slicing = False    # a sliced answer's next part is scheduled
        self.paused: set[str] = set()   # why reading is paused
        self.peer = ""
        self.listen_addr = ""   # the listener it came in on (stats conns)
        self.last_command = time.monotonic()   # a whole request arrived
        self.partial_since: float | None = None  # a request began arriving
        self.queued_bytes = 0
        self.watch = None       # the watch request, once this one watches
        self.events_skipped = 0
        self.debug = log.isEnabledFor(logging.DEBUG)    # -vv: log traffic
        self.pending: list[bytes] | None = None   # replies not yet written
        self.pending_size = 0
        self.held: list[bytes] = []   # replies before a write in flight

    # ------------------------------------------------------- lifecycle
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.session = self.server.admit(self, transport)
        if self.session is None:
            self.closing = True
            transport.close()

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.server.forget(self)

    def eof_received(self) -> bool:
        """The client half-closed: answer what it sent, then close."""
        self.eof = True
        if self.closing:                # lingering: nothing more to drain
            self.transport.close()
        elif self.waiting:
            self.close()
        return True                     # keep the transport open to reply

    def pause_writing(self) -> None:
        """The client does not read its replies: stop reading its requests."""
        self._pause("replies")

    def resume_writing(self) -> None:
        """The client caught up: read again, answer what is buffered."""
        self._resume("replies")
        if not self.closing:
            self._walk()

    def _pause(self, reason: str) -> None:
        if not self.paused and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused.add(reason)

    def _resume(self, reason: str) -> None:
        self.paused.discard(reason)
        if not self.paused and not self.closing and not self.eof and \
                not self.transport.is_closing():
            self.transport.resume_reading()

    @property
    def busy(self) -> bool:
        """A write of this connection is queued or in flight, or a sliced
        answer waits for its next turn."""
        return self.part is not None or self.flight is not None or \
            self.slicing

    # ------------------------------------------------------------ input
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        server = self.server
        if server.lane.done:        # a commit ended: its replies go first
            server.lane.complete()
        server.bytes_read += len(data)
        if self.codec is None:
            if not data:
                return
            size = self.engine.max_item_size
            protocol = self.server.listen.protocol          # -B
            binary = is_binary(data[0]) if protocol == "auto" else \
                protocol == "binary"
            auth = self.server.listen.auth          # -Y: users to log in
            self.codec = BinaryCodec(size, sasl=auth) if binary else \
                TextCodec(size, auth=auth)
        self.codec.receive_data(data)
        self._walk()
        if self.codec.buffered and self.partial_since is None:
            self.partial_since = time.monotonic()

    @property
    def waiting(self) -> bool:
        """Nothing of ours is pending: the next move is the client's."""
        return not self.busy and not self.backlog and \
            "replies" not in self.paused

    def idle(self, now: float, timeout: float) -> bool:
        """No whole request for ``timeout`` seconds while waiting for one
        (memcached's idle_timeout)."""
        return self.waiting and now - self.last_command > timeout

    def stalled(self, now: float, timeout: float) -> bool:
        """A request began arriving over ``timeout`` seconds ago and is not
        whole yet (a client that sends a byte now and then)."""
        return self.partial_since is not None and self.waiting and \
            now - self.partial_since > timeout

    def _next(self):
        """The next entry: a request or a ProtocolError; None for none."""
        if self.ended or not self.codec.buffered:   # no input, no event
            return None
        try:
            event = self.codec.next_event()
        except ProtocolError as error:
            if error.close:
                self._end()
            return error
        if event is NEED_DATA:
            return None
        self.last_command = time.monotonic()
        self.partial_since = None
        if self.debug:                                # -vv, as memcached
            log.debug("<%s %s", self.peer, _summary(event))
        if type(event) is ev.Quit:
            self._end()
        return event

    def _end(self) -> None:
        """Nothing after this entry is read (quit, or a closing error)."""
        self.ended = True
        self._pause("end")

    def _walk(self) -> None:
        """Answer, in order, every entry that can be answered now."""
        out: list[bytes] = []
        if self.busy or "replies" in self.paused:
            if self.busy:
                self._queue_more()
            return
        size, drained = 0, False
        backlog, paused, codec = self.backlog, self.paused, self.codec
        read, session = self.engine.read, self.session
        while True:
            if size >= REPLY_SLICE:     # let the transport push back
                self._send(b"".join(out))
                out, size = [], 0
                if "replies" in paused:
                    break
            if backlog:
                entry = backlog.popleft()
                self.queued_bytes -= _cost(entry)
            else:
                entry = self._next()
                if entry is None:
                    drained = True
                    break
            if isinstance(entry, ProtocolError):
                out.append(entry.reply)
                if entry.close:
                    self._finish(out, close=True)
                    return
                continue
            reply = read(session, entry)
            if reply is WRITE:
                self.part = [entry, *backlog]
                self.queued_bytes += _cost(entry)   # the part counts it
                backlog.clear()
                break
            if type(reply) is ev.More:
                out.append(self._render(entry, reply.part))
                self._later(reply.rest)
                break
            data = self._render(entry, reply)
            out.append(data)
            size += len(data)
            if type(reply) is ev.Close or codec.must_close:
                self._finish(out, close=True)
                return
        if self.busy:
            self._queue_more()
            if self.part is not None:
                # a new part, with the rest of the input behind it: to
                # the lane whole (the storage thread may take a group at
                # any moment), the replies before it held for its own
                self.held += out
                self.server.lane.submit(self)
                return
        # at EOF, close once every request received has been answered
        self._finish(out, close=self.eof and drained and not self.busy)

    def _later(self, rest) -> None:
        """A sliced read goes on with ``rest`` once the other clients had
        their turn (a group's sliced answers come back in ``_answers``)."""
        self._requeue([rest])
        self.slicing = True
        asyncio.get_running_loop().call_soon(self._resume_slices)

    def _resume_slices(self) -> None:
        self.slicing = False
        if not self.closing:
            self._walk()

    def _queue_more(self) -> None:
        """Parse what is buffered into the part (not yet taken by the lane)
        or the backlog, up to the bound; then stop reading."""
        backlog, parsed = self.backlog, []
        room = MAX_QUEUE - len(self.part or ()) - len(backlog)
        full = True
        while len(parsed) < room and self.queued_bytes < MAX_QUEUED_BYTES:
            entry = self._next()
            if entry is None:
                full = False
                break
            parsed.append(entry)
            self.queued_bytes += _cost(entry)
        # behind the part while the lane has not taken it, else behind the
        # part in flight
        if parsed and (backlog or not self.server.lane.add(self, parsed)):
            backlog.extend(parsed)
        if full:
            self._pause("queue")        # bounded: parse more when answered

    def _finish(self, out: list[bytes], close: bool) -> None:
        if out:
            self._send(b"".join(out))
        if close:
            self.close()

    # ------------------------------------------------------ write lane
    def take_group(self) -> list:
        """The lane starts a group: the entries it runs for us. (Called
        on the storage thread, under the lane's lock: ``busy`` stays true
        throughout, the part becoming the flight.)"""
        self.flight, self.part = self.part, None
        return self.flight

    def group_done(self, entries: list, replies: list) -> None:
        """The lane's replies to ``entries`` (requests only), in order."""
        self.flight = None
        self.queued_bytes -= sum(_cost(entry) for entry in entries)
        out, close = self._answers(entries, iter(replies))
        if self.held:
            out[:0], self.held = self.held, []
        if close:
            self._finish(out, close=True)
            return
        self._write(b"".join(out))
        if "queue" in self.paused:
            self._resume("queue")
        self._walk()
        # the client waited for a commit: its replies go now, not after
        # the next turn's reads
        self.flush()

    def _answers(self, entries: list, replies) -> tuple[list[bytes], bool]:
        """The rendered replies of a group part, and whether to close.
        What the group left for later (``LATER``, the rest of a sliced
        answer) goes back to the front of the backlog, in order."""
        out = []
        for index, entry in enumerate(entries):
            if isinstance(entry, ProtocolError):
                out.append(entry.reply)
                if entry.close:
                    return out, True
                continue
            reply = next(replies)
            if reply is LATER:
                self._requeue(entries[index:])
                break
            if type(reply) is ev.More:
                out.append(self._render(entry, reply.part))
                self._requeue([reply.rest, *entries[index + 1:]])
                break
            out.append(self._render(entry, reply))
            if type(reply) is ev.Close or self.codec.must_close:
                return out, True
        return out, False

    def _requeue(self, entries: list) -> None:
        """Put ``entries`` back at the front of the backlog, in order."""
        self.backlog.extendleft(reversed(entries))
        self.queued_bytes += sum(_cost(entry) for entry in entries)

    # ----------------------------------------------------------- output
    def _render(self, entry, reply) -> bytes:
        if type(reply) is ev.Watching:      # from now on, a log stream
            self.watch = entry
            self.server.add_watcher(self, reply.kinds)
            self._end()
        data = self.codec.send(entry, reply)
        if data and self.debug:                           # -vv: replies
            log.debug(">%s %r", self.peer, data.split(b"\r\n", 1)[0][:80])
        return data

    def send_event(self, event) -> None:
        """A watch line; dropped (and counted) while the watcher lags."""
        if "replies" in self.paused:
            self.events_skipped += 1
            return
        self._write(self.codec.send(self.watch, event))

    def _send(self, data: bytes) -> None:
        """Write ``data`` now, behind whatever is queued."""
        if data and self.transport is not None and not self.closing:
            self.server.bytes_written += len(data)
            if self.pending is not None:
                self.pending.append(data)
                self.flush()
            elif not self.transport.is_closing():
                self.transport.write(data)

    def _write(self, data: bytes) -> None:
        """Queue ``data``; the server writes every connection's queued
        output at the end of the loop turn (``flush``)."""
        if data and self.transport is not None and not self.closing:
            self.server.bytes_written += len(data)
            pending = self.pending
            if pending is None:
                self.pending = [data]
                self.pending_size = len(data)
                self.server.queue_output(self)
                return
            pending.append(data)
            self.pending_size += len(data)
            if self.pending_size >= REPLY_SLICE:
                self.flush()

    def flush(self) -> None:
        """Hand the queued replies to the transport (which may push back)."""
        pending, self.pending = self.pending, None
        if pending is not None and not self.transport.is_closing():
            self.transport.write(pending[0] if len(pending) == 1
                                 else b"".join(pending))

    def close(self) -> None:
        """Close after what was written has been sent.

        A lingering close: the replies go out, then a FIN; what the client
        still sends is read and dropped for a moment, so that the kernel does
        not answer it with a reset that could destroy the replies in flight.
        """
        if self.closing or self.transport is None:
            return
        self.flush()
        self.closing = True
        self.server.forget(self)        # a closing client holds no slot
        transport = self.transport
        if self.eof or transport.is_closing() or \
                not transport.can_write_eof():
            transport.close()           # the client sends nothing more
            return
        transport.write_eof()
        transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER, transport.close)


def _cost(entry) -> int:
    """What a queued entry holds in memory, roughly: its value and more."""
    value = getattr(entry, "value", None)
    return 64 + (len(value) if type(value) is bytes else 0)


def _summary(event) -> str:
    """A request as -vv prints it: its kind and keys, never its value."""
    keys = getattr(event, "keys", None) or [getattr(event, "key", b"")]
    shown = b" ".join(k for k in keys if k).decode("ascii", "replace")
    return f"{type(event).__name__} {shown}".rstrip()
