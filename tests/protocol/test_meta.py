"""Meta commands (mg ms md ma mn me): parsing and replies.

Each parser test feeds its input whole, byte by byte and with trailing data
(``parse_all_ways``). Replies are compared byte for byte, wherever possible
with what a real memcached 1.6.18 answers to the same bytes; the engine's
reply is built by hand from memcached's own state (its cas values), so only
our rendering is under test. Examples follow memcached's doc/protocol.txt.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securecache.protocol import events as ev, meta
from securecache.protocol.meta import (MetaCodec, MetaTag, READERS, is_meta,
                                       render)

NOW = 1_700_000_000


def clock() -> float:
    return NOW + 0.5


def codec(max_item_size: int = 1 << 20) -> MetaCodec:
    return MetaCodec(max_item_size, clock=clock)


def err(reply: bytes, close: bool = False) -> tuple:
    return ("error", reply, close)


@pytest.fixture
def parse(all_ways):
    """Events of ``data``, fed whole, byte by byte and with trailing data."""
    def parse(data: bytes, **kw) -> list:
        return all_ways(lambda: codec(**kw), data, b"mn\r\n")
    return parse



@pytest.fixture
def run_whole(feed):
    return lambda data: feed(codec, [data])


def tag(command: bytes, key: bytes, *flags: bytes, **kw) -> MetaTag:
    return MetaTag(command, key, flags, clock=clock, **kw)


def item(key: bytes, value: bytes | None, cas: int = 1, flags: int = 0,
         exptime: int = 0) -> ev.Item:
    return ev.Item(key, flags, value, cas, exptime, len(value or b""))


@pytest.fixture
def mc(memcached):
    return memcached.connect()


def cas_of(mc, key: bytes) -> int:
    return int(re.match(rb"HD c(\d+)", mc.meta(b"mg %s c\r\n" % key))[1])


# ------------------------------------------------------------------- mg
def test_mg_return_flags_in_request_order(mc, one):
    mc.meta(b"ms mg1 3 T0 F5\r\nbar\r\n")
    data = b"mg mg1 s v f t c k O123\r\n"
    request = one(data)
    assert request == ev.Get([b"mg1"], value=True, tag=tag(
        b"mg", b"mg1", b"s", b"v", b"f", b"t", b"c", b"k", b"O123"))
    reply = ev.Values([item(b"mg1", b"bar", cas_of(mc, b"mg1"), 5)])
    assert render(request, reply) == mc.meta(data)


def test_mg_without_v_is_metadata_only_hd(mc, one):
    mc.meta(b"ms mg2 2\r\nhi\r\n")
    request = one(b"mg mg2 s c\r\n")
    assert request.value is False
    reply = ev.Values([item(b"mg2", None, cas_of(mc, b"mg2"))])
    reply.items[0].size = 2
    assert render(request, reply) == mc.meta(b"mg mg2 s c\r\n")
    assert render(one(b"mg mg2\r\n"), reply) == b"HD\r\n"


@pytest.mark.parametrize("data", [b"mg nokey v\r\n", b"mg nokey k O1 s\r\n",
                                  b"mg nokey v q\r\n", b"mg nokey q k\r\n"])
def test_mg_miss_en_echoes_only_opaque_and_key(mc, data, one):
    assert render(one(data), ev.Values([])) == mc.meta(data)


def test_mg_quiet_hides_miss_not_hit(mc, one):
    mc.meta(b"ms mgq 1\r\nx\r\n")
    request = one(b"mg mgq q s\r\n")
    assert request.tag.quiet
    hit = ev.Values([item(b"mgq", b"x")])
    assert render(request, hit) == mc.meta(b"mg mgq q s\r\n") == b"HD s1\r\n"
    assert render(request, ev.Values([])) == b""


def test_quiet_pipeline_ending_in_mn(mc, parse):
    """protocol.txt: pipeline mg's with q, then mn marks the end."""
    mc.meta(b"ms qp1 1\r\na\r\n")
    data = b"mg qp1 v k q O1\r\nmg qp2 v k q O2\r\nmn\r\n"
    first, second, noop = parse(data)
    assert isinstance(noop, ev.Noop) and is_meta(noop)
    ours = (render(first, ev.Values([item(b"qp1", b"a")]))
            + render(second, ev.Values([]))
            + render(noop, ev.Status.NOOP))
    assert ours == mc.meta(data) == b"VA 1 kqp1 O1\r\na\r\nMN\r\n"


