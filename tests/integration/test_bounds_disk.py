"""A full disk: writes answer "out of space" (not LMDB's "Input/output
error"), reads keep working, writes come back when space returns, and the
daemon never stops. On a 2 MB tmpfs (needs root to mount; skipped else)."""

from __future__ import annotations

import os
import subprocess

import pytest

from .daemons import Daemon, Raw


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs with a 1 MB ballast file to delete (space returns)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                           str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode()}")
    (mount / "ballast").write_bytes(b"\0" * (1 << 20))
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_until_refused(raw: Raw, value: bytes) -> tuple[int, bytes]:
    for i in range(200):                          # bounded: 10 MB at most
        reply = raw.call(b"set k%d 0 0 %d\r\n%s\r\n" % (i, len(value), value))
        if reply != b"STORED\r\n":
            return i, reply
    raise AssertionError("the disk never filled")


@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_full_disk_says_out_of_space_and_recovers(tmp_path, small_fs,
                                                  durability):
    daemon = Daemon(tmp_path, "--durability", durability, "-m", "64")
    daemon.data_dir = small_fs / "data"
    daemon.start()
    try:
        raw = Raw(daemon.port)
        value = b"v" * 50_000
        stored, reply = fill_until_refused(raw, value)
        assert stored > 0
        assert b"out of space" in reply, reply
        assert reply.startswith(b"SERVER_ERROR ") and b"Input/output" \
            not in reply
        # reads go on from the last commit
        assert raw.call(b"get k0\r\n", b"END\r\n") == \
            b"VALUE k0 0 %d\r\n%s\r\nEND\r\n" % (len(value), value)
        assert b"out of space" in raw.call(b"set big 0 0 %d\r\n%s\r\n" % (
            len(value) * 4, value * 4))
        os.unlink(small_fs / "ballast")               # space returns
        assert raw.call(b"set again 0 0 5\r\nthere\r\n") == b"STORED\r\n"
        assert raw.call(b"get again\r\n", b"END\r\n") == \
            b"VALUE again 0 5\r\nthere\r\nEND\r\n"
        assert daemon.process.poll() is None
    finally:
        daemon.kill()
