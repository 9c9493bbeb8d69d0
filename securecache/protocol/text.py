"""memcached's classic text protocol, sans-IO.

How this works: ``receive_data`` appends bytes to a buffer; ``next_event``
takes one complete command line off it, finds the command's reader in
``READERS`` (a table, not an if-ladder) and returns a typed request from
``events``. Storage commands need a data block: their reader returns a
``_Block`` saying how many bytes to wait for and how to finish the request.
A malformed request raises ``ProtocolError`` carrying memcached's exact
error reply; the codec has already resynchronised the way memcached does,
so the caller answers the error and keeps calling ``next_event``.
``send(request, reply)`` renders a reply, honouring ``noreply``.

The error words and the resynchronisation rules were measured against
memcached 1.6.18: only spaces separate tokens and a NUL ends the line (so
other control bytes belong to keys); a bad command line is refused without
reading a data block (the block is then parsed as a command); an oversized
block is swallowed and becomes an ``Oversized`` request (the engine drops
the item a ``set`` would have replaced); a block without its terminating
CRLF is refused after reading exactly the announced length plus two; an
HTTP request line closes the connection without a reply; and a line longer
than ``MAX_LINE``, with or without its newline (the answer never depends on
how the stream was cut), closes the connection unless it is a retrieval
command, whose lines may be up to ``MAX_GET_LINE``. memcached's
operator commands are read by ``textadmin``.

This module imports nothing of ours but ``events`` (and ``meta``,
``textadmin``, whose readers share the connection).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote_from_bytes

from . import events as ev
from .events import NEED_DATA, ProtocolError
from .numbers import uint32

KEY_MAX = 250
MAX_LINE = 2048
MAX_GET_LINE = 1 << 20
# The bytes that end a key, as ints: ``SPACE in key`` is one memchr, where
# ``b" " in key`` first tries the operand as an int and raises and clears
# a TypeError (about 1,600 instructions a test, twice a get).
SPACE, LF, NUL = 0x20, 0x0A, 0x00
RELATIVE_EXPTIME_MAX = 60 * 60 * 24 * 30

NOREPLY = 1
WITH_CAS = 2
WHOAMI = 4

ERROR = b"ERROR\r\n"
BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument\r\n"
BAD_DELTA = b"CLIENT_ERROR invalid numeric delta argument\r\n"
BAD_DELETE = (b"CLIENT_ERROR bad command line format.  "
              b"Usage: delete <key> [noreply]\r\n")
DENIED = b"CLIENT_ERROR access denied\r\n"
LINE_TOO_LONG = b"CLIENT_ERROR line too long\r\n"
UNAUTHENTICATED = b"CLIENT_ERROR unauthenticated\r\n"
AUTH_FAILED = b"CLIENT_ERROR authentication failure\r\n"
BAD_LOGIN_TOKENS = b"CLIENT_ERROR bad authentication token format\r\n"
BAD_LOGIN_TERMINATION = b"CLIENT_ERROR bad command line termination\r\n"
U64 = (1 << 64) - 1
INT_MAX = (1 << 31) - 1
COMMAND_INITIALS = frozenset(b"acdefgilmpqrstvw")   # memcached's commands'


@dataclass(slots=True)
class _Block:
    """A command line that waits for ``length`` bytes of data plus CRLF."""

    length: int
    finish: Callable[[bytes], ev.Request]
    noreply: bool
    bad_chunk: bytes = b"CLIENT_ERROR bad data chunk\r\n"
    on_bad_chunk: Callable[[], None] | None = None


class _Swallow:
    """An oversized data block being skipped, as memcached skips it."""

    __slots__ = ("remaining",)

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining


def valid_key(key: bytes) -> bool:
    """1..250 bytes. As in memcached, only space, LF (and NUL, where C
    strings end) delimit: other control bytes are part of the key."""
    return 0 < len(key) <= KEY_MAX and SPACE not in key and \
        LF not in key and NUL not in key


def tokens_of(line: bytes) -> list[bytes]:
    """memcached's tokenizer: a NUL ends the line, only spaces separate."""
    if NUL in line:
        line = line.split(b"\0", 1)[0]
    tokens = line.split(b" ")
    return [t for t in tokens if t] if b"" in tokens else tokens


