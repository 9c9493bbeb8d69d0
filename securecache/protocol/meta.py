"""memcached's meta commands (mg ms md ma mn me), sans-IO.

How this works: meta commands share the text protocol's connection and
framing, so this module only supplies what is meta-specific:

* ``READERS`` maps a command word to ``reader(codec, tokens)``, the calling
  convention of ``text.READERS``: it returns a typed request from
  ``events``, or a ``text._Block`` for ``ms`` (which waits for a data block),
  or raises ``ProtocolError`` carrying memcached's exact error reply.
  Flags are checked by a table-driven pre-parse that reproduces
  memcached 1.6.18's rules and wording (duplicate and unknown flags, bad
  numeric tokens, base64 keys, the last error wins, ``ms`` swallows its data
  block after an error found once the length is known).
* Every request carries a ``MetaTag``: the command, the decoded key, the
  flag tokens in request order (return flags are rendered in that order),
  quiet mode and the clock used for TTLs. The engine never reads it.
* ``render(request, reply)`` turns the engine's reply into HD/VA/EN/NF/NS/
  EX/MN/ME lines, echoing ``O`` opaques and ``k`` keys and applying ``q``
  (mg hides EN; ms and md hide HD; ma hides HD and VA; errors always show).
* ``MetaCodec`` is a meta-only connection codec (receive_data / next_event /
  send) built on ``text.TextCodec``'s framing; the text codec serves meta
  commands itself once its READERS include ours (see the lead's wiring).

A flag memcached accepts but the engine could not honour would be refused
with the error an older memcached gives for a flag it does not know
(``UNSUPPORTED``, empty today); return flags the engine has no data for
are left out rather than invented. ``E`` (explicit new CAS, memcached >=
1.6.21) is accepted on ms only. Keys follow the text protocol's rule
(control bytes other than space and LF are key bytes); an ``ms`` value over
the item size limit becomes an ``Oversized`` request (memcached drops the
old item whatever the mode); ``me`` does not count as a fetch.

This module imports nothing of ours but ``events``, ``numbers`` and
``text``; ``text`` is imported at the bottom so that either module may be
imported first.
"""

from __future__ import annotations

import binascii
import time
from dataclasses import dataclass
from typing import Callable

from . import events as ev
from .events import ProtocolError
from .numbers import SIGNED, strtoull, uint32

__all__ = ["MetaCodec", "MetaTag", "NEED_DATA", "READERS", "UNSUPPORTED",
           "is_meta", "render"]

KEY_MAX = 250
OPAQUE_MAX = 32               # the whole token, 'O' included
MAX_TOKENS = 19               # command + key (+ datalen) + flags, split
INT_MAX = (1 << 31) - 1

ERROR = b"ERROR\r\n"
BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_TOKEN = b"CLIENT_ERROR bad token in command line format\r\n"
INVALID_FLAG = b"CLIENT_ERROR invalid flag\r\n"
DUPLICATE_FLAG = b"CLIENT_ERROR duplicate flag\r\n"
INVALID_OR_DUPLICATE = b"CLIENT_ERROR invalid or duplicate flag\r\n"
BAD_KEY = b"CLIENT_ERROR error decoding key\r\n"
OPAQUE_TOO_LONG = b"CLIENT_ERROR opaque token too long\r\n"
MG_TOO_MANY = b"CLIENT_ERROR options flags are too long\r\n"
TOO_MANY = b"CLIENT_ERROR options flags too long\r\n"
BAD_M_LENGTH = b"CLIENT_ERROR incorrect length for M token\r\n"
BAD_MS_MODE = b"CLIENT_ERROR invalid mode for ms M token\r\n"
BAD_MA_MODE = b"CLIENT_ERROR invalid mode for ma M token\r\n"
BAD_INITIAL = b"CLIENT_ERROR invalid numeric initial value\r\n"
BAD_DELTA = b"CLIENT_ERROR invalid numeric delta value\r\n"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
DENIED = b"CLIENT_ERROR access denied\r\n"



@dataclass(slots=True)
class MetaTag:
    """What a meta request needs to render its reply (codec-private)."""

    command: bytes
    key: bytes
    flags: tuple[bytes, ...]
    quiet: bool = False
    base64: bool = False
    clock: Callable[[], float] = time.time


# ------------------------------------------------------------ flag parsing
def _strtol(arg: bytes) -> int | None:
    if not SIGNED.match(arg):
        return None
    value = int(arg)
    return value if -INT_MAX - 1 <= value <= INT_MAX else None


