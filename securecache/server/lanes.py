"""The write lane: group commit for the writes of every connection.

How this works: reads never come here -- a connection answers them at
once from the engine's read snapshot (see ``connection``). A connection
that meets a write hands its queued requests to the lane (``submit``);
the lane starts a group at the end of the event-loop turn, so every write
that arrived in that turn joins it: ONE write transaction (and, with fsync
durability, one sync) for all of them. With fsync the group runs on the
single storage thread (LMDB wants a write transaction begun and committed
on one thread), and the loop keeps reading and answering reads meanwhile;
the writes that arrive while a group commits form the next group, so the
longer a commit takes the more requests share it. With async durability
the group runs inline, at most one write transaction per loop turn.

When a group is done the lane drops the engine's read snapshot (later
reads see the commit), applies the group's side effects once (counters,
audit lines), and gives each connection its replies in its request order.
Housekeeping (expiry sweep, delayed flushes, remembered fetches, the
periodic sync) runs as a job of its own in the same lane, between groups:
one writer at a time, and no state shared with the loop unfenced.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ..protocol import events as ev
from ..protocol.events import ProtocolError

SCANS = frozenset((ev.FlushAll,))


class WriteLane:
    """Collects the writes of many connections into engine groups."""

    def __init__(self, engine, loop: asyncio.AbstractEventLoop, on_fault,
                 *, threaded: bool) -> None:
        """``threaded``: groups wait for the disk (fsync), so they run on
        the storage thread; else inline on the loop."""
        self.engine = engine
        self.loop = loop
        self.on_fault = on_fault
        self.threaded = threaded
        self.waiting: list = []           # connections with a group part
        self.jobs: list[tuple] = []       # (job factory, future)
        self.running = False
        self.scheduled = False
        self.groups = 0
        self.requests = 0
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="storage")
        self.idle = asyncio.Event()
        self.idle.set()

    # ------------------------------------------------------------ input
    def submit(self, connection) -> None:
        """``connection`` has entries for the next group (``take_group``)."""
        self.waiting.append(connection)
        self._schedule()

    async def job(self, factory):
        """Run ``factory()``'s job in the lane, between groups, on the
        storage thread. The factory runs on the loop just before (it takes
        the state the job needs); Effects the job returns are applied on
        the loop."""
        future = self.loop.create_future()
        self.jobs.append((factory, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        self.idle.clear()
        if not self.running and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._start)

    # ---------------------------------------------------------- running
    def _start(self) -> None:
        self.scheduled = False
        if self.running:
            return
        if self.jobs:
            self._start_job(*self.jobs.pop(0))
        elif self.waiting:
            self._start_group()
        else:
            self.idle.set()

    def _start_group(self) -> None:
        connections, self.waiting = self.waiting, []
        parts = [(conn, conn.take_group()) for conn in connections]
        batch = [(conn.session, entry) for conn, entries in parts
                 for entry in entries if not isinstance(entry, ProtocolError)]
        # A scan of the whole cache (flush_all) never runs on the loop.
        threaded = self.threaded or any(type(request) in SCANS
                                        for _, request in batch)
        self._run(self.engine.run_group, (batch,), threaded,
                  lambda result: self._group_done(parts, result))

    def _start_job(self, factory, future) -> None:
        job = factory()

        def done(effects) -> None:
            if effects is not None:
                self.engine.apply(effects)
            if not future.done():
                future.set_result(effects)
        # Jobs always run on the storage thread (reads go on meanwhile);
        # the lane runs nothing else until they are done.
        self._run(job, (), True, done)

    def _run(self, function, args, threaded: bool, then) -> None:
        self.running = True
        if not threaded:
            try:
                result = function(*args)
            except BaseException as error:
                self.on_fault(error)      # fail-stop, then let it propagate
                raise
            self._finish(then, result)
            return
        future = asyncio.wrap_future(self.thread.submit(function, *args),
                                     loop=self.loop)
        future.add_done_callback(lambda done: self._done(then, done))

    def _done(self, then, done: asyncio.Future) -> None:
        error = done.exception()
        if error is not None:
            # A fault in the engine is a bug: stop serving (fail-stop; the
            # group was not committed) rather than answer anything.
            self.on_fault(error)
            return
        self._finish(then, done.result())

    def _finish(self, then, result) -> None:
        self.running = False
        self.engine.release_reader()      # later reads see this commit
        then(result)
        if self.waiting or self.jobs:
            self._schedule()
        else:
            self.idle.set()

    def _group_done(self, parts, result) -> None:
        replies, effects = result
        self.engine.apply(effects)
        self.groups += 1
        self.requests += len(replies)
        start = 0
        for conn, entries in parts:
            count = sum(not isinstance(e, ProtocolError) for e in entries)
            conn.group_done(entries, replies[start:start + count])
            start += count

    # -------------------------------------------------------- lifecycle
    async def drain(self) -> None:
        """Wait until every submitted request has been answered."""
        while self.running or self.waiting or self.jobs or self.scheduled:
            await self.idle.wait()
            await asyncio.sleep(0)

    def close(self) -> None:
        self.thread.shutdown(wait=True)
