"""``securecache check``: is a data directory consistent, are its labels valid?

How this works: one read transaction walks the items once, counting items,
bytes and items per label id, and folds the index entry every item should
have (``expiry``: exptime + key, for items with an exptime; ``age``: cas +
key, for all) into a count and a sum of hashes.  Each index is then walked
and folded the same way: equal counts and sums mean the index matches the
items (a sum of 64-bit hashes: a mismatch is never missed by this; a
match by accident is astronomically unlikely).  Only on a mismatch does a
second, slower pass name the missing and orphaned entries.  Labels: every
id used by an item must resolve in ``labels``, and every context must be
valid under the loaded policy (invalid ones are listed with their item
counts; the daemon treats such items as unlabeled).

``gc`` drops labels that no item uses.  The daemon keeps label ids in
memory, so gc refuses to run while another process has the directory open.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..storage import Storage
from ..storage import bulk

MASK = (1 << 64) - 1
EXAMPLES = 10


@dataclass
class CheckReport:
    """What check found; ``problems`` are inconsistencies, ``invalid``
    labels (context -> items) are valid data the policy no longer knows."""

    items: int = 0
    key_bytes: int = 0
    value_bytes: int = 0
    expired: int = 0
    with_exptime: int = 0
    label_items: dict[int, int] = field(default_factory=dict)
    labels: dict[int, bytes] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    unused: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    collected: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 clean, 1 inconsistent, 3 consistent but with invalid labels."""
        return 1 if self.problems else 3 if self.invalid else 0