def test_opaque_tokens_match_pipelined_replies(mc, parse):
    """protocol.txt: O tokens 1 2 3 match replies without keys."""
    data = b"".join(b"mg op%d v O%d\r\n" % (i, i) for i in (1, 2, 3))
    requests = parse(data)
    assert [r.tag.flags for r in requests] == [(b"v", b"O%d" % i)
                                               for i in (1, 2, 3)]
    ours = b"".join(render(r, ev.Values([])) for r in requests)
    assert ours == mc.meta(data) == b"EN O1\r\nEN O2\r\nEN O3\r\n"


def test_mg_ttl_remaining_and_touch(one):
    request = one(b"mg tt t T30 v\r\n")
    assert request.touch == 30
    live = item(b"tt", b"v", exptime=NOW + 20)
    assert render(request, ev.Values([live])) == b"VA 1 t20\r\nv\r\n"
    forever = item(b"tt", b"v")
    assert render(request, ev.Values([forever])) == b"VA 1 t-1\r\nv\r\n"


def test_mg_proxy_hints_p_and_l_are_ignored(mc, one):
    """protocol.txt: "mg foo Lpath/ v" - P and L tokens are ignored."""
    mc.meta(b"ms pl 1\r\nz\r\n")
    data = b"mg pl Lpath/ Pxyz v\r\n"
    request = one(data)
    assert request == ev.Get([b"pl"], value=True,
                             tag=tag(b"mg", b"pl", b"Lpath/", b"Pxyz", b"v"))
    assert render(request, ev.Values([item(b"pl", b"z")])) == mc.meta(data)


def test_h_and_l_are_left_out_until_the_engine_tracks_access(one):
    request = one(b"mg hl h l v\r\n")
    assert render(request, ev.Values([item(b"hl", b"v")])) == b"VA 1\r\nv\r\n"


def test_base64_keys(mc, one):
    raw = b"bin\x00key with space"
    encoded = base64.b64encode(raw)
    store = b"ms %s 2 b k\r\nhi\r\n" % encoded
    request = one(store)
    assert request.key == raw and request.tag.base64
    assert render(request, ev.Status.STORED) == mc.meta(store)
    get = b"mg %s b k v\r\n" % encoded
    request = one(get)
    assert request.keys == [raw]
    hit = ev.Values([item(raw, b"hi")])
    assert render(request, hit) == mc.meta(get)
    missing = b"mg %s b k\r\n" % base64.b64encode(b"\x01\x02")
    assert render(one(missing), ev.Values([])) == mc.meta(missing)


# ------------------------------------------------------------------- ms
def test_ms_data_block_flags_and_ttl(one):
    request = one(b"ms k1 3 F5 T60\r\nbar\r\n")
    assert request == ev.Store(ev.StoreMode.SET, b"k1", 5, 60, b"bar",
                               tag=tag(b"ms", b"k1", b"F5", b"T60"))


@pytest.mark.parametrize("token, mode", [
    (b"MS", ev.StoreMode.SET), (b"ME", ev.StoreMode.ADD),
    (b"MA", ev.StoreMode.APPEND), (b"MP", ev.StoreMode.PREPEND),
    (b"MR", ev.StoreMode.REPLACE)])
def test_ms_mode_switch(token, mode, one):
    assert one(b"ms k 1 %s\r\nx\r\n" % token).mode is mode


@pytest.mark.parametrize("flags, mode, cas, invalidate", [
    (b"C7", ev.StoreMode.CAS, 7, False),
    (b"C7 MR", ev.StoreMode.CAS, 7, False),
    (b"C7 MA", ev.StoreMode.APPEND, 7, False),
    (b"C7 ME", ev.StoreMode.ADD, 0, False),
    (b"C7 I", ev.StoreMode.CAS, 7, True),
    (b"I", ev.StoreMode.SET, 0, False)])
def test_ms_compare_and_swap(flags, mode, cas, invalidate, one):
    request = one(b"ms k 1 %s\r\nx\r\n" % flags)
    assert (request.mode, request.cas, request.invalidate) == (
        mode, cas, invalidate)


def test_ms_explicit_new_cas_e(one):
    assert one(b"ms k 1 E42\r\nx\r\n").new_cas == 42


