"""The `policy` security server: decisions, contexts, booleans, reload."""

import shutil

import pytest

from securecache.security import policybuild, sepol
from securecache.security.sepol import BooleansError, PolicyServer, parse_booleans
from securecache.security.servers import (
    HANDLE_ALLOW, HANDLE_DENY, CreateLabelError, InvalidContextError, PolicyLoadError,
)

import sechelpers as H

ITEM = "kv_item"


def bits(server, *perms, tclass=ITEM):
    return sum(server.perm_bit(tclass, p) for p in perms)


def test_access_vectors(server):
    av = server.compute_av(H.APP, H.item("securecache_app_item_t", "s0:c1"), ITEM)
    assert av.allowed == bits(server, "create", "getattr", "setattr", "remove",
                              "read", "write", "append", "calculate")
    assert not av.permissive and av.auditallow == 0
    assert server.compute_av(H.APP, H.item("securecache_local_item_t"), ITEM).allowed == 0
    assert server.compute_av(H.PERMISSIVE, H.item("securecache_item_t"), ITEM).permissive


def test_unknown_class_is_denied_under_handleunknown_deny(server):
    assert server.handle_unknown == HANDLE_DENY
    assert server.compute_av(H.ADMIN, H.CACHE, "file").allowed == 0
    assert server.perm_bit("file", "read") is None
    assert server.perm_bit(ITEM, "nosuchperm") is None
    assert not server.class_known("file") and server.class_known(ITEM)


def test_mcs_constraints(server):
    app_c1 = H.item("securecache_app_item_t", "s0:c1")
    read = server.perm_bit(ITEM, "read")
    create = server.perm_bit(ITEM, "create")
    assert server.compute_av(H.APP, app_c1, ITEM).allowed & read
    # same type, other category: clearance does not dominate
    assert not server.compute_av(H.APP2, app_c1, ITEM).allowed & read
    assert not server.compute_av(H.APP2, app_c1, ITEM).allowed & server.perm_bit(ITEM, "write")
    # a clearance s0-s0:c0.c1023 dominates everything ...
    wide = "system_u:system_r:securecache_app_t:s0-s0:c0.c1023"
    assert server.compute_av(wide, app_c1, ITEM).allowed & read
    # ... but only single-level items may be created / relabelled to
    multi = H.item("securecache_app_item_t", "s0-s0:c1")
    av = server.compute_av(wide, multi, ITEM)
    assert av.allowed & read and not av.allowed & create
    assert not server.compute_av(H.ADMIN, multi, ITEM).allowed & server.perm_bit(ITEM, "relabelto")
    assert server.compute_av(H.ADMIN, app_c1, ITEM).allowed & server.perm_bit(ITEM, "relabelto")


def test_contexts(server):
    assert server.unlabeled_context == H.UNLABELED
    assert server.check_context(H.APP)
    assert not server.check_context("system_u:system_r:nosuch_t:s0")
    assert not server.check_context("system_u:system_r:securecache_app_t:s1")
    assert not server.check_context("system_u:system_r:securecache_app_t:s0:c1024")
    assert not server.check_context("not a context")
    assert not server.check_context("a:b")
    assert not server.check_context("")
    with pytest.raises(InvalidContextError):
        server.compute_av("system_u:system_r:nosuch_t:s0", H.CACHE, "kv_cache")
    with pytest.raises(InvalidContextError):
        server.canonical("system_u:system_r:nosuch_t:s0")


def test_canonical_forms(server):
    assert server.canonical("system_u:system_r:securecache_app_t:s0-s0") == \
        "system_u:system_r:securecache_app_t:s0"
    assert server.canonical("system_u:system_r:securecache_app_t:s0:c3,c1,c2") == \
        "system_u:system_r:securecache_app_t:s0:c1.c3"


def test_aliases_are_canonicalized(tmp_path):
    module = tmp_path / "alias.cil"
    module.write_text(
        "(typealias securecache_shared_item_t)\n"
        "(typealiasactual securecache_shared_item_t securecache_item_t)\n"
        "(sensitivityalias low)\n(sensitivityaliasactual low s0)\n"
        "(categoryalias blue)\n(categoryaliasactual blue c5)\n")
    srv = PolicyServer(H.build(tmp_path, module))
    try:
        alias = "system_u:object_r:securecache_shared_item_t:low:blue"
        assert srv.check_context(alias)
        assert srv.canonical(alias) == "system_u:object_r:securecache_item_t:s0:c5"
        # an alias and its type are the same object to the policy
        assert srv.compute_av(H.ADMIN, alias, ITEM) == srv.compute_av(
            H.ADMIN, "system_u:object_r:securecache_item_t:s0:c5", ITEM)
    finally:
        srv.close()


def test_parse_booleans():
    text = "# site\nsecurecache_app_write_shared = true\n\n  sctest_tenant_shared=FALSE # x\n"
    assert parse_booleans(text) == [("securecache_app_write_shared", True, 2),
                                    ("sctest_tenant_shared", False, 4)]
    for bad, line in (("a=yes", 1), ("\nnovalue", 2), ("=true", 1), ("a=true\na=false", 2)):
        with pytest.raises(BooleansError, match=f"<booleans>:{line}:"):
            parse_booleans(bad)


