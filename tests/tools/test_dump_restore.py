"""dump and restore through the `securecache` command (issue 8, item 1),
plus what restore does with bad input, invalid labels and cas values."""

from __future__ import annotations

import time

import msgpack
import pytest

from securecache.storage import Record, Storage
from securecache.tools.dumpfile import BLOCK_ITEMS, FORMAT, VERSION

from .toolsupport import LABELS, MAP, fill, items, live, run, strip_cas

GONE = "system_u:object_r:no_such_item_t:s0"


def policy_args(policy):
    return ["--mac", "policy", "--policy", policy, "-m", "256"]


def test_round_trip_of_100000_items_under_3_labels(tmp_path, test_policy):
    source = tmp_path / "data"
    now = int(time.time())
    live_count = fill(source, 100_000, now=now)
    before = items(source)
    assert len({v[4] for v in before.values()}) == 3
    dump = tmp_path / "all.dump"
    result = run("dump", "--data-dir", source, "-o", dump, *policy_args(test_policy))
    assert result.returncode == 0, result.stderr
    for path in source.iterdir():          # wipe the directory
        path.unlink()
    result = run("restore", dump, "--data-dir", source, *policy_args(test_policy))
    assert result.returncode == 0, result.stderr
    after = items(source)
    assert len(after) == live_count < 100_000              # expired ones not restored
    # every key, value, flags, exptime, label identical, item by item
    assert strip_cas(after) == strip_cas(live(before, now))
    # into an empty directory every dumped cas is kept
    assert {k: v[3] for k, v in after.items()} == {k: before[k][3] for k in after}
    second = run("restore", dump, "--data-dir", source, *policy_args(test_policy))
    assert second.returncode == 0, second.stderr
    assert items(source) == after                           # cas included: nothing changed
    assert " 0 written" in second.stderr and f"{live_count:,} unchanged" in second.stderr


def test_dump_header_and_prefix(tmp_path, filled, test_policy):
    dump = tmp_path / "app.dump"
    assert run("dump", "--data-dir", filled, "--prefix", "app:", "-o", dump,
               *policy_args(test_policy)).returncode == 0
    unpacker = msgpack.Unpacker(open(dump, "rb"), raw=False)
    header = next(unpacker)
    assert header["format"] == FORMAT and header["version"] == VERSION
    assert header["items"] == 1000 and header["prefix"] == b"app:"
    assert len(header["policy"]) == 64                      # sha-256 of the policy
    assert dump.stat().st_mode & 0o077 == 0
    target = tmp_path / "target"
    assert run("restore", dump, "--data-dir", target, *policy_args(test_policy)).returncode == 0
    assert all(k.startswith(b"app:") for k in items(target))


def test_dump_to_stdout_and_restore_from_stdin(tmp_path, filled, test_policy):
    out = run("dump", "--data-dir", filled, *policy_args(test_policy))
    assert out.returncode == 0 and out.stdout
    target = tmp_path / "target"
    back = run("restore", "-", "--data-dir", target, *policy_args(test_policy),
               input_=out.stdout)
    assert back.returncode == 0, back.stderr
    assert strip_cas(items(target)) == strip_cas(live(items(filled), int(time.time())))


@pytest.fixture()
def dump_bytes(tmp_path, filled, test_policy):
    dump = tmp_path / "d.dump"
    assert run("dump", "--data-dir", filled, "-o", dump, *policy_args(test_policy)).returncode == 0
    return dump.read_bytes()