def is_http(tokens: list[bytes]) -> bool:
    """An HTTP request line on the memcached port: memcached hangs up
    without a reply when an unknown command (of two or more bytes, not
    starting like one of its commands) ends in an ``HTTP/`` token."""
    return (len(tokens) > 1 and tokens[-1].startswith(b"HTTP/")
            and len(tokens[0]) > 1 and tokens[0][0] not in COMMAND_INITIALS)


def _uint(token: bytes, limit: int, error: bytes) -> int:
    if not token.isdigit():
        raise ProtocolError(error)
    value = int(token)
    if value > limit:
        raise ProtocolError(error)
    return value


def _flags(token: bytes) -> int:
    if token.isdigit() and len(token) < 10:          # most: below 2^32
        return int(token)
    return _uint32(token, BAD_FORMAT)


def _uint32(token: bytes, error: bytes) -> int:
    value = uint32(token)           # memcached's rule: mod 2^32
    if value is None:
        raise ProtocolError(error)
    return value


def _int(token: bytes, error: bytes) -> int:
    if token.isdigit() and len(token) <= 10:         # most: no sign
        value = int(token)
        if value <= INT_MAX:
            return value
    body = token[1:] if token[:1] == b"-" else token
    if not body.isdigit() or len(body) > 10:
        raise ProtocolError(error)
    value = int(token)
    if not -(1 << 31) <= value < (1 << 31):
        raise ProtocolError(error)
    return value


def _key(token: bytes) -> bytes:
    # a token is never empty and holds no space, LF or NUL (tokens_of):
    # only valid_key's length rule is left to check
    if len(token) > KEY_MAX:
        raise ProtocolError(BAD_FORMAT)
    return token


def _noreply(tokens: list[bytes], index: int) -> int:
    return NOREPLY if len(tokens) > index and tokens[index] == b"noreply" else 0


