"""The text codec: every request fed whole, byte by byte, and with trailing data."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from securecache.protocol import events as ev
from securecache.protocol.events import ProtocolError, StoreMode
from securecache.protocol.text import NEED_DATA, NOREPLY, TextCodec

TRAILER = b"version\r\n"


def drain(codec: TextCodec) -> list:
    out = []
    while True:
        try:
            event = codec.next_event()
        except ProtocolError as error:
            out.append(("error", error.reply, error.close))
            if error.close:
                return out
            continue
        if event is NEED_DATA:
            return out
        out.append(event)


def parse(data: bytes, mode: str, **kwargs) -> list:
    codec = TextCodec(**kwargs)
    events = []
    if mode == "whole":
        codec.receive_data(data)
        events = drain(codec)
    elif mode == "bytes":
        for i in range(len(data)):
            codec.receive_data(data[i:i + 1])
            events += drain(codec)
            if events and isinstance(events[-1], tuple) and events[-1][2]:
                break
    else:
        codec.receive_data(data + TRAILER)
        events = drain(codec)
        if not (events and isinstance(events[-1], tuple) and events[-1][2]):
            assert events[-1] == ev.Version(), events
            events = events[:-1]
    return events


MODES = ("whole", "bytes", "trailing")


def each_mode(data: bytes, **kwargs) -> list:
    """Parse in all three ways; they must agree. The agreed events."""
    results = [parse(data, mode, **kwargs) for mode in MODES]
    assert results[0] == results[1] == results[2], results
    return results[0]


@pytest.mark.parametrize("data, expected", [
    (b"get k\r\n", [ev.Get([b"k"], history=False, tag=0)]),
    (b"get a b c\r\n", [ev.Get([b"a", b"b", b"c"], history=False, tag=0)]),
    (b"gets a b\r\n", [ev.Get([b"a", b"b"], history=False, tag=2)]),
    (b"gat 10 a b\r\n", [ev.Get([b"a", b"b"], touch=10, history=False, tag=0)]),
    (b"gats -1 a\r\n", [ev.Get([b"a"], touch=-1, history=False, tag=2)]),
    # no key after the exptime: nothing to fetch, END (as memcached)
    (b"gat 10\r\n", [ev.Get([], touch=10, history=False, tag=0)]),
    (b"set k 4294967297 0 1\r\na\r\n",
     [ev.Store(ev.StoreMode.SET, b"k", 1, 0, b"a", tag=0)]),
    (b"set k +5 0 1\r\na\r\n",
     [ev.Store(ev.StoreMode.SET, b"k", 5, 0, b"a", tag=0)]),
    (b"set k -0 0 1\r\na\r\n",
     [ev.Store(ev.StoreMode.SET, b"k", 0, 0, b"a", tag=0)]),
    (b"set k 18446744073709551615 0 1\r\na\r\n",
     [ev.Store(ev.StoreMode.SET, b"k", 4294967295, 0, b"a", tag=0)]),
    (b"gats 10 \r\n", [ev.Get([], touch=10, history=False, tag=2)]),
    (b"get k\n", [ev.Get([b"k"], history=False, tag=0)]),
    (b"delete k\r\n", [ev.Delete(b"k", tag=0)]),
    (b"delete k 0\r\n", [ev.Delete(b"k", tag=0)]),
    (b"delete k noreply\r\n", [ev.Delete(b"k", tag=NOREPLY)]),
    (b"incr k 5\r\n", [ev.Arith(b"k", 5, incr=True, tag=0)]),
    (b"decr k 18446744073709551615 noreply\r\n",
     [ev.Arith(b"k", (1 << 64) - 1, incr=False, tag=NOREPLY)]),
    (b"touch k 10\r\n", [ev.Touch(b"k", 10, tag=0)]),
    (b"flush_all\r\n", [ev.FlushAll(0, tag=0)]),
    (b"flush_all 5 noreply\r\n", [ev.FlushAll(5, tag=NOREPLY)]),
    (b"flush_all -1\r\n", [ev.FlushAll(0, tag=0)]),
    (b"flush_all 5 5\r\n", [ev.FlushAll(5, tag=0)]),   # memcached: as 5
    (b"flush_all -5 x\r\n", [ev.FlushAll(0, tag=0)]),
    (b"stats\r\n", [ev.Stats("")]),
    (b"stats settings\r\n", [ev.Stats("settings")]),
    (b"stats items\r\n", [ev.Stats("items")]),
    (b"stats slabs\r\n", [ev.Stats("slabs")]),
    (b"stats conns\r\n", [ev.Stats("conns")]),
    (b"stats reset\r\n", [ev.Stats("reset")]),
    (b"verbosity 1\r\n", [ev.Verbosity(1, tag=0)]),
    (b"verbosity +1\r\n", [ev.Verbosity(1, tag=0)]),
    (b"verbosity -0\r\n", [ev.Verbosity(0, tag=0)]),
    (b"verbosity 4294967297\r\n", [ev.Verbosity(1, tag=0)]),   # mod 2^32
    (b"quit\r\n", [ev.Quit()]),
    (b"shutdown\r\n", [ev.Shutdown()]),
    (b"lru_crawler metadump all\r\n", [ev.MetaDump(b"")]),
    (b"lru_crawler metadump user:\r\n", [ev.MetaDump(b"user:")]),
    (b"relabel k system_u:object_r:x_t:s0\r\n",
     [ev.Relabel(b"k", "system_u:object_r:x_t:s0", tag=0)]),
    (b"getlabel k\r\n", [ev.GetLabel(b"k")]),
    (b"createlabel default\r\n", [ev.CreateLabel(None)]),
    (b"createlabel a:b:c:s0\r\n", [ev.CreateLabel("a:b:c:s0")]),
    (b"whoami\r\n", [ev.WhoAmI(tag=4)]),
])
def test_simple_commands(data, expected):
    assert each_mode(data) == expected


@pytest.mark.parametrize("verb, mode", [
    (b"set", StoreMode.SET), (b"add", StoreMode.ADD),
    (b"replace", StoreMode.REPLACE), (b"append", StoreMode.APPEND),
    (b"prepend", StoreMode.PREPEND)])
def test_storage_commands(verb, mode):
    data = verb + b" k 5 100 3\r\nabc\r\n"
    assert each_mode(data) == [ev.Store(mode, b"k", 5, 100, b"abc", tag=0)]


def test_cas_and_noreply_and_binary_data():
    value = bytes(range(256)) + b"\r\n\r\n"
    data = b"cas k 4294967295 0 %d 77 noreply\r\n%s\r\n" % (len(value), value)
    assert each_mode(data) == [ev.Store(StoreMode.CAS, b"k", 4294967295, 0,
                                        value, cas=77, tag=NOREPLY)]


def test_pipelined_requests_keep_order():
    data = b"set a 0 0 1\r\n1\r\nget a\r\ndelete a\r\nbogus\r\nget a\r\n"
    events = each_mode(data)
    assert [type(e).__name__ if not isinstance(e, tuple) else e[1]
            for e in events] == ["Store", "Get", "Delete", b"ERROR\r\n", "Get"]


BAD_FORMAT = ("error", b"CLIENT_ERROR bad command line format\r\n", False)
ERROR = ("error", b"ERROR\r\n", False)


@pytest.mark.parametrize("data, expected", [
    # a bad command line is refused without reading the data block, which
    # is then parsed as a command (memcached 1.6.18 does the same)
    (b"set " + b"a" * 251 + b" 0 0 3\r\nabc\r\n", [BAD_FORMAT, ERROR]),
    (b"set k 0 0 -1\r\nabc\r\n", [BAD_FORMAT, ERROR]),
    (b"set k 0 0 xx\r\nabc\r\n", [BAD_FORMAT, ERROR]),
    (b"set k zz 0 3\r\nabc\r\n", [BAD_FORMAT, ERROR]),
    (b"set k 0 x 3\r\nabc\r\n", [BAD_FORMAT, ERROR]),
    (b"set k -1 0 1\r\na\r\n", [BAD_FORMAT, ERROR]),
    # flags: strtoul on 64 bits, then kept mod 2^32 (memcached 1.6.18)
    (b"set k 18446744073709551616 0 1\r\na\r\n", [BAD_FORMAT, ERROR]),
    (b"set k 0x10 0 1\r\na\r\n", [BAD_FORMAT, ERROR]),
    (b"set k 0 0 3x\r\nabc\r\n", [BAD_FORMAT, ERROR]),
    (b"set k 0 0 4294967295\r\nx\r\n", [BAD_FORMAT, ERROR]),
    (b"set k 0 0 2147483647\r\nx\r\n", [BAD_FORMAT, ERROR]),
    (b"set k 0 0 2147483646\r\n", [BAD_FORMAT]),
    (b"set a\x00b 0 0 1\r\nx\r\n", [ERROR, ERROR]),
    (b"GET / HTTP/1.0\r\nget k\r\n", [("error", b"", True)]),
    (b"PUT /a/b HTTP/1.1\r\n", [("error", b"", True)]),
    (b"DELETE HTTP/1.1\r\n", [("error", b"", True)]),
    (b"x HTTP/1.1\r\n", [ERROR]),
    (b"ab HTTP/1.1\r\n", [ERROR]),
    (b"cache_memlimit\r\n", [ERROR]),
    (b"cache_memlimit -5\r\n", [ERROR]),
    (b"stats cachedump\r\n", [("error", b"CLIENT_ERROR bad command line\r\n",
                                False)]),
    (b"stats cachedump x 1\r\n", [BAD_FORMAT]),
    (b"stats cachedump 64 1\r\n", [("error", b"CLIENT_ERROR Illegal slab id"
                                     b"\r\n", False)]),
    (b"stats detail\r\n", [("error", b"CLIENT_ERROR usage: stats detail "
                            b"on|off|dump\r\n", False)]),
    (b"lru_crawler crawl\r\n", [ERROR]),
    (b"lru_crawler sleep\r\n", [ERROR]),
    (b"lru tune 20 40 0.2\r\n", [ERROR]),
    (b"lru tune x 40 0.2 2\r\n", [ERROR]),
    (b"lru tune -1 40 0.2 2\r\n", [ERROR]),
    (b"lru tune 20 40 0.2 x\r\n", [ERROR]),
    (b"lru tune 50 40 0.2 2\r\n", [("error", b"ERROR hot and warm pcts must "
                                      b"not exceed 80\r\n", False)]),
    (b"lru tune 20 40 0 2\r\n", [("error", b"ERROR hot/warm age factors "
                                    b"must be greater than 0\r\n", False)]),
    (b"lru temp_ttl x\r\n", [ERROR]),
    # beyond the C types strtoul and strtol read into (memcached: ERANGE)
    (b"lru tune 18446744073709551616 0 1 1\r\n", [ERROR]),
    (b"lru temp_ttl 9223372036854775808\r\n", [ERROR]),
    (b"lru temp_ttl\r\n", [ERROR]),
    (b"lru_crawler sleep 5 x\r\n", [ERROR]),
    (b"lru_crawler enable x\r\n", [ERROR]),
    (b"lru_crawler disable noreply\r\n", [ERROR]),
    (b"lru_crawler sleep -1\r\n", [BAD_FORMAT]),
    (b"lru_crawler tocrawl x\r\n", [BAD_FORMAT]),
    (b"lru_crawler tocrawl 18446744073709551616\r\n", [BAD_FORMAT]),
    (b"lru_crawler sleep 1000001\r\n", [("error", b"CLIENT_ERROR sleep "
                                          b"must be one second or less\r\n",
                                          False)]),
    (b"lru_crawler crawl 0\r\n", [("error", b"BADCLASS invalid class id\r\n",
                                   False)]),
    (b"lru_crawler metadump 99\r\n", [("error", b"BADCLASS invalid class id"
                                       b"\r\n", False)]),
    (b"lru mode x\r\n", [ERROR]),
    (b"lru\r\n", [ERROR]),
    (b"slabs automove 3\r\n", [ERROR]),
    (b"slabs automove x\r\n", [BAD_FORMAT]),
    (b"slabs automove\r\n", [ERROR]),
    (b"set k 0 0 1 noreply extra\r\na\r\n", [ERROR, ERROR]),
    (b"set k 0 0\r\n", [ERROR]),
    (b"cas k 0 0 1\r\na\r\n", [ERROR, ERROR]),
    (b"set k 0 0 -1 noreply\r\n", [("error", b"", False)]),
    # the block is read whole; a wrong terminator is a bad data chunk
    (b"set k 0 0 5\r\nabc\r\nxy", [("error", b"CLIENT_ERROR bad data chunk\r\n", False)]),
    (b"set k 0 0 2\r\nabcdef\r\n",
     [("error", b"CLIENT_ERROR bad data chunk\r\n", False), ERROR]),
    (b"set k 0 0 2 noreply\r\nabcd\r\n", [("error", b"", False), ERROR]),
    (b"get " + b"a" * 251 + b"\r\n", [BAD_FORMAT]),
    (b"get a " + b"b" * 251 + b" c\r\n", [BAD_FORMAT]),
    (b"get\r\n", [ERROR]),
    (b"foo bar\r\n", [ERROR]),
    (b"\r\n", [ERROR]),
    (b"touch k\r\n", [ERROR]),
    (b"touch k x\r\n", [("error", b"CLIENT_ERROR invalid exptime argument\r\n", False)]),
    (b"gat k\r\n", [("error", b"CLIENT_ERROR invalid exptime argument\r\n", False)]),
    (b"incr k x\r\n", [("error", b"CLIENT_ERROR invalid numeric delta argument\r\n", False)]),
    (b"incr k -1\r\n", [("error", b"CLIENT_ERROR invalid numeric delta argument\r\n", False)]),
    (b"incr k 18446744073709551616\r\n",
     [("error", b"CLIENT_ERROR invalid numeric delta argument\r\n", False)]),
    (b"incr k x noreply\r\n", [("error", b"", False)]),
    (b"delete k 5\r\n", [("error", b"CLIENT_ERROR bad command line format.  "
                          b"Usage: delete <key> [noreply]\r\n", False)]),
    (b"flush_all x\r\n", [("error", b"CLIENT_ERROR invalid exptime argument\r\n", False)]),
    (b"verbosity\r\n", [ERROR]),
    (b"verbosity 18446744073709551616\r\n", [BAD_FORMAT]),
    (b"flush_all 5 5 5\r\n", [ERROR]),
    (b"flush_all noreply 5\r\n", [("error", b"CLIENT_ERROR invalid exptime "
                                     b"argument\r\n", False)]),
    (b"verbosity x\r\n", [BAD_FORMAT]),
    (b"verbosity noreply\r\n", [("error", b"", False)]),
    (b"verbosity foo bar my\r\n", [ERROR]),
    (b"stats nope\r\n", [ERROR]),
])
def test_errors_as_memcached(data, expected):
    assert each_mode(data) == expected


def test_oversized_block_is_swallowed():
    """A typed request (the engine drops the old item for set only)."""
    data = b"set k 0 0 2000\r\n" + b"x" * 2000 + b"\r\nget k\r\n"
    events = each_mode(data, max_item_size=1024)
    assert events == [ev.Oversized(b"k", drop=True, tag=0),
                      ev.Get([b"k"], history=False, tag=0)]
    add = each_mode(b"add k 0 0 2000 noreply\r\n" + b"x" * 2002,
                    max_item_size=1024)
    assert add == [ev.Oversized(b"k", drop=False, tag=NOREPLY)]
    codec = TextCodec()
    assert codec.send(add[0], ev.TooLarge()) == b""
    assert codec.send(events[0], ev.TooLarge()) == (
        b"SERVER_ERROR object too large for cache\r\n")


def test_keys_with_control_bytes_as_memcached():
    """Only space, LF (and NUL) delimit; tab, CR, 0x10 and 0x7f are key bytes."""
    for key in (b"a\x10b", b"a\x7f", b"a\tb", b"a\rb", b"\x01"):
        assert each_mode(b"get %s\r\n" % key) == [ev.Get([key], history=False, tag=0)]
    assert each_mode(b"set a\x01b 0 0 1\r\nx\r\n")[0].key == b"a\x01b"


def test_admin_commands_parse():
    cases = {
        b"stats cachedump 1 5\r\n": ev.CacheDump(1, 5),
        b"stats cachedump 1 1 x\r\n": ev.CacheDump(1, 1),
        b"cache_memlimit 50\r\n": ev.MemLimit(50, tag=0),
        b"cache_memlimit 50 noreply\r\n": ev.MemLimit(50, tag=NOREPLY),
        b"stats detail dump\r\n": ev.Detail("dump"),
        b"stats sizes\r\n": ev.Stats("sizes"),
        b"stats extstore\r\n": ev.Stats("extstore"),
        b"lru_crawler crawl 1,2\r\n": ev.Crawl(),
        b"lru_crawler crawl all\r\n": ev.Crawl(),
        b"lru_crawler metadump hash\r\n": ev.MetaDump(b""),
        b"lru_crawler metadump 2\r\n": ev.MetaDump(b"", (2,)),
        b"lru_crawler metadump user:\r\n": ev.MetaDump(b"user:"),
        b"lru mode flat\r\n": ev.Tune("lru_segmented", False),
        b"slabs automove 2\r\n": ev.Tune("slab_automove", 2),
        b"lru_crawler sleep 5\r\n": ev.Tune("lru_crawler_sleep", 5),
        b"lru tune 20 40 0.2 2.0\r\n": ev.Tune("lru_tune", (20, 40, 0.2, 2.0)),
        b"lru tune 10 30 .5 1e1 x\r\n": ev.Tune("lru_tune", (10, 30, 0.5, 10.0)),
        b"lru temp_ttl 10\r\n": ev.Tune("temp_ttl", 10),
        b"lru temp_ttl -1 x\r\n": ev.Tune("temp_ttl", -1),
        b"lru temp_ttl 99999999999\r\n": ev.Tune("temp_ttl", 1215752191),
        b"lru_crawler sleep +1000000\r\n": ev.Tune("lru_crawler_sleep",
                                                   1000000),
        b"lru_crawler sleep -0\r\n": ev.Tune("lru_crawler_sleep", 0),
        b"lru_crawler tocrawl 4294967299\r\n": ev.Tune(
            "lru_crawler_tocrawl", 3),
        b"lru_crawler enable\r\n": ev.Tune("lru_crawler", True),
        b"lru_crawler disable\r\n": ev.Tune("lru_crawler", False),
        b"shutdown graceful\r\n": ev.Shutdown(graceful=True),
        b"shutdown x\r\n": ev.Shutdown(valid=False),
    }
    for data, request in cases.items():
        assert each_mode(data) == [request], data


def test_long_line_without_newline_closes():
    events = each_mode(b"x" * 65536)
    assert events == [("error", b"CLIENT_ERROR line too long\r\n", True)]


def test_long_line_with_its_newline_closes_too():
    """The same answer whole and byte by byte (see the module doc)."""
    events = each_mode(b"foo " + b"a" * 3000 + b"\r\nversion\r\n")
    assert events == [("error", b"CLIENT_ERROR line too long\r\n", True)]


def test_long_get_line_waits_for_its_newline():
    keys = b" ".join(b"k%d" % i for i in range(6000))
    events = each_mode(b"get " + keys + b"\r\n")
    assert len(events) == 1 and len(events[0].keys) == 6000


def test_key_of_250_bytes_is_fine():
    key = b"a" * 250
    assert each_mode(b"get " + key + b"\r\n") == [ev.Get([key], history=False, tag=0)]


REPLIES = [
    (ev.Get([b"k"], tag=0), ev.Values([ev.Item(b"k", 5, b"abc", 9)]),
     b"VALUE k 5 3\r\nabc\r\nEND\r\n"),
    (ev.Get([b"k"], tag=2), ev.Values([ev.Item(b"k", 5, b"abc", 9)]),
     b"VALUE k 5 3 9\r\nabc\r\nEND\r\n"),
    (ev.Get([b"k"], tag=0), ev.Values([]), b"END\r\n"),
    (ev.Store(StoreMode.SET, b"k", 0, 0, b""), ev.Status.STORED, b"STORED\r\n"),
    (ev.Store(StoreMode.SET, b"k", 0, 0, b"", tag=NOREPLY), ev.Status.STORED,
     b""),
    (ev.Store(StoreMode.SET, b"k", 0, 0, b"", tag=NOREPLY),
     ev.ServerError("out of memory storing object"),
     b"SERVER_ERROR out of memory storing object\r\n"),
    (ev.Arith(b"k", 1), ev.Number(42), b"42\r\n"),
    (ev.Delete(b"k"), ev.Denied(), b"CLIENT_ERROR access denied\r\n"),
    (ev.Stats(""), ev.StatsReply([("pid", 1), ("mac_mode", "policy")]),
     b"STAT pid 1\r\nSTAT mac_mode policy\r\nEND\r\n"),
    (ev.Version(), ev.VersionReply("1.6.18"), b"VERSION 1.6.18\r\n"),
    (ev.GetLabel(b"k"), ev.Label("a:b:c:s0"), b"LABEL a:b:c:s0\r\n"),
    (ev.WhoAmI(tag=4), ev.Label("a:b:c:s0"), b"CONTEXT a:b:c:s0\r\n"),
    (ev.MetaDump(b""), ev.KeyList([ev.Item(b"a b", 0, None, 3, 0, 5)], 100),
     b"key=a%20b exp=-1 la=100 cas=3 fetch=no cls=1 size=5\nEND\r\n"),
    # a slice of a long listing: no END until the last one
    (ev.MetaDump(b"", after=b"a"), ev.KeyList(
        [ev.Item(b"b", 0, None, 4, 0, 5)], 100, more=True),
     b"key=b exp=-1 la=100 cas=4 fetch=no cls=1 size=5\n"),
    (ev.MetaDump(b"", after=b"b"), ev.KeyList([], 100, more=True), b""),
    (ev.CacheDump(1, 0), ev.Dump([ev.Item(b"k", 0, None, 1, 0, 2)],
                                 more=True), b"ITEM k [2 b; 0 s]\r\n"),
    (ev.CacheDump(1, 0, after=b"k"), ev.Dump([]), b"END\r\n"),
    (ev.Quit(), ev.Close(), b""),
]


@pytest.mark.parametrize("request_, reply, expected", REPLIES)
def test_replies(request_, reply, expected):
    assert TextCodec().send(request_, reply) == expected


# Plain numbers and keys take short cuts through the codec's checks; a
# one-key get, the hottest line, must read as the general reader reads it.
UNAUTHENTICATED = ("error", b"CLIENT_ERROR unauthenticated\r\n", False)


@pytest.mark.parametrize("data, expected", [
    (b"get k\r\n", [ev.Get([b"k"], history=False, tag=0)]),
    (b"get k\n", [ev.Get([b"k"], history=False, tag=0)]),
    (b"get " + b"a" * 250 + b"\r\n",
     [ev.Get([b"a" * 250], history=False, tag=0)]),
    (b"get  k \r\n", [ev.Get([b"k"], history=False, tag=0)]),
    (b"get k\x00 junk\r\n", [ev.Get([b"k"], history=False, tag=0)]),
    (b"get k\tx\r\n", [ev.Get([b"k\tx"], history=False, tag=0)]),
    (b"get \x00k\r\n", [ERROR]),
    (b"GET k\r\n", [ERROR]),
])
def test_one_key_get_reads_as_the_general_reader(data, expected):
    assert each_mode(data) == expected


@given(st.binary(min_size=0, max_size=300).filter(lambda key: b"\n" not in key))
def test_one_key_get_reads_as_the_tokenizer_reads_it(key):
    # "get  KEY" (two spaces) never takes the one-key short cut: it goes
    # through tokens_of and _read_get, which drop the empty token
    for mode in ("whole", "bytes"):
        assert parse(b"get " + key + b"\r\n", mode) == \
            parse(b"get  " + key + b"\r\n", mode)


def test_one_key_get_waits_for_a_login_when_auth_is_on():
    for mode in ("whole", "bytes"):
        assert parse(b"get k\r\n", mode, auth=True) == [UNAUTHENTICATED]


@pytest.mark.parametrize("exptime, expected", [
    (b"2147483647", 2147483647), (b"0000000001", 1), (b"-1", -1),
    (b"-2147483648", -2147483648)])
def test_store_numbers_in_range(exptime, expected):
    data = b"set k 0 %s 1\r\na\r\n" % exptime
    assert each_mode(data) == [ev.Store(StoreMode.SET, b"k", 0, expected,
                                        b"a", tag=0)]


@pytest.mark.parametrize("exptime", [
    b"2147483648", b"00000000001", b"9999999999", b"-2147483649", b"+1",
    b"1e3"])
def test_store_numbers_out_of_range(exptime):
    data = b"set k 0 %s 1\r\na\r\n" % exptime
    assert each_mode(data) == [BAD_FORMAT, ERROR]


TEXT_PIECES = st.sampled_from([
    b"get k\r\n", b"gets a b\r\n", b"set k 0 0 3\r\nabc\r\n", b"set k 0 0 3\r\n",
    b"abcd\r\n", b"set k 0 0 2000000\r\n", b"mg k v\r\n", b"bogus\r\n",
    b"\r\n", b"\n", b"get ", b"x" * 300, b"incr k 1\r\n", b"quit\r\n"])


@given(st.lists(st.one_of(TEXT_PIECES, st.binary(max_size=40)), max_size=12))
def test_no_event_without_input(no_event_without_input, chunks):
    """Once an event (or an error) leaves nothing buffered, the next is
    NEED_DATA: the connection stops parsing there without asking."""
    no_event_without_input(TextCodec(max_item_size=1 << 20), chunks)