# Explicit cas values (``E``) are bounded so that the daemon's cas counter,
# which later cas values must exceed, can never reach 2^64 (issue 9).
MAX_EXPLICIT_CAS = 2**63 - 1


def _explicit_cas(arg: bytes) -> int | None:
    value = strtoull(arg)
    return value if value is not None and value <= MAX_EXPLICIT_CAS else None


def _mode(arg: bytes) -> int | None:
    return arg[0] if len(arg) == 1 else None


KEEP = b""   # a failing flag that leaves the previous error message in place

# flag -> (argument parser, error message when it fails)
FLAG_ARGS: dict[int, tuple[Callable[[bytes], object], bytes]] = {
    ord("N"): (_strtol, BAD_TOKEN),
    ord("T"): (_strtol, BAD_TOKEN),
    ord("R"): (_strtol, BAD_TOKEN),
    ord("F"): (uint32, KEEP),
    ord("C"): (strtoull, BAD_TOKEN),
    ord("E"): (_explicit_cas, BAD_TOKEN),
    ord("M"): (_mode, BAD_M_LENGTH),
    ord("J"): (strtoull, BAD_INITIAL),
    ord("D"): (strtoull, BAD_DELTA),
}
COMMON_FLAGS = frozenset(b"bNTRlOPLkstcfvhuqFCMJDI")
KNOWN_FLAGS = {b"mg": COMMON_FLAGS, b"ms": COMMON_FLAGS | {ord("E")},
               b"md": COMMON_FLAGS, b"ma": COMMON_FLAGS}
# accepted by memcached, not (yet) by the engine: refused, never faked
UNSUPPORTED = {b"mg": frozenset(), b"ms": frozenset(),
               b"md": frozenset(), b"ma": frozenset()}
# md and ma answer every pre-parse failure with one message
FLAG_ERROR = {b"md": INVALID_OR_DUPLICATE, b"ma": INVALID_OR_DUPLICATE}


def _decode_key(key: bytes) -> bytes | None:
    if len(key) % 4:
        return None
    try:
        decoded = binascii.a2b_base64(key, strict_mode=True)
    except binascii.Error:
        return None
    return decoded or None


def _preparse(command: bytes, key: bytes, tokens: list[bytes]):
    """Flags as ``{flag: value}`` plus the (decoded) key, as memcached does."""
    values: dict[int, object] = {}
    known = KNOWN_FLAGS[command]
    failed, message = False, BAD_FORMAT
    for token in tokens:
        flag = token[0]
        if flag in values or flag >= 127:
            raise ProtocolError(FLAG_ERROR.get(command, DUPLICATE_FLAG))
        if flag not in known:
            raise ProtocolError(FLAG_ERROR.get(command, INVALID_FLAG))
        if flag == ord("b"):
            key, error = _decode_key(key), BAD_KEY
            values[flag] = key is not None
        else:
            parse, error = FLAG_ARGS.get(flag, (None, KEEP))
            values[flag] = parse(token[1:]) if parse else True
        if values[flag] is None or values[flag] is False:
            failed, message = True, error or message
    if failed:
        raise ProtocolError(FLAG_ERROR.get(command, message))
    if UNSUPPORTED[command].intersection(values):
        raise ProtocolError(FLAG_ERROR.get(command, INVALID_FLAG))
    return values, key


def _check_opaque(tokens: list[bytes]) -> None:
    if any(t[0] == ord("O") and len(t) > OPAQUE_MAX for t in tokens):
        raise ProtocolError(OPAQUE_TOO_LONG)


def _head(tokens: list[bytes], too_many: bytes) -> bytes:
    if len(tokens) < 2:
        raise ProtocolError(ERROR)
    if len(tokens[1]) > KEY_MAX:
        raise ProtocolError(BAD_FORMAT)
    if len(tokens) > MAX_TOKENS:
        raise ProtocolError(too_many)
    return tokens[1]


def _parse(codec, command: bytes, key: bytes, flags: list[bytes]):
    values, key = _preparse(command, key, flags)
    binary = ord("b") in values
    if not binary and not _text.valid_key(key):
        raise ProtocolError(BAD_FORMAT)
    tag = MetaTag(command, key, tuple(flags), ord("q") in values, binary,
                  getattr(codec, "clock", time.time))
    return values, tag


# ----------------------------------------------------------------- readers
def _read_mg(codec, tokens):
    key = _head(tokens, MG_TOO_MANY)
    values, tag = _parse(codec, b"mg", key, tokens[2:])
    _check_opaque(tokens[2:])
    return ev.Get([tag.key], touch=values.get(ord("T")),
                  value=ord("v") in values, vivify=values.get(ord("N")),
                  recache=values.get(ord("R")), bump=ord("u") not in values,
                  tag=tag)


