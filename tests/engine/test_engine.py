"""The engine on a real LMDB directory with the real compiled policy."""

from __future__ import annotations

import pytest

from securecache.engine import Engine, Session
from securecache.protocol import events as ev
from securecache.protocol.events import Status, StoreMode
from securecache.security import open_mac
from securecache.storage import Storage

LOCAL = "system_u:system_r:securecache_local_t:s0"
APP = "system_u:system_r:securecache_app_t:s0"
ADMIN = "system_u:system_r:securecache_admin_t:s0-s0:c0.c1023"
LOCAL_ITEM = "system_u:object_r:securecache_local_item_t:s0"
APP_ITEM = "system_u:object_r:securecache_app_item_t:s0"


class Clock:
    def __init__(self, now=1_800_000_000):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def mac():
    return open_mac("policy", audit="none")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def engine(tmp_path, mac, clock):
    storage = Storage(tmp_path / "data", map_size=4 << 20)
    eng = Engine(storage, mac, clock=clock, max_item_size=64 << 10)
    yield eng
    storage.close()


def run(engine, request, scontext=LOCAL, session=None):
    return engine.execute([(session or Session(scontext), request)])[0]


def outcome(reply):
    """The status of a reply (a successful write also carries its cas)."""
    return reply.status if isinstance(reply, ev.Done) else reply


def store(engine, key, value, mode=StoreMode.SET, exptime=0, flags=0, cas=0,
          scontext=LOCAL):
    return outcome(run(engine, ev.Store(mode, key, flags, exptime, value,
                                        cas=cas), scontext))


def get(engine, *keys, scontext=LOCAL, touch=None):
    reply = run(engine, ev.Get(list(keys), touch=touch), scontext)
    return {item.key: item.value for item in reply.items}


def test_set_get_and_modes(engine):
    assert store(engine, b"k", b"v1", flags=7) is Status.STORED
    assert get(engine, b"k") == {b"k": b"v1"}
    assert store(engine, b"k", b"x", StoreMode.ADD) is Status.NOT_STORED
    assert store(engine, b"new", b"x", StoreMode.ADD) is Status.STORED
    assert store(engine, b"none", b"x", StoreMode.REPLACE) is Status.NOT_STORED
    assert store(engine, b"k", b"v2", StoreMode.REPLACE) is Status.STORED
    assert store(engine, b"k", b">", StoreMode.APPEND) is Status.STORED
    assert store(engine, b"k", b"<", StoreMode.PREPEND) is Status.STORED
    assert store(engine, b"none", b"x", StoreMode.APPEND) is Status.NOT_STORED
    reply = run(engine, ev.Get([b"k"]))
    assert reply.items[0].value == b"<v2>" and reply.items[0].flags == 0


def test_cas(engine):
    store(engine, b"k", b"v")
    cas = run(engine, ev.Get([b"k"])).items[0].cas
    assert store(engine, b"k", b"w", StoreMode.CAS, cas=cas + 1) is Status.EXISTS
    assert store(engine, b"k", b"w", StoreMode.CAS, cas=cas) is Status.STORED
    assert store(engine, b"k", b"z", StoreMode.CAS, cas=cas) is Status.EXISTS
    assert store(engine, b"no", b"z", StoreMode.CAS, cas=1) is Status.NOT_FOUND


def test_arith(engine):
    assert run(engine, ev.Arith(b"n", 1)) is Status.NOT_FOUND
    store(engine, b"n", b"18446744073709551615")
    assert run(engine, ev.Arith(b"n", 2)).value == 1
    store(engine, b"n", b"100")
    assert run(engine, ev.Arith(b"n", 95, incr=False)).value == 5
    assert get(engine, b"n") == {b"n": b"5  "}          # memcached pads
    assert run(engine, ev.Arith(b"n", 10, incr=False)).value == 0
    store(engine, b"s", b"abc")
    assert run(engine, ev.Arith(b"s", 1)) == ev.ClientError(
        "cannot increment or decrement non-numeric value")
    created = run(engine, ev.Arith(b"auto", 1, initial=40))
    assert created.value == 40 and created.created
    assert run(engine, ev.Arith(b"auto", 2, initial=40)).value == 42


