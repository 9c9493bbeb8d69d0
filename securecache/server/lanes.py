"""The write lane: group commit for the writes of every connection.

How this works: reads never come here -- a connection answers them at
once from the engine's read snapshot (see ``connection``). A connection
that meets a write hands its queued requests to the lane (``submit``) and
keeps adding what it parses behind them (``add``) until the lane takes
them; every connection waiting when a group starts joins it: ONE write
transaction (and, with fsync durability, one sync) for all of them.

With fsync durability the groups run on the storage thread (LMDB wants a
write transaction begun and committed on one thread), which takes the
next group itself the moment a commit is done: the writes that arrived
while a group committed form the next one, so the longer a commit takes
the more requests share it, and no group waits for the event loop to
notice that the previous one ended. The loop keeps reading and answering
reads meanwhile. With async durability a group runs inline on the loop,
at most one write transaction per loop turn; a scan of the whole cache
(``flush_all``) still goes to the storage thread.

A finished group comes back to the loop (``complete``), which drops the
engine's read snapshot (later reads see the commit), applies the group's
side effects once (counters, audit lines) and gives each connection its
replies in its request order. Housekeeping (expiry sweep, delayed
flushes, remembered fetches, the periodic sync) is a job of the same
lane, between groups: one writer at a time, and the state it needs is
taken on the loop first.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from ..engine.core import LATER
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
        self.lock = threading.Lock()      # waiting, tasks, parts not taken
        self.wake = threading.Condition(self.lock)
        self.waiting: list = []           # connections with a group part
        self.tasks: deque = deque()       # (run, then) for the thread
        self.done: deque = deque()        # (then, result) for the loop
        self.outstanding = 0              # given to the thread, not back
        self.inline_scheduled = False
        self.kick_scheduled = False
        self.ready = False                # the thread may take the waiting
        self.closed = False
        self.failed = False
        self.groups = 0
        self.requests = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.thread = threading.Thread(target=self._serve, name="storage",
                                       daemon=True)
        self.thread.start()

    # ------------------------------------------------------------ input
    def submit(self, connection) -> None:
        """``connection`` has entries for the next group (``take_group``)."""
        self.idle.clear()
        with self.lock:
            self.waiting.append(connection)
        # An idle thread is woken at the end of the loop turn, so that the
        # writes of the whole turn form its group (a busy one takes the
        # next group itself when its commit is done).
        if self.threaded:
            if not self.kick_scheduled:
                self.kick_scheduled = True
                self.loop.call_soon(self._kick)
        else:
            self._schedule_inline()

    def _kick(self) -> None:
        self.kick_scheduled = False
        with self.lock:
            self.ready = True
            self.wake.notify()

    def add(self, connection, entries: list) -> bool:
        """Put ``entries`` behind ``connection``'s part if the lane has not
        taken it yet (else False: they wait for the replies)."""
        with self.lock:
            if connection.part is None:
                return False
            connection.part.extend(entries)
            return True

    async def job(self, factory):
        """Run ``factory()``'s job in the lane, between groups, on the
        storage thread. The factory runs on the loop now (it takes the
        state the job needs); Effects the job returns are applied on the
        loop."""
        future = self.loop.create_future()
        self._give(factory(), lambda effects: self._job_done(future, effects))
        return await future

    def _job_done(self, future, effects) -> None:
        if effects is not None:
            self.engine.apply(effects)
        if not future.done():
            future.set_result(effects)

    # ----------------------------------------------------- the thread
    def _give(self, run, then) -> None:
        """Queue ``run`` for the storage thread; ``then(result)`` on the
        loop when it is done. Jobs go before the next group."""
        self.idle.clear()
        with self.lock:
            self.outstanding += 1
            self.tasks.append((run, then))
            self.wake.notify()

    def _serve(self) -> None:
        """The storage thread: a task, else a group of whoever waits."""
        while True:
            with self.lock:
                while not self.closed and not self.tasks and not (
                        self.ready and self.waiting):
                    self.wake.wait()
                if self.tasks:
                    run, then = self.tasks.popleft()
                elif self.ready and self.waiting:
                    self.outstanding += 1
                    run, then = self._group_task(*self._take_group())
                else:
                    return                      # closed, nothing left
            try:
                result = run()
            except BaseException as error:      # a bug: stop serving
                self.loop.call_soon_threadsafe(self._fault, error)
                return
            self.done.append((then, result))
            self.loop.call_soon_threadsafe(self.complete)
            with self.lock:
                # what arrived during that commit is the next group
                self.ready = self.threaded and bool(self.waiting)

    def _take_group(self):
        """Under the lock: every waiting connection's part, as one group
        (its requests, and the parts to answer)."""
        connections, self.waiting = self.waiting, []
        parts = [(conn, conn.take_group()) for conn in connections]
        batch = [(conn.session, entry) for conn, entries in parts
                 for entry in entries if not isinstance(entry, ProtocolError)]
        return batch, parts

    def _group_task(self, batch, parts):
        return (lambda: self.engine.run_group(batch),
                lambda result: self._group_done(parts, result))

    # ------------------------------------------------------- the loop
    def complete(self) -> None:
        """Results of the storage thread, in the order it finished them
        (also called by a connection that finds some waiting: the replies
        of a commit do not wait for the end of the loop turn)."""
        done = self.done
        while done:
            then, result = done.popleft()
            with self.lock:
                self.outstanding -= 1
            self.engine.release_reader()      # later reads see this commit
            then(result)
        self._maybe_idle()

    def _fault(self, error: BaseException) -> None:
        # A fault in the engine is a bug: stop serving (fail-stop; the
        # group was not committed) rather than answer anything.
        self.failed = True
        self.on_fault(error)

    def _schedule_inline(self) -> None:
        if not self.inline_scheduled:
            self.inline_scheduled = True
            self.loop.call_soon(self._start_inline)

    def _start_inline(self) -> None:
        """async durability: the group of this loop turn, on the loop --
        unless the thread still runs one (a scan) or it holds a scan."""
        self.inline_scheduled = False
        if self.outstanding or self.failed:
            return                  # complete() schedules us again
        with self.lock:
            if not self.waiting:
                return
            batch, parts = self._take_group()
        if any(type(request) in SCANS for _, request in batch):
            self._give(*self._group_task(batch, parts))  # never on the loop
            return
        try:
            result = self.engine.run_group(batch)
        except BaseException as error:
            self._fault(error)          # fail-stop, then let it propagate
            raise
        self.engine.release_reader()
        self._group_done(parts, result)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.waiting and not self.threaded:
            self._schedule_inline()
        elif not self.waiting and not self.outstanding:
            self.idle.set()

    def _group_done(self, parts, result) -> None:
        replies, effects = result
        self.engine.apply(effects)
        self.groups += 1
        self.requests += sum(reply is not LATER for reply in replies)
        start = 0
        for conn, entries in parts:
            count = sum(not isinstance(e, ProtocolError) for e in entries)
            conn.group_done(entries, replies[start:start + count])
            start += count

    # -------------------------------------------------------- lifecycle
    async def drain(self) -> None:
        """Wait until every submitted request has been answered."""
        while (self.waiting or self.outstanding or self.inline_scheduled) \
                and not self.failed:
            await self.idle.wait()
            await asyncio.sleep(0)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.wake.notify()
        self.thread.join()

