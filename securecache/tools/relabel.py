"""``securecache relabel``: restorecon for items, driven by kv_contexts.

How this works: items are walked in key order (optionally under a prefix)
in batches; a real run reads and rewrites each batch inside ONE write
transaction, so a daemon serving the same directory waits for one batch at
a time and every decision is taken on the item as it is when changed.  For
each live item, the most specific kv_contexts rule gives the label it
should have (``<<none>>`` or no rule: left alone).  A change needs, for the
acting context, ``kv_item:setattr`` and ``kv_item:relabelfrom`` on the
item's current (effective) label and ``kv_item:relabelto`` on the new one,
as the daemon's ``relabel`` command does.  Denials are audited by the MAC's
audit log, reported and skipped.  ``--dry-run`` reads in one read
transaction, asks the same questions without auditing them, and reports
exactly the changes a real run would make at that moment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..security import KV_ITEM
from ..storage import Record, Storage
from ..storage import bulk

BATCH = 1000


@dataclass(frozen=True)
class Change:
    """One item whose label differs from kv_contexts'; ``denied`` lists
    the permissions the acting context lacks (empty: relabeled)."""

    key: bytes
    old: str
    new: str
    denied: tuple[str, ...] = ()

    def line(self) -> str:
        """As ``restorecon -v`` prints a change (or a denial)."""
        key = self.key.decode("utf-8", "backslashreplace")
        if self.denied:
            return f"relabel: {key}: denied {{ {' '.join(self.denied)} }} from {self.old} to {self.new}"
        return f"Relabeled {key} from {self.old} to {self.new}"


@dataclass
class RelabelResult:
    """Changes made (or, dry run, to make) and denied; items looked at."""

    changed: list[Change] = field(default_factory=list)
    denied: list[Change] = field(default_factory=list)
    examined: int = 0
    seconds: float = 0.0


class Relabeler:
    """Relabel items of ``storage`` as ``acting`` (a client context)."""

    def __init__(self, storage: Storage, mac, contexts, acting: str, *,
                 dry_run: bool = False, now: int | None = None, report=None) -> None:
        self.storage = storage
        self.mac = mac
        self.contexts = contexts
        self.acting = acting
        self.dry_run = dry_run
        self.now = now
        self.report = report            # called with each Change as it is decided
        self.result = RelabelResult()

    def _denied(self, key: bytes, old: str, new: str) -> tuple[str, ...]:
        audit = not self.dry_run
        has = self.mac.has_perm
        checks = (("setattr", old), ("relabelfrom", old), ("relabelto", new))
        # kv_item:setattr and kv_item:relabelfrom on the current label,
        # kv_item:relabelto on the new one (each audited when denied).
        return tuple(perm for perm, target in checks
                     if not has(self.acting, target, KV_ITEM, perm, key=key, audit=audit))

    def _decide(self, txn, key: bytes, raw) -> tuple[Change, Record] | None:
        label_id, flags, exptime, mtime, cas, state = bulk.unpack_header(raw)
        if exptime and exptime <= self.now:
            return None
        new = self.contexts.context_for(key)
        if new is None:
            return None
        stored = txn.label(label_id)
        old = stored.decode("ascii", "replace") if stored is not None else ""
        if old == new:
            return None
        effective = self.mac.effective_label(old)
        change = Change(key, old or "<none>", new, self._denied(key, effective, new))
        record = Record(label_id, flags, exptime, mtime, cas, bytes(raw[bulk.HEADER_SIZE:]), state)
        return change, record

    def _batch(self, txn, prefix: bytes, start: bytes | None, limit: int) -> bytes | None:
        """Decide (and unless dry-run apply) up to ``limit`` items; the key
        to start the next batch from, or None at the end."""
        rows, examined = [], 0
        for key, raw in bulk.raw_items(txn, prefix, start):
            if examined >= limit:
                self._apply(txn, rows)
                return key
            examined += 1
            self.result.examined += 1
            decided = self._decide(txn, key, raw)
            if decided is not None:
                rows.append(decided)
        self._apply(txn, rows)
        return None

    def _apply(self, txn, rows) -> None:
        for change, record in rows:
            (self.result.denied if change.denied else self.result.changed).append(change)
            if self.report is not None:
                self.report(change)
            if change.denied or self.dry_run:
                continue
            new_record = Record(txn.label_id(change.new.encode()), record.flags,
                                record.exptime, record.mtime, 0, record.value, record.state)
            txn.put(change.key, new_record, record)

    def run(self, prefix: bytes = b"", batch: int = BATCH) -> RelabelResult:
        """Walk the items; the result (see RelabelResult)."""
        start_time = time.monotonic()
        self.now = int(time.time()) if self.now is None else self.now
        if self.dry_run:
            with self.storage.txn(write=False) as txn:
                self._batch(txn, prefix, None, 1 << 62)
        else:
            start = None
            while True:
                with self.storage.txn(write=True) as txn:
                    start = self._batch(txn, prefix, start, batch)
                if start is None:
                    break
        self.result.seconds = time.monotonic() - start_time
        return self.result
