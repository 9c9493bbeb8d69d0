"""memcached binary protocol: every opcode, quiet variants, bad headers.

Each parser test feeds its packets whole, byte by byte and with a trailing
NOOP (the ``all_ways`` fixture). Reply packets are compared byte for byte
with what a real memcached 1.6.18 answers to the same request bytes; the
engine's reply is built by hand from memcached's own answer (its cas,
flags and values), so only our rendering is under test.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import subprocess
import threading

import pytest
from hypothesis import given, strategies as st

from securecache.protocol import events as ev
from securecache.protocol.binary import (BinTag, BinaryCodec, Op, St,
                                         is_binary, packet)

HEADER = struct.Struct(">BBHBBHIIQ")
NOOP = HEADER.pack(0x80, Op.NOOP, 0, 0, 0, 0, 0, 0, 0)
SET_EXTRAS = struct.Struct(">II")
ARITH_EXTRAS = struct.Struct(">QQI")


def req(op: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"",
        opaque: int = 0, cas: int = 0, magic: int = 0x80,
        bodylen: int | None = None) -> bytes:
    body = len(key) + len(extras) + len(value) if bodylen is None else bodylen
    return HEADER.pack(magic, op, len(key), len(extras), 0, 0, body, opaque,
                       cas) + extras + key + value


def store(op: int, key: bytes, value: bytes, flags: int = 0, exptime: int = 0,
          **kw) -> bytes:
    return req(op, key, SET_EXTRAS.pack(flags, exptime), value, **kw)


def arith(op: int, key: bytes, delta: int = 1, initial: int = 0,
          exptime: int = 0, **kw) -> bytes:
    return req(op, key, ARITH_EXTRAS.pack(delta, initial, exptime), **kw)


def fields(reply: bytes) -> dict:
    """The first response packet's header fields and body parts."""
    magic, op, keylen, extlen, _, status, body, opaque, cas = (
        HEADER.unpack_from(reply))
    data = reply[24:24 + body]
    return dict(op=op, status=status, opaque=opaque, cas=cas,
                extras=data[:extlen], key=data[extlen:extlen + keylen],
                value=data[extlen + keylen:])


def err(reply: bytes, close: bool = False) -> tuple:
    return ("error", reply, close)


@pytest.fixture
def parse(all_ways):
    def parse(data: bytes, max_item_size: int = 1 << 20) -> list:
        return all_ways(lambda: BinaryCodec(max_item_size), data, NOOP)
    return parse



@pytest.fixture
def mc(memcached):
    conn = memcached.connect()

    def ask(data: bytes) -> bytes:
        reply, closed = conn.binary(data)
        assert not closed
        return reply
    return ask


def send(request, reply) -> bytes:
    return BinaryCodec().send(request, reply)


def test_is_binary():
    assert is_binary(0x80) and is_binary(b"\x80\x00")
    assert not is_binary(ord("g")) and not is_binary(0x81)


# ------------------------------------------------------------ retrieval
def test_get_family_hits(mc, one):
    cas = fields(mc(store(Op.SET, b"g1", b"bar", flags=0xABCD)))["cas"]
    item = ev.Item(b"g1", 0xABCD, b"bar", cas, size=3)
    for op in (Op.GET, Op.GETQ, Op.GETK, Op.GETKQ):
        data = req(op, b"g1", opaque=0x1000 + op)
        request = one(data)
        assert request == ev.Get([b"g1"], history=False, tag=BinTag(op, 0x1000 + op))
        assert send(request, ev.Values([item])) == mc(data)


@pytest.mark.parametrize("op", [Op.GET, Op.GETQ, Op.GETK, Op.GETKQ])
def test_get_family_misses(mc, one, op):
    data = req(op, b"nope", opaque=7)
    assert send(one(data), ev.Values([])) == mc(data)