class TextCodec:
    """One connection's text-protocol state (see the module docstring)."""

    def __init__(self, max_item_size: int = 1 << 20, auth: bool = False) -> None:
        self.max_item_size = max_item_size
        self.auth_pending = auth
        """memcached's text auth: until a login, only ``set`` (whose data is
        ``user password``) is read; anything else is "unauthenticated"."""
        self._buffer = bytearray()
        self._pending: _Block | _Swallow | None = None
        self.closed = False
        self.must_close = False     # no text reply ends a connection by itself

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
        while True:
            pending = self._pending
            if pending is None:
                return self._next_line()
            if isinstance(pending, _Swallow):
                if not self._swallow(pending):
                    return NEED_DATA
                continue
            return self._next_block(pending)

    def _swallow(self, pending: _Swallow) -> bool:
        taken = min(pending.remaining, len(self._buffer))
        del self._buffer[:taken]
        pending.remaining -= taken
        if pending.remaining:
            return False
        self._pending = None
        return True

    def _next_block(self, pending: _Block):
        end = pending.length + 2
        if len(self._buffer) < end:
            return NEED_DATA
        data = bytes(self._buffer[:pending.length])
        terminator = self._buffer[pending.length:end]
        del self._buffer[:end]
        self._pending = None
        if terminator != b"\r\n":
            if pending.on_bad_chunk is not None:
                pending.on_bad_chunk()
            raise ProtocolError(b"" if pending.noreply else pending.bad_chunk)
        return pending.finish(data)

    def _next_line(self):
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end < 0:
            self._check_unterminated()
            return NEED_DATA
        # the line without its CR LF (or a bare LF, as memcached takes it)
        line = bytes(buffer[:end - 1] if end and buffer[end - 1] == 13
                     else buffer[:end])
        del buffer[:end + 1]
        if line[:4] == b"get " and not self.auth_pending:
            # the most common request: one key of 1 to 250 bytes, which is
            # what tokens_of and _read_get make of such a line
            key = line[4:]
            if 0 < len(key) <= KEY_MAX and SPACE not in key and \
                    NUL not in key:
                return ev.Get([key], history=False, tag=0)
        tokens = tokens_of(line)
        if len(line) > MAX_LINE and not (tokens and tokens[0] in RETRIEVALS
                                         and len(line) <= MAX_GET_LINE):
            self._close(LINE_TOO_LONG)
        if self.auth_pending:
            reader = _login_reader(tokens)
        else:
            reader = READERS.get(tokens[0]) if tokens else None
        if reader is None:
            if is_http(tokens):
                self._close(b"")
            raise ProtocolError(ERROR)
        result = reader(self, tokens)
        if isinstance(result, _Block):
            self._pending = result
            return self.next_event()
        return result

    def _check_unterminated(self) -> None:
        size = len(self._buffer)
        if size <= MAX_LINE:
            return
        head = bytes(self._buffer[:8]).lstrip(b" ")
        if size <= MAX_GET_LINE and head.split(b" ", 1)[0] in RETRIEVALS:
            return
        self._close(LINE_TOO_LONG)

    def _close(self, reply: bytes) -> None:
        self._buffer.clear()
        self.closed = True
        raise ProtocolError(reply, close=True)

    # ---------------------------------------------------------- readers
    def _read_get(self, tokens):
        if len(tokens) < 2:
            raise ProtocolError(ERROR)
        keys = tokens[1:]
        # tokens are never empty and hold no space, LF or NUL: only the
        # length of a key is left to check (valid_key's other rules)
        if max(map(len, keys)) > KEY_MAX:
            raise ProtocolError(BAD_FORMAT)
        return ev.Get(keys, history=False,
                      tag=WITH_CAS if tokens[0] == b"gets" else 0)

    def _read_gat(self, tokens):
        if len(tokens) < 2:
            raise ProtocolError(ERROR)
        exptime = _int(tokens[1], BAD_EXPTIME)
        # no key after the exptime: nothing fetched, memcached's END
        keys = [_key(t) for t in tokens[2:]]
        return ev.Get(keys, touch=exptime, history=False,
                      tag=WITH_CAS if tokens[0] == b"gats" else 0)

    def _read_store(self, tokens):
        is_cas = tokens[0] == b"cas"
        count = 6 if is_cas else 5
        if len(tokens) not in (count, count + 1):
            raise ProtocolError(ERROR)
        noreply = _noreply(tokens, count)
        try:
            key = _key(tokens[1])
            flags = _flags(tokens[2])
            exptime = _int(tokens[3], BAD_FORMAT)
            length = _int(tokens[4], BAD_FORMAT)
            cas = _uint(tokens[5], U64, BAD_FORMAT) if is_cas else 0
            if not 0 <= length <= INT_MAX - 2:    # memcached: vlen + 2 fits
                raise ProtocolError(BAD_FORMAT)
        except ProtocolError as error:
            raise ProtocolError(b"" if noreply else error.reply) from None
        mode = STORE_MODES[tokens[0]]
        if length > self.max_item_size:
            self._pending = _Swallow(length + 2)
            # memcached drops the item a failed set would have replaced
            return ev.Oversized(key, drop=mode is ev.StoreMode.SET,
                                tag=noreply)
        buffer = self._buffer
        if len(buffer) >= length + 2 and \
                buffer[length:length + 2] == b"\r\n":
            # the data block came with its line (most sets): no wait
            data = bytes(buffer[:length])
            del buffer[:length + 2]
            return ev.Store(mode, key, flags, exptime, data, cas=cas,
                            tag=noreply)
        finish = functools.partial(ev.Store, mode, key, flags, exptime,
                                   cas=cas, tag=noreply)  # finish(data)
        return _Block(length, finish, bool(noreply))

    def _read_login(self, tokens):
        """memcached's text auth: ``set <any> <any> <any> <length> ...``
        whose data is ``user password``."""
        length = int(tokens[4])
        if length > self.max_item_size:
            self._pending = _Swallow(length + 2)
            raise ProtocolError(TOO_LARGE)
        self.auth_pending = False     # until the engine says otherwise
        return _Block(length, self._login, False, BAD_LOGIN_TERMINATION,
                      self._login_again)

    def _login(self, data: bytes) -> ev.Authenticate:
        words = data.split()
        if len(words) < 2:
            self._login_again()
            raise ProtocolError(BAD_LOGIN_TOKENS)
        return ev.Authenticate(words[0].decode("utf-8", "replace"), words[1])

    def _login_again(self) -> None:
        self.auth_pending = True

    def _read_delete(self, tokens):
        if not 2 <= len(tokens) <= 4:
            raise ProtocolError(ERROR)
        key = _key(tokens[1])
        noreply = _noreply(tokens, len(tokens) - 1)
        extra = tokens[2:len(tokens) - (1 if noreply else 0)]
        if extra and extra != [b"0"]:
            raise ProtocolError(b"" if noreply else BAD_DELETE)
        return ev.Delete(key, tag=noreply)

    def _read_arith(self, tokens):
        if len(tokens) not in (3, 4):
            raise ProtocolError(ERROR)
        noreply = _noreply(tokens, 3)
        key = _key(tokens[1])
        try:
            delta = _uint(tokens[2], U64, BAD_DELTA)
        except ProtocolError:
            raise ProtocolError(b"" if noreply else BAD_DELTA) from None
        return ev.Arith(key, delta, incr=tokens[0] == b"incr", tag=noreply)

    def _read_touch(self, tokens):
        if len(tokens) not in (3, 4):
            raise ProtocolError(ERROR)
        noreply = _noreply(tokens, 3)
        key = _key(tokens[1])
        exptime = _int(tokens[2], b"" if noreply else BAD_EXPTIME)
        return ev.Touch(key, exptime, tag=noreply)

    def _read_flush_all(self, tokens):
        if len(tokens) > 3:
            raise ProtocolError(ERROR)
        noreply = _noreply(tokens, len(tokens) - 1)
        # memcached reads a delay from the first argument unless the line
        # is "flush_all [noreply]"; a second argument is not looked at
        delay = 0 if len(tokens) == 1 + bool(noreply) else \
            _int(tokens[1], b"" if noreply else BAD_EXPTIME)
        return ev.FlushAll(max(delay, 0), tag=noreply)

    def _read_stats(self, tokens):
        group = tokens[1].decode("ascii", "replace") if len(tokens) > 1 else ""
        special = _admin.STATS_SPECIAL.get(group)
        if special is not None:
            return special(tokens)
        if group not in STATS_GROUPS:
            raise ProtocolError(ERROR)
        return ev.Stats(group)

    def _read_version(self, tokens):
        return ev.Version()

    def _read_verbosity(self, tokens):
        if len(tokens) not in (2, 3):
            raise ProtocolError(ERROR)
        noreply = _noreply(tokens, len(tokens) - 1)
        level = _uint32(tokens[1], b"" if noreply else BAD_FORMAT)
        return ev.Verbosity(level, tag=noreply)

    def _read_quit(self, tokens):
        return ev.Quit()

    def _read_shutdown(self, tokens):
        mode = tokens[1:]
        return ev.Shutdown(graceful=mode == [b"graceful"],
                           valid=mode in ([], [b"graceful"]))

    def _read_relabel(self, tokens):
        if len(tokens) not in (3, 4):
            raise ProtocolError(ERROR)
        noreply = _noreply(tokens, 3)
        return ev.Relabel(_key(tokens[1]), _context(tokens[2]), tag=noreply)

    def _read_getlabel(self, tokens):
        if len(tokens) != 2:
            raise ProtocolError(ERROR)
        return ev.GetLabel(_key(tokens[1]))

    def _read_createlabel(self, tokens):
        if len(tokens) != 2:
            raise ProtocolError(ERROR)
        context = None if tokens[1] == b"default" else _context(tokens[1])
        return ev.CreateLabel(context)

    def _read_whoami(self, tokens):
        return ev.WhoAmI(tag=WHOAMI)

    # ----------------------------------------------------------- output
    def send(self, request, reply) -> bytes:
        """The bytes that answer ``request`` with ``reply``."""
        tag = request.tag
        if type(reply) is ev.Values and type(tag) is int:     # get, gets
            return _write_values(reply, tag)
        if is_meta(request):
            return render_meta(request, reply)
        if isinstance(request, ev.Authenticate):
            return self._login_reply(reply)
        tag = getattr(request, "tag", 0) or 0
        if tag & NOREPLY and not isinstance(reply, ALWAYS_SENT):
            return b""
        return WRITERS[type(reply)](reply, tag)


    def _login_reply(self, reply) -> bytes:
        if reply is ev.Status.AUTHENTICATED:
            return b"STORED\r\n"
        self.auth_pending = True
        return AUTH_FAILED