def test_truncated_file_is_refused_with_nothing_written(tmp_path, dump_bytes, test_policy):
    bad = tmp_path / "cut.dump"
    bad.write_bytes(dump_bytes[:len(dump_bytes) // 2])
    result = run("restore", bad, "--data-dir", tmp_path / "t", *policy_args(test_policy))
    assert result.returncode == 3
    assert "truncated" in result.stderr
    assert items(tmp_path / "t") == {}


def test_corrupt_file_is_refused_with_nothing_written(tmp_path, dump_bytes, test_policy):
    bad = tmp_path / "flip.dump"
    data = bytearray(dump_bytes)
    data[len(data) // 2] ^= 0x40
    bad.write_bytes(bytes(data))
    result = run("restore", bad, "--data-dir", tmp_path / "t", *policy_args(test_policy))
    assert result.returncode == 3
    assert "corrupt" in result.stderr
    assert items(tmp_path / "t") == {}


def test_truncated_stream_applies_whole_blocks_only(tmp_path, test_policy):
    source = tmp_path / "src"
    fill(source, 3000, expired_every=0)
    dump = run("dump", "--data-dir", source, *policy_args(test_policy)).stdout
    result = run("restore", "-", "--data-dir", tmp_path / "t", *policy_args(test_policy),
                 input_=dump[:len(dump) * 2 // 3])
    assert result.returncode == 3 and "truncated" in result.stderr
    restored = sorted(items(tmp_path / "t"))
    dumped = sorted(items(source))
    # what was applied is the start of the dump, in whole blocks
    assert 0 < len(restored) < len(dumped) and len(restored) % BLOCK_ITEMS == 0
    assert restored == dumped[:len(restored)]


def test_not_a_dump_is_refused(tmp_path, test_policy):
    bad = tmp_path / "x.dump"
    bad.write_bytes(msgpack.packb({"format": "other"}))
    result = run("restore", bad, "--data-dir", tmp_path / "t", *policy_args(test_policy))
    assert result.returncode == 3 and "not a securecache dump" in result.stderr


def _gone_source(tmp_path):
    source = tmp_path / "src"
    fill(source, 30, labels=(LABELS[0], GONE), expired_every=0, ttl_every=0)
    return source


@pytest.mark.parametrize("mode, code, gone_label", [
    ("unlabeled", 0, "system_u:object_r:unlabeled_t:s0"),
    ("relabel", 0, "system_u:object_r:securecache_app_item_t:s0"),
    ("fail", 4, None),
])
def test_invalid_labels(tmp_path, test_policy, mode, code, gone_label):
    dump = tmp_path / "d.dump"
    assert run("dump", "--data-dir", _gone_source(tmp_path), "-o", dump, "--mac", "off").returncode == 0
    contexts = tmp_path / "kv"
    contexts.write_text("* system_u:object_r:securecache_app_item_t:s0\n")
    target = tmp_path / "t"
    result = run("restore", dump, "--data-dir", target, "--on-invalid", mode,
                 "--contexts", contexts, *policy_args(test_policy))
    assert result.returncode == code, result.stderr
    restored = items(target)
    if gone_label is None:
        assert restored == {} and f"{GONE} (15)" in result.stderr
        return
    labels = [v[4].decode() for v in restored.values()]
    assert len(restored) == 30
    assert labels.count(gone_label) == 15 and labels.count(LABELS[0]) == 15


def test_relabel_mode_refuses_keys_without_a_rule(tmp_path, test_policy):
    dump = tmp_path / "d.dump"
    assert run("dump", "--data-dir", _gone_source(tmp_path), "-o", dump, "--mac", "off").returncode == 0
    contexts = tmp_path / "kv"
    contexts.write_text("nomatch* system_u:object_r:securecache_app_item_t:s0\n")
    result = run("restore", dump, "--data-dir", tmp_path / "t", "--on-invalid", "relabel",
                 "--contexts", contexts, *policy_args(test_policy))
    assert result.returncode == 4 and "15 refused" in result.stderr
    assert len(items(tmp_path / "t")) == 15


def test_cas_already_handed_out_by_the_target_is_not_reused(tmp_path, filled, test_policy):
    """A target whose cas counter is past the dumped cas values gives the
    restored items fresh cas values above everything it handed out."""
    dump = tmp_path / "d.dump"
    assert run("dump", "--data-dir", filled, "-o", dump, *policy_args(test_policy)).returncode == 0
    target = tmp_path / "t"
    storage = Storage(target, map_size=MAP)
    with storage.txn(write=True) as txn:
        label = txn.label_id(LABELS[0].encode())
        for i in range(5000):                       # cas 1..5000 handed out here
            txn.put(b"z%d" % i, Record(label, 0, 0, 0, 0, b"x"), None)
    storage.close()
    assert run("restore", dump, "--data-dir", target, *policy_args(test_policy)).returncode == 0
    restored = {k: v for k, v in items(target).items() if not k.startswith(b"z")}
    assert restored and min(v[3] for v in restored.values()) > 5000
    all_cas = [v[3] for v in items(target).values()]
    assert len(all_cas) == len(set(all_cas))