def test_ms_client_flags_wrap_to_32_bits_as_memcached(mc, one):
    assert one(b"ms fw 1 F4294967297\r\nx\r\n").flags == 1
    mc.meta(b"ms fw 1 F4294967297\r\nx\r\n")
    assert mc.meta(b"mg fw f\r\n") == b"HD f1\r\n"


@pytest.mark.parametrize("status", [ev.Status.NOT_STORED, ev.Status.EXISTS,
                                    ev.Status.NOT_FOUND])
def test_ms_failures_echo_key_opaque_and_c0(mc, status, one):
    setup = {ev.Status.NOT_STORED: b"ms msf 1\r\nx\r\n",
             ev.Status.EXISTS: b"ms msf 1\r\nx\r\n",
             ev.Status.NOT_FOUND: b"md msf q\r\n"}[status]
    mode = {ev.Status.NOT_STORED: b"ME", ev.Status.EXISTS: b"C1",
            ev.Status.NOT_FOUND: b"C1"}[status]
    mc.meta(setup)
    data = b"ms msf 2 %s q k O5 c\r\nab\r\n" % mode
    assert render(one(data), status) == mc.meta(data)


def test_ms_quiet_hides_hd_only(mc, one):
    data = b"ms msq 2 q k\r\nab\r\n"
    assert render(one(data), ev.Status.STORED) == mc.meta(data) == b""
    assert render(one(data), ev.Status.NOT_STORED) == b"NS kmsq\r\n"


def test_ms_success_leaves_out_c_until_store_returns_a_cas(one):
    request = one(b"ms k 1 c k\r\nx\r\n")
    assert render(request, ev.Status.STORED) == b"HD kk\r\n"


def test_ms_value_too_large_is_swallowed(mc, parse, run_whole):
    """A typed request; the engine's TooLarge renders as memcached's error."""
    data = b"ms big 5 T1\r\n12345\r\n"
    request, = parse(data, max_item_size=4)
    assert isinstance(request, ev.Oversized) and request.key == b"big"
    assert request.drop                     # memcached drops it in any mode
    big = b"ms big %d\r\n%s\r\n" % (2 << 20, b"x" * (2 << 20))
    request, = run_whole(big)
    assert render(request, ev.TooLarge()) == mc.meta(big)


# ------------------------------------------------------------ md, ma, me
def test_md_replies(mc, one):
    mc.meta(b"ms md1 1\r\nx\r\n")
    request = one(b"md md1 C99 k O1\r\n")
    assert request == ev.Delete(b"md1", 99, tag=tag(b"md", b"md1", b"C99",
                                                    b"k", b"O1"))
    assert render(request, ev.Status.EXISTS) == mc.meta(b"md md1 C99 k O1\r\n")
    quiet = b"md md1 q k\r\n"
    assert render(one(quiet), ev.Status.DELETED) == mc.meta(quiet) == b""
    assert render(one(quiet), ev.Status.NOT_FOUND) == mc.meta(quiet)
    encoded = b"md %s b k\r\n" % base64.b64encode(b"\x00")
    assert render(one(encoded), ev.Status.NOT_FOUND) == mc.meta(encoded)


def test_ma_defaults_and_modes(one):
    assert one(b"ma n\r\n") == ev.Arith(b"n", 1, tag=tag(b"ma", b"n"))
    for token, incr in ((b"MI", True), (b"M+", True), (b"MD", False),
                        (b"M-", False)):
        assert one(b"ma n %s D9\r\n" % token).incr is incr
    assert one(b"ma n D18446744073709551615\r\n").delta == (1 << 64) - 1


def test_ma_auto_create_with_initial_value(mc, one):
    data = b"ma mac N0 J10 v t c\r\n"
    request = one(data)
    assert (request.initial, request.exptime) == (10, 0)
    assert one(b"ma mac J10\r\n").initial is None   # J needs N
    real = mc.meta(data)
    cas = int(re.search(rb" c(\d+)", real)[1])
    assert render(request, ev.Number(10, cas, created=True)) == real
    again = b"ma mac v O7 k\r\n"
    assert render(one(again), ev.Number(11, cas + 1)) == mc.meta(again)
    ttl = one(b"ma mac2 N100 t\r\n")
    assert render(ttl, ev.Number(0, 5, created=True)) == b"HD t100\r\n"


