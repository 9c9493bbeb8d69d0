"""Bounds of the engine: refused writes counted, delayed flushes kept in
LMDB (bounded, coalesced, exact at their second), scans answered in slices."""

from __future__ import annotations

from securecache.engine import Engine, Session
from securecache.protocol import events as ev
from securecache.protocol.events import Status, StoreMode
from securecache.storage import Storage

from test_engine import (LOCAL, clock, engine, get, mac, run,  # noqa: F401
                         store)


def test_sets_refused_with_evictions_off_count_outofmemory(tmp_path, mac,
                                                           clock):
    storage = Storage(tmp_path / "d", map_size=1 << 20)
    engine = Engine(storage, mac, clock=clock, evictions=False)
    replies = [store(engine, b"k%03d" % i, b"x" * 30000) for i in range(60)]
    refused = replies.count(ev.ServerError("out of memory storing object"))
    assert refused > 0
    assert engine.counters["outofmemory"] == refused
    rows = dict(run(engine, ev.Stats()).rows)
    assert rows["outofmemory"] == refused
    storage.close()