@pytest.mark.parametrize("op", [Op.GAT, Op.GATQ, Op.GATK, Op.GATKQ])
def test_gat_family(mc, one, op):
    cas = fields(mc(store(Op.SET, b"gat", b"v", flags=7)))["cas"]
    data = req(op, b"gat", struct.pack(">I", 100), opaque=op)
    request = one(data)
    assert request == ev.Get([b"gat"], touch=100, history=False, tag=BinTag(op, op))
    item = ev.Item(b"gat", 7, b"v", cas, size=1)
    assert send(request, ev.Values([item])) == mc(data)
    miss = req(op, b"nogat", struct.pack(">I", 100), opaque=op)
    assert send(one(miss), ev.Values([])) == mc(miss)


def test_touch(mc, one):
    mc(store(Op.SET, b"t1", b"v", flags=7))
    data = req(Op.TOUCH, b"t1", struct.pack(">I", 0xFFFFFFFF), opaque=9)
    request = one(data)
    assert request == ev.Touch(b"t1", 0xFFFFFFFF, tag=BinTag(Op.TOUCH, 9))
    real = fields(mc(data))
    ours = fields(send(request, ev.Status.TOUCHED))
    # memcached also sends the item's flags and cas; Touch's reply has none
    assert (real["status"], real["extras"]) == (0, struct.pack(">I", 7))
    assert (ours["status"], ours["extras"], ours["opaque"]) == (0, b"", 9)
    miss = req(Op.TOUCH, b"t0", struct.pack(">I", 5))
    assert send(one(miss), ev.Status.NOT_FOUND) == mc(miss)


# -------------------------------------------------------------- storage
@pytest.mark.parametrize("op, mode", [
    (Op.SET, ev.StoreMode.SET), (Op.ADD, ev.StoreMode.ADD),
    (Op.REPLACE, ev.StoreMode.REPLACE), (Op.SETQ, ev.StoreMode.SET),
    (Op.ADDQ, ev.StoreMode.ADD), (Op.REPLACEQ, ev.StoreMode.REPLACE)])
def test_store_requests(one, op, mode):
    request = one(store(op, b"k", b"val", 5, 60, opaque=3))
    assert request == ev.Store(mode, b"k", 5, 60, b"val",
                               tag=BinTag(op, 3))
    with_cas = one(store(op, b"k", b"val", cas=77))
    assert (with_cas.mode, with_cas.cas) == (ev.StoreMode.CAS, 77)


@pytest.mark.parametrize("op, mode", [
    (Op.APPEND, ev.StoreMode.APPEND), (Op.PREPEND, ev.StoreMode.PREPEND),
    (Op.APPENDQ, ev.StoreMode.APPEND), (Op.PREPENDQ, ev.StoreMode.PREPEND)])
def test_append_prepend_requests(one, op, mode):
    request = one(req(op, b"k", value=b"++", cas=4, opaque=2))
    assert request == ev.Store(mode, b"k", 0, 0, b"++", cas=4,
                               tag=BinTag(op, 2, 4))


def without_cas(reply: bytes) -> bytes:
    return reply[:16] + bytes(8) + reply[24:] if reply else reply


@pytest.mark.parametrize("setup, data, status", [
    (b"", store(Op.SET, b"s1", b"v", opaque=1), ev.Status.STORED),
    (b"", store(Op.SETQ, b"s1", b"v", opaque=1), ev.Status.STORED),
    (store(Op.SET, b"s2", b"v"), store(Op.ADD, b"s2", b"v", opaque=2),
     ev.Status.NOT_STORED),
    (store(Op.SET, b"s2", b"v"), store(Op.ADDQ, b"s2", b"v", opaque=2),
     ev.Status.NOT_STORED),
    (b"", store(Op.REPLACE, b"s3", b"v", opaque=3), ev.Status.NOT_STORED),
    (b"", store(Op.REPLACEQ, b"s3", b"v", opaque=3), ev.Status.NOT_STORED),
    (b"", req(Op.APPEND, b"s4", value=b"v", opaque=4), ev.Status.NOT_STORED),
    (store(Op.SET, b"s5", b"v"), store(Op.SET, b"s5", b"v", cas=1 << 40),
     ev.Status.EXISTS),
    (b"", store(Op.SET, b"s6", b"v", cas=1 << 40), ev.Status.NOT_FOUND),
    (store(Op.SET, b"s7", b"v"), req(Op.APPENDQ, b"s7", value=b"w"),
     ev.Status.STORED),
    (store(Op.SET, b"s8", b"v"), req(Op.PREPEND, b"s8", value=b"w",
                                     opaque=8), ev.Status.STORED)],
    ids=["set", "setq", "add", "addq", "replace", "replaceq", "append",
         "cas-exists", "cas-missing", "appendq", "prepend"])
