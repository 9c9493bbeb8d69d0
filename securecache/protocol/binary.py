"""memcached's binary protocol, sans-IO.

How this works: ``receive_data`` appends bytes; ``next_event`` reads a
24-byte request header, checks it against memcached 1.6.18's rules, waits
for the body and builds a typed request from ``events`` with the opcode's
builder in ``OPCODES`` (a table: validity rule, builder, quiet and
with-key variants). Every request's ``tag`` is a ``BinTag`` (opcode,
opaque, requested cas) that ``send(request, reply)`` uses to render the
reply packet: the same opcode, the opaque echoed, the item's cas, quiet
variants silent on success (GETQ/GATQ also on a miss), errors always sent.

Bad input raises ``ProtocolError`` with the packet memcached answers,
measured against memcached 1.6.18: a bad magic closes silently; key plus
extras longer than the body answers 0x81 and closes; a key over 250 bytes
or extras/key/body lengths wrong for the opcode answer 0x04 and close; an
unknown opcode answers 0x81 and its body is skipped; a value over
``max_item_size`` answers 0x03 and its body is skipped (never buffered).
Any other body longer than ``max_body`` (max item size + header room)
answers 0x03 and closes. SASL LIST MECHS becomes ``Mechanisms`` (answered
"PLAIN") and AUTH/STEP with PLAIN ``Authenticate``; with SASL off (a
daemon without an auth file) the three are unknown opcodes, as in
memcached without ``-S``. A request refused for want of a login closes
the connection after its 0x20, as memcached's ``-S`` does.

This module imports nothing of ours but ``events``.
"""

from __future__ import annotations

import enum
import struct
from typing import Callable, NamedTuple

from . import events as ev
from .events import NEED_DATA, ProtocolError

__all__ = ["BinaryCodec", "BinTag", "NEED_DATA", "Op", "St", "is_binary",
           "packet"]

HEADER = struct.Struct(">BBHBBHIIQ")
REQUEST, RESPONSE = 0x80, 0x81
KEY_MAX = 250
HEADER_ROOM = KEY_MAX + 20            # longest key + longest extras
NO_CREATE = 0xFFFFFFFF                # incr/decr expiration: do not create
MECHANISMS = b"PLAIN"


def is_binary(first_byte: int | bytes) -> bool:
    """True when a connection's first byte starts a binary request."""
    if isinstance(first_byte, (bytes, bytearray)):
        first_byte = first_byte[0]
    return first_byte == REQUEST


class Op(enum.IntEnum):
    GET = 0x00
    SET = 0x01
    ADD = 0x02
    REPLACE = 0x03
    DELETE = 0x04
    INCREMENT = 0x05
    DECREMENT = 0x06
    QUIT = 0x07
    FLUSH = 0x08
    GETQ = 0x09
    NOOP = 0x0A
    VERSION = 0x0B
    GETK = 0x0C
    GETKQ = 0x0D
    APPEND = 0x0E
    PREPEND = 0x0F
    STAT = 0x10
    SETQ = 0x11
    ADDQ = 0x12
    REPLACEQ = 0x13
    DELETEQ = 0x14
    INCREMENTQ = 0x15
    DECREMENTQ = 0x16
    QUITQ = 0x17
    FLUSHQ = 0x18
    APPENDQ = 0x19
    PREPENDQ = 0x1A
    VERBOSITY = 0x1B
    TOUCH = 0x1C
    GAT = 0x1D
    GATQ = 0x1E
    SASL_LIST_MECHS = 0x20
    SASL_AUTH = 0x21
    SASL_STEP = 0x22
    GATK = 0x23
    GATKQ = 0x24


class St(enum.IntEnum):
    OK = 0x00
    KEY_ENOENT = 0x01
    KEY_EEXISTS = 0x02
    E2BIG = 0x03
    EINVAL = 0x04
    NOT_STORED = 0x05
    DELTA_BADVAL = 0x06
    AUTH_ERROR = 0x20
    AUTH_CONTINUE = 0x21
    EACCESS = 0x24
    UNKNOWN_COMMAND = 0x81
    ENOMEM = 0x82
    EINTERNAL = 0x84