def test_booleans_file_and_reload_change_decisions(test_policy, tmp_path):
    shared = H.item("securecache_item_t")
    booleans = tmp_path / "booleans"
    booleans.write_text("securecache_app_write_shared=false\n")
    srv = PolicyServer(test_policy, booleans)
    seen = []
    srv.add_reload_listener(lambda: seen.append(srv.seqno))
    write = srv.perm_bit(ITEM, "write")
    try:
        assert not srv.compute_av(H.APP, shared, ITEM).allowed & write
        assert srv.booleans()["securecache_app_write_shared"] is False
        before = srv.fingerprint
        booleans.write_text("securecache_app_write_shared=true\n")
        srv.reload()
        assert seen == [1]
        assert srv.compute_av(H.APP, shared, ITEM).allowed & write
        assert srv.booleans()["securecache_app_write_shared"] is True
        assert srv.fingerprint != before
        # the conditional type_transition follows its boolean too
        assert srv.compute_create(H.TENANT, H.CACHE, ITEM, b"k") == H.item("sctest_tenant_item_t")
        booleans.write_text("sctest_tenant_shared=true\n")
        srv.reload()
        assert srv.compute_create(H.TENANT, H.CACHE, ITEM, b"k") == H.item("securecache_item_t")
    finally:
        srv.close()


def test_unknown_boolean_is_refused_and_old_policy_kept(test_policy, tmp_path):
    booleans = tmp_path / "booleans"
    booleans.write_text("# comment\nno_such_boolean=true\n")
    with pytest.raises(PolicyLoadError, match=r"booleans:2: the policy has no boolean no_such_boolean"):
        PolicyServer(test_policy, booleans)
    booleans.write_text("securecache_app_write_shared=true\n")
    srv = PolicyServer(test_policy, booleans)
    try:
        booleans.write_text("securecache_app_write_shared=maybe\n")
        with pytest.raises(BooleansError):
            srv.reload()
        assert srv.seqno == 0
        assert srv.compute_av(H.APP, H.item("securecache_item_t"), ITEM).allowed & srv.perm_bit(ITEM, "write")
    finally:
        srv.close()


def test_bad_policy_file(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x8c\xff|\xf9 this is not a policy")
    with pytest.raises(PolicyLoadError, match="not a binary policy"):
        PolicyServer(junk)
    with pytest.raises(PolicyLoadError, match="cannot read policy"):
        PolicyServer(tmp_path / "missing")


def test_reload_of_a_broken_file_keeps_the_old_policy(test_policy, tmp_path):
    copy = tmp_path / "p"
    shutil.copy(test_policy, copy)
    srv = PolicyServer(copy)
    try:
        copy.write_bytes(b"garbage")
        with pytest.raises(PolicyLoadError):
            srv.reload()
        assert srv.check_context(H.APP)
        assert srv.compute_av(H.ADMIN, H.CACHE, "kv_cache").allowed
    finally:
        srv.close()


def test_two_servers_in_one_process_are_independent(test_policy, base_policy):
    a, b = PolicyServer(test_policy), PolicyServer(base_policy)
    try:
        assert a.check_context(H.TENANT) and not b.check_context(H.TENANT)
        assert a.compute_av(H.TENANT, H.CACHE, "kv_cache").allowed
        assert b.booleans() == {"securecache_app_write_shared": False}
        assert len(a.booleans()) == 2
    finally:
        a.close()
        b.close()


def test_sid_table_stays_bounded_without_a_reload(test_policy, monkeypatch):
    """Issue 9: past MAX_SIDS the least recently used SID is freed in
    libsepol and reused; no reload, no flush, the same answers."""
    monkeypatch.setattr(sepol, "MAX_SIDS", 8)
    srv = PolicyServer(test_policy)
    flushes = []
    srv.add_reload_listener(lambda: flushes.append(1))
    read = srv.perm_bit(ITEM, "read")
    try:
        for round_ in range(2):
            for cat in range(40):
                ctx = f"system_u:system_r:securecache_app_t:s0:c{cat}"
                target = H.item("securecache_app_item_t", f"s0:c{cat}")
                other = H.item("securecache_app_item_t", f"s0:c{(cat + 1) % 40}")
                assert srv.compute_av(ctx, target, ITEM).allowed & read
                assert not srv.compute_av(ctx, other, ITEM).allowed & read
                assert srv.canonical(target) == target
                assert len(srv._sids) <= 8
        assert srv.canonical("system_u:object_r:securecache_app_item_t:s0:c1,c2,c3") \
            == "system_u:object_r:securecache_app_item_t:s0:c1.c3"
        assert not flushes and srv.seqno == 0
    finally:
        srv.close()


def test_create_errors(server):
    with pytest.raises(CreateLabelError, match="not in the policy"):
        server.compute_create(H.APP, H.CACHE, "file", b"k")
    with pytest.raises(InvalidContextError):
        server.compute_create("system_u:system_r:nosuch_t:s0", H.CACHE, ITEM, b"k")


def test_handleunknown_allow_policy(tmp_path):
    base_dir = tmp_path / "src"
    base_dir.mkdir()
    base = (H.POLICY_DIR / "base.cil").read_text()
    (base_dir / "base.cil").write_text(base.replace("(handleunknown deny)", "(handleunknown allow)"))
    (base_dir / "securecache.cil").write_text(
        "(type other_t)\n(roletype system_r other_t)\n(allow other_t self (process (getattr)))\n")
    srv = PolicyServer(policybuild.build_policy([], tmp_path / "p", base_dir))
    try:
        assert srv.handle_unknown == HANDLE_ALLOW and srv.allows_unknown
        assert srv.has_classes() == ["kv_cache", "kv_item"]
        ctx = "system_u:system_r:other_t:s0"
        assert srv.compute_av(ctx, ctx, ITEM).allowed == 0xFFFFFFFF
    finally:
        srv.close()
