"""Typed requests and replies shared by every wire protocol.

How this works: a codec (text, meta, binary) turns bytes into one of the
request classes below and turns a reply (also below) back into bytes. The
engine only ever sees these objects, so every permission check and storage
rule applies the same way whatever the client spoke. A request carries a
``tag`` that belongs to its codec alone (noreply, opaque, meta flags, binary
opcode): the engine never reads it and hands it back untouched in the reply
rendering step, ``codec.send(request, reply)``.

This module imports nothing of ours.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


NEED_DATA = object()
"""Returned by a codec's ``next_event`` when more bytes are needed."""


class StoreMode(enum.Enum):
    """How a store request treats an existing (or missing) item."""

    SET = "set"
    ADD = "add"
    REPLACE = "replace"
    APPEND = "append"
    PREPEND = "prepend"
    CAS = "cas"

    # Members are singletons: hashed by identity, in C (Enum's own
    # __hash__ is Python code, met by every table keyed by a member).
    __hash__ = object.__hash__


# ---------------------------------------------------------------- requests


@dataclass(slots=True)
class Get:
    """Fetch items: get, gets, gat, gats, mg, binary GET*/GAT*.

    ``value`` False asks for metadata only (``kv_item:getattr``), ``touch``
    (an exptime as sent by the client) also updates the expiry (gat).
    ``vivify`` creates a missing item empty (``kv_item:create``) and hands
    this client the recache token; ``recache`` hands it out when the item's
    remaining TTL is below the value (meta's anti-dogpiling).
    """

    keys: list[bytes]
    touch: int | None = None
    value: bool = True
    vivify: int | None = None       # meta N: create on miss with this TTL
    recache: int | None = None      # meta R: win a recache below this TTL
    bump: bool = True               # meta u off: do not count as a fetch
    history: bool = True            # report fetched-before and last access
    tag: Any = None
    start: int = 0                  # keys before it are answered (a slice)


@dataclass(slots=True)
class Store:
    """set, add, replace, append, prepend, cas (and ms, binary SET*...).

    ``cas`` is the compare value (0: no compare; the CAS mode requires one).
    ``new_cas`` asks for an explicit cas on the stored item (meta ``E``).
    ``invalidate`` (meta ``I``) stores over a stale item regardless of cas.
    """

    mode: StoreMode
    key: bytes
    flags: int
    exptime: int
    value: bytes
    cas: int = 0
    new_cas: int = 0
    invalidate: bool = False
    tag: Any = None


@dataclass(slots=True)
class Oversized:
    """A store whose value is over ``-I``: refused, its data swallowed.

    memcached also removes the item a ``set`` (any ``ms``, binary SET)
    would have overwritten, so that a stale value is not served after a
    failed overwrite; ``drop`` says whether this request does that.
    """

    key: bytes
    drop: bool = True
    tag: Any = None


@dataclass(slots=True)
class Delete:
    """delete, md, binary DELETE; ``cas`` non-zero makes it conditional."""

    key: bytes
    cas: int = 0
    invalidate: bool = False        # meta I: mark stale instead of removing
    exptime: int | None = None      # meta T with I: the stale item's TTL
    tag: Any = None


@dataclass(slots=True)
class Arith:
    """incr, decr, ma, binary INCREMENT/DECREMENT.

    ``initial`` not None auto-creates a missing item with that value and
    ``exptime`` (meta ``N``, binary initial value); creating needs
    ``kv_item:create``.
    """

    key: bytes
    delta: int
    incr: bool = True
    initial: int | None = None
    exptime: int = 0
    cas: int = 0
    touch: int | None = None        # meta T: also update the TTL
    tag: Any = None


@dataclass(slots=True)
class Touch:
    """touch, binary TOUCH: set a new exptime (``kv_item:setattr``)."""

    key: bytes
    exptime: int
    tag: Any = None


@dataclass(slots=True)
class FlushAll:
    """flush_all [delay]: ``kv_cache:flush`` then every removable item."""

    delay: int = 0
    tag: Any = None


@dataclass(slots=True)
class Stats:
    """stats [group]: ``kv_cache:getattr``; ``reset`` needs ``setattr``."""

    group: str = ""
    tag: Any = None


@dataclass(slots=True)
class Version:
    tag: Any = None


@dataclass(slots=True)
class Verbosity:
    """verbosity N: ``kv_cache:setattr``."""

    level: int
    tag: Any = None


@dataclass(slots=True)
class Noop:
    """mn, binary NOOP: answers in order, touches nothing."""

    tag: Any = None


