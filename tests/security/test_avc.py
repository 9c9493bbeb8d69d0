"""The AVC: counters, flush, permissive-once, dontaudit, auditallow,
unknown permissions, invalid contexts."""

import pytest

from securecache.security.avc import AVC
from securecache.security.sepol import PolicyServer

import sechelpers as H

ITEM, CACHE_CLASS = "kv_item", "kv_cache"
SHARED = H.item("securecache_item_t")
SECRET = H.item("sctest_secret_item_t")
APP_ITEM = H.item("securecache_app_item_t", "s0:c1")


@pytest.fixture
def avc(server, audit_log):
    return AVC(server, audit_log)


def test_counters_and_hits(avc):
    assert avc.has_perm(H.APP, APP_ITEM, ITEM, "read", key=b"k")
    assert avc.has_perm(H.APP, APP_ITEM, ITEM, "write")          # same vector: a hit
    assert not avc.has_perm(H.APP, SECRET, ITEM, "read")
    assert not avc.has_perm(H.APP, SECRET, ITEM, "read")
    assert avc.stats() == {"avc_lookups": 4, "avc_hits": 2, "avc_misses": 2, "avc_denials": 2,
                           "avc_entries": 2, "avc_evictions": 0}
    avc.reset_stats()
    assert avc.stats()["avc_lookups"] == 0


def test_enforcing_denials_are_always_logged(avc, audit_file):
    for _ in range(3):
        assert not avc.has_perm(H.APP, SECRET, ITEM, "read", key=b"s1")
    lines = H.read_lines(audit_file)
    assert len(lines) == 3
    assert lines[0].startswith("avc:  denied  { read } for  pid=")
    assert f'key="s1" scontext={H.APP} tcontext={SECRET} tclass=kv_item permissive=0' in lines[0]


def test_flush_on_reload(test_policy, audit_log):
    srv = PolicyServer(test_policy)
    try:
        avc = AVC(srv, audit_log)
        avc.has_perm(H.APP, APP_ITEM, ITEM, "read")
        avc.has_perm(H.APP, APP_ITEM, ITEM, "read")
        assert avc.stats()["avc_hits"] == 1
        srv.reload()
        avc.has_perm(H.APP, APP_ITEM, ITEM, "read")
        assert avc.stats()["avc_misses"] == 2
    finally:
        srv.close()


def test_global_permissive_logs_once_per_permission(server, audit_log, audit_file):
    avc = AVC(server, audit_log, permissive=True)
    assert not avc.enforcing
    for _ in range(3):
        assert avc.has_perm(H.APP, SECRET, ITEM, "read", key=b"k")
        assert avc.has_perm(H.APP, SECRET, ITEM, "write", key=b"k")
    assert avc.has_perm(H.APP2, SECRET, ITEM, "read")          # another source: logged
    lines = H.read_lines(audit_file)
    assert [line.split("{")[1].split("}")[0].strip() for line in lines] == ["read", "write", "read"]
    assert all(line.endswith("permissive=1") for line in lines)
    assert avc.stats()["avc_denials"] == 3
    avc.flush()                                                 # after a flush: logged again
    assert avc.has_perm(H.APP, SECRET, ITEM, "read")
    assert len(H.read_lines(audit_file)) == 4


def test_permissive_domain_is_logged_once_and_allowed(avc, audit_file):
    assert avc.enforcing
    for _ in range(3):
        assert avc.has_perm(H.PERMISSIVE, SECRET, ITEM, "remove", key=b"x")
    lines = H.read_lines(audit_file)
    assert len(lines) == 1
    assert "{ remove }" in lines[0] and lines[0].endswith("permissive=1")
    assert H.PERMISSIVE in lines[0]
    # other domains stay enforced
    assert not avc.has_perm(H.TENANT, H.item("securecache_app_item_t"), ITEM, "remove")


def test_dontaudit_silences_a_denial(avc, audit_file):
    assert not avc.has_perm(H.TENANT, SECRET, ITEM, "read")     # dontaudit
    assert H.read_lines(audit_file) == []
    assert not avc.has_perm(H.TENANT, SECRET, ITEM, "write")    # not dontaudit'ed
    assert len(H.read_lines(audit_file)) == 1
    assert avc.stats()["avc_denials"] == 2


def test_auditallow_logs_grants(avc, audit_file):
    assert avc.has_perm(H.ADMIN, SECRET, ITEM, "read", key=b"top")
    assert avc.has_perm(H.ADMIN, SECRET, ITEM, "getattr")       # not auditallow'ed
    lines = H.read_lines(audit_file)
    assert len(lines) == 1
    assert lines[0].startswith("avc:  granted  { read } for  ")
    assert 'key="top"' in lines[0] and "permissive=" not in lines[0]


def test_unknown_permission_is_denied_and_logged(avc, audit_file):
    assert not avc.has_perm(H.ADMIN, SHARED, ITEM, "frobnicate")
    assert not avc.has_perm(H.ADMIN, H.CACHE, "no_such_class", "read")
    assert len(H.read_lines(audit_file)) == 2
    assert avc.stats()["avc_denials"] == 2


def test_unknown_permission_in_permissive_mode_logged_once(server, audit_log, audit_file):
    avc = AVC(server, audit_log, permissive=True)
    assert avc.has_perm(H.ADMIN, SHARED, ITEM, "frobnicate")
    assert avc.has_perm(H.ADMIN, SHARED, ITEM, "frobnicate")
    assert len(H.read_lines(audit_file)) == 1


