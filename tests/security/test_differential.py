"""ACCEPTANCE: the `policy` security server decides exactly as libsepol.

Our server runs libsepol's code from the private library; the reference is
the system's libsepol.so.2 called directly through ctypes
(sepol_set_policydb_from_file + sepol_compute_av), on the same binary
policy file: every (domain, item type, permission) of the test policy, with
default and flipped booleans, and 10,000 random valid (source, target)
pairs of Debian's full reference policy for class `file`.
"""

import itertools
import random

import pytest
import setools

from securecache.security import classes, open_mac, policybuild
from securecache.security.sepol import PolicyServer

import sechelpers as H

LEVELS = ["s0", "s0:c1", "s0:c2", "s0:c1,c2", "s0-s0:c1", "s0-s0:c0.c1023", "s0:c0.c1023"]
SUBJECT_LEVELS = ["s0", "s0:c1", "s0:c2", "s0-s0:c1,c2", "s0-s0:c0.c1023"]


def policy_contexts(path):
    """Every client domain (subjects) and every type as an object, at
    several levels, of a compiled test policy: (subjects, objects)."""
    policy = setools.SELinuxPolicy(str(path))
    domains = sorted(str(t) for t in policy.lookup_typeattr("securecache_client_domain").expand())
    types = sorted(str(t) for t in policy.types())     # every type as an item type
    assert len(domains) >= 5 and len(types) >= 15
    subjects = [f"system_u:system_r:{d}:{lvl}" for d in domains + ["securecache_t", "kernel_t"]
                for lvl in SUBJECT_LEVELS]
    objects = [H.item(t, lvl) for t in types for lvl in LEVELS]
    objects += [f"system_u:system_r:securecache_t:{lvl}" for lvl in LEVELS]
    return subjects, objects


def compare_all(server, reference, subjects, objects):
    compared = 0
    for s, t in itertools.product(subjects, objects):
        for tclass in classes.CATALOGUE:
            ours = server.compute_av(s, t, tclass)
            assert (ours.allowed, ours.auditallow, ours.auditdeny) == \
                reference.compute_av(s, t, tclass), (s, t, tclass)
            compared += 1
    return compared


def test_test_policy_every_domain_item_type_permission(test_policy, server):
    reference = H.SystemSepol(test_policy)
    subjects, objects = policy_contexts(test_policy)
    assert compare_all(server, reference, subjects, objects) == len(subjects) * len(objects) * 2
    # and per permission through the facade (AVC + enforcement)
    mac = open_mac("policy", test_policy, audit="none")
    for s, t in itertools.product(subjects[::3], objects[::2]):
        allowed = reference.compute_av(s, t, "kv_item")[0]
        permissive = "permissive" in s
        for perm in classes.KV_ITEM_PERMS:
            want = bool(allowed & reference.perm("kv_item", perm)) or permissive
            assert mac.has_perm(s, t, "kv_item", perm) == want, (s, t, perm)


def test_test_policy_with_booleans_flipped(test_policy, tmp_path):
    """Booleans set live from a booleans file == a policy compiled with
    those defaults, loaded by the system libsepol."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "base.cil").write_text((H.POLICY_DIR / "base.cil").read_text())
    module = (H.POLICY_DIR / "securecache.cil").read_text()
    (src / "securecache.cil").write_text(
        module.replace("(boolean securecache_app_write_shared false)",
                       "(boolean securecache_app_write_shared true)"))
    site = tmp_path / "site.cil"
    site.write_text(H.TEST_MODULE.read_text().replace(
        "(boolean sctest_tenant_shared false)", "(boolean sctest_tenant_shared true)"))
    flipped = policybuild.build_policy([site], tmp_path / "flipped.policy", src)
    booleans = tmp_path / "booleans"
    booleans.write_text("securecache_app_write_shared=true\nsctest_tenant_shared=true\n")
    server = PolicyServer(test_policy, booleans)
    try:
        subjects, objects = policy_contexts(test_policy)
        compare_all(server, H.SystemSepol(flipped), subjects, objects)
    finally:
        server.close()


# ---------------------------------------------------------------- reference policy
PAIRS = 10_000


def random_level(rng, user_range):
    """A level range inside a user's range (MCS: one sensitivity)."""
    if "-" not in user_range:
        return "s0"
    cats = sorted(rng.sample(range(1024), rng.choice([0, 1, 2, 3, 5])))
    catstr = ",".join(f"c{c}" for c in cats)
    shape = rng.random()
    if shape < 0.2:
        return "s0-s0:c0.c1023"
    if shape < 0.5:
        return f"s0:{catstr}" if cats else "s0"
    if shape < 0.7:
        return f"s0:{catstr}-s0:c0.c1023" if cats else "s0-s0:c0.c1023"
    return f"s0-s0:{catstr}" if cats else "s0"