def test_ma_misses_quiet_and_errors(mc, one):
    for data, reply in ((b"ma nope O1 k\r\n", ev.Status.NOT_FOUND),
                        (b"ma nope q\r\n", ev.Status.NOT_FOUND),
                        (b"ma nope q v\r\n", ev.Number(3, 1))):
        if isinstance(reply, ev.Number):
            mc.meta(b"ma nope N0 J2\r\n")
        assert render(one(data), reply) == mc.meta(data)
    mc.meta(b"ms mat 1\r\nx\r\n")
    error = ev.ClientError("cannot increment or decrement non-numeric value")
    assert render(one(b"ma mat q\r\n"), error) == mc.meta(b"ma mat q\r\n")


def test_me_debug(mc, one):
    mc.meta(b"ms me1 2 T0\r\nab\r\n")
    request = one(b"me me1\r\n")
    assert request == ev.Get([b"me1"], value=False, bump=False,
                             tag=tag(b"me", b"me1"))     # me: not a fetch
    assert render(request, ev.Values([])) == mc.meta(b"me nokey\r\n")
    found = ev.Item(b"me1", 0, None, 9, NOW + 100, size=64)
    assert render(request, ev.Values([found])) == (
        b"ME me1 exp=-100 cas=9 cls=1 size=64\r\n")
    real = mc.meta(b"me me1\r\n")
    assert real.startswith(b"ME me1 exp=-1 la=")
    encoded = base64.b64encode(b"\x00me")
    request = one(b"me %s b\r\n" % encoded)
    assert request.keys == [b"\x00me"]
    assert render(request, ev.Values([ev.Item(b"\x00me", 0, None, 1)])) == (
        b"ME %s exp=-1 cas=1 cls=1 size=0\r\n" % encoded)


def test_mn_and_generic_replies(one):
    request = one(b"mn\r\n")
    assert render(request, ev.Status.NOOP) == b"MN\r\n"
    quiet = one(b"mg k q v\r\n")
    assert render(quiet, ev.Denied()) == b"CLIENT_ERROR access denied\r\n"
    assert render(quiet, ev.ServerError("out of memory storing object")) == (
        b"SERVER_ERROR out of memory storing object\r\n")
    assert render(quiet, ev.AuthFailed()) == (
        b"CLIENT_ERROR authentication failure\r\n")
    assert render(quiet, ev.Close()) == b""


# --------------------------------------------------------------- errors
ERRORS = [
    b"mg\r\n", b"md\r\n", b"ma\r\n", b"ms\r\n", b"me\r\n", b"mz x\r\n",
    b"mg " + b"a" * 251 + b" v\r\n", b"md " + b"a" * 251 + b"\r\n",
    b"ma " + b"a" * 251 + b"\r\n", b"me " + b"a" * 251 + b"\r\n",
    b"mg k zz\r\n", b"mg k v v\r\n", b"mg k kO1 k\r\n",
    b"mg k " + b" ".join([b"k"] * 25) + b"\r\n",
    b"mg k a b c d e f g h i j k l m n o p q\r\n",
    b"md k a b c d e f g h i j k l m n o p q\r\n",
    b"ma k a b c d e f g h i j k l m n o p q r\r\n",
    b"mg k T\r\n", b"mg k Tx zz\r\n", b"mg k Tx Nx\r\n", b"mg k Fx\r\n",
    b"mg k Jx\r\n", b"mg k Dx\r\n", b"mg k Cx\r\n", b"mg k MXY\r\n",
    b"mg k E5\r\n", b"mg k O" + b"x" * 32 + b"\r\n", b"mg k b\r\n",
    b"mg YmluAGtleQ b\r\n", b"me !!! b\r\n", b"md k O1 O2\r\n",
    b"md k x\r\n", b"ma k Dabc\r\n", b"ma k J-1 N0\r\n", b"ma k Mx\r\n",
    b"ma k O" + b"x" * 40 + b"\r\n", b"md k O" + b"x" * 40 + b"\r\n",
    b"ms k\r\n", b"ms k -1\r\n", b"ms k 2147483646\r\n",
    b"ms k bar\r\nxx\r\n", b"ms k 2x c\r\nab\r\n", b"ms k 3\r\nbarxx\r\n",
    b"ms " + b"a" * 251 + b" 2\r\nab\r\n",
    b"ms k 2 a b c d e f g h i j k l m n o p q\r\nab\r\n",
    b"ms k 2 MX\r\nab\r\n", b"ms k 2 MEE\r\nab\r\n", b"ms k 2 Tx\r\nab\r\n",
    b"ms k 2 Fx\r\nab\r\n", b"ms k 2 Tx Fx\r\nab\r\n", b"ms k 2 C-1\r\nab\r\n",
    b"ms k 2 Jx\r\nab\r\n", b"ms k 2 O1 O2\r\nab\r\n", b"ms k 2 S5\r\nab\r\n",
    b"ms k 2 O" + b"x" * 40 + b"\r\nab\r\n", b"ms k 3 k b\r\nabc\r\n",
]