def test_expiry_touch_and_gat(engine, clock):
    store(engine, b"k", b"v", exptime=10)
    clock.now += 9
    assert get(engine, b"k") == {b"k": b"v"}
    assert outcome(run(engine, ev.Touch(b"k", 100))) is Status.TOUCHED
    clock.now += 50
    assert get(engine, b"k", touch=5) == {b"k": b"v"}
    clock.now += 5
    assert get(engine, b"k") == {}
    assert run(engine, ev.Touch(b"k", 100)) is Status.NOT_FOUND
    store(engine, b"neg", b"v", exptime=-1)
    assert get(engine, b"neg") == {}


def test_expired_items_are_swept(engine, clock):
    for i in range(5):
        store(engine, b"k%d" % i, b"v", exptime=1)
    store(engine, b"keep", b"v")
    clock.now += 2
    engine.tick()
    with engine.storage.txn(False) as txn:
        assert [key for key, _ in txn.scan()] == [b"keep"]
    assert engine.counters["reclaimed"] == 5


def test_delayed_flush(engine, clock):
    store(engine, b"a", b"1")
    assert run(engine, ev.FlushAll(10)) is Status.OK
    store(engine, b"b", b"2")
    engine.tick()
    assert get(engine, b"a", b"b") == {b"a": b"1", b"b": b"2"}
    clock.now += 10
    engine.tick()
    assert get(engine, b"a", b"b") == {}


def test_new_items_get_the_domain_type_and_keep_it(engine):
    store(engine, b"mine", b"v")
    assert run(engine, ev.GetLabel(b"mine")) == ev.Label(LOCAL_ITEM)
    store(engine, b"app", b"v", scontext=APP)
    assert run(engine, ev.GetLabel(b"app"), APP) == ev.Label(APP_ITEM)
    store(engine, b"mine", b"v2", scontext=ADMIN)       # overwrite keeps label
    assert run(engine, ev.GetLabel(b"mine"), ADMIN) == ev.Label(LOCAL_ITEM)


def test_denied_read_is_a_miss_and_write_is_denied(engine):
    store(engine, b"app", b"secret", scontext=APP)
    assert get(engine, b"app") == {}
    assert run(engine, ev.GetLabel(b"app")) is Status.NOT_FOUND
    assert store(engine, b"app", b"x") == ev.Denied()
    assert run(engine, ev.Delete(b"app")) == ev.Denied()
    assert run(engine, ev.Arith(b"app", 1)) == ev.Denied()
    assert get(engine, b"app", scontext=APP) == {b"app": b"secret"}


def test_flush_all_removes_only_what_the_client_may_remove(engine):
    store(engine, b"app", b"v", scontext=APP)
    store(engine, b"mine", b"v")
    assert run(engine, ev.FlushAll()) is Status.OK
    assert get(engine, b"app", scontext=APP) == {b"app": b"v"}
    assert get(engine, b"mine") == {}
    assert run(engine, ev.FlushAll(), APP) == ev.Denied()


def test_metadump_lists_visible_keys_in_order(engine):
    for key in (b"b", b"a", b"c"):
        store(engine, key, b"v")
    store(engine, b"app", b"v", scontext=APP)
    reply = run(engine, ev.MetaDump())
    assert [item.key for item in reply.items] == [b"a", b"b", b"c"]
    reply = run(engine, ev.MetaDump(b"b"))
    assert [item.key for item in reply.items] == [b"b"]


