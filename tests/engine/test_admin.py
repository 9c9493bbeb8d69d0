"""Issue 10 in the engine: a too-large set, meta invalidation TTL,
shutdown replies, and the operator commands with their MAC rules (real
LMDB directory, real compiled policy)."""

from __future__ import annotations

from securecache.engine.detail import Tunables
from securecache.protocol import events as ev
from securecache.protocol.events import Status, StoreMode

from test_engine import (APP, clock, engine, get, mac,  # noqa: F401
                         run, store)


def test_too_large_set_drops_the_old_item(engine):
    store(engine, b"k", b"old")
    assert run(engine, ev.Oversized(b"k", drop=True)) == ev.TooLarge()
    assert get(engine, b"k") == {}
    store(engine, b"a", b"old")
    assert run(engine, ev.Oversized(b"a", drop=False)) == ev.TooLarge()
    assert get(engine, b"a") == {b"a": b"old"}         # add, append: kept


def test_too_large_set_leaves_what_the_client_may_not_write(engine):
    store(engine, b"app", b"secret", scontext=APP)
    assert run(engine, ev.Oversized(b"app", drop=True)) == ev.TooLarge()
    assert get(engine, b"app", scontext=APP) == {b"app": b"secret"}


def test_invalidating_store_keeps_the_ttl(engine, clock):
    """ms S I T90 C<older> on an item made stale by md I T30 whose token
    was handed out: stored, still stale, TTL still 30 (as memcached)."""
    store(engine, b"v", b"one", exptime=1000)
    old_cas = run(engine, ev.Get([b"v"])).items[0].cas
    store(engine, b"v", b"two", exptime=1000)
    run(engine, ev.Delete(b"v", invalidate=True, exptime=30))
    assert run(engine, ev.Get([b"v"])).items[0].won       # token handed out
    reply = run(engine, ev.Store(StoreMode.CAS, b"v", 0, 90, b"three",
                                 cas=old_cas, invalidate=True))
    assert reply.status is Status.STORED
    item = run(engine, ev.Get([b"v"])).items[0]
    assert item.value == b"three" and item.stale and item.token_sent
    assert item.exptime - clock.now <= 30


def test_shutdown_replies(engine):
    assert run(engine, ev.Shutdown()) == ev.Disabled("shutdown")
    engine.shutdown_enabled = True
    assert run(engine, ev.Shutdown(valid=False)) == ev.ClientError(
        "invalid shutdown mode")
    assert run(engine, ev.Shutdown(), APP) == ev.Denied()
    assert run(engine, ev.Shutdown(graceful=True)) == ev.Close()
    assert engine.shutdown_requested


def test_cachedump_lists_only_what_the_client_may_getattr(engine, clock):
    store(engine, b"b", b"vv", exptime=100)
    store(engine, b"a", b"v")
    store(engine, b"app", b"v", scontext=APP)
    dump = run(engine, ev.CacheDump(1, 0))
    assert [(i.key, i.size, i.exptime) for i in dump.items] == [
        (b"a", 1, 0), (b"b", 2, clock.now + 100)]
    assert len(run(engine, ev.CacheDump(1, 1)).items) == 1
    assert run(engine, ev.CacheDump(2, 0)).items == []
    assert [i.key for i in run(engine, ev.CacheDump(1, 0), APP).items] == \
        [b"app"]


def test_memlimit(engine):
    assert run(engine, ev.MemLimit(7)).word == "MEMLIMIT_TOO_SMALL"
    engine.tunables = Tunables(max_limit=64 << 20)
    assert run(engine, ev.MemLimit(50), APP) == ev.Denied()  # kv_cache:setattr
    assert run(engine, ev.MemLimit(50)) is Status.OK
    assert engine.storage.map_size == 50 << 20
    assert run(engine, ev.MemLimit(65)).word == "MEMLIMIT_ADJUST_FAILED"
    rows = dict(run(engine, ev.Stats("")).rows)
    assert rows["limit_maxbytes"] == 50 << 20


def test_stats_detail_counts_per_prefix(engine):
    assert run(engine, ev.Detail("on"), APP) == ev.Denied()
    assert run(engine, ev.Detail("on")) is Status.OK
    store(engine, b"user:1", b"v")
    get(engine, b"user:1", b"user:2", b"plain")
    run(engine, ev.Delete(b"user:1"))
    assert run(engine, ev.Detail("dump")).rows == [(b"user", 2, 1, 1, 1)]
    assert run(engine, ev.Detail("off")) is Status.OK
    get(engine, b"user:1")
    assert run(engine, ev.Detail("dump")).rows == [(b"user", 2, 1, 1, 1)]
    assert run(engine, ev.Stats("reset")) is Status.RESET
    assert run(engine, ev.Detail("dump")).rows == []


