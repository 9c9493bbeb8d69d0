"""Storage's own errors for LMDB failures whose cause it can tell.

How this works: LMDB reports a full disk in more than one way. A commit
whose ``pwrite`` of dirty pages is cut short by a full file system fails
with ``EIO`` (LMDB turns a short write into "Input/output error"); a
write that fails outright gives ``ENOSPC`` (py-lmdb's ``DiskError``) or
``EDQUOT``. ``translate`` turns those into ``OutOfSpace`` when the file
system holding the data directory is indeed (nearly) full, so that the
client is told the cause; any other error is left as LMDB raised it.

Both types derive from ``lmdb.Error``: the engine turns every storage
failure into a reply in one place, and these go the same way. A failed
commit is aborted (``Txn.__exit__``): reads go on from the last commit,
and writes succeed again as soon as space returns, without a restart.
"""

from __future__ import annotations

import errno
import os

import lmdb

FULL_MARGIN = 1 << 20      # less free than this (or than 2x the write): full


class StorageFault(lmdb.Error):
    """An LMDB operation failed on an open data directory."""


class OutOfSpace(StorageFault):
    """The file system holding the data directory is full."""

    def __init__(self, path: str, free: int) -> None:
        super().__init__("out of space")
        self.path = path
        self.free = free


QUOTA = os.strerror(errno.EDQUOT)
IO_ERROR = os.strerror(errno.EIO)


def free_bytes(path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def translate(error: lmdb.Error, path, written: int) -> lmdb.Error:
    """``error`` as storage names it: ``OutOfSpace`` when the disk is full
    (``written``: bytes the failed transaction put), else ``error``."""
    if isinstance(error, (lmdb.MapFullError, StorageFault)):
        return error                  # the engine evicts on a full map
    text = str(error)
    try:
        free = free_bytes(path)
    except OSError:
        return error
    if isinstance(error, lmdb.DiskError) or QUOTA in text:
        return OutOfSpace(str(path), free)
    if IO_ERROR in text and free < max(FULL_MARGIN, 2 * written):
        return OutOfSpace(str(path), free)
    return error
