"""The LMDB environment of one data directory.

How this works: ``Storage`` opens one LMDB environment with its named
sub-databases once (py-lmdb's advice), checks the schema version kept in
``meta``, and hands out transactions (``storage.txn``). Everything a
request does happens inside one such transaction; a write transaction
commits once for a whole batch of requests (group commit).

The directory is created mode 0700 and LMDB's files 0600: items and their
labels are nobody else's business. Durability is ``fsync`` (each commit is
on disk before it returns) or ``async`` (commits reach the OS at once, so a
process crash loses nothing; ``sync()`` is called every interval).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import lmdb

from .txn import Txn

SCHEMA_VERSION = 1
SUBDBS = ("items", "labels", "label_ids", "expiry", "age", "access", "meta")
U64 = struct.Struct(">Q")


class StorageError(Exception):
    """The data directory cannot be used (wrong schema, unreadable...)."""


class Storage:
    """One data directory: an LMDB environment and its sub-databases."""

    def __init__(self, path: str | os.PathLike, *, map_size: int = 64 << 20,
                 durability: str = "fsync", readonly: bool = False) -> None:
        self.path = Path(path)
        self.map_size = map_size
        self.durability = durability
        _make_private_dir(self.path, readonly)
        old_umask = os.umask(0o077)
        try:
            self.env = lmdb.open(
                str(self.path), map_size=map_size, max_dbs=len(SUBDBS) + 2,
                subdir=True, mode=0o600, readonly=readonly,
                sync=durability == "fsync", metasync=durability == "fsync",
                max_readers=256, lock=True)
        except lmdb.Error as error:
            raise StorageError(f"cannot open {self.path}: {error}") from None
        finally:
            os.umask(old_umask)
        with self.env.begin(write=not readonly) as txn:
            self.dbs = {name.encode(): self.env.open_db(
                name.encode(), txn=txn, create=not readonly)
                for name in SUBDBS}
            self._check_schema(txn, readonly)
        self.labels: dict[int, bytes] = {}
        self.label_ids: dict[bytes, int] = {}

    def _check_schema(self, txn: lmdb.Transaction, readonly: bool) -> None:
        meta = self.dbs[b"meta"]
        raw = txn.get(b"schema", db=meta)
        if raw is None:
            if readonly:
                raise StorageError(f"{self.path} holds no securecache data")
            txn.put(b"schema", U64.pack(SCHEMA_VERSION), db=meta)
            return
        version = U64.unpack(raw)[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {version}, newer than this "
                f"securecache understands ({SCHEMA_VERSION}); upgrade "
                "securecache or use another --data-dir")

    def txn(self, write: bool) -> Txn:
        """A new transaction; use it as a context manager."""
        return Txn(self, self.env.begin(write=write, buffers=not write),
                   write)

    def sync(self) -> None:
        """Force committed data to disk (async durability)."""
        self.env.sync(True)

    def info(self, txn: Txn) -> dict:
        """Sizes for ``stats`` as ``txn`` sees them: items and bytes in use."""
        info = self.env.info()
        page = self.env.stat()["psize"]
        return {"curr_items": txn.count(),
                "bytes": (info["last_pgno"] + 1) * page,
                "limit_maxbytes": info["map_size"]}

    def close(self) -> None:
        """Commit nothing more; close the environment."""
        self.env.close()


def _make_private_dir(path: Path, readonly: bool) -> None:
    if readonly:
        if not path.is_dir():
            raise StorageError(f"{path} does not exist")
        return
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