def test_store_replies(mc, one, setup, data, status):
    """Status codes as memcached; a stored item's new cas is not in Status."""
    if setup:
        mc(setup)
    assert send(one(data), status) == without_cas(mc(data))


def test_value_too_large_is_skipped_and_the_connection_stays(mc, parse, feed):
    """The key is read, the value skipped unbuffered; only SET (not SETQ,
    nor the other stores) drops the old item, as memcached does."""
    small = store(Op.SETQ, b"k", b"12345", opaque=5)
    oversized = ev.Oversized(b"k", drop=False, tag=BinTag(Op.SETQ, 5, 0))
    assert parse(small, max_item_size=4) == [oversized]
    setop = parse(store(Op.SET, b"k", b"12345"), max_item_size=4)
    assert setop[0].drop is True
    concat = parse(req(Op.APPEND, b"k", value=b"12345"), max_item_size=4)
    assert concat[0].drop is False
    assert fields(send(concat[0], ev.TooLarge()))["status"] == St.E2BIG
    big = store(Op.SETQ, b"k", b"x" * (2 << 20), opaque=5)
    events = feed(BinaryCodec, [big + NOOP])
    assert events[0] == oversized
    assert send(events[0], ev.TooLarge()) == mc(big)
    assert isinstance(events[1], ev.Noop)


def test_delete(mc, one):
    data = req(Op.DELETE, b"d1", cas=9, opaque=4)
    assert one(data) == ev.Delete(b"d1", 9, tag=BinTag(Op.DELETE, 4, 9))
    mc(store(Op.SET, b"d1", b"v"))
    assert send(one(data), ev.Status.EXISTS) == mc(data)
    for op in (Op.DELETE, Op.DELETEQ):
        data = req(op, b"d1", opaque=5)
        assert send(one(data), ev.Status.DELETED) == mc(data)
        assert send(one(data), ev.Status.NOT_FOUND) == mc(data)
        mc(store(Op.SET, b"d1", b"v"))


def test_arithmetic(mc, one):
    data = arith(Op.INCREMENT, b"n1", 5, 10, 0xFFFFFFFF, opaque=1)
    request = one(data)
    assert request == ev.Arith(b"n1", 5, True, None, 0xFFFFFFFF,
                               tag=BinTag(Op.INCREMENT, 1))
    assert send(request, ev.Status.NOT_FOUND) == mc(data)
    create = arith(Op.INCREMENT, b"n1", 5, 10, 0, opaque=2)
    assert one(create).initial == 10
    real = mc(create)
    assert send(one(create), ev.Number(10, fields(real)["cas"])) == real
    decr = arith(Op.DECREMENT, b"n1", 100, opaque=3)
    assert one(decr).incr is False
    real = mc(decr)
    assert send(one(decr), ev.Number(0, fields(real)["cas"])) == real
    for op in (Op.INCREMENTQ, Op.DECREMENTQ):
        quiet = arith(op, b"n1")
        assert send(one(quiet), ev.Number(1, 5)) == mc(quiet) == b""
        missing = arith(op, b"n0", exptime=0xFFFFFFFF, opaque=4)
        assert send(one(missing), ev.Status.NOT_FOUND) == mc(missing)
    mc(store(Op.SET, b"n2", b"text"))
    bad = arith(Op.INCREMENT, b"n2", opaque=6)
    non_numeric = ev.ClientError(
        "cannot increment or decrement non-numeric value")
    assert send(one(bad), non_numeric) == mc(bad)
    stale = arith(Op.INCREMENT, b"n1", cas=12345, opaque=7)
    assert one(stale).cas == 12345
    assert send(one(stale), ev.Status.EXISTS) == mc(stale)