MS_MODES = {ord("S"): ev.StoreMode.SET, ord("E"): ev.StoreMode.ADD,
            ord("A"): ev.StoreMode.APPEND, ord("P"): ev.StoreMode.PREPEND,
            ord("R"): ev.StoreMode.REPLACE}
CAS_MODES = {ev.StoreMode.SET: ev.StoreMode.CAS,
             ev.StoreMode.REPLACE: ev.StoreMode.CAS}


def _read_ms(codec, tokens):
    key = _head(tokens, TOO_MANY)
    length = _strtol(tokens[2]) if len(tokens) > 2 else None
    if length is None or not 0 <= length <= INT_MAX - 2:
        raise ProtocolError(BAD_FORMAT)
    try:
        values, tag = _parse(codec, b"ms", key, tokens[3:])
        _check_opaque(tokens[3:])
        mode = MS_MODES.get(values.get(ord("M"), ord("S")))
        if mode is None:
            raise ProtocolError(BAD_MS_MODE)
    except ProtocolError:
        codec._pending = _text._Swallow(length + 2)
        raise
    if length > codec.max_item_size:
        codec._pending = _text._Swallow(length + 2)
        # memcached drops the item whatever the ms mode
        return ev.Oversized(tag.key, drop=True, tag=tag)
    return _text._Block(length, _store_builder(values, tag, mode), False)


def _store_builder(values: dict, tag: MetaTag, mode: ev.StoreMode):
    cas = values.get(ord("C"))
    if cas is not None:
        mode = CAS_MODES.get(mode, mode)
    if mode is ev.StoreMode.ADD:
        cas = None                      # memcached: add ignores C

    def finish(data: bytes) -> ev.Store:
        return ev.Store(mode, tag.key, values.get(ord("F"), 0),
                        values.get(ord("T"), 0), data, cas=cas or 0,
                        new_cas=values.get(ord("E"), 0),
                        invalidate=mode is ev.StoreMode.CAS
                        and ord("I") in values, tag=tag)
    return finish


def _read_md(codec, tokens):
    key = _head(tokens, TOO_MANY)
    values, tag = _parse(codec, b"md", key, tokens[2:])
    _check_opaque(tokens[2:])
    return ev.Delete(tag.key, cas=values.get(ord("C"), 0),
                     invalidate=ord("I") in values,
                     exptime=values.get(ord("T")), tag=tag)


MA_MODES = {ord("I"): True, ord("+"): True, ord("D"): False, ord("-"): False}


def _read_ma(codec, tokens):
    key = _head(tokens, TOO_MANY)
    values, tag = _parse(codec, b"ma", key, tokens[2:])
    incr = MA_MODES.get(values.get(ord("M"), ord("I")))
    if incr is None:
        raise ProtocolError(BAD_MA_MODE)
    _check_opaque(tokens[2:])
    vivify = values.get(ord("N"))
    initial = None if vivify is None else values.get(ord("J"), 0)
    return ev.Arith(tag.key, values.get(ord("D"), 1), incr=incr,
                    initial=initial, exptime=vivify or 0,
                    cas=values.get(ord("C"), 0), touch=values.get(ord("T")),
                    tag=tag)


def _read_me(codec, tokens):
    if len(tokens) < 2 or len(tokens[1]) > KEY_MAX:
        raise ProtocolError(BAD_FORMAT)
    key, binary = tokens[1], len(tokens) > 2 and tokens[2] == b"b"
    if binary:
        key = _decode_key(key)
    if key is None or not (binary or _text.valid_key(key)):
        raise ProtocolError(BAD_FORMAT)
    tag = MetaTag(b"me", key, (), False, binary,
                  getattr(codec, "clock", time.time))
    return ev.Get([key], value=False, bump=False, tag=tag)  # me: not a fetch


def _read_mn(codec, tokens):
    return ev.Noop(tag=MetaTag(b"mn", b"", ()))


READERS: dict[bytes, Callable] = {
    b"mg": _read_mg, b"ms": _read_ms, b"md": _read_md,
    b"ma": _read_ma, b"me": _read_me, b"mn": _read_mn,
}


# --------------------------------------------------------------- rendering
@dataclass(slots=True)
class _Facts:
    """What return flags may report; None means "unknown, leave it out"."""

    key: bytes
    cas: int | None = None
    flags: int | None = None
    size: int | None = None
    ttl: int | None = None
    hit: int | None = None
    idle: int | None = None


def _ttl(exptime: int | None, clock: Callable[[], float]) -> int | None:
    if exptime is None:
        return None
    return -1 if exptime == 0 else max(exptime - int(clock()), 0)