class _Fold:
    """A count and a sum of hashes of index entries."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def same(self, other: "_Fold") -> bool:
        return self.count == other.count and (self.total & MASK) == (other.total & MASK)


def _walk_items(txn, report: CheckReport, now: int) -> tuple[_Fold, _Fold, int]:
    expiry, age = _Fold(), _Fold()
    per_label = report.label_items
    unpack, size = bulk.unpack_header, bulk.HEADER_SIZE
    u32, u64 = bulk.U32.pack, bulk.U64.pack
    exp_total = age_total = exp_count = key_bytes = value_bytes = expired = 0
    max_cas = items = 0
    for key, raw in bulk.raw_items(txn):
        label_id, _flags, exptime, _mtime, cas, _state = unpack(raw)
        items += 1
        key_bytes += len(key)
        value_bytes += len(raw) - size
        per_label[label_id] = per_label.get(label_id, 0) + 1
        if exptime:
            exp_count += 1
            exp_total += hash(u32(exptime) + key)
            if exptime <= now:
                expired += 1
        age_total += hash(u64(cas) + key)
        if cas > max_cas:
            max_cas = cas
    report.items, report.key_bytes, report.value_bytes = items, key_bytes, value_bytes
    report.expired, report.with_exptime = expired, exp_count
    expiry.count, expiry.total = exp_count, exp_total
    age.count, age.total = items, age_total
    return expiry, age, max_cas


def _fold_index(txn, name: str) -> _Fold:
    fold = _Fold()
    total = count = 0
    for entry in bulk.index_keys(txn, name):
        total += hash(bytes(entry))
        count += 1
    fold.count, fold.total = count, total
    return fold


def _index_detail(txn, name: str, width: int) -> list[str]:
    """The slow pass: which entries of index ``name`` are missing or orphaned."""
    pack = bulk.U32.pack if width == 4 else bulk.U64.pack
    missing, orphans = [], []
    for key, raw in bulk.raw_items(txn):
        _label, _flags, exptime, _mtime, cas, _state = bulk.unpack_header(raw)
        field_value = exptime if width == 4 else cas
        if (width == 8 or exptime) and not bulk.has_key(txn, name, pack(field_value) + key):
            missing.append(key)
    for entry in bulk.index_keys(txn, name):
        entry = bytes(entry)
        key, value = entry[width:], int.from_bytes(entry[:width], "big")
        record = txn.get(key)
        if record is None or (record.exptime if width == 4 else record.cas) != value:
            orphans.append(key)
    problems = []
    if missing:
        problems.append(f"{name} index: {len(missing)} items without an entry, e.g. "
                        f"{_keys(missing)}")
    if orphans:
        problems.append(f"{name} index: {len(orphans)} entries without their item, e.g. "
                        f"{_keys(orphans)}")
    return problems or [f"{name} index: does not match the items"]


def _keys(keys: list[bytes]) -> str:
    return ", ".join(repr(k) for k in keys[:EXAMPLES])


def _check_labels(txn, report: CheckReport, mac) -> None:
    report.labels = bulk.all_labels(txn)
    dangling = {i: n for i, n in report.label_items.items() if i not in report.labels}
    for label_id, count in sorted(dangling.items()):
        report.problems.append(f"label id {label_id} does not resolve ({count} items)")
    reverse = bulk.label_ids(txn)
    for label_id, context in sorted(report.labels.items()):
        if reverse.get(context) != label_id:
            report.problems.append(f"label {label_id} ({context!r}) has no matching label_ids entry")
        if label_id not in report.label_items:
            report.unused.append(label_id)
        elif mac is not None:
            text = context.decode("ascii", "replace")
            if not mac.check_context(text):
                report.invalid[text] = report.label_items[label_id]


def _check_access(txn, report: CheckReport) -> None:
    orphans = [bytes(k) for k in bulk.index_keys(txn, "access") if txn.get(bytes(k)) is None]
    if orphans:
        report.problems.append(f"access index: {len(orphans)} entries without their item, "
                               f"e.g. {_keys(orphans)}")


def check(storage: Storage, mac=None, *, now: int | None = None) -> CheckReport:
    """Check ``storage`` in one read transaction (see the module docstring)."""
    start = time.monotonic()
    now = int(time.time()) if now is None else now
    report = CheckReport()
    with storage.txn(write=False) as txn:
        expiry, age, max_cas = _walk_items(txn, report, now)
        for name, want, width in (("expiry", expiry, 4), ("age", age, 8)):
            if not _fold_index(txn, name).same(want):
                report.problems += _index_detail(txn, name, width)
        _check_access(txn, report)
        _check_labels(txn, report, mac)
        if max_cas > bulk.cas_counter(txn):
            report.problems.append(f"cas counter {bulk.cas_counter(txn)} is below an "
                                   f"item's cas {max_cas}")
    report.seconds = time.monotonic() - start
    return report


class DirectoryBusyError(Exception):
    """Another process has the data directory open (gc needs it alone)."""


def other_users(storage: Storage) -> list[int]:
    """Pids of other processes that have the environment open.

    Every process that opens an LMDB environment holds a shared fcntl lock
    on ``lock.mdb`` for as long as it is open.  The locks are read from
    /proc/locks: opening and closing the lock file here would drop this
    process's own lock (POSIX locks go with any close of the file)."""
    st = os.stat(storage.path / "lock.mdb")
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    with open("/proc/locks", encoding="ascii") as locks:
        for line in locks:
            fields = line.split()
            if "->" in fields:            # a waiter, not a holder
                continue
            if len(fields) >= 6 and fields[5] == where and fields[4].isdigit():
                pids.add(int(fields[4]))
    pids.discard(os.getpid())
    return sorted(pids)


def collect_garbage(storage: Storage) -> int:
    """Drop every label no item uses, in one write transaction that sees
    the items itself; the number dropped.  DirectoryBusyError if another
    process (a daemon) has the directory open."""
    busy = other_users(storage)
    if busy:
        raise DirectoryBusyError(f"--gc needs the directory to itself; in use by pid "
                                 f"{', '.join(map(str, busy))} (stop the daemon first)")
    with storage.txn(write=True) as txn:
        used = {bulk.unpack_header(raw)[0] for _key, raw in bulk.raw_items(txn)}
        labels = bulk.all_labels(txn)
        unused = [i for i in labels if i not in used]
        bulk.drop_labels(txn, unused, labels)
    return len(unused)
