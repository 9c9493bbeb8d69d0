"""securecache relabel (issue 8, item 3): kv_contexts with 7 patterns, the
dry run shows exactly what the real run then changes, denials are reported,
skipped and audited."""

from __future__ import annotations

import re

import pytest

from securecache.storage import Record, Storage

from .toolsupport import ADMIN, MAP, items, run

ADMIN_S0 = "system_u:system_r:securecache_admin_t:s0"   # clearance s0 only
GONE = "system_u:object_r:no_such_item_t:s0"


def label(type_, level="s0"):
    return f"system_u:object_r:{type_}:{level}"


KV_CONTEXTS = f"""\
*                {label('securecache_item_t')}
app:*            {label('securecache_app_item_t')}
app:tenant1:*    {label('securecache_app_item_t', 's0:c1')}
app:tenant2:*    {label('securecache_app_item_t', 's0:c2')}
local:*          {label('securecache_local_item_t')}
lock:*           <<none>>
sess:*           {label('securecache_item_t')}
"""

STORED = {
    b"app:tenant1:a": label("securecache_item_t"),           # -> s0:c1: relabelto denied at s0
    b"app:tenant1:b": label("securecache_item_t"),
    b"app:tenant2:y": label("securecache_app_item_t", "s0:c1"),  # relabelfrom denied
    b"app:tenant2:z": label("securecache_app_item_t", "s0:c2"),  # already right
    b"app:x1": label("securecache_item_t"),                  # -> app item
    b"app:x2": label("securecache_item_t"),
    b"local:1": label("securecache_app_item_t"),             # -> local item
    b"local:2": label("securecache_app_item_t"),
    b"lock:1": label("securecache_app_item_t"),              # <<none>>: left alone
    b"k1": label("securecache_item_t"),                      # already right
    b"sess:1": GONE,                                         # invalid -> shared
}
DENIED = {b"app:tenant1:a", b"app:tenant1:b", b"app:tenant2:y"}
CHANGED = {b"app:x1", b"app:x2", b"local:1", b"local:2", b"sess:1"}


@pytest.fixture()
def directory(tmp_path):
    storage = Storage(tmp_path / "data", map_size=MAP)
    with storage.txn(write=True) as txn:
        for key, context in STORED.items():
            txn.put(key, Record(txn.label_id(context.encode()), 0, 0, 0, 0, b"v"), None)
    storage.close()
    (tmp_path / "kv_contexts").write_text(KV_CONTEXTS)
    return tmp_path


def relabel(directory, policy, *extra, context=ADMIN_S0, audit="audit.log"):
    return run("relabel", "--data-dir", directory / "data", "--contexts",
               directory / "kv_contexts", "--mac", "policy", "--policy", policy, "-m", "256",
               "--audit-log", directory / audit, "-v", *(["--context", context] if context else []),
               *extra)


def test_dry_run_equals_the_real_run(directory, test_policy):
    before = items(directory / "data")
    dry = relabel(directory, test_policy, "--dry-run", audit="dry-audit.log")
    assert dry.returncode == 1                               # some were denied
    assert items(directory / "data") == before               # nothing changed
    real = relabel(directory, test_policy)
    assert real.returncode == 1
    assert dry.stdout == real.stdout and dry.stdout
    lines = real.stdout.decode().splitlines()
    after = items(directory / "data")
    changed = {k for k in after if after[k][4] != before[k][4]}
    assert changed == CHANGED
    for key in changed:
        assert f"Relabeled {key.decode()} from {before[key][4].decode()} to " \
               f"{after[key][4].decode()}" in lines
    assert len(lines) == len(CHANGED)
    # the denied ones: reported (both runs), skipped, audited (real run only)
    for key in DENIED:
        assert after[key] == before[key]
        assert re.search(rf"relabel: {key.decode()}: denied {{ .*relabel", real.stderr)
        assert re.search(rf"relabel: {key.decode()}: denied {{ .*relabel", dry.stderr)
    audit = (directory / "audit.log").read_text()
    assert 'avc:  denied  { relabelto } for' in audit and 'key="app:tenant1:a"' in audit
    assert 'avc:  denied  { relabelfrom } for' in audit and 'key="app:tenant2:y"' in audit
    assert "denied" not in (directory / "dry-audit.log").read_text()
    # run again: nothing left to do but the denied ones
    again = relabel(directory, test_policy)
    assert again.stdout == b"" and "0 relabeled, 3 denied" in again.stderr


def test_a_cleared_admin_may_do_them_all(directory, test_policy):
    result = relabel(directory, test_policy, context=ADMIN)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.decode().splitlines()) == len(CHANGED | DENIED)
    after = items(directory / "data")
    assert after[b"app:tenant1:a"][4] == label("securecache_app_item_t", "s0:c1").encode()
    assert after[b"lock:1"][4] == STORED[b"lock:1"].encode()


def test_prefix_limits_the_walk(directory, test_policy):
    result = relabel(directory, test_policy, "--prefix", "local:", context=ADMIN)
    assert result.returncode == 0
    assert [l.split()[1] for l in result.stdout.decode().splitlines()] == ["local:1", "local:2"]


def test_default_acting_context_comes_from_peer_contexts(directory, test_policy):
    """The bundled peer_contexts maps every uid to securecache_local_t,
    which may not relabel: everything is denied, nothing changes."""
    before = items(directory / "data")
    result = relabel(directory, test_policy, context=None)
    assert result.returncode == 1
    assert "as system_u:system_r:securecache_local_t:s0" in result.stderr
    assert items(directory / "data") == before
