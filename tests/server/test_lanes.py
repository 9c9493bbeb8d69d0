"""The write lane on a real engine (LMDB directory, compiled policy): who
joins a group, when the storage thread takes the next one, jobs between
groups, and a scan that never runs on the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from securecache.engine import Engine, Session
from securecache.protocol import events as ev
from securecache.protocol.events import Status, StoreMode
from securecache.security import open_mac
from securecache.server.lanes import WriteLane
from securecache.storage import Storage

LOCAL = "system_u:system_r:securecache_local_t:s0"


class Client:
    """What the lane needs of a connection: a part, a session, replies."""

    def __init__(self, entries) -> None:
        self.session = Session(LOCAL)
        self.part = list(entries)
        self.flight = None
        self.replies: list = []
        self.answered = asyncio.Event()

    def take_group(self) -> list:
        self.flight, self.part = self.part, None
        return self.flight

    def group_done(self, entries, replies) -> None:
        self.flight = None
        self.replies += replies
        self.answered.set()


def store(key: bytes, value: bytes = b"v") -> ev.Store:
    return ev.Store(StoreMode.SET, key, 0, 0, value)


@pytest.fixture(scope="module")
def mac():
    return open_mac("policy", audit="none")


@pytest.fixture
def engine(tmp_path, mac):
    storage = Storage(tmp_path / "data", map_size=16 << 20)
    yield Engine(storage, mac)
    storage.close()


def lane_run(engine, threaded: bool, body):
    """Run ``body(lane)`` on a fresh loop with a lane; close it after."""
    async def main():
        lane = WriteLane(engine, asyncio.get_running_loop(), _raise,
                         threaded=threaded)
        try:
            return await body(lane)
        finally:
            await lane.drain()
            lane.close()
    return asyncio.run(main())


def _raise(error):
    raise error


def blocker(gate: threading.Event):
    """A job that holds the storage thread until ``gate`` opens."""
    return lambda: (lambda: gate.wait(10) and None)


def test_writes_that_arrive_during_a_commit_form_one_group(engine):
    async def body(lane):
        gate = threading.Event()
        held = asyncio.ensure_future(lane.job(blocker(gate)))
        await asyncio.sleep(0.05)           # the thread is inside the job
        clients = [Client([store(b"k%d" % i)]) for i in range(5)]
        for client in clients:
            lane.submit(client)
        await asyncio.sleep(0.05)
        before = lane.groups
        gate.set()
        await held
        for client in clients:
            await client.answered.wait()
        return before, lane.groups, [c.replies for c in clients]
    before, after, replies = lane_run(engine, True, body)
    assert after - before == 1              # five connections, one commit
    assert all(r[0].status is Status.STORED for r in replies)


def test_entries_join_the_part_until_the_lane_takes_it(engine):
    async def body(lane):
        gate = threading.Event()
        held = asyncio.ensure_future(lane.job(blocker(gate)))
        await asyncio.sleep(0.05)
        client = Client([store(b"a")])
        lane.submit(client)
        joined = lane.add(client, [ev.Get([b"a"])])   # not taken yet
        gate.set()
        await held
        await client.answered.wait()
        late = lane.add(client, [ev.Get([b"a"])])     # taken: the backlog's
        return joined, late, client.replies
    joined, late, replies = lane_run(engine, True, body)
    assert joined and not late
    assert replies[0].status is Status.STORED
    assert [bytes(i.value) for i in replies[1].items] == [b"v"]


def test_the_thread_takes_the_next_group_without_the_loop(engine):
    """A group waiting when a commit ends starts at once on the storage
    thread, even while the loop is busy and cannot run a callback."""
    async def body(lane):
        gate = threading.Event()
        held = asyncio.ensure_future(lane.job(blocker(gate)))
        await asyncio.sleep(0.05)
        client = Client([store(b"x", b"1")])
        lane.submit(client)
        await asyncio.sleep(0.05)   # the kick has run: the group is ready
        gate.set()
        # the loop is blocked here; the thread must commit on its own
        committed = False
        for _ in range(200):
            with engine.storage.txn(False) as txn:
                committed = txn.get(b"x") is not None
            if committed:
                break
            time.sleep(0.01)
        await held
        await client.answered.wait()
        return committed
    assert lane_run(engine, True, body)


def test_async_lane_runs_groups_inline_and_scans_on_the_thread(engine):
    async def body(lane):
        first = Client([store(b"s")])
        lane.submit(first)
        await first.answered.wait()
        scan = Client([ev.FlushAll(0)])
        lane.submit(scan)
        await scan.answered.wait()
        after = Client([store(b"t")])
        lane.submit(after)
        await after.answered.wait()
        return first.replies, scan.replies, after.replies
    first, scan, after = lane_run(engine, False, body)
    assert first[0].status is Status.STORED
    assert scan[0] is Status.OK
    assert after[0].status is Status.STORED
    with engine.storage.txn(False) as txn:
        assert txn.get(b"s") is None and txn.get(b"t") is not None
