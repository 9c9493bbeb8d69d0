"""``securecache dump``: a consistent snapshot of a data directory.

How this works: everything is read in ONE LMDB read transaction, so the
dump is the state of the cache at that transaction's start even while a
daemon keeps writing (LMDB readers see a snapshot and never block the
writer).  The snapshot's item count goes into the header, then every item
with its key, value, client flags, absolute exptime, cas, label context
string and mtime, in key order (see dumpfile and docs/dump-format.md).
Items already expired but not yet swept are dumped too: restore skips
whatever is expired when it runs.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import BinaryIO

from ..storage import Storage
from ..storage import bulk
from .dumpfile import DumpWriter
from .progress import Progress


@dataclass
class DumpResult:
    """What a dump wrote."""

    items: int
    seconds: float
    header: dict


def dump(storage: Storage, out: BinaryIO, *, prefix: bytes = b"",
         fingerprint: str = "", progress: bool | None = None) -> DumpResult:
    """Write a dump of ``storage`` (keys starting with ``prefix``) to ``out``."""
    start = time.monotonic()
    with storage.txn(write=False) as txn:
        labels = {i: c.decode("ascii", "replace") for i, c in bulk.all_labels(txn).items()}
        header = {"created": time.time(), "policy": fingerprint,
                  "items": bulk.count_prefix(txn, prefix), "prefix": prefix,
                  "cas": bulk.cas_counter(txn), "host": socket.gethostname()}
        writer = DumpWriter(out, header)
        meter = Progress("dump", header["items"], enabled=progress)
        add, unpack, size = writer.add, bulk.unpack_header, bulk.HEADER_SIZE
        for key, raw in bulk.raw_items(txn, prefix):
            label_id, flags, exptime, mtime, cas, _state = unpack(raw)
            # a label id that does not resolve is dumped as "": restore
            # treats it as an invalid label (--on-invalid)
            add(key, raw[size:], flags, exptime, cas, labels.get(label_id, ""), mtime)
            meter.step()
        items = writer.close()
    meter.done()
    return DumpResult(items, time.monotonic() - start, header)