@dataclass(slots=True)
class Quit:
    tag: Any = None


@dataclass(slots=True)
class Shutdown:
    """shutdown [graceful]: needs the server option and ``kv_cache:setattr``."""

    graceful: bool = False
    valid: bool = True              # the mode was "" or "graceful"
    tag: Any = None


@dataclass(slots=True)
class CacheDump:
    """stats cachedump CLASS LIMIT: keys the client may ``getattr``
    (every item is in class 1; ``limit`` 0 lists them all)."""

    slab_class: int
    limit: int
    tag: Any = None
    after: bytes | None = None    # a later slice: go on after this key
    size: int = 0                 # bytes listed by the earlier slices


@dataclass(slots=True)
class MemLimit:
    """cache_memlimit MEGABYTES: the ``-m`` limit at run time
    (``kv_cache:setattr``)."""

    megabytes: int
    tag: Any = None


@dataclass(slots=True)
class Detail:
    """stats detail on|off|dump: per-prefix counts (``on``/``off`` need
    ``kv_cache:setattr``, ``dump`` ``kv_cache:getattr``)."""

    action: str
    tag: Any = None


@dataclass(slots=True)
class Crawl:
    """lru_crawler crawl CLASSES|all: reclaim expired items now
    (``kv_cache:setattr``)."""

    tag: Any = None


@dataclass(slots=True)
class Tune:
    """A run-time setting: ``lru mode``, ``slabs automove``
    (``kv_cache:setattr``); shown in ``stats settings``."""

    name: str
    value: object
    tag: Any = None


@dataclass(slots=True)
class MetaDump:
    """lru_crawler metadump all|hash|CLASSES|PREFIX: keys the client may
    ``getattr``; ``classes`` (memcached's slab class list) without class 1,
    which holds every item, lists nothing."""

    prefix: bytes = b""
    classes: tuple[int, ...] | None = None
    tag: Any = None
    after: bytes | None = None    # a later slice: go on after this key


@dataclass(slots=True)
class Relabel:
    """relabel KEY CONTEXT: setattr+relabelfrom on old, relabelto on new."""

    key: bytes
    context: str
    tag: Any = None


@dataclass(slots=True)
class GetLabel:
    """getlabel KEY: ``kv_item:getattr``."""

    key: bytes
    tag: Any = None


@dataclass(slots=True)
class CreateLabel:
    """createlabel CONTEXT|default: label for this connection's new items."""

    context: str | None
    tag: Any = None


@dataclass(slots=True)
class WhoAmI:
    tag: Any = None


@dataclass(slots=True)
class Watch:
    """watch [fetchers] [mutations] [evictions]: the connection becomes a
    log stream of those events (``kv_cache:getattr``; each event only for
    items the watcher may ``getattr``)."""

    kinds: frozenset = frozenset(("fetchers",))
    tag: Any = None


@dataclass(slots=True)
class Mechanisms:
    """SASL LIST MECHS: which mechanisms the server offers (before login)."""

    tag: Any = None


@dataclass(slots=True)
class Authenticate:
    """A user name and password offered by the client (text auth, SASL)."""

    user: str
    password: bytes
    tag: Any = None


# ----------------------------------------------------------------- replies


@dataclass(slots=True)
class Item:
    """One item as seen by a client (a hit)."""

    key: bytes
    flags: int
    value: bytes | memoryview | None    # zero-copy: a view of the snapshot
    cas: int
    exptime: int = 0          # absolute unix seconds, 0 = never
    size: int = 0
    label: str | None = None
    fetched: bool | None = None       # fetched before this request
    last_access: int | None = None    # absolute unix seconds
    stale: bool = False               # meta X: invalidated (md I)
    won: bool = False                 # meta W: this client should recache
    token_sent: bool = False          # meta Z: another client was told so


@dataclass(slots=True)
class Values:
    """Hits of a Get, in request order; misses are simply absent."""

    items: list[Item] = field(default_factory=list)
    final: bool = True      # False: a slice; more hits of the Get follow


class Status(enum.Enum):
    """Outcomes that carry no data."""

    STORED = "STORED"
    NOT_STORED = "NOT_STORED"
    EXISTS = "EXISTS"
    NOT_FOUND = "NOT_FOUND"
    DELETED = "DELETED"
    TOUCHED = "TOUCHED"
    OK = "OK"
    RELABELED = "RELABELED"
    NOOP = "NOOP"
    AUTHENTICATED = "AUTHENTICATED"
    RESET = "RESET"

    __hash__ = object.__hash__      # by identity, as StoreMode


