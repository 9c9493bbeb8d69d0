"""Side effects exactly once: a write group that is aborted and run again
(a full map) logs and counts each decision once; a read that must write
moves before anything is checked or counted. Real LMDB, the real policy,
a real audit file."""

from __future__ import annotations

import pytest

from securecache.engine import Engine, Session
from securecache.engine.core import WRITE
from securecache.protocol import events as ev
from securecache.protocol.events import Status, StoreMode
from securecache.security import open_mac
from securecache.storage import Storage

LOCAL = "system_u:system_r:securecache_local_t:s0"
APP = "system_u:system_r:securecache_app_t:s0"


@pytest.fixture
def audited(tmp_path):
    audit = tmp_path / "audit.log"
    mac = open_mac("policy", audit=str(audit))
    storage = Storage(tmp_path / "data", map_size=1 << 20)
    engine = Engine(storage, mac)
    yield engine, audit
    storage.close()
    mac.close()


def denials(audit, key: bytes) -> list[str]:
    return [line for line in audit.read_text().splitlines()
            if f'key="{key.decode()}"' in line and " denied " in line]


def test_full_map_group_logs_and_counts_each_decision_once(audited):
    """The group's first attempt overflows the map and is aborted; its
    requests then run alone. The denied delete in it is one audit line, one
    denial, and each store one set."""
    engine, audit = audited
    app, local = Session(APP), Session(LOCAL)
    assert engine.execute([(app, ev.Store(StoreMode.SET, b"theirs", 0, 0,
                                          b"v"))])[0].status is Status.STORED
    before = engine.daemon_totals()
    value = b"x" * 500_000                 # 24 of them: beyond the whole map
    batch = [(local, ev.Store(StoreMode.SET, b"big%02d" % i, 0, 0, value))
             for i in range(24)]
    batch.insert(0, (local, ev.Delete(b"theirs")))
    replies = engine.execute(batch)
    assert replies[0] == ev.Denied()
    assert all(isinstance(r, (ev.Done, ev.ServerError)) for r in
               replies[1:])
    after = engine.daemon_totals()
    assert engine.counters["evictions"] > 0 or \
        any(isinstance(r, ev.ServerError) for r in replies)
    assert len(denials(audit, b"theirs")) == 1
    assert after["avc_denials"] - before["avc_denials"] == 1
    assert after["set_hits"] - before["set_hits"] == 24


def test_read_that_must_write_moves_before_any_check(audited):
    """mg on a stale item: the read answers WRITE having logged and counted
    nothing; the write lane then decides once."""
    engine, audit = audited
    app, local = Session(APP), Session(LOCAL)
    engine.execute([(app, ev.Store(StoreMode.SET, b"theirs", 0, 0, b"v")),
                    (local, ev.Store(StoreMode.SET, b"mine", 0, 0, b"v")),
                    (local, ev.Delete(b"mine", invalidate=True))])
    before = engine.daemon_totals()
    stale = ev.Get([b"theirs", b"mine"])
    assert engine.read(local, stale) is WRITE
    engine.release_reader()
    assert denials(audit, b"theirs") == []
    assert engine.daemon_totals()["get_misses"] == before["get_misses"]
    reply = engine.execute([(local, stale)])[0]
    assert [item.key for item in reply.items] == [b"mine"]
    assert reply.items[0].won
    assert len(denials(audit, b"theirs")) == 1
    after = engine.daemon_totals()
    assert after["get_misses"] - before["get_misses"] == 1
    assert after["get_hits"] - before["get_hits"] == 1