def _login_reader(tokens: list[bytes]):
    if len(tokens) >= 5 and tokens[0] == b"set" and tokens[4].isdigit():
        return TextCodec._read_login
    raise ProtocolError(UNAUTHENTICATED)


def _context(token: bytes) -> str:
    if any(b < 33 or b > 126 for b in token):
        raise ProtocolError(BAD_FORMAT)
    return token.decode("ascii")


def _write_values(reply: ev.Values, tag: int) -> bytes:
    items = reply.items
    with_cas = tag & WITH_CAS
    if len(items) == 1 and reply.final and not with_cas:   # the common get
        item = items[0]
        value = item.value or b""
        return b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (
            item.key, item.flags, len(value), value)
    parts = []
    for item in items:
        value = item.value or b""
        head = b"VALUE %s %d %d" % (item.key, item.flags, len(value))
        if with_cas:
            head += b" %d" % item.cas
        parts += (head, b"\r\n", value, b"\r\n")
    if reply.final:
        parts.append(b"END\r\n")
    return b"".join(parts)


def _write_stats(reply: ev.StatsReply, tag: int) -> bytes:
    lines = [b"STAT %s %s\r\n" % (name.encode(), str(value).encode())
             for name, value in reply.rows]
    lines.append(b"END\r\n")
    return b"".join(lines)