def test_relabel_and_createlabel(engine):
    store(engine, b"k", b"v")
    assert run(engine, ev.Relabel(b"k", APP_ITEM)) == ev.Denied()
    assert run(engine, ev.Relabel(b"k", APP_ITEM), ADMIN) is Status.RELABELED
    assert run(engine, ev.GetLabel(b"k"), ADMIN) == ev.Label(APP_ITEM)
    assert run(engine, ev.Relabel(b"k", "bogus:ctx"), ADMIN) == ev.ClientError(
        "invalid security context")
    assert run(engine, ev.Relabel(b"missing", APP_ITEM), ADMIN) is Status.NOT_FOUND
    session = Session(ADMIN)
    assert run(engine, ev.CreateLabel(APP_ITEM), session=session) is Status.OK
    run(engine, ev.Store(StoreMode.SET, b"c", 0, 0, b"v"), session=session)
    done = run(engine, ev.Store(StoreMode.SET, b"c", 9, 0, b"w"),
               session=session)
    assert done.cas == run(engine, ev.Get([b"c"]), ADMIN).items[0].cas
    assert done.flags == 9
    assert run(engine, ev.GetLabel(b"c"), ADMIN) == ev.Label(APP_ITEM)
    assert run(engine, ev.CreateLabel("nope"), session=session) == \
        ev.ClientError("invalid security context")


def test_item_size_limit_on_append(engine):
    store(engine, b"k", b"x" * (60 << 10))
    assert store(engine, b"k", b"y" * (8 << 10), StoreMode.APPEND) == \
        ev.ServerError("out of memory storing object")


def test_full_map_evicts_oldest_written(engine):
    value = b"x" * 30000
    for i in range(400):                       # ~12 MB into a 4 MB map
        assert store(engine, b"k%03d" % i, value) is Status.STORED
    assert engine.counters["evictions"] > 0
    assert get(engine, b"k399") == {b"k399": value}
    assert get(engine, b"k000") == {}


def test_full_map_without_evictions_answers_out_of_memory(tmp_path, mac, clock):
    storage = Storage(tmp_path / "d", map_size=1 << 20)
    engine = Engine(storage, mac, clock=clock, evictions=False)
    replies = [store(engine, b"k%03d" % i, b"x" * 30000) for i in range(60)]
    assert Status.STORED in replies
    assert replies[-1] == ev.ServerError("out of memory storing object")
    rows = dict(run(engine, ev.Stats("")).rows)
    refused = sum(reply != Status.STORED for reply in replies)
    assert rows["store_no_memory"] == rows["outofmemory"] == refused
    storage.close()


def test_expired_lookups_and_refused_stores_are_counted(engine, clock):
    """memcached's get_expired (once per expired item met, by any command),
    store_too_large and store_no_memory rows."""
    def counted() -> tuple:
        rows = dict(run(engine, ev.Stats("")).rows)
        return (rows["get_expired"], rows["store_too_large"],
                rows["store_no_memory"])
    store(engine, b"a", b"v", exptime=5)
    store(engine, b"b", b"v", exptime=5)
    clock.now += 10
    session = Session(LOCAL)
    assert engine.read(session, ev.Get([b"a"])) == ev.Values([])
    assert engine.read(session, ev.Get([b"a"])) == ev.Values([])
    engine.release_reader()
    assert get(engine, b"a") == {}      # the write lane meets it: removed
    assert counted() == (1, 0, 0)       # one item, met three times
    assert get(engine, b"b", touch=100) == {}
    assert counted() == (2, 0, 0)
    assert run(engine, ev.Oversized(b"c", drop=True)) == ev.TooLarge()
    assert counted() == (2, 1, 0)


def test_batch_shares_one_transaction_and_keeps_order(engine):
    session = Session(LOCAL)
    replies = engine.execute([
        (session, ev.Store(StoreMode.SET, b"a", 0, 0, b"1")),
        (session, ev.Get([b"a"])),
        (session, ev.Arith(b"a", 4)),
        (session, ev.Delete(b"a")),
        (session, ev.Get([b"a"])),
    ])
    assert outcome(replies[0]) is Status.STORED
    assert replies[1].items[0].value == b"1"
    assert replies[2].value == 5
    assert replies[3] is Status.DELETED
    assert replies[4].items == []