# ---------------------------------------------------------- connection
def test_quit(memcached, one):
    for op in (Op.QUIT, Op.QUITQ):
        data = req(op, opaque=3)
        assert one(data) == ev.Quit(tag=BinTag(op, 3))
        reply, closed = memcached.connect().binary(data)
        assert closed and send(one(data), ev.Close()) == reply


def test_flush_noop_version(mc, one):
    for data, delay in ((req(Op.FLUSH, opaque=1), 0),
                        (req(Op.FLUSH, extras=struct.pack(">I", 5)), 5),
                        (req(Op.FLUSHQ, extras=struct.pack(">I", 0)), 0)):
        request = one(data)
        assert request.delay == delay
        assert send(request, ev.Status.OK) == mc(data)
    noop = req(Op.NOOP, opaque=2)
    assert send(one(noop), ev.Status.NOOP) == mc(noop)
    version = req(Op.VERSION, opaque=3)
    assert one(version) == ev.Version(tag=BinTag(Op.VERSION, 3))
    assert send(one(version), ev.VersionReply("1.6.18")) == mc(version)


def test_verbosity(one):
    """memcached 1.6.18 dropped VERBOSITY (0x81); we serve it as 1.4 did."""
    request = one(req(Op.VERBOSITY, extras=struct.pack(">I", 2), opaque=4))
    assert request == ev.Verbosity(2, tag=BinTag(Op.VERBOSITY, 4))
    assert send(request, ev.Status.OK) == packet(Op.VERBOSITY, 0, 4)


def test_stat_groups(mc, one):
    data = req(Op.STAT, b"slabs", opaque=6)
    request = one(data)
    assert request == ev.Stats("slabs", tag=BinTag(Op.STAT, 6))
    real = mc(data)
    rows, offset = [], 0
    while (row := fields(real[offset:]))["key"]:
        rows.append((row["key"].decode(), row["value"].decode()))
        offset += 24 + len(row["key"]) + len(row["value"])
    assert send(request, ev.StatsReply(rows)) == real
    reset = req(Op.STAT, b"reset", opaque=7)
    assert send(one(reset), ev.Status.RESET) == mc(reset)
    assert one(req(Op.STAT)).group == ""
    bogus = req(Op.STAT, b"bogus", opaque=8)
    assert parse_error(one, bogus) == mc(bogus)


def parse_error(one, data: bytes) -> bytes:
    event = one(data)
    assert event[0] == "error" and not event[2]
    return event[1]


# ---------------------------------------------------------------- SASL
def test_sasl_plain(one):
    mechs = one(req(Op.SASL_LIST_MECHS, opaque=1))
    assert isinstance(mechs, ev.Mechanisms)
    assert send(mechs, ev.Status.OK) == packet(Op.SASL_LIST_MECHS, 0, 1,
                                               value=b"PLAIN")
    for op in (Op.SASL_AUTH, Op.SASL_STEP):
        for authzid in (b"", b"alice"):
            data = req(op, b"PLAIN", value=authzid + b"\0alice\0s3cr",
                       opaque=2)
            request = one(data)
            assert request == ev.Authenticate("alice", b"s3cr",
                                              tag=BinTag(op, 2))
        assert send(request, ev.Status.AUTHENTICATED) == packet(
            op, 0, 2, value=b"Authenticated")
        assert send(request, ev.AuthFailed()) == packet(
            op, St.AUTH_ERROR, 2, value=b"Auth failure.")


@pytest.mark.parametrize("op", [Op.SASL_LIST_MECHS, Op.SASL_AUTH,
                                Op.SASL_STEP])
def test_sasl_off_its_opcodes_are_unknown(all_ways, mc, op):
    # SASL off (no auth file): as memcached without -S, an unknown
    # command whose body is skipped; the connection goes on
    data = req(op, opaque=6) if op == Op.SASL_LIST_MECHS else \
        req(op, b"PLAIN", value=b"\0u\0p", opaque=6)
    events = all_ways(lambda: BinaryCodec(sasl=False), data, NOOP)
    unknown = packet(op, St.UNKNOWN_COMMAND, 6, value=b"Unknown command")
    assert events == [err(unknown)]
    assert mc(data) == unknown
    # a packet malformed for its opcode is refused as such first
    bad = req(op, b"", b"abcd", opaque=7)
    assert all_ways(lambda: BinaryCodec(sasl=False), bad, NOOP) == [err(
        packet(op, St.EINVAL, 7, value=b"Invalid arguments"), True)]