@pytest.mark.parametrize("data", ERRORS, ids=lambda d: d[:24].decode())
def test_malformed_requests_get_memcacheds_error(mc, data, parse):
    """Errors (and what follows them: swallowed data or ERROR) as 1.6.18."""
    events = parse(data)
    assert all(e[0] == "error" and not e[2] for e in events)
    assert b"".join(e[1] for e in events) == mc.meta(data)


@pytest.mark.parametrize("data, reply", [
    (b"mg k T2147483648\r\n",
     b"CLIENT_ERROR bad token in command line format\r\n")])
def test_refused_where_the_engine_cannot_follow(data, reply, parse):
    """Values memcached accepts but we refuse (int32 range)."""
    assert parse(data) == [err(reply)]


def test_anti_dogpiling_flags_parse(parse):
    """N (vivify), R (recache), md I/T (invalidate), ma T (touch)."""
    get, = parse(b"mg k N30 R10 v\r\n")
    assert (get.vivify, get.recache) == (30, 10)
    delete, = parse(b"md k I T30\r\n")
    assert (delete.invalidate, delete.exptime) == (True, 30)
    arith, = parse(b"ma k T30\r\n")
    assert arith.touch == 30


@pytest.mark.parametrize("states, line", [
    (dict(won=True), b"VA 1 W\r\nv\r\n"),
    (dict(stale=True, won=True), b"VA 1 X W\r\nv\r\n"),
    (dict(stale=True, token_sent=True), b"VA 1 Z X\r\nv\r\n"),
    (dict(token_sent=True), b"VA 1 Z\r\nv\r\n"),
])
def test_win_stale_and_token_flags_in_memcacheds_order(states, line, parse):
    request, = parse(b"mg k v\r\n")
    reply = ev.Values([ev.Item(b"k", 0, b"v", 1, **states)])
    assert meta.render(request, reply) == line


def test_line_too_long_closes(run_whole):
    data = b"mg " + b"k" * 3000
    assert run_whole(data) == [err(b"CLIENT_ERROR line too long\r\n", True)]


def test_readers_table_uses_text_calling_convention():
    from securecache.protocol import text
    assert set(READERS) == {b"mg", b"ms", b"md", b"ma", b"mn", b"me"}
    block = READERS[b"ms"](text.TextCodec(), [b"ms", b"k", b"2", b"T5"])
    assert isinstance(block, text._Block) and block.length == 2
    assert block.finish(b"ab").value == b"ab"


# The wiring proposed for text.py: two lines at its end, two in send().
WIRING_TAIL = """
from .meta import READERS as META_READERS  # noqa: E402
from .meta import is_meta, render as render_meta  # noqa: E402
READERS.update(META_READERS)
"""
SEND_DOC = '"""The bytes that answer ``request`` with ``reply``."""'
SEND_ANCHOR = " " * 8 + SEND_DOC + "\n"
WIRING_SEND = """        if is_meta(request):
            return render_meta(request, reply)
"""


def _wire(text_py) -> None:
    source = text_py.read_text()
    if "from .meta import" in source:
        return                                  # the lead has wired it
    assert source.count(SEND_ANCHOR) == 1, "TextCodec.send changed"
    source = source.replace(SEND_ANCHOR, SEND_ANCHOR + WIRING_SEND)
    text_py.write_text(source + WIRING_TAIL)


CHECK = '''
import importlib, sys
for name in sys.argv[1].split(","):
    importlib.import_module("securecache.protocol." + name)
from securecache.protocol.text import TextCodec
from securecache.protocol import events as ev
codec = TextCodec()
codec.receive_data(b"mg foo v k\\r\\nms foo 2 q\\r\\nab\\r\\nget foo\\r\\n")
get, store, plain = codec.next_event(), codec.next_event(), codec.next_event()
assert store.value == b"ab" and plain.tag == 0
print(codec.send(get, ev.Values([])), codec.send(store, ev.Status.STORED))
'''


