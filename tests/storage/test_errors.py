"""Storage names the LMDB failures whose cause it can tell (a full disk)."""

from __future__ import annotations

import subprocess

import lmdb
import pytest

from securecache.storage import OutOfSpace, Storage
from securecache.storage.errors import free_bytes, translate


def test_enospc_and_quota_are_out_of_space(tmp_path):
    assert isinstance(translate(lmdb.DiskError("mdb_put: No space left on "
                                               "device"), tmp_path, 0),
                      OutOfSpace)
    quota = lmdb.Error("mdb_txn_commit: Disk quota exceeded")
    assert isinstance(translate(quota, tmp_path, 0), OutOfSpace)


def test_an_io_error_with_free_space_stays_an_io_error(tmp_path):
    if free_bytes(tmp_path) < 64 << 20:
        pytest.skip("the test directory's disk is nearly full")
    error = lmdb.Error("mdb_txn_commit: Input/output error")
    assert translate(error, tmp_path, 1000) is error
    full = lmdb.MapFullError("mdb_put: MDB_MAP_FULL")
    assert translate(full, tmp_path, 0) is full       # the engine evicts


def test_commit_on_a_full_tmpfs_raises_out_of_space(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                       str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        storage = Storage(mount / "d", map_size=16 << 20)
        with pytest.raises(OutOfSpace):
            for i in range(100):                  # bounded: 5 MB
                with storage.txn(True) as txn:
                    txn.txn.put(b"k%d" % i, b"x" * 50_000, db=txn.items)
        with storage.txn(False) as txn:            # reads go on
            assert txn.txn.get(b"k0", db=txn.items) is not None
        storage.close()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_failed_commit_releases_the_writer(tmp_path):
    """Issue 9 defect 3: a commit that failed (the map full while its meta
    puts wrote the counters back) kept LMDB's writer: every later write
    transaction failed and the daemon stopped."""
    storage = Storage(tmp_path / "d", map_size=1 << 20)
    with pytest.raises(lmdb.Error):
        with storage.txn(True) as txn:
            txn.next_cas()                        # written back at commit
            try:
                for i in range(10_000):           # bounded: 40 MB
                    txn.txn.put(b"k%d" % i, b"x" * 4000, db=txn.items)
            except lmdb.MapFullError:
                pass                              # the commit fails instead
    with storage.txn(True) as txn:
        txn.txn.put(b"after", b"1", db=txn.items)
    with storage.txn(False) as txn:
        assert txn.txn.get(b"after", db=txn.items) == b"1"
    storage.close()