ERROR_TEXT = {
    St.KEY_ENOENT: b"Not found", St.KEY_EEXISTS: b"Data exists for key.",
    St.E2BIG: b"Too large.", St.EINVAL: b"Invalid arguments",
    St.NOT_STORED: b"Not stored.",
    St.DELTA_BADVAL: b"Non-numeric server-side value for incr or decr",
    St.AUTH_ERROR: b"Auth failure.", St.EACCESS: b"Access denied",
    St.UNKNOWN_COMMAND: b"Unknown command", St.ENOMEM: b"Out of memory",
}


class BinTag(NamedTuple):
    """What a binary request needs to render its reply (codec-private)."""

    opcode: int
    opaque: int
    cas: int = 0


class Header(NamedTuple):
    magic: int
    opcode: int
    keylen: int
    extlen: int
    datatype: int
    vbucket: int
    bodylen: int
    opaque: int
    cas: int


def packet(opcode: int, status: int = 0, opaque: int = 0, cas: int = 0,
           extras: bytes = b"", key: bytes = b"", value: bytes = b"") -> bytes:
    """One response packet."""
    body = len(extras) + len(key) + len(value)
    return HEADER.pack(RESPONSE, opcode, len(key), len(extras), 0, status,
                       body, opaque, cas) + extras + key + value


def error_packet(tag: BinTag, status: int, text: bytes | None = None) -> bytes:
    """An error response as memcached words it."""
    return packet(tag.opcode, status, tag.opaque,
                  value=ERROR_TEXT.get(status, b"") if text is None else text)


# ------------------------------------------------------------ validity rules
RULES: dict[str, Callable[[Header], bool]] = {
    "key": lambda h: h.extlen == 0 and 0 < h.keylen == h.bodylen,
    "store": lambda h: h.extlen == 8 and h.keylen > 0,
    "concat": lambda h: h.extlen == 0 and h.keylen > 0,
    "arith": lambda h: h.extlen == 20 and 0 < h.keylen == h.bodylen - 20,
    "touch": lambda h: h.extlen == 4 and 0 < h.keylen == h.bodylen - 4,
    "empty": lambda h: h.extlen == h.keylen == h.bodylen == 0,
    "flush": lambda h: h.keylen == 0 and h.bodylen == h.extlen in (0, 4),
    "stat": lambda h: h.extlen == 0 and h.keylen == h.bodylen,
    "level": lambda h: h.extlen == 4 and h.keylen == 0 and h.bodylen == 4,
    "sasl": lambda h: h.extlen == 0 and h.keylen > 0,
}


# ---------------------------------------------------------------- builders
def _get(op, h, extras, key, value):
    return ev.Get([key], history=False)


def _gat(op, h, extras, key, value):
    return ev.Get([key], touch=struct.unpack(">I", extras)[0], history=False)


def _touch(op, h, extras, key, value):
    return ev.Touch(key, struct.unpack(">I", extras)[0])


STORE_MODES = {Op.SET: ev.StoreMode.SET, Op.ADD: ev.StoreMode.ADD,
               Op.REPLACE: ev.StoreMode.REPLACE,
               Op.APPEND: ev.StoreMode.APPEND,
               Op.PREPEND: ev.StoreMode.PREPEND}


def _store(op, h, extras, key, value):
    flags, exptime = struct.unpack(">II", extras)
    mode = ev.StoreMode.CAS if h.cas else STORE_MODES[op]   # as memcached
    return ev.Store(mode, key, flags, exptime, value, cas=h.cas)


def _concat(op, h, extras, key, value):
    return ev.Store(STORE_MODES[op], key, 0, 0, value, cas=h.cas)


def _delete(op, h, extras, key, value):
    return ev.Delete(key, cas=h.cas)


def _arith(op, h, extras, key, value):
    delta, initial, exptime = struct.unpack(">QQI", extras)
    return ev.Arith(key, delta, incr=op == Op.INCREMENT,
                    initial=None if exptime == NO_CREATE else initial,
                    exptime=exptime, cas=h.cas)


def _flush(op, h, extras, key, value):
    return ev.FlushAll(struct.unpack(">I", extras)[0] if extras else 0)


STAT_GROUPS = frozenset((b"", b"settings", b"items", b"slabs", b"reset",
                         b"sizes"))
DETAIL = {b"detail on": "on", b"detail off": "off", b"detail dump": "dump"}


