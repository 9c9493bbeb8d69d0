"""``securecache restore``: put a dump's items into a data directory.

How this works: the dump is read block by block (dumpfile verifies each
block's checksum first); each block is written in ONE write transaction,
so a daemon serving the same directory only waits for one block at a time
and a failure leaves whole blocks applied, never half of one.  A regular
file is read through once before anything is written, so a truncated or
corrupt file (or, with ``--on-invalid=fail``, an invalid label) is refused
with nothing applied at all.

Per item:
- expired (exptime <= now): skipped;
- label: checked under the target's policy; an invalid one becomes the
  policy's unlabeled context (``unlabeled``), the kv_contexts context of
  the key (``relabel``; no rule: the item is refused), or refuses the
  whole restore (``fail``);
- an item already stored with the same value, flags, exptime and label is
  left alone, so a second restore of the same dump changes nothing;
- cas: the dumped cas is kept only if this directory never handed it out
  (it is above the directory's cas counter when the restore started), and
  the counter is first raised above every dumped cas so that no later cas
  can repeat one; otherwise a fresh cas is taken.  A client holding a cas
  from the source node can then still use it; a client of this node can
  never see a cas it already held on another version of the item.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import BinaryIO

from ..storage import Record, Storage
from ..storage import bulk
from .dumpfile import DumpError, DumpItem, DumpReader
from .progress import Progress

ON_INVALID = ("unlabeled", "relabel", "fail")


class InvalidLabelsError(Exception):
    """--on-invalid=fail and the dump carries labels the policy rejects."""

    def __init__(self, labels: dict[str, int]) -> None:
        listed = ", ".join(f"{label or '<none>'} ({n})" for label, n in sorted(labels.items()))
        super().__init__(f"labels not valid under the target policy: {listed}")
        self.labels = labels


@dataclass
class RestoreResult:
    """Counts of a restore."""

    read: int = 0
    written: int = 0
    unchanged: int = 0
    expired: int = 0
    unlabeled: int = 0          # invalid label -> the unlabeled context
    relabeled: int = 0          # invalid label -> kv_contexts
    refused: int = 0            # invalid label, no kv_contexts rule
    seconds: float = 0.0
    refused_keys: list[bytes] = field(default_factory=list)


class Restorer:
    """Restore into ``storage`` under ``mac``'s policy (see module doc)."""

    def __init__(self, storage: Storage, mac, *, on_invalid: str = "unlabeled",
                 contexts=None, now: int | None = None) -> None:
        if on_invalid not in ON_INVALID:
            raise ValueError(f"--on-invalid must be one of {', '.join(ON_INVALID)}")
        if on_invalid == "relabel" and contexts is None:
            raise ValueError("--on-invalid=relabel needs kv_contexts (--contexts)")
        self.storage = storage
        self.mac = mac
        self.on_invalid = on_invalid
        self.contexts = contexts
        self.now = int(time.time()) if now is None else now
        self.result = RestoreResult()
        self._canonical: dict[str, str | None] = {}
        self._floor: int | None = None

    # ------------------------------------------------------------ labels
    def canonical(self, label: str) -> str | None:
        """The canonical form of a valid label, None if invalid (memoised)."""
        if label not in self._canonical:
            ok = bool(label) and self.mac.check_context(label)
            self._canonical[label] = self.mac.canonical(label) if ok else None
        return self._canonical[label]

    def invalid_labels(self, reader: DumpReader) -> dict[str, int]:
        """Read the whole dump; the invalid labels with their item counts."""
        invalid: dict[str, int] = {}
        for block in reader.blocks():
            for item in block:
                if item.exptime and item.exptime <= self.now:
                    continue
                if self.canonical(item.label) is None:
                    invalid[item.label] = invalid.get(item.label, 0) + 1
        return invalid

    def _label_for(self, item: DumpItem) -> str | None:
        label = self.canonical(item.label)
        if label is not None:
            return label
        if self.on_invalid == "fail":
            raise InvalidLabelsError({item.label: 1})
        if self.on_invalid == "unlabeled":
            self.result.unlabeled += 1
            return self.mac.unlabeled_context
        label = self.contexts.context_for(item.key)
        if label is None:
            self.result.refused += 1
            self.result.refused_keys.append(item.key)
        else:
            self.result.relabeled += 1
        return label

    # ------------------------------------------------------------ writing
    def apply(self, block: list[DumpItem], source_cas: int) -> None:
        """Write one verified block in one write transaction."""
        result, now = self.result, self.now
        with self.storage.txn(write=True) as txn:
            if self._floor is None:
                self._floor = bulk.cas_counter(txn)
                txn.raise_cas(max(self._floor, source_cas))
            floor = self._floor
            ids: dict[str, int] = {}
            for item in block:
                result.read += 1
                if item.exptime and item.exptime <= now:
                    result.expired += 1
                    continue
                label = self._label_for(item)
                if label is None:
                    continue
                label_id = ids.get(label) or txn.label_id(label.encode())
                ids[label] = label_id
                old = txn.get(item.key)
                if old is not None and old.label_id == label_id and \
                        old.flags == item.flags and old.exptime == item.exptime and \
                        old.value == item.value:
                    result.unchanged += 1
                    continue
                cas = item.cas if item.cas > floor else 0
                txn.put(item.key, Record(label_id, item.flags, item.exptime,
                                         item.mtime or now, cas, item.value), old)
                if old is not None:
                    txn.forget_access(item.key)
                result.written += 1


def restore(storage: Storage, mac, stream: BinaryIO, *, name: str = "<dump>",
            on_invalid: str = "unlabeled", contexts=None, seekable: bool = False,
            progress: bool | None = None, now: int | None = None) -> RestoreResult:
    """Restore the dump read from ``stream``; see the module docstring.

    Raises DumpError (truncated, corrupt, unsupported) or InvalidLabelsError;
    with ``seekable`` (a regular file) both come before anything is written.
    """
    start = time.monotonic()
    restorer = Restorer(storage, mac, on_invalid=on_invalid, contexts=contexts, now=now)
    if seekable:
        first = DumpReader(stream, name)
        invalid = restorer.invalid_labels(first)
        if invalid and on_invalid == "fail":
            raise InvalidLabelsError(invalid)
        stream.seek(0)
    reader = DumpReader(stream, name)
    meter = Progress("restore", reader.header.get("items"), enabled=progress)
    source_cas = reader.header.get("cas", 0)
    if not isinstance(source_cas, int):
        raise DumpError("corrupt", f"{name}: header cas {source_cas!r} is not a number")
    for block in reader.blocks():
        restorer.apply(block, source_cas)
        meter.step(len(block))
    meter.done()
    restorer.result.seconds = time.monotonic() - start
    return restorer.result
