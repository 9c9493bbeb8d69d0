"""One client connection: moves bytes, nothing else.

How this works: ``data_received`` feeds the codec and queues every complete
request (or protocol error) it yields, then asks the ``Batcher`` to run
the queue at the end of this event-loop turn. The batcher sends the
replies back through ``answer``. Flow control: when the transport's write
buffer is above its high-water mark (the client is not reading its
replies) the connection stops reading until it drains. The codec is
chosen from the first byte (0x80: binary, else text and meta); the codec's input
buffer is bounded by the protocol's own limits (line length, item size).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..protocol import events as ev
from ..protocol.binary import BinaryCodec, is_binary
from ..protocol.events import NEED_DATA, ProtocolError
from ..protocol.text import TextCodec

log = logging.getLogger("securecache")

WRITE_HIGH_WATER = 1 << 20
MAX_QUEUE = 4096          # requests parsed but not yet answered
LINGER = 2.0              # seconds a closing connection drains its input


class Connection(asyncio.Protocol):
    """An asyncio protocol object per client."""

    def __init__(self, server) -> None:
        self.server = server
        self.codec = None       # chosen from the first byte, as memcached does
        self.transport: asyncio.Transport | None = None
        self.session = None
        self.queue: list = []
        self.closing = False
        self.paused: set[str] = set()   # why reading is paused
        self.peer = ""
        self.last_command = time.monotonic()

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

    def pause_writing(self) -> None:
        """The client does not read its replies: stop reading its requests."""
        self._pause("replies")

    def resume_writing(self) -> None:
        self._resume("replies")

    def _pause(self, reason: str) -> None:
        if not self.paused and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused.add(reason)

    def _resume(self, reason: str) -> None:
        self.paused.discard(reason)
        if not self.paused and not self.closing and \
                not self.transport.is_closing():
            self.transport.resume_reading()

    # ------------------------------------------------------------ input
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.server.bytes_read += len(data)
        self.last_command = time.monotonic()
        if self.codec is None:
            if not data:
                return
            size = self.server.engine.max_item_size
            protocol = self.server.listen.protocol          # -B
            binary = is_binary(data[0]) if protocol == "auto" else \
                protocol == "binary"
            self.codec = BinaryCodec(size) if binary else \
                TextCodec(size, auth=self.server.listen.auth)
        self.codec.receive_data(data)
        while True:
            try:
                event = self.codec.next_event()
            except ProtocolError as error:
                self.queue.append(error)
                if error.close:
                    self._pause("end")
                    break
                continue
            if event is NEED_DATA:
                break
            if log.isEnabledFor(logging.DEBUG):           # -vv, as memcached
                log.debug("<%s %s", self.peer, _summary(event))
            self.queue.append(event)
            if isinstance(event, ev.Quit):
                self._pause("end")
                break
            if len(self.queue) >= MAX_QUEUE:
                self._pause("queue")      # bounded: parse more when answered
                break
        if self.queue:
            self.server.batcher.submit(self)

    def take(self) -> list:
        """The queued requests and errors, emptying the queue."""
        queue, self.queue = self.queue, []
        return queue

    # ----------------------------------------------------------- output
    def answer(self, entries: list, replies) -> None:
        """Write the replies for ``entries`` (taken earlier), in order."""
        out = []
        close = False
        for entry in entries:
            is_error = isinstance(entry, ProtocolError)
            reply = entry if is_error else next(replies)
            if close:
                continue            # keep the batch's replies in step
            if is_error:
                out.append(entry.reply)
                close = entry.close
            else:
                out.append(self.codec.send(entry, reply))
                close = isinstance(reply, ev.Close) or self.codec.must_close
            if out and log.isEnabledFor(logging.DEBUG):   # -vv: replies
                log.debug(">%s %r", self.peer, out[-1].split(b"\r\n")[0][:80])
        self._write(b"".join(out))
        if close:
            self.close()
        elif "queue" in self.paused:
            self._resume("queue")
            self.data_received(b"")       # requests already buffered

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closing:
            self.server.bytes_written += len(data)
            self.transport.write(data)

    def close(self) -> None:
        """Close after what was written has been sent.

        A lingering close: the replies go out, then a FIN; what the client
        still sends is read and dropped for a moment, so that the kernel does
        not answer it with a reset that could destroy the replies in flight.
        """
        if self.closing or self.transport is None:
            return
        self.closing = True
        transport = self.transport
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER, transport.close)


def _summary(event) -> str:
    """A request as -vv prints it: its kind and keys, never its value."""
    keys = getattr(event, "keys", None) or [getattr(event, "key", b"")]
    shown = b" ".join(k for k in keys if k).decode("ascii", "replace")
    return f"{type(event).__name__} {shown}".rstrip()
