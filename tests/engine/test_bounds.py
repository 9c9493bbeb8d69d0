"""Bounds of the engine: refused writes counted, delayed flushes kept in
LMDB (bounded, coalesced, exact at their second), scans answered in slices."""

from __future__ import annotations

from securecache.engine import Engine, Session
from securecache.engine.cache import SLICE
from securecache.protocol import events as ev
from securecache.protocol.events import Status, StoreMode
from securecache.storage import Storage

from test_engine import (ADMIN, LOCAL, clock, engine, get, mac, run,  # noqa: F401
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


ADMIN_C5 = "system_u:system_r:securecache_admin_t:s0-s0:c0.c5"


def pending(engine):
    with engine.storage.txn(False) as txn:
        return txn.flushes()


def test_delayed_flush_survives_a_restart(tmp_path, mac, clock):
    storage = Storage(tmp_path / "d", map_size=4 << 20)
    engine = Engine(storage, mac, clock=clock)
    store(engine, b"a", b"1")
    assert run(engine, ev.FlushAll(10)) is Status.OK
    storage.close()
    storage = Storage(tmp_path / "d", map_size=4 << 20)
    engine = Engine(storage, mac, clock=clock)
    assert get(engine, b"a") == {b"a": b"1"}
    clock.now += 10
    engine.tick()
    assert get(engine, b"a") == {}
    assert pending(engine) == []             # consumed when it fired
    storage.close()


def test_delayed_flush_fires_at_its_second_before_the_tick(engine, clock):
    store(engine, b"a", b"1")
    assert run(engine, ev.FlushAll(2)) is Status.OK
    clock.now += 1
    assert get(engine, b"a") == {b"a": b"1"}
    clock.now += 1                           # due; housekeeping not yet run
    assert get(engine, b"a") == {}
    assert store(engine, b"a", b"2", StoreMode.ADD) is Status.STORED
    store(engine, b"b", b"3")                # stored at the due second
    engine.tick()                            # fires late: keeps a and b
    assert get(engine, b"a", b"b") == {b"a": b"2", b"b": b"3"}


def test_delayed_flush_hides_only_what_its_client_may_remove(engine, clock):
    store(engine, b"app", b"v", scontext="system_u:system_r:"
          "securecache_app_t:s0")
    store(engine, b"mine", b"v")
    assert run(engine, ev.FlushAll(1)) is Status.OK
    clock.now += 1
    app = "system_u:system_r:securecache_app_t:s0"
    assert get(engine, b"app", scontext=app) == {b"app": b"v"}
    assert get(engine, b"mine") == {}
    engine.tick()
    assert get(engine, b"app", scontext=app) == {b"app": b"v"}


def test_delayed_flushes_coalesce_per_context_and_are_bounded(engine, clock):
    now = clock.now
    assert run(engine, ev.FlushAll(100)) is Status.OK
    assert run(engine, ev.FlushAll(5)) is Status.OK     # replaces it
    assert pending(engine) == [(now + 5, LOCAL.encode())]
    engine.MAX_DELAYED_FLUSHES = 2
    assert run(engine, ev.FlushAll(7), ADMIN) is Status.OK
    assert run(engine, ev.FlushAll(9), ADMIN_C5) == \
        ev.ServerError("too many delayed flushes pending")
    assert run(engine, ev.FlushAll(8), ADMIN) is Status.OK
    assert sorted(pending(engine)) == [(now + 5, LOCAL.encode()),
                                       (now + 8, ADMIN.encode())]
    assert run(engine, ev.FlushAll(), ADMIN) is Status.OK   # cancels ADMIN's
    assert pending(engine) == [(now + 5, LOCAL.encode())]


def test_delayed_flush_as_absolute_time(engine, clock):
    store(engine, b"a", b"1")
    assert run(engine, ev.FlushAll(clock.now + 3)) is Status.OK
    assert pending(engine) == [(clock.now + 3, LOCAL.encode())]
    clock.now += 3
    assert get(engine, b"a") == {}


def fill(engine, count, scontext=LOCAL, prefix=b"k"):
    session = Session(scontext)
    engine.execute([(session, ev.Store(StoreMode.SET, b"%s%05d" % (prefix, i),
                                       0, 0, b"v")) for i in range(count)])


def slices(engine, request, scontext=LOCAL):
    """Every part of a sliced read, as the server runs it."""
    session, parts = Session(scontext), []
    while True:
        reply = engine.read(session, request)
        engine.release_reader()          # each slice: a new snapshot
        if type(reply) is not ev.More:
            return parts + [reply]
        parts.append(reply.part)
        request = reply.rest


def test_metadump_answers_in_slices_after_the_last_key(engine):
    fill(engine, 2 * SLICE + 500)
    parts = slices(engine, ev.MetaDump())
    assert [len(p.items) for p in parts] == [SLICE, SLICE, 500]
    assert [p.more for p in parts] == [True, True, False]
    keys = [i.key for p in parts for i in p.items]
    assert keys == [b"k%05d" % i for i in range(2 * SLICE + 500)]


def test_slices_scan_a_bounded_number_of_hidden_items(engine):
    app = "system_u:system_r:securecache_app_t:s0"
    fill(engine, 2 * SLICE + 100, app, b"a")
    fill(engine, 3, LOCAL, b"m")
    parts = slices(engine, ev.MetaDump())
    assert [len(p.items) for p in parts] == [0, 0, 3]   # SLICE scanned each
    parts = slices(engine, ev.MetaDump(b"m"))
    assert [len(p.items) for p in parts] == [3]


def test_cachedump_answers_in_slices_and_keeps_its_limit(engine):
    fill(engine, 2 * SLICE + 500)
    parts = slices(engine, ev.CacheDump(1, SLICE + 300))
    assert [len(p.items) for p in parts] == [SLICE, 300]
    assert [p.more for p in parts] == [True, False]
    parts = slices(engine, ev.CacheDump(1, 0))
    keys = [i.key for p in parts for i in p.items]
    assert keys == [b"k%05d" % i for i in range(2 * SLICE + 500)]


def test_listing_in_a_write_group_is_answered_whole(engine):
    fill(engine, SLICE + 500)
    reply = run(engine, ev.MetaDump())
    assert type(reply) is ev.KeyList and len(reply.items) == SLICE + 500