def test_stats_groups(engine):
    store(engine, b"k", b"v")
    rows = dict(run(engine, ev.Stats("")).rows)
    assert rows["curr_items"] == 1 and rows["mac_mode"] == "policy"
    assert "avc_lookups" in rows and rows["cmd_set"] == 1
    assert dict(run(engine, ev.Stats("items")).rows)["items:1:number"] == 1
    assert dict(run(engine, ev.Stats("settings")).rows)["item_size_max"] == 64 << 10
    assert run(engine, ev.Stats("reset")) is Status.RESET
    assert run(engine, ev.Stats(""), APP).rows     # app may read stats
    assert run(engine, ev.Verbosity(1), APP) == ev.Denied()


def test_fetched_and_last_access(engine, clock):
    store(engine, b"k", b"v")
    first = run(engine, ev.Get([b"k"], value=False)).items[0]
    assert (first.fetched, first.last_access) == (False, clock.now)
    clock.now += 5
    second = run(engine, ev.Get([b"k"])).items[0]
    assert (second.fetched, second.last_access) == (True, clock.now - 5)
    engine.tick()                     # readers' fetches are written down
    assert engine.pending_access == {}
    clock.now += 5
    third = run(engine, ev.Get([b"k"])).items[0]
    assert (third.fetched, third.last_access) == (True, clock.now - 5)
    store(engine, b"k", b"w")         # a new item: not fetched yet
    engine.tick()
    fourth = run(engine, ev.MetaDump()).items[0]
    assert (fourth.fetched, fourth.last_access) == (False, clock.now)


def test_a_group_sees_its_own_fetches_and_stores(engine, clock):
    """In one write transaction a fetch earlier in the group is a hit
    before (mg h1) and a store earlier in the group makes a new item, not
    fetched (h0), as memcached; after the commit the last of them stays."""
    session = Session(LOCAL)
    store(engine, b"old", b"v")
    run(engine, ev.Get([b"old"]))              # fetched: remembered
    clock.now += 5
    peek = dict(value=False, bump=False)       # mg KEY h u: not a fetch
    replies = engine.execute([(session, request) for request in (
        ev.Store(StoreMode.SET, b"k", 0, 0, b"v"),
        ev.Get([b"k"]),
        ev.Get([b"k"], **peek),
        ev.Store(StoreMode.SET, b"old", 0, 0, b"w"),
        ev.Get([b"old"], **peek),
        ev.Get([b"k"]),
        ev.Store(StoreMode.SET, b"k", 0, 0, b"x"))])
    fetched = replies[2].items[0]
    assert (fetched.fetched, fetched.last_access) == (True, clock.now)
    assert not replies[4].items[0].fetched    # stored anew in the group
    clock.now += 5
    after = {key: run(engine, ev.Get([key], **peek)).items[0]
             for key in (b"k", b"old")}
    assert not after[b"k"].fetched            # fetched, then stored anew
    assert not after[b"old"].fetched


def test_fetches_are_written_down_in_bounded_transactions(engine, clock):
    """Many hot keys: the housekeeping job writes one batch of their
    fetches; the rest go in jobs of their own (write groups between)."""
    from securecache.engine.core import ACCESS_BATCH
    keys = [b"k%d" % i for i in range(2 * ACCESS_BATCH + 10)]
    engine.execute([(Session(LOCAL), ev.Store(StoreMode.SET, key, 0, 0, b"v"))
                    for key in keys])
    for key in keys:
        run(engine, ev.Get([key]))

    def written() -> int:
        with engine.storage.txn(False) as txn:
            return sum(txn.last_access(key) is not None for key in keys)
    engine.apply(engine.housekeeping()())
    assert written() == ACCESS_BATCH
    assert engine.fetch_batches() == 2
    engine.apply(engine.record_fetches()())
    assert (written(), engine.fetch_batches()) == (2 * ACCESS_BATCH, 1)
    engine.tick()                        # the rest, whatever is left
    assert written() == len(keys) and engine.pending_access == {}
    meta = run(engine, ev.MetaDump()).items
    assert all(item.fetched for item in meta)