def _stat(op, h, extras, key, value):
    if key in DETAIL:
        return ev.Detail(DETAIL[key])
    if key not in STAT_GROUPS:
        raise ProtocolError(error_packet(_tag(op, h), St.KEY_ENOENT))
    return ev.Stats(key.decode("ascii"))


def _sasl_auth(op, h, extras, key, value):
    """PLAIN: ``authzid NUL authcid NUL password`` (RFC 4616)."""
    parts = value.split(b"\0")
    if key != MECHANISMS or len(parts) != 3 or parts[0] not in (b"", parts[1]):
        raise ProtocolError(error_packet(_tag(op, h), St.AUTH_ERROR))
    try:
        user = parts[1].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(error_packet(_tag(op, h), St.AUTH_ERROR)) from None
    return ev.Authenticate(user, parts[2])


class Spec(NamedTuple):
    base: Op                      # the non-quiet opcode
    rule: str                     # key into RULES
    build: Callable
    quiet: bool = False


def _specs() -> dict[int, Spec]:
    plain = {
        Op.GET: ("key", _get), Op.GETK: ("key", _get),
        Op.GAT: ("touch", _gat), Op.GATK: ("touch", _gat),
        Op.SET: ("store", _store), Op.ADD: ("store", _store),
        Op.REPLACE: ("store", _store), Op.APPEND: ("concat", _concat),
        Op.PREPEND: ("concat", _concat), Op.DELETE: ("key", _delete),
        Op.INCREMENT: ("arith", _arith), Op.DECREMENT: ("arith", _arith),
        Op.QUIT: ("empty", lambda *a: ev.Quit()),
        Op.FLUSH: ("flush", _flush),
    }
    quiet = {Op.GETQ: Op.GET, Op.GETKQ: Op.GETK, Op.GATQ: Op.GAT,
             Op.GATKQ: Op.GATK, Op.SETQ: Op.SET, Op.ADDQ: Op.ADD,
             Op.REPLACEQ: Op.REPLACE, Op.APPENDQ: Op.APPEND,
             Op.PREPENDQ: Op.PREPEND, Op.DELETEQ: Op.DELETE,
             Op.INCREMENTQ: Op.INCREMENT, Op.DECREMENTQ: Op.DECREMENT,
             Op.QUITQ: Op.QUIT, Op.FLUSHQ: Op.FLUSH}
    other = {
        Op.NOOP: ("empty", lambda *a: ev.Noop()),
        Op.VERSION: ("empty", lambda *a: ev.Version()),
        Op.STAT: ("stat", _stat), Op.TOUCH: ("touch", _touch),
        Op.VERBOSITY: ("level", lambda op, h, x, k, v: ev.Verbosity(
            struct.unpack(">I", x)[0])),
        Op.SASL_LIST_MECHS: ("empty", lambda *a: ev.Mechanisms()),
        Op.SASL_AUTH: ("sasl", _sasl_auth),
        Op.SASL_STEP: ("sasl", _sasl_auth),
    }
    specs = {op: Spec(op, *rule) for op, rule in {**plain, **other}.items()}
    specs.update({q: Spec(b, *plain[b], quiet=True) for q, b in quiet.items()})
    return specs


OPCODES: dict[int, Spec] = _specs()
SASL_OPS = frozenset((Op.SASL_LIST_MECHS, Op.SASL_AUTH, Op.SASL_STEP))
WITH_VALUE = frozenset((Op.SET, Op.ADD, Op.REPLACE, Op.APPEND, Op.PREPEND))
WITH_KEY = frozenset((Op.GETK, Op.GATK))


def _tag(op: int, h: Header) -> BinTag:
    return BinTag(op, h.opaque, h.cas)


class _Skip:
    """A body being discarded after an error (never buffered)."""

    __slots__ = ("remaining",)

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining


