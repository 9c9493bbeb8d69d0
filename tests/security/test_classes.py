"""The catalogue (classes.py) against the CIL source and compiled policy."""

import re

import setools

from securecache.security import classes

import sechelpers as H


def cil_classes():
    text = (H.POLICY_DIR / "securecache.cil").read_text()
    found = {}
    for name, perms in re.findall(r"^\(class (\w+) \(([^)]*)\)\)", text, re.M):
        found[name] = tuple(perms.split())
    return found


def test_catalogue_matches_cil_in_policy_order():
    assert cil_classes() == {classes.KV_CACHE: classes.KV_CACHE_PERMS,
                             classes.KV_ITEM: classes.KV_ITEM_PERMS}


def test_catalogue_matches_compiled_policy(test_policy):
    policy = setools.SELinuxPolicy(str(test_policy))
    for tclass, perms in classes.CATALOGUE.items():
        assert set(policy.lookup_class(tclass).perms) == set(perms)


def test_names_and_bits():
    assert classes.KV_ITEM == "kv_item" and classes.KV_CACHE == "kv_cache"
    assert classes.perm_bit("kv_item", "create") == 1
    assert classes.perm_bit("kv_item", "calculate") == 1 << 9
    assert classes.perm_bit("kv_cache", "flush") == 1 << 3
    assert classes.perm_bit("kv_item", "flush") is None
    assert classes.perm_bit("file", "read") is None
    assert len(classes.all_perms()) == 14


def test_server_has_every_catalogue_permission(server):
    assert server.has_classes() == []
    bits = [server.perm_bit("kv_item", p) for p in classes.KV_ITEM_PERMS]
    assert all(bits) and len(set(bits)) == len(bits)