def test_crawl_reclaims_expired_items(engine, clock):
    store(engine, b"short", b"v", exptime=5)
    store(engine, b"long", b"v")
    clock.now += 10
    assert run(engine, ev.Crawl(), APP) == ev.Denied()
    assert run(engine, ev.Crawl()) is Status.OK
    with engine.storage.txn(False) as txn:
        assert txn.count() == 1
    rows = dict(run(engine, ev.Stats("items")).rows)
    assert rows["items:1:crawler_reclaimed"] == 1


def test_tune_and_settings(engine):
    assert run(engine, ev.Tune("slab_automove", 2), APP) == ev.Denied()
    assert run(engine, ev.Tune("slab_automove", 2)) is Status.OK
    assert run(engine, ev.Tune("lru_segmented", False)) is Status.OK
    rows = dict(run(engine, ev.Stats("settings")).rows)
    assert (rows["slab_automove"], rows["lru_segmented"]) == (2, "no")


def test_a_disabled_crawler_sweeps_nothing_and_refuses_crawls(engine,
                                                             clock):
    store(engine, b"short", b"v", exptime=5)
    store(engine, b"met", b"v", exptime=5)
    store(engine, b"long", b"v")
    assert run(engine, ev.Tune("lru_crawler", False), APP) == ev.Denied()
    assert run(engine, ev.Tune("lru_crawler", False)) is Status.OK
    assert run(engine, ev.Tune("lru_crawler", False)) is Status.OK
    clock.now += 10
    assert get(engine, b"met") == {}        # met expired: gone at the tick
    engine.tick()
    with engine.storage.txn(False) as txn:  # the sweep did not run
        assert txn.count() == 2
    crawler_off = ev.ClientError("lru crawler disabled")
    assert run(engine, ev.Crawl(), APP) == ev.Denied()    # checked first
    assert run(engine, ev.Crawl()) == crawler_off
    assert run(engine, ev.MetaDump(b"")) == crawler_off
    assert run(engine, ev.Tune("lru_crawler", True)) is Status.OK
    assert run(engine, ev.Tune("lru_crawler", True)) == ev.Refused(
        "ERROR", "failed to start lru crawler thread")
    engine.tick()
    with engine.storage.txn(False) as txn:  # swept again
        assert txn.count() == 1
    run(engine, ev.Tune("lru_crawler_sleep", 7))
    run(engine, ev.Tune("lru_crawler_tocrawl", 3))
    rows = dict(run(engine, ev.Stats("settings")).rows)
    assert (rows["lru_crawler"], rows["lru_crawler_sleep"],
            rows["lru_crawler_tocrawl"]) == ("yes", 7, 3)


def test_stats_shapes(engine):
    assert run(engine, ev.Stats("slabs")).rows == [("active_slabs", 0),
                                                    ("total_malloced", 0)]
    store(engine, b"k", b"v")
    slabs = dict(run(engine, ev.Stats("slabs")).rows)
    assert slabs["1:used_chunks"] == 1 and slabs["1:total_pages"] >= 1
    assert run(engine, ev.Stats("sizes")).rows == [("sizes_status",
                                                     "disabled")]
    assert run(engine, ev.Stats("extstore")).rows == []
    general = dict(run(engine, ev.Stats("")).rows)
    assert general["version"] == engine.version
    assert general["securecache_version"]
    assert run(engine, ev.MetaDump(b"", (2,))).items == []
    assert len(run(engine, ev.MetaDump(b"", (1, 2))).items) == 1


def test_smallest_cache_keeps_the_item_it_just_stored(tmp_path, mac, clock):
    """-m 2 -I 1m: each 900 KB store evicts older items, never itself."""
    from securecache.engine import Engine
    from securecache.storage import Storage
    storage = Storage(tmp_path / "small", map_size=2 << 20,
                      durability="async")
    small = Engine(storage, mac, clock=clock, max_item_size=1 << 20)
    try:
        value = b"v" * (900 << 10)
        for key in (b"one", b"two", b"three", b"four"):
            assert store(small, key, value) is Status.STORED
            assert get(small, key) == {key: value}
        assert small.counters["evictions"] >= 2
    finally:
        storage.close()