def test_meta_anti_dogpiling(engine, clock):
    """mg N vivifies and wins; R hands out one recache token; md I marks
    stale (the next fetcher wins); ms I with an older cas keeps it stale."""
    first = run(engine, ev.Get([b"v"], vivify=30)).items[0]
    assert (first.value, first.won, first.token_sent) == (b"", True, False)
    second = run(engine, ev.Get([b"v"], vivify=30)).items[0]
    assert (second.won, second.token_sent) == (False, True)
    store(engine, b"v", b"fresh", exptime=60)
    clock.now += 10
    assert run(engine, ev.Get([b"v"], recache=30)).items[0].won is False
    won = run(engine, ev.Get([b"v"], recache=100)).items[0]
    assert won.won and not won.token_sent
    assert run(engine, ev.Get([b"v"], recache=100)).items[0].token_sent
    store(engine, b"v", b"again")
    cas = run(engine, ev.Get([b"v"])).items[0].cas
    assert run(engine, ev.Delete(b"v", invalidate=True, exptime=30)) is \
        Status.DELETED
    stale = run(engine, ev.Get([b"v"])).items[0]        # a read txn first
    assert (stale.value, stale.stale, stale.won) == (b"again", True, True)
    later = run(engine, ev.Get([b"v"])).items[0]
    assert (later.stale, later.won, later.token_sent) == (True, False, True)
    reply = run(engine, ev.Store(StoreMode.CAS, b"v", 0, 0, b"newer",
                                 cas=cas, invalidate=True))
    assert outcome(reply) is Status.STORED
    kept = run(engine, ev.Get([b"v"])).items[0]
    assert (kept.value, kept.stale, kept.token_sent) == (b"newer", True, True)
    store(engine, b"v", b"clean")
    clean = run(engine, ev.Get([b"v"])).items[0]
    assert (clean.stale, clean.won, clean.token_sent) == (False, False, False)


def test_arith_touch(engine, clock):
    store(engine, b"n", b"1")
    number = run(engine, ev.Arith(b"n", 1, touch=100))
    assert (number.value, number.exptime) == (2, clock.now + 100)
    number = run(engine, ev.Arith(b"n", 1, touch=100), APP)
    assert number == ev.Denied()


def test_anti_dogpiling_edges(engine):
    """A past TTL never means "forever": mg N-1 is a miss, md I T-1
    removes; a touch keeps an item's stale state."""
    assert run(engine, ev.Get([b"v"], vivify=-1)).items == []
    assert get(engine, b"v") == {}
    store(engine, b"s", b"x")
    run(engine, ev.Delete(b"s", invalidate=True))
    run(engine, ev.Get([b"s"], touch=100))
    assert run(engine, ev.Get([b"s"])).items[0].stale
    assert run(engine, ev.Delete(b"s", invalidate=True, exptime=-1)) is \
        Status.DELETED
    assert get(engine, b"s") == {}


def test_cache_stays_within_its_limit_under_any_batch(tmp_path, mac, clock):
    """A full cache evicts; it never wedges LMDB (a completely full map
    cannot even delete) and never raises, whatever the batch size."""
    storage = Storage(tmp_path / "d", map_size=1 << 20)
    engine = Engine(storage, mac, clock=clock)
    session = Session(LOCAL)
    value = b"x" * 30000
    for start in (0, 1000):                      # small batches, then one huge
        size = 10 if start == 0 else 400
        for first in range(start, start + 400, size):
            batch = [(session, ev.Store(StoreMode.SET, b"k%05d" % i, 0, 0,
                                        value))
                     for i in range(first, first + size)]
            replies = engine.execute(batch)
            assert all(outcome(r) is Status.STORED for r in replies), replies
    with storage.txn(False) as txn:
        assert storage.usage(txn) <= 1 << 20
    assert engine.counters["evictions"] > 700
    assert get(engine, b"k01399") == {b"k01399": value}
    storage.close()