def _write_label(reply: ev.Label, tag: int) -> bytes:
    word = b"CONTEXT" if tag & WHOAMI else b"LABEL"
    return b"%s %s\r\n" % (word, reply.context.encode())


def _write_keylist(reply: ev.KeyList, tag: int) -> bytes:
    lines = []
    for item in reply.items:
        lines.append(b"key=%s exp=%d la=%d cas=%d fetch=%s cls=1 size=%d\n" % (
            quote_from_bytes(item.key, safe=b"").encode(),
            item.exptime or -1, item.last_access or reply.now, item.cas,
            b"yes" if item.fetched else b"no", item.size))
    if not reply.more:                  # a slice: END comes with the last
        lines.append(b"END\r\n")
    return b"".join(lines)


def _write_dump(reply: ev.Dump, tag: int) -> bytes:
    lines = [b"ITEM %s [%d b; %d s]\r\n" % (item.key, item.size, item.exptime)
             for item in reply.items]
    if not reply.more:                  # a slice: END comes with the last
        lines.append(b"END\r\n")
    return b"".join(lines)


STATUS_LINES = {status: status.value.encode() + b"\r\n"
                for status in ev.Status}

WRITERS: dict[type, Callable] = {
    ev.Values: _write_values,
    ev.Status: lambda r, t: STATUS_LINES[r],
    ev.Done: lambda r, t: STATUS_LINES[r.status],
    ev.Number: lambda r, t: b"%d\r\n" % r.value,
    ev.StatsReply: _write_stats,
    ev.VersionReply: lambda r, t: b"VERSION %s\r\n" % r.version.encode(),
    ev.Label: _write_label,
    ev.KeyList: _write_keylist,
    ev.Denied: lambda r, t: DENIED,
    ev.AuthFailed: lambda r, t: UNAUTHENTICATED,
    ev.ServerError: lambda r, t: b"SERVER_ERROR %s\r\n" % r.message.encode(),
    ev.ClientError: lambda r, t: b"CLIENT_ERROR %s\r\n" % r.message.encode(),
    ev.Close: lambda r, t: b"",
    ev.Dump: _write_dump,
    ev.DetailDump: lambda r, t: r.text(),
    ev.TooLarge: lambda r, t: TOO_LARGE,
    ev.Disabled: lambda r, t: DISABLED[r.command],
    ev.Refused: lambda r, t: b"%s %s\r\n" % (r.word.encode(),
                                              r.message.encode()),
}