@pytest.mark.parametrize("order", ["text,meta", "meta,text"])
def test_proposed_text_wiring_works_in_either_import_order(tmp_path, order):
    """The lines proposed for text.py (applied to a copy of the package
    unless text.py has them already) work whichever module loads first."""
    import securecache
    source = securecache.__path__[0]
    copy = tmp_path / "securecache"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    _wire(copy / "protocol" / "text.py")
    done = subprocess.run([sys.executable, "-c", CHECK, order],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b'EN kfoo\\r\\n' b''"


# ---------------------------------------------- differential fuzzing
VALID_FLAGS = "bTlOPLkstcfvhuqFCMJDI"
INT = st.from_regex(r"[+-]?[0-9]{1,9}", fullmatch=True)
WIDE = st.from_regex(r"-?[0-9]{1,21}", fullmatch=True)
WORD = st.from_regex(r"[a-zA-Z0-9+-]{0,40}", fullmatch=True)
TYPED_ARG = {"T": INT, "F": WIDE, "C": WIDE, "J": WIDE, "D": WIDE,
             "M": st.sampled_from("ISEAPR+-DX"), "O": WORD}
CLEAN = st.lists(st.sampled_from(VALID_FLAGS), unique=True,
                 max_size=18).flatmap(lambda flags: st.tuples(*[
                     st.tuples(st.just(f), TYPED_ARG.get(
                         f, st.sampled_from(["", "", "x1"]))) for f in flags]))
SOUP = st.lists(st.tuples(st.sampled_from(VALID_FLAGS + "xzSWZ"),
                          st.one_of(st.just(""), INT, WIDE, WORD)),
                max_size=22)
KEYS = st.integers(0, 9).flatmap(lambda n: st.just("k" * 247) if n == 0 else
                                 st.from_regex(r"[a-zA-Z0-9]{1,12}",
                                               fullmatch=True))
MISS_REPLY = {b"mg": ev.Values([]), b"md": ev.Status.NOT_FOUND,
              b"ma": ev.Status.NOT_FOUND}
REFUSED = {b"mg": "NR", b"md": "I", b"ma": "T"}   # see UNSUPPORTED


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(sorted(MISS_REPLY)), key=KEYS,
       flags=st.one_of(CLEAN, SOUP))
def test_random_flags_on_a_missing_key_answer_as_memcached(mc, feed, command,
                                                           key, flags):
    """Any flag soup for a key that does not exist: same bytes as 1.6.18
    (flags that change state or that the engine refuses are left out)."""
    line = " ".join([command.decode(), "miss" + key] + [
        f + a for f, a in flags if f not in REFUSED[command]]).encode()
    line += b"\r\n"
    events = feed(codec, [line])
    assert len(events) == 1
    event = events[0]
    ours = event[1] if isinstance(event, tuple) else render(
        event, MISS_REPLY[command])
    assert ours == mc.meta(line)


MS_CLEAN = st.lists(st.sampled_from("bTOkqFCMIPLstv"), unique=True,
                    max_size=16).flatmap(lambda flags: st.tuples(*[
                        st.tuples(st.just(f), TYPED_ARG.get(f, st.just("")))
                        for f in flags]))
MS_SOUP = st.lists(st.tuples(st.sampled_from("bTOkqFCMIJDNRxS"),
                             st.one_of(st.just(""), INT, WIDE, WORD)),
                   max_size=18)
CODES = {b"HD": ev.Status.STORED, b"NS": ev.Status.NOT_STORED,
         b"NF": ev.Status.NOT_FOUND, b"EX": ev.Status.EXISTS, b"": None}


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=KEYS, size=st.integers(0, 12), bad_size=st.booleans(),
       flags=st.one_of(MS_CLEAN, MS_SOUP))
def test_random_ms_lines_answer_as_memcached(mc, feed, key, size, bad_size,
                                             flags):
    """ms with any flags (but c and E) on an empty cache: same bytes as
    1.6.18, including which data blocks are swallowed after an error."""
    mc.meta(b"flush_all\r\n")
    datalen = f"{size}x" if bad_size else str(size)
    line = " ".join(["ms", "miss" + key, datalen] + [f + a for f, a in flags])
    data = line.encode() + b"\r\n" + b"x" * size + b"\r\n"
    real = mc.meta(data)
    ours = b""
    for event in feed(codec, [data]):
        if isinstance(event, tuple):
            ours += event[1]
        else:
            ours += render(event, CODES[real[:2]] or ev.Status.STORED)
    assert ours == real
