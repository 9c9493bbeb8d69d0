"""Bounds of the engine: refused writes counted, delayed flushes kept in
LMDB (bounded, coalesced, exact at their second), scans answered in slices."""

from __future__ import annotations

from securecache.engine import Engine, Session
from securecache.engine.cache import SLICE
from securecache.engine.core import GROUP_SHARE, LATER
from securecache.protocol import events as ev
from securecache.protocol.events import Status, StoreMode
from securecache.storage import Storage, Txn

from test_engine import (ADMIN, LOCAL, clock, engine, get, mac,  # noqa: F401
                         outcome, run, store)


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


def test_listing_in_a_write_group_answers_its_first_slice(engine):
    """A listing behind a write runs in the group: its first slice there,
    the rest after the commit (the group does not hold the whole dump)."""
    fill(engine, SLICE + 500)
    reply = run(engine, ev.MetaDump())
    assert type(reply) is ev.More and len(reply.part.items) == SLICE
    rest = slices(engine, reply.rest)
    assert [len(p.items) for p in rest] == [500]


BIG = b"x" * 60000


def test_a_group_holds_a_bounded_share_of_each_connections_replies(engine):
    """Gets pipelined behind a write run in its group until their values
    pass the connection's share; the rest answer LATER, unrun (and are
    not counted), while another connection's requests still run."""
    store(engine, b"big", BIG)
    mine, other = Session(LOCAL), Session(LOCAL)
    batch = [(mine, ev.Store(StoreMode.SET, b"k", 0, 0, b"v"))]
    batch += [(mine, ev.Get([b"big"])) for _ in range(20)]
    batch += [(other, ev.Get([b"big"])), (other, ev.Delete(b"k"))]
    hits = engine.counters["get_hits"]
    replies = engine.execute(batch)
    share = GROUP_SHARE // len(BIG) + 1
    ran = replies[1:1 + share]
    assert all(r.items[0].value == BIG for r in ran)
    assert replies[1 + share:21] == [LATER] * (20 - share)
    assert replies[21].items[0].value == BIG
    assert outcome(replies[22]) is Status.DELETED
    assert engine.counters["get_hits"] == hits + share + 1


def test_a_long_get_in_a_group_is_sliced(engine):
    """gat of many large items in a write group: a slice, then the rest
    (which starts where the slice ended) in a later group."""
    keys = [b"g%d" % i for i in range(12)]
    for key in keys:
        store(engine, key, BIG)
    reply = run(engine, ev.Get(keys, touch=100))
    assert type(reply) is ev.More and not reply.part.final
    first = [item.key for item in reply.part.items]
    assert first == keys[:len(first)] and 1 < len(first) < len(keys)
    assert reply.rest.start == len(first) and reply.rest.touch == 100
    rest = run(engine, reply.rest)
    while type(rest) is ev.More:
        first += [item.key for item in rest.part.items]
        rest = run(engine, rest.rest)
    assert first + [item.key for item in rest.items] == keys


def test_a_sliced_get_looks_up_each_key_once(engine, monkeypatch):
    """A get line of N keys answered in slices costs N lookups, not one
    scan of every remaining key per slice."""
    store(engine, b"big", BIG)
    lookups = []
    real = Txn.get
    monkeypatch.setattr(Txn, "get",
                        lambda txn, key: lookups.append(key) or real(txn, key))
    parts = slices(engine, ev.Get([b"big"] * 200))
    assert len(parts) > 10
    assert sum(len(p.items) for p in parts) == 200
    assert len(lookups) == 200
