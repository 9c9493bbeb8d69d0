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

Size: ``map_size`` is the cache's limit (memcached's ``-m``). LMDB cannot
even delete in a map that is completely full (a delete copies pages too),
so the map is opened larger than the limit (``HEADROOM``) and the engine
keeps the pages in use under the limit by evicting (``usage``): a full
cache evicts or refuses a write, it never wedges.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import lmdb

from .errors import translate
from .txn import Txn

SCHEMA_VERSION = 1
HEADROOM = 0.25            # map = limit * (1 + HEADROOM) + 8 MiB
HEADROOM_MIN = 8 << 20
SUBDBS = ("items", "labels", "label_ids", "expiry", "age", "access", "meta")
U64 = struct.Struct(">Q")


class StorageError(Exception):
    """The data directory cannot be used (wrong schema, unreadable...)."""


class Storage:
    """One data directory: an LMDB environment and its sub-databases."""

    def __init__(self, path: str | os.PathLike, *, map_size: int = 64 << 20,
                 durability: str = "fsync", readonly: bool = False) -> None:
        self.path = Path(path)
        self.map_size = map_size               # the limit, as -m gives it
        self.durability = durability
        _make_private_dir(self.path, readonly)
        old_umask = os.umask(0o077)
        try:
            self.env = lmdb.open(
                str(self.path), max_dbs=len(SUBDBS) + 2,
                map_size=int(map_size * (1 + HEADROOM)) + HEADROOM_MIN,
                subdir=True, mode=0o600, readonly=readonly,
                sync=durability == "fsync", metasync=durability == "fsync",
                max_readers=256, lock=True)
        except lmdb.Error as error:
            raise StorageError(f"cannot open {self.path}: {error}") from None
        finally:
            os.umask(old_umask)
        if readonly:
            # A handle opened in a read transaction dies with it: let
            # py-lmdb open them on its own, then read the schema.
            try:
                self.dbs = {name.encode(): self.env.open_db(name.encode(),
                                                            create=False)
                            for name in SUBDBS}
            except lmdb.NotFoundError:
                self.env.close()
                raise StorageError(
                    f"{self.path} holds no securecache data") from None
        with self.env.begin(write=not readonly) as txn:
            if not readonly:
                self.dbs = {name.encode(): self.env.open_db(
                    name.encode(), txn=txn, create=True) for name in SUBDBS}
            self._check_schema(txn, readonly)
        self.page_size = self.env.stat()["psize"]
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

    def reader(self) -> Txn:
        """A read transaction on the latest snapshot, zero-copy: values
        are views into the map, valid until ``release``."""
        return Txn(self, self.env.begin(buffers=True), False)

    @staticmethod
    def release(reader: Txn) -> None:
        """End ``reader`` (a read transaction commits nothing)."""
        reader.txn.abort()

    def sync(self) -> None:
        """Force committed data to disk (async durability); a full disk
        raises ``OutOfSpace``."""
        try:
            self.env.sync(True)
        except lmdb.Error as error:
            raise translate(error, self.path, 0) from error

    def usage(self, txn: Txn) -> int:
        """Bytes in pages that hold data (the B+trees of every sub-db), as
        ``txn`` sees them; free pages do not count."""
        pages = 0
        for db in (None, *self.dbs.values()):
            stat = txn.txn.stat(db) if db is not None else self.env.stat()
            pages += stat["branch_pages"] + stat["leaf_pages"] + \
                stat["overflow_pages"]
        return pages * self.page_size

    def high_water(self) -> int:
        """Bytes up to the highest page LMDB ever used in this map: usage
        can only be over a limit that this is over."""
        return (self.env.info()["last_pgno"] + 1) * self.page_size

    def info(self, txn: Txn) -> dict:
        """Sizes for ``stats`` as ``txn`` sees them: items and bytes in use."""
        return {"curr_items": txn.count(), "bytes": self.usage(txn),
                "limit_maxbytes": self.map_size}

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