def reference_contexts(rng, count):
    policy = setools.SELinuxPolicy(str(H.REFPOLICY))
    users = {str(u): (sorted(str(r) for r in u.roles), str(u.mls_range)) for u in policy.users()}
    role_types = {str(r): sorted(str(t) for t in r.types()) for r in policy.roles()}
    domains = set(str(t) for t in policy.lookup_typeattr("domain").expand())
    file_types = sorted(str(t) for t in policy.lookup_typeattr("file_type").expand())
    all_types = sorted(str(t) for t in policy.types())
    subjects, objects = [], []
    while len(subjects) < count:
        user = rng.choice(sorted(users))
        roles, urange = users[user]
        role = rng.choice(roles)
        types = role_types[role]
        typ = rng.choice([t for t in types if t in domains] or types)
        subjects.append(f"{user}:{role}:{typ}:{random_level(rng, urange)}")
    while len(objects) < count:
        user = rng.choice(sorted(users))
        typ = rng.choice(file_types if rng.random() < 0.7 else all_types)
        objects.append(f"{user}:object_r:{typ}:{random_level(rng, users[user][1])}")
    return sorted(set(subjects)), sorted(set(objects))


def arbitrary_contexts(rng, count):
    """Unconstrained user:role:type:level strings (many invalid)."""
    policy = setools.SELinuxPolicy(str(H.REFPOLICY))
    users = sorted(str(u) for u in policy.users())
    roles = sorted(str(r) for r in policy.roles())
    types = sorted(str(t) for t in policy.types())
    levels = ["s0", "s0:c3", "s0-s0:c0.c1023", "s0:c1023", "s1", "s0:c1024", "s0:c5-s0:c2"]
    return [f"{rng.choice(users)}:{rng.choice(roles)}:{rng.choice(types)}:{rng.choice(levels)}"
            for _ in range(count)]


@pytest.fixture(scope="module")
def refpolicy():
    if not H.REFPOLICY.exists():
        pytest.fail(f"{H.REFPOLICY} missing: install selinux-policy-default (tools/setup)")
    server = PolicyServer(H.REFPOLICY)
    yield server, H.SystemSepol(H.REFPOLICY)
    server.close()


def test_reference_policy_random_pairs_file_class(refpolicy):
    server, reference = refpolicy
    rng = random.Random(20240611)
    subjects, objects = reference_contexts(rng, 1000)
    fuzz = arbitrary_contexts(rng, 400)
    for ctx in subjects + objects + fuzz:
        assert server.check_context(ctx) == (reference.sid(ctx) is not None), ctx
    assert 5 < sum(map(server.check_context, fuzz)) < 395     # both kinds are compared
    subjects = [c for c in subjects if server.check_context(c)]
    objects = [c for c in objects if server.check_context(c)]
    assert len(subjects) > 500 and len(objects) > 500
    granted = 0
    for _ in range(PAIRS):
        s, t = rng.choice(subjects), rng.choice(objects)
        ours = server.compute_av(s, t, "file")
        theirs = reference.compute_av(s, t, "file")
        assert (ours.allowed, ours.auditallow, ours.auditdeny) == theirs, (s, t)
        granted += ours.allowed != 0
    assert granted > PAIRS // 20        # the sample reaches real allow rules


def test_reference_policy_is_handleunknown_allow(refpolicy):
    server, _ = refpolicy
    assert server.handle_unknown == "allow"
    assert server.has_classes() == ["kv_cache", "kv_item"]
