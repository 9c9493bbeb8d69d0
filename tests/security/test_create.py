"""Create labels: the private libsepol's kernel create computation against
an independent computation from setools' view of the same policy, and
against libsepol's own sepol_transition_sid where that one applies."""

import ctypes
import itertools

import pytest

from securecache.security import native
from securecache.security.sepol import PolicyServer
from securecache.security.servers import CreateLabelError

import sechelpers as H

SOURCES = [H.ADMIN, H.APP, H.APP2, H.READONLY, H.LOCAL, H.TENANT, H.PERMISSIVE,
           "system_u:system_r:securecache_app_t:s0-s0:c1,c4.c9",
           "sctest_u:system_r:securecache_app_t:s0:c3-s0:c3,c200",
           "system_u:system_r:kernel_t:s0"]
TARGETS = [H.CACHE, "system_u:system_r:securecache_t:s0-s0:c2.c6",
           "sctest_u:object_r:securecache_app_item_t:s0:c1,c5",
           H.item("securecache_item_t", "s0-s0:c0.c3"), H.UNLABELED]
CLASSES = ["kv_item", "kv_cache", "process", "sctest_socket"] + [f"sctest_d{i}" for i in range(1, 8)]
NAMES = [None, "config", "named", "other"]


@pytest.fixture(scope="module", params=[{}, {"sctest_tenant_shared": True}], ids=["default", "tenant_shared"])
def setup(request, create_policy, tmp_path_factory):
    booleans = tmp_path_factory.mktemp("bools") / "booleans"
    booleans.write_text("".join(f"{k}={str(v).lower()}\n" for k, v in request.param.items()))
    srv = PolicyServer(create_policy, booleans)
    yield srv, H.CreateOracle(create_policy, request.param)
    srv.close()


def expected(srv, oracle, s, t, tclass, name):
    ctx = oracle.compute(s, t, tclass, name)
    return ctx if srv.check_context(ctx) else None


def actual(srv, s, t, tclass, name):
    try:
        return srv.compute_create(s, t, tclass, name.encode() if name else None)
    except CreateLabelError:
        return None


def assert_matches(srv, oracle, s, t, tclass, name):
    """Our create label (in canonical form) is the oracle's."""
    want = expected(srv, oracle, s, t, tclass, name)
    got = actual(srv, s, t, tclass, name)
    if got is not None:
        got = H.format_context(*H.parse_context(got))
    assert got == want, (s, t, tclass, name)
    return got


def test_create_matches_independent_computation(setup):
    srv, oracle = setup
    compared = valid = 0
    for s, t, tclass, name in itertools.product(SOURCES, TARGETS, CLASSES, NAMES):
        got = assert_matches(srv, oracle, s, t, tclass, name)
        compared += 1
        valid += got is not None
    assert compared == len(SOURCES) * len(TARGETS) * len(CLASSES) * len(NAMES)
    assert valid > compared // 2


def test_create_rules_are_exercised(setup):
    """The oracle's tables are not empty: the comparison above means something."""
    srv, oracle = setup
    assert oracle.names and oracle.types and oracle.roles and oracle.ranges
    assert {k[1] for k in oracle.defaults} == {"user", "role", "type", "range"}
    d5 = srv.compute_create(H.LOCAL, "system_u:system_r:securecache_t:s0-s0:c2.c6",
                            "sctest_d5", b"named")
    assert d5 == H.item("sctest_secret_item_t", "s0:c2.c6")      # target high
    with pytest.raises(CreateLabelError, match="not a valid context"):
        srv.compute_create(H.APP, H.item("securecache_item_t"), "sctest_d3")  # system_r + item type
    d1 = srv.compute_create(H.APP, "sctest_u:object_r:securecache_item_t:s0", "sctest_d1")
    assert d1 == "sctest_u:object_r:securecache_item_t:s0:c1"       # user/role/type of target
    assert srv.compute_create(H.READONLY, H.CACHE, "kv_item", None) == \
        "system_u:sctest_obj_r:securecache_item_t:s0:c9"


def transition_sid(srv, s, t, tclass):
    """libsepol's own sepol_transition_sid, in the same private library."""
    lib = srv._lib
    with native.LOCK:
        srv._select()
        ssid, tsid = srv._sids_for(s, t)
        out = ctypes.c_uint32()
        if lib.sepol_transition_sid(ssid, tsid, srv._class(tclass), ctypes.byref(out)) != 0:
            return None
        ptr, size = ctypes.c_void_p(), ctypes.c_size_t()
        assert lib.sepol_sid_to_context(out.value, ctypes.byref(ptr), ctypes.byref(size)) == 0
        return native.take_string(lib, ptr)


def test_create_matches_sepol_transition_sid_where_it_applies(server):
    """Without names and default_* statements, libsepol's transition_sid and
    the kernel agree: so must we (test policy, kv_item and kv_cache)."""
    sources = [H.ADMIN, H.APP, H.APP2, H.READONLY, H.LOCAL, H.TENANT, H.PERMISSIVE]
    targets = [H.CACHE, H.item("securecache_app_item_t", "s0:c1")]
    for s, t, tclass in itertools.product(sources, targets, ["kv_item", "kv_cache"]):
        assert server.compute_create(s, t, tclass) == transition_sid(server, s, t, tclass)


def test_a_name_with_a_nul_is_no_name(setup):
    """A NUL cannot pass as a C string: such a name creates as no name at
    all would, in every case where the name matters."""
    srv, _ = setup
    differs = 0
    for s, t, tclass in itertools.product(SOURCES, TARGETS, CLASSES):
        plain = actual(srv, s, t, tclass, None)
        named = actual(srv, s, t, tclass, "named")
        try:
            with_nul = srv.compute_create(s, t, tclass, b"named\0x")
        except CreateLabelError:
            with_nul = None
        assert with_nul == plain, (s, t, tclass)
        differs += named != plain
    assert differs        # the name does change some labels


def test_a_label_no_name_rule_can_change_is_remembered(create_policy):
    """A create label is remembered only where no name-based rule can apply
    to its (source, target, class): remembered answers are the computed
    ones, for every name, in any order of asking."""
    srv = PolicyServer(create_policy)
    oracle = H.CreateOracle(create_policy, {})
    try:
        for s, t, tclass in itertools.product(SOURCES, TARGETS, CLASSES):
            for name in NAMES[::-1] + NAMES:     # a name first, then none
                assert_matches(srv, oracle, s, t, tclass, name)
        remembered = set(srv._created)
        # by the independent computation, the name changes none of them
        named = {(s, t, c) for s, t, c in remembered
                 if len({oracle.compute(s, t, c, n) for n in NAMES}) > 1}
        assert remembered and not named
        # the name-based rule of the test policy: never remembered
        assert (H.APP, H.CACHE, "kv_item") not in remembered
        assert srv.compute_create(H.APP, H.CACHE, "kv_item", b"config") != \
            srv.compute_create(H.APP, H.CACHE, "kv_item", None)
    finally:
        srv.close()