def test_invalid_context_is_checked_as_unlabeled(avc, audit_file):
    gone = "system_u:object_r:removed_item_t:s0"
    assert not avc.has_perm(H.APP, gone, ITEM, "read", key=b"old")
    line = H.read_lines(audit_file)[0]
    assert f"tcontext={H.UNLABELED}" in line
    # the admin may read unlabeled items (and that read is audited)
    assert avc.has_perm(H.ADMIN, gone, ITEM, "read")
    assert not avc.has_perm(H.ADMIN, gone, ITEM, "write")
    # an invalid client context gets nothing at all
    assert not avc.has_perm("junk", H.CACHE, CACHE_CLASS, "connect")
    assert not avc.has_perm("system_u:system_r:gone_t:s0", SHARED, ITEM, "read")


def test_cache_is_bounded(server, audit_log):
    avc = AVC(server, audit_log, max_entries=4)
    for cat in range(10):
        avc.has_perm(H.ADMIN, H.item("securecache_app_item_t", f"s0:c{cat}"), ITEM, "read")
    assert len(avc._cache) <= 4


def test_noaudit_checks(server, audit_log, audit_file):
    avc = AVC(server, audit_log)
    assert not avc.has_perm(H.APP, SECRET, ITEM, "read", audit=False)
    assert avc.has_perm(H.ADMIN, SECRET, ITEM, "read", audit=False)       # auditallow: silent
    assert not avc.has_perm(H.APP, SHARED, ITEM, "frobnicate", audit=False)
    assert H.read_lines(audit_file) == [] and avc.stats()["avc_denials"] == 0
    assert avc.stats()["avc_lookups"] == 3


def test_noaudit_in_permissive_mode_does_not_use_up_the_one_log(server, audit_log, audit_file):
    avc = AVC(server, audit_log, permissive=True)
    assert avc.has_perm(H.APP, SECRET, ITEM, "read", audit=False)
    assert H.read_lines(audit_file) == []
    assert avc.has_perm(H.APP, SECRET, ITEM, "read")
    assert avc.has_perm(H.APP, SECRET, ITEM, "read")
    assert len(H.read_lines(audit_file)) == 1
    enforcing = AVC(server, audit_log)
    assert enforcing.has_perm(H.PERMISSIVE, SECRET, ITEM, "read", audit=False)   # typepermissive


def _targets(count):
    """`count` distinct item labels (MCS category pairs) of one type."""
    labels = []
    for i in range(count):
        high, low = divmod(i, 1024)
        labels.append(H.item("securecache_item_t", f"s0:c{low}" if high == 0 else f"s0:c{low},c{1023 - high}"))
    assert len(set(labels)) == count
    return labels


def _hit_rate(avc, order):
    before = avc.stats()
    for target in order:
        assert avc.has_perm(H.ADMIN, target, ITEM, "read")
    after = avc.stats()
    return (after["avc_hits"] - before["avc_hits"]) / len(order)


def test_a_full_cache_evicts_gradually(server, audit_log):
    """Issue 9: the AVC held max_entries and then wiped itself, so a working
    set of 1.2x its capacity never hit.  Now it evicts one entry per miss
    (second chance from random positions)."""
    import random
    capacity = 1000
    avc = AVC(server, audit_log, max_entries=capacity)
    working = _targets(int(capacity * 1.2))
    read_twice = _hit_rate(avc, working * 2)            # the pattern
    assert avc.stats()["avc_entries"] == capacity
    cyclic = _hit_rate(avc, working * 10)
    rng = random.Random(9)
    uniform = _hit_rate(avc, [rng.choice(working) for _ in range(len(working) * 10)])
    print(f"AVC hit rate at 1.2x capacity {capacity}: read twice {read_twice:.1%}, "
          f"cyclic {cyclic:.1%}, uniform {uniform:.1%}")
    assert len(avc._cache) == len(avc._ring) == capacity
    assert avc.stats()["avc_evictions"] > 0
    assert read_twice > 0.2 and cyclic > 0.5 and uniform > 0.7   # wiping: 0, 0, ~0.4
    # every cached decision is still the right one
    assert all(avc._cache[key].allowed == server.compute_av(*key).allowed
               for key in list(avc._cache)[:50])


def test_hot_entries_survive_eviction(server, audit_log):
    avc = AVC(server, audit_log, max_entries=100)
    hot, cold = _targets(500)[:10], _targets(500)[10:]
    for target in cold:
        for key in hot:
            avc.has_perm(H.ADMIN, key, ITEM, "read")
        avc.has_perm(H.ADMIN, target, ITEM, "read")
    assert all((H.ADMIN, key, ITEM) in avc._cache for key in hot)


def test_permissive_denials_dropped_by_the_rate_limit_are_logged_later(server, audit_file):
    """A permissive denial is marked as logged only when its line was
    written: one the audit rate limit dropped is logged at a later try."""
    from securecache.security.audit import AuditLog
    now = [0.0]
    log = AuditLog(audit_file, rate=1, burst=1, clock=lambda: now[0])
    avc = AVC(server, log, permissive=True)
    assert avc.has_perm(H.APP, SECRET, ITEM, "read", key=b"k")      # logged
    assert avc.has_perm(H.APP, SECRET, ITEM, "write", key=b"k")     # dropped
    assert (log.lines, log.suppressed) == (1, 1)
    now[0] += 1
    assert avc.has_perm(H.APP, SECRET, ITEM, "write", key=b"k")     # logged now
    assert avc.has_perm(H.APP, SECRET, ITEM, "read", key=b"k")      # once only
    now[0] += 10
    assert avc.has_perm(H.APP, SECRET, ITEM, "write", key=b"k")
    log.close()
    lines = H.read_lines(audit_file)
    denied = [line.split("{ ")[1].split(" }")[0] for line in lines if line.startswith("avc:")]
    assert denied == ["read", "write"]
    assert lines[1].startswith("audit: rate limit exceeded: 1 AVC lines suppressed")