def _wire_key(tag: MetaTag) -> bytes:
    """The key as the client wrote it (base64 again if it came so)."""
    if tag.base64:
        return binascii.b2a_base64(tag.key, newline=False)
    return tag.key


def _key_token(tag: MetaTag) -> bytes:
    return b"k" + _wire_key(tag) + (b" b" if tag.base64 else b"")


def _item_facts(item: ev.Item, tag: MetaTag) -> _Facts:
    size = item.size if item.value is None else len(item.value)
    fetched = getattr(item, "fetched", None)
    last = getattr(item, "last_access", None)
    return _Facts(_key_token(tag), item.cas, item.flags, size,
                  _ttl(item.exptime, tag.clock),
                  None if fetched is None else int(bool(fetched)),
                  None if last is None else max(int(tag.clock()) - last, 0))


RETURN_FLAGS: dict[int, Callable[[bytes, _Facts], bytes | None]] = {
    ord("O"): lambda token, f: token,
    ord("k"): lambda token, f: f.key,
    ord("c"): lambda token, f: None if f.cas is None else b"c%d" % f.cas,
    ord("f"): lambda token, f: None if f.flags is None else b"f%d" % f.flags,
    ord("s"): lambda token, f: None if f.size is None else b"s%d" % f.size,
    ord("t"): lambda token, f: None if f.ttl is None else b"t%d" % f.ttl,
    ord("h"): lambda token, f: None if f.hit is None else b"h%d" % f.hit,
    ord("l"): lambda token, f: None if f.idle is None else b"l%d" % f.idle,
}


def _line(code: bytes, tag: MetaTag, allowed: bytes, facts: _Facts,
          states: tuple[bytes, ...] = ()) -> bytes:
    parts = [code]
    for token in tag.flags:
        if token[0] in allowed:
            piece = RETURN_FLAGS[token[0]](token, facts)
            if piece is not None:
                parts.append(piece)
    return b" ".join(parts + list(states)) + b"\r\n"


def _states(item: ev.Item) -> tuple[bytes, ...]:
    """Z (token already sent), X (stale), W (you win: recache), in the
    order memcached prints them."""
    return tuple(flag for flag, on in ((b"Z", item.token_sent),
                                       (b"X", item.stale), (b"W", item.won))
                 if on)


STATUS_CODES = {
    ev.Status.STORED: b"HD", ev.Status.DELETED: b"HD",
    ev.Status.TOUCHED: b"HD", ev.Status.OK: b"HD",
    ev.Status.NOT_STORED: b"NS", ev.Status.EXISTS: b"EX",
    ev.Status.NOT_FOUND: b"NF", ev.Status.NOOP: b"MN",
}
# (command, reply code) pairs that quiet mode hides
QUIET = frozenset({(b"mg", b"EN"), (b"ms", b"HD"), (b"md", b"HD"),
                   (b"ma", b"HD"), (b"ma", b"VA")})


def _quiet(tag: MetaTag, code: bytes, rendered: bytes) -> bytes:
    return b"" if tag.quiet and (tag.command, code) in QUIET else rendered


# return flags each command echoes on a status line
STATUS_FLAGS = {b"ms": b"Okc", b"md": b"Ok", b"ma": b"Ok", b"mg": b"Ok"}


def _render_status(request, reply: ev.Status, tag: MetaTag) -> bytes:
    code = STATUS_CODES[reply]
    failed = code not in (b"HD", b"MN")
    # memcached reports c0 when a store fails; a new cas is not in Status
    facts = _Facts(_key_token(tag), cas=0 if failed else None)
    allowed = STATUS_FLAGS.get(tag.command, b"")
    return _quiet(tag, code, _line(code, tag, allowed, facts))


def _render_done(request, reply: ev.Done, tag: MetaTag) -> bytes:
    code = STATUS_CODES[reply.status]
    facts = _Facts(_key_token(tag), cas=reply.cas)
    allowed = STATUS_FLAGS.get(tag.command, b"")
    return _quiet(tag, code, _line(code, tag, allowed, facts))


def _render_values(request, reply: ev.Values, tag: MetaTag) -> bytes:
    if tag.command == b"me":
        return _render_debug(reply, tag)
    if not reply.items:
        return _quiet(tag, b"EN", _line(b"EN", tag, b"Ok", _Facts(
            _key_token(tag))))
    item = reply.items[0]
    facts = _item_facts(item, tag)
    states = _states(item)
    if item.value is None or not request.value:
        return _line(b"HD", tag, b"stcfhlOk", facts, states)
    head = _line(b"VA %d" % len(item.value), tag, b"stcfhlOk", facts, states)
    return head + item.value + b"\r\n"