@pytest.mark.parametrize("key, value", [
    (b"CRAM-MD5", b"\0alice\0pw"), (b"PLAIN", b"alice\0pw"),
    (b"PLAIN", b"mallory\0alice\0pw"), (b"PLAIN", b"\0\xff\0pw")])
def test_sasl_refusals(one, key, value):
    assert parse_error(one, req(Op.SASL_AUTH, key, value=value, opaque=3)) == (
        packet(Op.SASL_AUTH, St.AUTH_ERROR, 3, value=b"Auth failure."))


# ------------------------------------------------------ generic replies
def test_denied_and_errors(one):
    request = one(req(Op.GETQ, b"k", opaque=5))
    assert send(request, ev.Denied()) == packet(Op.GETQ, St.EACCESS, 5,
                                                value=b"Access denied")
    cases = {"out of memory storing object": (St.ENOMEM, b"Out of memory"),
             "object too large for cache": (St.E2BIG, b"Too large."),
             "lmdb: disk full": (St.EINTERNAL, b"lmdb: disk full")}
    for message, (status, text) in cases.items():
        assert send(request, ev.ServerError(message)) == packet(
            Op.GETQ, status, 5, value=text)
    assert send(request, ev.ClientError("bad")) == packet(
        Op.GETQ, St.EINVAL, 5, value=b"Invalid arguments")