class BinaryCodec:
    """One connection's binary-protocol state (see the module docstring)."""

    def __init__(self, max_item_size: int = 1 << 20, *,
                 sasl: bool = True) -> None:
        """``sasl``: SASL's opcodes are requests (the daemon has users);
        without, they are unknown opcodes, as memcached's without -S."""
        self.max_item_size = max_item_size
        self.sasl = sasl
        self.max_body = max_item_size + HEADER_ROOM
        self._buffer = bytearray()
        self._header: Header | None = None
        self._skip: _Skip | None = None
        self._oversized = False
        self.closed = False
        self.must_close = False
        """Set by ``send`` when the reply it rendered ends the connection."""

    # ------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the peer."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed (for flow control)."""
        return len(self._buffer)

    def next_event(self):
        """The next request, ``NEED_DATA``, or raise ``ProtocolError``."""
        if self.closed:
            return NEED_DATA
        if self._skip is not None and not self._skipped():
            return NEED_DATA
        if self._header is None:
            if len(self._buffer) < HEADER.size:
                return NEED_DATA
            header = Header(*HEADER.unpack_from(self._buffer))
            del self._buffer[:HEADER.size]
            self._check(header)
            self._header = header
        return self._body()

    def _skipped(self) -> bool:
        taken = min(self._skip.remaining, len(self._buffer))
        del self._buffer[:taken]
        self._skip.remaining -= taken
        if self._skip.remaining:
            return False
        self._skip = None
        return True

    def _check(self, h: Header) -> None:
        tag = _tag(h.opcode, h)
        if h.magic != REQUEST:
            self._close(b"")
        if h.keylen + h.extlen > h.bodylen:
            self._close(error_packet(tag, St.UNKNOWN_COMMAND))
        if h.keylen > KEY_MAX:
            self._close(error_packet(tag, St.EINVAL))
        spec = OPCODES.get(h.opcode)
        if spec is None:
            self._fail_and_skip(h, error_packet(tag, St.UNKNOWN_COMMAND))
        if not RULES[spec.rule](h):
            self._close(error_packet(tag, St.EINVAL))
        if spec.base in WITH_VALUE and (
                h.bodylen - h.keylen - h.extlen > self.max_item_size):
            self._oversized = True      # read the key, skip the value
            return
        if h.bodylen > self.max_body:
            self._close(error_packet(tag, St.E2BIG))
        if h.opcode in SASL_OPS and not self.sasl:
            # checked as SASL, then unknown: memcached without -S
            self._fail_and_skip(h, error_packet(tag, St.UNKNOWN_COMMAND))

    def _fail_and_skip(self, h: Header, reply: bytes) -> None:
        self._skip = _Skip(h.bodylen)
        raise ProtocolError(reply)

    def _close(self, reply: bytes) -> None:
        self._buffer.clear()
        self.closed = True
        raise ProtocolError(reply, close=True)

    def _body(self):
        h = self._header
        if self._oversized:
            return self._oversized_body(h)
        if len(self._buffer) < h.bodylen:
            return NEED_DATA
        body = bytes(self._buffer[:h.bodylen])
        del self._buffer[:h.bodylen]
        self._header = None
        extras = body[:h.extlen]
        key = body[h.extlen:h.extlen + h.keylen]
        spec = OPCODES[h.opcode]
        request = spec.build(spec.base, h, extras, key, body[len(extras)
                                                             + len(key):])
        request.tag = _tag(h.opcode, h)
        return request

    def _oversized_body(self, h: Header):
        """A value over -I: the key is read, the value skipped unbuffered;
        memcached's SET (not SETQ, nor the other stores) also drops the
        item it would have replaced."""
        head = h.extlen + h.keylen
        if len(self._buffer) < head:
            return NEED_DATA
        key = bytes(self._buffer[h.extlen:head])
        del self._buffer[:head]
        self._header, self._oversized = None, False
        self._skip = _Skip(h.bodylen - head)
        return ev.Oversized(key, drop=h.opcode == Op.SET,
                            tag=_tag(h.opcode, h))

    # ----------------------------------------------------------- output
    def send(self, request, reply) -> bytes:
        """The bytes that answer ``request`` with ``reply``."""
        if isinstance(reply, ev.AuthFailed) and \
                not isinstance(request, ev.Authenticate):
            self.must_close = True      # unauthenticated: memcached closes
        return WRITERS[type(reply)](request, reply, request.tag)


# ----------------------------------------------------------------- writers
def _quiet(tag: BinTag) -> bool:
    return OPCODES[tag.opcode].quiet