def _render_debug(reply: ev.Values, tag: MetaTag) -> bytes:
    if not reply.items:
        return b"EN\r\n"
    item = reply.items[0]
    key = _wire_key(tag)
    # memcached prints exp as (now - exptime): negative while the item lives
    exp = -1 if item.exptime == 0 else int(tag.clock()) - item.exptime
    fields = [b"exp=%d" % exp]
    facts = _item_facts(item, tag)
    if facts.idle is not None:
        fields.append(b"la=%d" % facts.idle)
    fields.append(b"cas=%d" % item.cas)
    if facts.hit is not None:
        fields.append(b"fetch=%s" % (b"yes" if facts.hit else b"no"))
    fields.append(b"cls=1 size=%d" % item.size)
    return b"ME %s %s\r\n" % (key, b" ".join(fields))


def _render_number(request, reply: ev.Number, tag: MetaTag) -> bytes:
    digits = b"%d" % reply.value
    ttl = _ttl(getattr(reply, "exptime", None), tag.clock)
    if ttl is None and reply.created:
        ttl = _ttl(_absolute(request.exptime, tag.clock), tag.clock)
    facts = _Facts(_key_token(tag), cas=reply.cas, ttl=ttl)
    # memcached 1.6 answers an auto-created item even in quiet mode
    quiet = _quiet if not reply.created else lambda tag, code, out: out
    if not any(t[0] == ord("v") for t in tag.flags):
        return quiet(tag, b"HD", _line(b"HD", tag, b"ctOk", facts))
    head = _line(b"VA %d" % len(digits), tag, b"ctOk", facts)
    return quiet(tag, b"VA", head + digits + b"\r\n")


def _absolute(exptime: int, clock: Callable[[], float]) -> int:
    """memcached's rule: 0 never, <= 30 days relative, else absolute."""
    if exptime == 0:
        return 0
    if 0 < exptime <= 60 * 60 * 24 * 30:
        return int(clock()) + exptime
    return exptime


REPLY_WRITERS: dict[type, Callable] = {
    ev.Status: _render_status,
    ev.Done: _render_done,
    ev.Values: _render_values,
    ev.Number: _render_number,
    ev.Denied: lambda request, reply, tag: DENIED,
    ev.AuthFailed: lambda request, reply, tag:
        b"CLIENT_ERROR authentication failure\r\n",
    ev.ServerError: lambda request, reply, tag:
        b"SERVER_ERROR %s\r\n" % reply.message.encode(),
    ev.ClientError: lambda request, reply, tag:
        b"CLIENT_ERROR %s\r\n" % reply.message.encode(),
    ev.Close: lambda request, reply, tag: b"",
    ev.TooLarge: lambda request, reply, tag: TOO_LARGE,
}


def render(request, reply) -> bytes:
    """The bytes that answer the meta ``request`` with ``reply``."""
    return REPLY_WRITERS[type(reply)](request, reply, request.tag)


def is_meta(request) -> bool:
    """True when ``request`` came from this module (its tag is a MetaTag)."""
    return isinstance(getattr(request, "tag", None), MetaTag)


# Imported last: text may import this module while it is half-initialised.
from . import text as _text  # noqa: E402

NEED_DATA = _text.NEED_DATA


class MetaCodec(_text.TextCodec):
    """A connection that speaks meta commands only (others get ERROR).

    Same API as ``TextCodec``: ``receive_data``, ``next_event`` (a request,
    ``NEED_DATA``, or ``ProtocolError``) and ``send(request, reply)``.
    ``clock`` gives the current unix time for TTL flags.
    """

    def __init__(self, max_item_size: int = 1 << 20,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(max_item_size)
        self.clock = clock

    def _next_line(self):
        end = self._buffer.find(b"\n")
        if end < 0:
            self._check_unterminated()
            return NEED_DATA
        line = bytes(self._buffer[:end]).removesuffix(b"\r")
        del self._buffer[:end + 1]
        if len(line) > _text.MAX_LINE:
            self._close(_text.LINE_TOO_LONG)
        tokens = _text.tokens_of(line)
        reader = READERS.get(tokens[0]) if tokens else None
        if reader is None:
            raise ProtocolError(ERROR)
        result = reader(self, tokens)
        if isinstance(result, _text._Block):
            self._pending = result
            return self.next_event()
        return result

    def send(self, request, reply) -> bytes:
        """The bytes that answer ``request`` with ``reply``."""
        return render(request, reply)
