"""memcached's operator commands on the text protocol, sans-IO.

How this works: readers with ``text.READERS``' calling convention
(``reader(codec, tokens)``) for ``cache_memlimit``, ``lru_crawler crawl |
metadump | sleep | tocrawl | enable | disable``, ``lru mode | tune |
temp_ttl``, ``slabs automove``, and the ``stats cachedump`` and
``stats detail`` forms that ``text``'s stats reader hands over
(``STATS_SPECIAL``). Each returns a typed request from ``events`` or raises
``ProtocolError`` with memcached 1.6.18's exact error for that command. The
slab class arguments follow memcached's rules (1..63); LMDB keeps every item
in class 1, which the engine applies.

This module imports nothing of ours but ``events`` and ``numbers``.
"""

from __future__ import annotations

from typing import Callable
from urllib.parse import quote_from_bytes

from . import events as ev
from .events import ProtocolError
from .numbers import U32, int32, strtod, strtoull, uint32

ERROR = b"ERROR\r\n"
BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_CLASS = b"BADCLASS invalid class id\r\n"
MAX_CLASSES = 64                       # memcached's slab class ids: 1..63
NOREPLY = 1                            # as text.NOREPLY
DETAIL_USAGE = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
SLEEP_MAX = 1_000_000                  # lru_crawler sleep: microseconds
TOO_LONG_SLEEP = b"CLIENT_ERROR sleep must be one second or less\r\n"
LRU_PCTS = b"ERROR hot and warm pcts must not exceed 80\r\n"
LRU_FACTORS = b"ERROR hot/warm age factors must be greater than 0\r\n"


def _read_memlimit(codec, tokens):
    """cache_memlimit MB [noreply]; a missing or signed number is ERROR."""
    if len(tokens) < 2 or not tokens[1].isdigit():
        raise ProtocolError(ERROR)
    noreply = NOREPLY if tokens[2:3] == [b"noreply"] else 0
    return ev.MemLimit(int(tokens[1]), tag=noreply)


def _read_lru_crawler(codec, tokens):
    """crawl CLASSES|all; metadump all|hash|CLASSES, or (ours) a prefix;
    the crawler's settings (sleep, tocrawl, enable, disable)."""
    setting = CRAWLER_SETTINGS.get((tokens[1:2] or [b""])[0])
    if setting is not None:
        return setting(tokens)
    if len(tokens) != 3 or tokens[1] not in (b"metadump", b"crawl"):
        raise ProtocolError(ERROR)
    argument = tokens[2]
    if argument in (b"all", b"hash"):
        classes = None
    elif tokens[1] == b"crawl" or argument[:1].isdigit():
        classes = _classes(argument)
    else:                                   # ours: a key prefix
        return ev.MetaDump(argument)
    if tokens[1] == b"crawl":
        return ev.Crawl()
    return ev.MetaDump(b"", classes)


def _crawler_number(tokens) -> int:
    """``lru_crawler sleep|tocrawl N``: memcached's unsigned number."""
    if len(tokens) != 3:
        raise ProtocolError(ERROR)
    value = strtoull(tokens[2])
    if value is None:
        raise ProtocolError(BAD_FORMAT)
    return value


def _crawler_sleep(tokens):
    sleep = _crawler_number(tokens)
    if sleep > SLEEP_MAX:
        raise ProtocolError(TOO_LONG_SLEEP)
    return ev.Tune("lru_crawler_sleep", sleep)


def _crawler_tocrawl(tokens):
    # memcached keeps it in 32 bits
    return ev.Tune("lru_crawler_tocrawl", _crawler_number(tokens) & U32)


def _crawler_switch(tokens):
    if len(tokens) != 2:
        raise ProtocolError(ERROR)
    return ev.Tune("lru_crawler", tokens[1] == b"enable")


CRAWLER_SETTINGS = {b"sleep": _crawler_sleep, b"tocrawl": _crawler_tocrawl,
                    b"enable": _crawler_switch, b"disable": _crawler_switch}


def _read_lru(codec, tokens):
    """lru mode flat|segmented; tune HOT WARM HOT_FACTOR WARM_FACTOR;
    temp_ttl TTL (memcached reads what follows no further)."""
    reader = LRU_SETTINGS.get(tokens[1]) if len(tokens) > 2 else None
    if reader is None:
        raise ProtocolError(ERROR)
    return reader(tokens)


