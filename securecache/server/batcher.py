"""Group commit: the requests that arrive together share one batch.

How this works: connections that queued requests call ``submit``. When no
batch is running, the batcher takes every connection's queue as one batch
and runs ``engine.execute``. A batch that waits for the disk (writes with
fsync durability) runs on the single storage thread (LMDB wants a write
transaction begun and committed on one thread) while the event loop goes
on reading sockets; any other batch takes microseconds and runs inline. When the batch is done (committed, and with
fsync durability on disk) each connection gets its replies in its own
request order, and whatever arrived in the meantime becomes the next
batch: the longer a commit takes, the larger the next group, so the cost of
an fsync is shared by more requests as load grows. One batch at a time
keeps every connection's requests in order.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ..protocol.events import ProtocolError


class Batcher:
    """Collects queued requests of many connections into engine batches."""

    def __init__(self, engine, loop: asyncio.AbstractEventLoop,
                 on_fault) -> None:
        self.engine = engine
        self.on_fault = on_fault
        self.loop = loop
        self.pending: list = []
        self.running = False
        self.batches = 0
        self.requests = 0
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="storage")
        self.idle = asyncio.Event()
        self.idle.set()

    def submit(self, connection) -> None:
        """``connection`` has queued requests: run them in the next batch."""
        if connection not in self.pending:
            self.pending.append(connection)
        if not self.running:
            self._start()

    def _start(self) -> None:
        connections, self.pending = self.pending, []
        taken = [(conn, conn.take()) for conn in connections]
        batch = [(conn.session, entry) for conn, entries in taken
                 for entry in entries if not isinstance(entry, ProtocolError)]
        if not self.engine.blocks(batch):
            # Reads (and writes without fsync) take microseconds: run them
            # here rather than pay for a hand-over to the storage thread.
            self._finish(taken, self._inline(batch))
            return
        self.running = True
        self.idle.clear()
        future = self.thread.submit(self.engine.execute, batch)
        asyncio.wrap_future(future, loop=self.loop).add_done_callback(
            lambda done: self._done(taken, done))

    def _inline(self, batch) -> list:
        if not batch:
            return []
        try:
            return self.engine.execute(batch)
        except BaseException as error:
            self.on_fault(error)      # fail-stop, then let it propagate
            raise

    def _done(self, taken, done: asyncio.Future) -> None:
        error = done.exception()
        if error is not None:
            # A fault in the engine is a bug: stop serving (fail-stop; the
            # batch was not committed) rather than answer anything.
            self.on_fault(error)
            return
        self._finish(taken, done.result())

    def _finish(self, taken, replies) -> None:
        self.batches += 1
        self.requests += len(replies)
        replies = iter(replies)
        for conn, entries in taken:
            conn.answer(entries, replies)
        self.running = False
        if self.pending:
            self._start()
        else:
            self.idle.set()

    async def exclusive(self, function, *args):
        """Run ``function`` on the storage thread, between batches."""
        return await asyncio.wrap_future(self.thread.submit(function, *args),
                                         loop=self.loop)

    async def drain(self) -> None:
        """Wait until every submitted request has been answered."""
        while self.running or self.pending:
            await self.idle.wait()
            await asyncio.sleep(0)

    def close(self) -> None:
        self.thread.shutdown(wait=True)