@dataclass(slots=True)
class Done:
    """A write that succeeded (store, touch): the item's new cas and flags.

    Text answers only the status word; meta's ``c`` flag and the binary
    header report the cas; binary TOUCH reports the flags.
    """

    status: Status
    cas: int = 0
    flags: int = 0


@dataclass(slots=True)
class Number:
    """The new value after incr/decr (and the cas of the item)."""

    value: int
    cas: int = 0
    created: bool = False
    exptime: int | None = None      # absolute, for meta t


@dataclass(slots=True)
class StatsReply:
    rows: list[tuple[str, object]]


@dataclass(slots=True)
class VersionReply:
    version: str


@dataclass(slots=True)
class Label:
    """getlabel / whoami answer."""

    context: str


@dataclass(slots=True)
class KeyList:
    """metadump lines, already filtered by the policy, in key order;
    ``more``: a slice, more lines follow (no END yet)."""

    items: list[Item]
    now: int = 0
    more: bool = False


@dataclass(slots=True)
class Dump:
    """stats cachedump lines: key, value length, absolute exptime (0: never);
    ``more``: a slice, more lines follow (no END yet)."""

    items: list[Item]
    more: bool = False


@dataclass(slots=True)
class DetailDump:
    """stats detail dump: (prefix, gets, hits, sets, deletes) rows."""

    rows: list[tuple[bytes, int, int, int, int]]

    def text(self) -> bytes:
        """memcached's dump text (binary STAT sends it as one value)."""
        lines = [b"PREFIX %s get %d hit %d set %d del %d\r\n" % row
                 for row in self.rows]
        return b"".join(lines) + b"END\r\n"


@dataclass(slots=True)
class TooLarge:
    """The value is over the item size limit (``-I``)."""


@dataclass(slots=True)
class Disabled:
    """A command the server was started without: ``shutdown`` (needs
    ``-A``), ``flush_all`` (``-F``), ``cachedump``/``metadump`` (``-X``)."""

    command: str


@dataclass(slots=True)
class Refused:
    """A setting refused with memcached's reason word and sentence
    (``MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m``)."""

    word: str
    message: str


@dataclass(slots=True)
class Denied:
    """An access denial (details go to the audit log, never here)."""


@dataclass(slots=True)
class AuthFailed:
    """Authentication failed or is required."""


@dataclass(slots=True)
class ServerError:
    """A storage or server-side failure, worded as memcached does."""

    message: str


@dataclass(slots=True)
class ClientError:
    """A request the engine refuses as malformed (e.g. incr on non-number)."""

    message: str


@dataclass(slots=True)
class Watching:
    """The connection now streams these kinds of events (memcached: OK)."""

    kinds: frozenset


@dataclass(slots=True)
class WatchEvent:
    """One line of a watch stream, as memcached's logger writes it:
    ``type`` (item_get, item_store, eviction), the key, then ``fields`` in
    memcached's order; ``ts`` and ``gid`` are set when it is sent."""

    type: str
    key: bytes
    fields: tuple
    ts: float = 0.0
    gid: int = 0


@dataclass(slots=True)
class More:
    """A long answer in slices (a scan of many items): ``part`` is sent
    now, and ``rest`` is the request that produces the next slice, run
    after the other clients had their turn."""

    part: Any
    rest: Any


@dataclass(slots=True)
class Close:
    """Answer nothing more and close the connection (quit)."""


Request = (Get | Store | Delete | Arith | Touch | FlushAll | Stats | Version
           | Verbosity | Noop | Quit | Shutdown | MetaDump | Relabel
           | GetLabel | CreateLabel | WhoAmI | Mechanisms | Authenticate
           | Watch
           | Oversized | CacheDump | MemLimit | Detail | Crawl | Tune)
Reply = (Values | Status | Done | Number | StatsReply | VersionReply | Label
         | KeyList | Dump | DetailDump | TooLarge | Disabled | Refused
         | Denied | AuthFailed | ServerError | ClientError | Close)


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow.

    ``reply`` is the exact error the server answers (already encoded by the
    codec that raised it); ``close`` says whether the connection must be
    closed afterwards, as memcached closes it.
    """

    def __init__(self, reply: bytes, *, close: bool = False) -> None:
        super().__init__(reply.decode("ascii", "replace").strip())
        self.reply = reply
        self.close = close