def _lru_mode(tokens):
    if tokens[2] not in (b"flat", b"segmented"):
        raise ProtocolError(ERROR)
    return ev.Tune("lru_segmented", tokens[2] == b"segmented")


def _lru_tune(tokens):
    if len(tokens) < 6:
        raise ProtocolError(ERROR)
    values = tuple(read(token) for read, token in zip(
        (uint32, uint32, strtod, strtod), tokens[2:6]))
    if None in values:
        raise ProtocolError(ERROR)
    if values[0] + values[1] > 80:
        raise ProtocolError(LRU_PCTS)
    if values[2] <= 0 or values[3] <= 0:
        raise ProtocolError(LRU_FACTORS)
    return ev.Tune("lru_tune", values)


def _lru_temp_ttl(tokens):
    ttl = int32(tokens[2])              # negative: no temporary LRU
    if ttl is None:
        raise ProtocolError(ERROR)
    return ev.Tune("temp_ttl", ttl)


LRU_SETTINGS = {b"mode": _lru_mode, b"tune": _lru_tune,
                b"temp_ttl": _lru_temp_ttl}


def _read_slabs(codec, tokens):
    if len(tokens) < 3 or tokens[1] != b"automove":
        raise ProtocolError(ERROR)
    if not tokens[2].isdigit():
        raise ProtocolError(BAD_FORMAT)
    level = int(tokens[2])
    if level > 2:
        raise ProtocolError(ERROR)
    return ev.Tune("slab_automove", level)


def _classes(argument: bytes) -> tuple[int, ...]:
    """memcached's slab class list ``1,2,...``: each 1..63."""
    try:
        classes = tuple(int(part) for part in argument.split(b","))
    except ValueError:
        raise ProtocolError(BAD_CLASS) from None
    if not all(0 < number < MAX_CLASSES for number in classes):
        raise ProtocolError(BAD_CLASS)
    return classes


def _stats_cachedump(tokens):
    if len(tokens) < 4:
        raise ProtocolError(b"CLIENT_ERROR bad command line\r\n")
    if not (tokens[2].isdigit() and tokens[3].isdigit()):
        raise ProtocolError(BAD_FORMAT)
    slab_class = int(tokens[2])
    if slab_class >= MAX_CLASSES:
        raise ProtocolError(b"CLIENT_ERROR Illegal slab id\r\n")
    return ev.CacheDump(slab_class, int(tokens[3]))


def _stats_detail(tokens):
    if len(tokens) < 3 or tokens[2] not in (b"on", b"off", b"dump"):
        raise ProtocolError(DETAIL_USAGE)
    return ev.Detail(tokens[2].decode())


WATCH_KINDS = frozenset((b"fetchers", b"mutations", b"evictions"))


def _read_watch(codec, tokens):
    """watch [fetchers|mutations|evictions]...: fetchers when none is named,
    as memcached; a kind this daemon does not log is ERROR."""
    kinds = tokens[1:] or [b"fetchers"]
    if any(kind not in WATCH_KINDS for kind in kinds):
        raise ProtocolError(ERROR)
    return ev.Watch(frozenset(kind.decode() for kind in kinds))


def write_watch_event(event: ev.WatchEvent) -> bytes:
    """A watch line exactly as memcached's logger prints it (the key
    URL-encoded, microseconds unpadded)."""
    seconds = int(event.ts)
    fields = b" ".join(b"%s=%s" % (name.encode(), str(value).encode())
                       for name, value in event.fields)
    return b"ts=%d.%d gid=%d type=%s key=%s %s\n" % (
        seconds, int((event.ts - seconds) * 1e6), event.gid,
        event.type.encode(), quote_from_bytes(event.key, safe=b"").encode(),
        fields)


STATS_SPECIAL = {"cachedump": _stats_cachedump, "detail": _stats_detail}


READERS: dict[bytes, Callable] = {
    b"lru_crawler": _read_lru_crawler,
    b"lru": _read_lru,
    b"slabs": _read_slabs,
    b"cache_memlimit": _read_memlimit,
    b"watch": _read_watch,
}
