"""The MAC facade: modes, start-up checks, labels, stats."""

import pytest
import selinux

from securecache.security import (
    KV_CACHE, KV_ITEM, InvalidContextError, MissingClassesError, PolicyLoadError,
    open_mac, policybuild,
)
from securecache.security.kernel import KernelServer, selinux_enabled

import sechelpers as H


@pytest.fixture
def mac(test_policy, audit_file):
    m = open_mac("policy", test_policy, audit=audit_file)
    yield m
    m.close()


def test_policy_mode(mac):
    assert mac.mode == "policy" and mac.enforcing and mac.warning == ""
    assert mac.cache_context == H.CACHE
    assert mac.unlabeled_context == H.UNLABELED
    assert len(mac.fingerprint) == 64
    assert mac.has_perm(H.LOCAL, mac.cache_context, KV_CACHE, "flush")
    assert not mac.has_perm(H.APP, mac.cache_context, KV_CACHE, "flush")
    assert mac.stats() == {"mac_mode": "policy", "enforcing": 1, "avc_lookups": 2,
                           "avc_hits": 0, "avc_misses": 2, "avc_denials": 1,
                           "avc_entries": 2, "avc_evictions": 0,
                           "audit_lines": 1, "audit_suppressed": 0}
    mac.reset_stats()
    assert mac.stats()["avc_lookups"] == 0


def test_auto_picks_policy_without_selinux(tmp_path, monkeypatch):
    assert selinux.is_selinux_enabled() == 0 and not selinux_enabled()
    monkeypatch.setenv("SECURECACHE_BUILD_DIR", str(tmp_path / "build"))
    mac = open_mac(audit="none")
    assert mac.mode == "policy" and mac.enforcing
    assert str(mac.server.policy_path) == str(policybuild.default_policy_path())
    # the bundled policy + bundled peer_contexts let a local client do it all
    local = mac.load_peer_contexts().for_address("127.0.0.1")
    assert local == H.LOCAL
    label = mac.create_label(local, b"k")
    assert label == H.item("securecache_local_item_t")
    for perm in ("connect", "getattr", "setattr", "flush"):
        assert mac.has_perm(local, mac.cache_context, KV_CACHE, perm)
    for perm in ("create", "read", "write", "append", "calculate", "setattr", "getattr", "remove"):
        assert mac.has_perm(local, label, KV_ITEM, perm)
    # ... but it is a real policy: no relabel, no other domains' items
    for perm in ("relabelfrom", "relabelto"):
        assert not mac.has_perm(local, label, KV_ITEM, perm)
    assert not mac.has_perm(local, H.item("securecache_app_item_t"), KV_ITEM, "read")
    assert not mac.has_perm(local, H.UNLABELED, KV_ITEM, "read")


def test_kernel_mode_refuses_without_selinux():
    with pytest.raises(PolicyLoadError, match="not enabled"):
        open_mac("kernel")
    with pytest.raises(PolicyLoadError):
        KernelServer()
    with pytest.raises(ValueError):
        open_mac("kernel", policy="/x")
    with pytest.raises(ValueError):
        open_mac("selinux")


def test_off_mode_is_loud_and_allows_everything(tmp_path):
    mac = open_mac("off", audit="none")
    assert mac.mode == "off" and not mac.enforcing and "MAC IS OFF" in mac.warning
    assert mac.has_perm("a:b:c:s0", "x:y:z:s0", KV_ITEM, "relabelto")
    assert mac.has_perm("a:b:c:s0", "x:y:z:s0", "whatever", "anything")
    assert mac.create_label("a:b:c:s0", b"k") == "system_u:object_r:securecache_item_t:s0"
    assert mac.stats()["mac_mode"] == "off" and mac.stats()["enforcing"] == 0
    custom = open_mac("off", audit="none", default_item_context="u:object_r:t:s0")
    assert custom.create_label("a:b:c", b"k") == "u:object_r:t:s0"


def test_missing_classes_refuse_enforcing_start(tmp_path):
    module = tmp_path / "src"
    module.mkdir()
    (module / "base.cil").write_text((H.POLICY_DIR / "base.cil").read_text())
    (module / "securecache.cil").write_text(
        "(type other_t)\n(roletype system_r other_t)\n(allow other_t self (process (getattr)))\n")
    policy = policybuild.build_policy([], tmp_path / "p", module)
    with pytest.raises(MissingClassesError, match="lacks kv_cache, kv_item"):
        open_mac("policy", policy, cache_context="system_u:system_r:other_t:s0", audit="none")
    mac = open_mac("policy", policy, permissive=True,
                   cache_context="system_u:system_r:other_t:s0", audit="none")
    assert mac.missing == ["kv_cache", "kv_item"] and not mac.enforcing


def test_missing_permission_refuses_enforcing_start(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "base.cil").write_text((H.POLICY_DIR / "base.cil").read_text())
    module = (H.POLICY_DIR / "securecache.cil").read_text()
    module = module.replace("read write append calculate))", "read write append))")
    module = module.replace("(kv_item (write append calculate))", "(kv_item (write append))")
    (src / "securecache.cil").write_text(module)
    policy = policybuild.build_policy([], tmp_path / "p", src)
    with pytest.raises(MissingClassesError, match="kv_item:calculate"):
        open_mac("policy", policy, audit="none")


def test_create_label(mac):
    assert mac.create_label(H.APP, b"k") == H.item("securecache_app_item_t", "s0:c1")
    assert mac.create_label(H.APP, b"config") == H.item("sctest_config_item_t", "s0:c1")
    assert mac.create_label(H.ADMIN, b"k") == H.item("securecache_item_t")     # default type
    assert mac.create_label(H.LOCAL, "k") == H.item("securecache_local_item_t")


def test_effective_label(mac):
    good = H.item("securecache_app_item_t", "s0:c1")
    assert mac.effective_label(good) == good
    assert mac.effective_label(good.encode()) == good
    assert mac.effective_label("system_u:object_r:deleted_t:s0") == H.UNLABELED
    assert mac.effective_label(b"\xff\xfe") == H.UNLABELED
    assert mac.effective_label("garbage") == H.UNLABELED


def test_check_and_canonical(mac):
    assert mac.check_context(H.APP) and not mac.check_context("x:y:z:s0")
    assert mac.canonical("system_u:system_r:securecache_app_t:s0-s0:c1") == \
        "system_u:system_r:securecache_app_t:s0-s0:c1"
    with pytest.raises(InvalidContextError):
        mac.canonical("x:y:z:s0")


def test_cache_context_must_be_valid(test_policy):
    with pytest.raises(InvalidContextError, match="cache context"):
        open_mac("policy", test_policy, cache_context="system_u:system_r:nope_t:s0", audit="none")
    mac = open_mac("policy", test_policy, cache_context=H.APP, audit="none")
    assert mac.cache_context == H.APP


def test_reload_flushes(mac, test_policy):
    mac.has_perm(H.APP, H.CACHE, KV_CACHE, "connect")
    mac.has_perm(H.APP, H.CACHE, KV_CACHE, "connect")
    mac.reload()
    mac.has_perm(H.APP, H.CACHE, KV_CACHE, "connect")
    assert mac.stats()["avc_misses"] == 2


def test_global_permissive(test_policy, audit_file):
    mac = open_mac("policy", test_policy, permissive=True, audit=audit_file)
    assert not mac.enforcing and mac.stats()["enforcing"] == 0
    assert mac.has_perm(H.APP, H.item("sctest_secret_item_t"), KV_ITEM, "read")
    assert H.read_lines(audit_file)[0].endswith("permissive=1")