def _success(tag: BinTag, **fields) -> bytes:
    return b"" if _quiet(tag) else packet(tag.opcode, 0, tag.opaque, **fields)


def _write_values(request, reply: ev.Values, tag: BinTag) -> bytes:
    base = OPCODES[tag.opcode].base
    if not reply.items:
        if _quiet(tag):
            return b""
        if base in WITH_KEY:
            return packet(tag.opcode, St.KEY_ENOENT, tag.opaque,
                          key=request.keys[0])
        return error_packet(tag, St.KEY_ENOENT)
    item = reply.items[0]
    return packet(tag.opcode, 0, tag.opaque, item.cas,
                  struct.pack(">I", item.flags),
                  item.key if base in WITH_KEY else b"", item.value or b"")


# Status -> binary status; NOT_STORED depends on the opcode, as memcached.
STATUS = {
    ev.Status.NOT_FOUND: St.KEY_ENOENT, ev.Status.EXISTS: St.KEY_EEXISTS,
    ev.Status.NOT_STORED: St.NOT_STORED,
}
NOT_STORED = {Op.ADD: St.KEY_EEXISTS, Op.REPLACE: St.KEY_ENOENT}
SUCCESS_BODY = {Op.SASL_LIST_MECHS: MECHANISMS, Op.SASL_AUTH: b"Authenticated",
                Op.SASL_STEP: b"Authenticated"}


def _write_status(request, reply: ev.Status, tag: BinTag) -> bytes:
    status = STATUS.get(reply, St.OK)
    base = OPCODES[tag.opcode].base
    if reply is ev.Status.NOT_STORED:
        status = NOT_STORED.get(base, status)
    if status:
        return error_packet(tag, status)
    return _success(tag, value=SUCCESS_BODY.get(base, b""))


def _write_done(request, reply: ev.Done, tag: BinTag) -> bytes:
    """A successful store carries the new cas; TOUCH also the flags."""
    extras = struct.pack(">I", reply.flags) \
        if OPCODES[tag.opcode].base is Op.TOUCH else b""
    return _success(tag, cas=reply.cas, extras=extras)


def _write_number(request, reply: ev.Number, tag: BinTag) -> bytes:
    return _success(tag, cas=reply.cas, value=struct.pack(">Q", reply.value))


def _write_stats(request, reply: ev.StatsReply, tag: BinTag) -> bytes:
    rows = [packet(tag.opcode, 0, tag.opaque, key=name.encode(),
                   value=str(value).encode()) for name, value in reply.rows]
    return b"".join(rows) + packet(tag.opcode, 0, tag.opaque)


def _write_server_error(request, reply: ev.ServerError, tag: BinTag) -> bytes:
    message = reply.message.lower()
    if "too large" in message:
        return error_packet(tag, St.E2BIG)
    if "out of memory" in message:
        return error_packet(tag, St.ENOMEM)
    return error_packet(tag, St.EINTERNAL, reply.message.encode())


def _write_client_error(request, reply: ev.ClientError, tag: BinTag) -> bytes:
    if "non-numeric" in reply.message:
        return error_packet(tag, St.DELTA_BADVAL)
    return error_packet(tag, St.EINVAL)


WRITERS: dict[type, Callable] = {
    ev.Values: _write_values,
    ev.Status: _write_status,
    ev.Done: _write_done,
    ev.Number: _write_number,
    ev.StatsReply: _write_stats,
    ev.VersionReply: lambda request, reply, tag: _success(
        tag, value=reply.version.encode()),
    ev.Denied: lambda request, reply, tag: error_packet(tag, St.EACCESS),
    ev.AuthFailed: lambda request, reply, tag: error_packet(
        tag, St.AUTH_ERROR),
    ev.ServerError: _write_server_error,
    ev.ClientError: _write_client_error,
    ev.Close: lambda request, reply, tag: _success(tag),
    ev.TooLarge: lambda request, reply, tag: error_packet(tag, St.E2BIG),
    # FLUSH with -F: memcached answers an auth error
    ev.Disabled: lambda request, reply, tag: error_packet(tag, St.AUTH_ERROR),
    ev.DetailDump: lambda request, reply, tag: packet(
        tag.opcode, 0, tag.opaque, key=b"detailed",
        value=reply.text()) + packet(tag.opcode, 0, tag.opaque),
}