ALWAYS_SENT = (ev.ServerError, ev.AuthFailed)
DISABLED = {     # memcached's words for a command its flags turned off
    "shutdown": b"ERROR: shutdown not enabled\r\n",
    "flush_all": b"CLIENT_ERROR flush_all not allowed\r\n",
    "cachedump": b"CLIENT_ERROR stats cachedump not allowed\r\n",
    "metadump": b"ERROR metadump not allowed\r\n",
}

STORE_MODES = {
    b"set": ev.StoreMode.SET, b"add": ev.StoreMode.ADD,
    b"replace": ev.StoreMode.REPLACE, b"append": ev.StoreMode.APPEND,
    b"prepend": ev.StoreMode.PREPEND, b"cas": ev.StoreMode.CAS,
}
RETRIEVALS = frozenset((b"get", b"gets", b"gat", b"gats"))
STATS_GROUPS = frozenset(("", "settings", "items", "slabs", "conns", "reset",
                          "sizes", "extstore"))

READERS: dict[bytes, Callable] = {
    b"get": TextCodec._read_get,
    b"gets": TextCodec._read_get,
    b"gat": TextCodec._read_gat,
    b"gats": TextCodec._read_gat,
    **{name: TextCodec._read_store for name in STORE_MODES},
    b"delete": TextCodec._read_delete,
    b"incr": TextCodec._read_arith,
    b"decr": TextCodec._read_arith,
    b"touch": TextCodec._read_touch,
    b"flush_all": TextCodec._read_flush_all,
    b"stats": TextCodec._read_stats,
    b"version": TextCodec._read_version,
    b"verbosity": TextCodec._read_verbosity,
    b"quit": TextCodec._read_quit,
    b"shutdown": TextCodec._read_shutdown,
    b"relabel": TextCodec._read_relabel,
    b"getlabel": TextCodec._read_getlabel,
    b"createlabel": TextCodec._read_createlabel,
    b"whoami": TextCodec._read_whoami,
}

# memcached's operator commands (stats cachedump/detail, lru_crawler, ...)
from . import textadmin as _admin  # noqa: E402

READERS.update(_admin.READERS)
WRITERS[ev.Watching] = lambda r, t: b"OK\r\n"
WRITERS[ev.WatchEvent] = lambda r, t: _admin.write_watch_event(r)

# Meta commands share the text connection (memcached does the same).
from .meta import READERS as META_READERS  # noqa: E402
from .meta import is_meta, render as render_meta  # noqa: E402

READERS.update(META_READERS)
