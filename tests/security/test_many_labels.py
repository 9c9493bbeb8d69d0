"""Issue 9: many distinct contexts cost the same and never wedge the AVC.

Real libsepol, real compiled policies: the security server's SID table is
bounded (least recently used SIDs freed and reused), and the AVC never asks
the server while holding its own lock, so a server that reloads (and flushes
the AVC) in the middle of a question cannot deadlock it.
"""

import threading
import time

from securecache.security import sepol
from securecache.security.avc import AVC
from securecache.security.sepol import PolicyServer

import sechelpers as H

ITEM = "kv_item"
ADMIN_ITEM = "system_u:object_r:securecache_item_t:s0:"


def categories(i):
    high, low = divmod(i, 1024)
    return f"c{low}" if high == low else f"c{min(high, low)},c{max(high, low)}"


def new_context_cost(server, contexts):
    """Mean seconds per new context: canonical + an access vector on it."""
    start = time.perf_counter()
    for ctx in contexts:
        server.canonical(ctx)
        server.compute_av(H.ADMIN, ctx, ITEM)
    return (time.perf_counter() - start) / len(contexts)


def test_a_new_context_costs_the_same_at_100000_contexts(test_policy):
    srv = PolicyServer(test_policy)
    try:
        contexts = list(dict.fromkeys(ADMIN_ITEM + categories(i) for i in range(110_000)))[:100_000]
        first = new_context_cost(srv, contexts[:1000])
        new_context_cost(srv, contexts[1000:-1000])
        last = new_context_cost(srv, contexts[-1000:])
        print(f"new context: {first * 1e6:.1f} us at 1,000, {last * 1e6:.1f} us "
              f"at {len(contexts):,}")
        assert len(srv._sids) <= srv.max_sids == sepol.MAX_SIDS
        assert len(srv._canonical) == sepol.MAX_MEMO        # the newest kept
        assert contexts[-1] in srv._canonical and contexts[0] not in srv._canonical
        # before: ~10 us at 1,000 SIDs and ~300 us at 20,000 (linear search)
        assert last < 4 * first + 20e-6
    finally:
        srv.close()


class ReloadingServer(PolicyServer):
    """A real PolicyServer that reloads its policy during a question, as
    the old SID table rebuild did from inside the AVC's miss path."""

    reload_next = False

    def compute_av(self, scontext, tcontext, tclass):
        if self.reload_next:
            self.reload_next = False
            self.reload()
        return super().compute_av(scontext, tcontext, tclass)


def test_a_reload_inside_a_miss_does_not_deadlock(test_policy, audit_log):
    srv = ReloadingServer(test_policy)
    try:
        avc = AVC(srv, audit_log)
        assert avc.has_perm(H.ADMIN, ADMIN_ITEM + "c1", ITEM, "read")
        srv.reload_next = True
        done = []
        worker = threading.Thread(
            target=lambda: done.append(avc.has_perm(H.ADMIN, ADMIN_ITEM + "c2", ITEM, "read")),
            daemon=True)
        worker.start()
        worker.join(10)
        assert done == [True], "the AVC deadlocked on a flush during a miss"
        # the decision asked before the flush is not kept past it
        assert (H.ADMIN, ADMIN_ITEM + "c2", ITEM) not in avc._cache
        assert srv.seqno == 1
        assert avc.has_perm(H.ADMIN, ADMIN_ITEM + "c2", ITEM, "read")
        assert (H.ADMIN, ADMIN_ITEM + "c2", ITEM) in avc._cache
    finally:
        srv.close()


def test_evicted_sids_give_the_same_decisions(test_policy):
    small, big = PolicyServer(test_policy), PolicyServer(test_policy)
    small.max_sids = 16
    try:
        sources = [H.ADMIN, H.APP, H.READONLY, H.LOCAL, H.TENANT]
        for i in range(300):
            target = f"system_u:object_r:securecache_app_item_t:s0:{categories(i * 7)}"
            for source in sources:
                assert small.compute_av(source, target, ITEM) == big.compute_av(source, target, ITEM)
                assert small.compute_create(source, target, ITEM, b"k") == \
                    big.compute_create(source, target, ITEM, b"k")
        assert len(small._sids) <= 16
    finally:
        small.close()
        big.close()