# ----------------------------------------------------- malformed headers
MALFORMED = {
    "key+extras beyond body": req(Op.GET, b"abc", bodylen=2, opaque=1),
    "key over 250": req(Op.GET, b"a" * 251, opaque=2),
    "get with extras": req(Op.GET, b"k", b"\0" * 4, opaque=3),
    "get without key": req(Op.GETK, opaque=3),
    "get body beyond key": req(Op.GETQ, b"k", value=b"zz", opaque=3),
    "set without extras": req(Op.SET, b"k", value=b"v", opaque=4),
    "set without key": store(Op.SETQ, b"", b"v", opaque=4),
    "append with extras": req(Op.APPEND, b"k", b"\0" * 8, b"v", opaque=5),
    "append without key": req(Op.PREPENDQ, value=b"v", opaque=5),
    "delete with body": req(Op.DELETE, b"k", value=b"zz", opaque=6),
    "incr short extras": req(Op.INCREMENT, b"n", b"\0" * 8, opaque=7),
    "incr with value": arith(Op.DECREMENTQ, b"n", value=b"x", opaque=7),
    "touch without extras": req(Op.TOUCH, b"k", opaque=8),
    "gat without key": req(Op.GATKQ, extras=b"\0" * 4, opaque=8),
    "flush long extras": req(Op.FLUSH, extras=b"\0" * 8, opaque=9),
    "version with key": req(Op.VERSION, b"x", opaque=10),
    "noop with value": req(Op.NOOP, value=b"x", opaque=11),
    "quit with key": req(Op.QUITQ, b"k", opaque=12),
    "stat with extras": req(Op.STAT, extras=b"\0" * 4, opaque=13),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_headers_answer_and_close_as_memcached(memcached, parse,
                                                         name):
    data = MALFORMED[name]
    reply, closed = memcached.connect().binary(data)
    assert closed
    assert parse(data) == [err(reply, True)]


def test_bad_magic_closes_silently(memcached, parse):
    data = NOOP + req(Op.NOOP, magic=0x81)
    reply, closed = memcached.connect().binary(data)
    assert closed and reply == packet(Op.NOOP)
    events = parse(data)
    assert isinstance(events[0], ev.Noop) and events[1:] == [err(b"", True)]


@pytest.mark.parametrize("op", [0x1F, 0x25, 0x30, 0x3D, 0x41, 0x80, 0xFF])
def test_unknown_opcodes_answer_0x81_and_stay_open(mc, parse, op):
    data = req(op, opaque=op)
    assert parse(data) == [err(mc(data))]
    with_body = req(op, b"key", b"xx", b"value", opaque=op)
    assert parse(with_body) == [err(packet(op, St.UNKNOWN_COMMAND, op,
                                           value=b"Unknown command"))]


def test_body_over_the_limit_closes(parse):
    data = req(Op.SASL_AUTH, b"PLAIN", value=b"\0u\0" + b"p" * 300, opaque=1)
    assert parse(data, max_item_size=16) == [err(packet(
        Op.SASL_AUTH, St.E2BIG, 1, value=b"Too large."), True)]


def test_quiet_pipeline_flushed_by_noop(mc, parse):
    """GETQ misses and SETQ successes are silent; NOOP answers in order."""
    mc(store(Op.SET, b"q1", b"a"))
    data = (req(Op.GETKQ, b"q1", opaque=1) + req(Op.GETQ, b"q2", opaque=2)
            + store(Op.SETQ, b"q3", b"c", opaque=3) + req(Op.NOOP, opaque=4))
    get_hit, get_miss, set_ok, noop = parse(data)
    real = mc(data)
    cas = fields(real)["cas"]
    ours = (send(get_hit, ev.Values([ev.Item(b"q1", 0, b"a", cas)]))
            + send(get_miss, ev.Values([]))
            + send(set_ok, ev.Status.STORED) + send(noop, ev.Status.NOOP))
    assert ours == real


# ------------------------------------------------------- a real client
class _Recorder(socketserver.ThreadingTCPServer):
    """A loopback relay to memcached that records what clients send."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: int) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.upstream = upstream
        self.streams: list[bytearray] = []


class _Relay(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sent = bytearray()
        self.server.streams.append(sent)
        with socket.create_connection(("127.0.0.1",
                                        self.server.upstream)) as up:
            back = threading.Thread(target=_pump, args=(up, self.request,
                                                        None), daemon=True)
            back.start()
            _pump(self.request, up, sent)
            back.join(5)


def _pump(source, target, record) -> None:
    try:
        while chunk := source.recv(65536):
            if record is not None:
                record += chunk
            target.sendall(chunk)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def test_every_packet_memccapable_sends_parses(memcached, feed):
    """libmemcached's memccapable -b, relayed to memcached, all passes; each
    request it sent parses (whole and byte by byte) with no protocol error."""
    with _Recorder(memcached.port) as recorder:
        threading.Thread(target=recorder.serve_forever, daemon=True).start()
        done = subprocess.run(
            ["memccapable", "-b", "-t", "2", "-h", "127.0.0.1",
             "-p", str(recorder.server_address[1])],
            capture_output=True, text=True, timeout=60)
        recorder.shutdown()
    assert "All tests passed" in done.stdout, done.stdout
    opcodes = set()
    for stream in recorder.streams:
        events = feed(BinaryCodec, [bytes(stream)])
        assert events == feed(BinaryCodec, [stream[i:i + 1]
                                            for i in range(len(stream))])
        assert not [e for e in events if isinstance(e, tuple)], events
        opcodes |= {e.tag.opcode for e in events}
    assert len(opcodes) >= 27


BINARY_PIECES = st.sampled_from([
    req(Op.GET, b"k"), store(Op.SET, b"k", b"abc"), NOOP, NOOP[:10],
    req(Op.GET, b"k")[:30], req(Op.GET, b"k", magic=0x81),
    req(Op.SET, b"k", bodylen=2_000_000), req(0x55, b"k"), b"abcdefgh"])


@given(st.lists(st.one_of(BINARY_PIECES, st.binary(max_size=40)),
                max_size=12))
def test_no_event_without_input(no_event_without_input, chunks):
    """Once an event (or an error) leaves nothing buffered, the next is
    NEED_DATA: the connection stops parsing there without asking."""
    no_event_without_input(BinaryCodec(1 << 20), chunks)
