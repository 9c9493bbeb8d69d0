"""Issue 4, item 3: meta commands against a real daemon, compared with the
real memcached 1.6.18 for the same bytes.

Scenarios follow the commands and flags of memcached's doc/protocol.txt
(mg ms md ma mn me; return flags b c f h k l O q s t v; E I M N R T; ms
modes; ma modes; quiet pipelines ending in mn; base64 keys; opaque echo;
ma N/J auto-create). Each scenario runs on a fresh connection to each
server, one step at a time: a step is sent followed by ``version`` and
read through the VERSION line (``mn`` cannot be the sentinel: steps test it). Replies are compared after ``normalise_meta``: cas values
are renumbered in order of appearance (the servers' counters differ) and
remaining TTLs rounded to 10 s (their clocks tick apart). ``{cas}`` in a
step is the last cas the server returned, ``{first}`` the first one.

A sweep sends every flag letter to every command and lists where the two
servers disagree on accepting it: the flags the daemon refuses but
memcached takes (unsupported), and the ones it takes but memcached 1.6.18
refuses (``ms E``, from memcached 1.6.21, is the one known extension).
"""

from __future__ import annotations

import base64
import re
import string
import time

import pytest

from .proto_support import CasMap, Conn, daemon_and_memcached, normalise_meta


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    yield from daemon_and_memcached(tmp_path_factory.mktemp("meta"),
                                    "--durability", "async")


def b64(key: bytes) -> bytes:
    return base64.b64encode(key)


BIG = 1024 * 1024 + 1           # one byte over both servers' -I (1 MiB)

SCENARIOS: dict[str, list[bytes]] = {
    # ------------------------------------------------------------- mg
    "mg return flags on a hit": [
        b"ms g1 5 F7 T100\r\nhello\r\n",
        b"mg g1\r\n",
        b"mg g1 v\r\n",
        b"mg g1 s v f t c k O123\r\n",
        b"mg g1 O1 k c f s t\r\n",
        b"mg g1 v q\r\n",
        b"mg g1 k v q O9\r\n",
    ],
    "mg miss": [
        b"mg g2 v\r\n", b"mg g2\r\n", b"mg g2 v q\r\n", b"mg g2 k O5 v\r\n",
        b"mg g2 s f t c h l\r\n",
    ],
    "mg h and l": [
        b"ms g3 1\r\nx\r\n", b"mg g3 h l\r\n", b"mg g3 h l\r\n",
        b"mg g3 h l v\r\n",
    ],
    "mg u does not bump": [
        b"ms g4 1\r\nx\r\n", b"mg g4 u h l v\r\n", b"mg g4 h l u\r\n",
        b"mg g4 h\r\n", b"mg g4 h\r\n",
    ],
    "mg T touches": [
        b"ms g5 1 T100\r\nx\r\n", b"mg g5 t\r\n", b"mg g5 T500 t v\r\n",
        b"mg g5 t\r\n", b"mg g5 T0 t\r\n", b"mg g5 t v\r\n",
    ],
    # (the t that memcached reports with T-1 is an unsigned wrap: not compared)
    "mg T-1 expires the item": [
        b"ms g5b 1 T100\r\nx\r\n", b"mg g5b T-1\r\n", b"mg g5b v\r\n",
    ],
    "mg N vivifies on a miss": [
        b"mg g6 N30 v c t s\r\n", b"mg g6 N30 v c t\r\n", b"mg g6 v t\r\n",
        b"ms g6 3 C{cas} T0\r\nnew\r\n", b"mg g6 N30 v t\r\n",
    ],
    "mg N on a hit does nothing": [
        b"ms g7 2\r\nhi\r\n", b"mg g7 N30 v t\r\n",
    ],
    "mg R wins a recache": [
        b"ms g8 1 T10\r\nx\r\n", b"mg g8 R30 v t c\r\n", b"mg g8 R30 v t\r\n",
        b"mg g8 R5 v t\r\n", b"ms g8 1\r\ny\r\n", b"mg g8 R30 v t\r\n",
    ],
    "mg base64 keys": [
        b"ms %s 3 b\r\nbin\r\n" % b64(b"key with spaces"),
        b"mg %s b v k c\r\n" % b64(b"key with spaces"),
        b"ms %s 2 b F3\r\nzz\r\n" % b64(b"plain-key"),
        b"mg plain-key v f\r\n",
        b"mg %s b k O1\r\n" % b64(b"\x00\x01\xff binary"),
        b"mg Zm9vYmF b v\r\n", b"mg @@@@ b v\r\n", b"mg Zm9v= b v\r\n",
    ],
    "mg errors": [
        b"mg\r\n", b"mg g9 v v\r\n", b"mg g9 O1 O2\r\n", b"mg g9 Z\r\n",
        b"mg g9 Tabc\r\n", b"mg g9 N\r\n", b"mg g9 R-\r\n",
        b"mg g9 O" + b"x" * 32 + b"\r\n", b"mg g9 O" + b"x" * 31 + b"\r\n",
        b"mg " + b"k" * 251 + b" v\r\n", b"mg " + b"k" * 250 + b" v\r\n",
        b"mg g9 E5\r\n", b"mg g9 " + b" ".join([b"v"] * 30) + b"\r\n",
    ],
    # ------------------------------------------------------------- ms
    "ms modes": [
        b"ms s1 1 MS\r\na\r\n",
        b"ms s1 1 ME\r\nb\r\n",
        b"ms s2 1 ME\r\nb\r\n",
        b"ms s1 1 MA\r\nc\r\n",
        b"ms s1 1 MP\r\nd\r\n",
        b"ms s3 1 MA\r\nx\r\n",
        b"ms s3 1 MP\r\nx\r\n",
        b"ms s3 1 MR\r\nx\r\n",
        b"ms s2 1 MR\r\ne\r\n",
        b"mg s1 v\r\n", b"mg s2 v\r\n", b"mg s3 v\r\n",
        b"ms s1 1 Ms\r\nx\r\n", b"ms s1 1 Ma\r\nx\r\n",
        b"ms s1 1 MX\r\nx\r\n", b"ms s1 1 MSS\r\nx\r\n", b"ms s1 1 M\r\nx\r\n",
    ],
    "ms compare and swap": [
        b"ms s4 1 c\r\na\r\n",
        b"ms s4 1 C{cas} c\r\nb\r\n",
        b"ms s4 1 C{first} c\r\nc\r\n",
        b"ms s4 1 C{cas} MA c\r\nd\r\n",
        b"ms s4 1 C{first} MP c\r\ne\r\n",
        b"ms s4 1 C{cas} MR\r\nf\r\n",
        b"ms s5 1 C12345 c\r\nx\r\n",
        b"ms s5 1 ME C12345\r\nx\r\n",
        b"mg s4 v c\r\n", b"mg s5 v\r\n",
    ],
    "ms I invalidates with an older cas": [
        b"ms s6 1 c\r\na\r\n", b"ms s6 1 c\r\nb\r\n",
        b"ms s6 1 C{first} I\r\nc\r\n", b"mg s6 v c\r\n", b"mg s6 v\r\n",
        b"ms s6 1 I\r\nd\r\n", b"mg s6 v\r\n",
    ],
    "ms return flags": [
        b"ms s7 2 k O42 c q\r\nhi\r\n",
        b"ms s7 2 k O42 c\r\nhi\r\n",
        b"ms s7 2 ME k O43 c\r\nhi\r\n",
        b"ms s7 2 b k\r\nhi\r\n",
        b"ms %s 2 b k O1\r\nhi\r\n" % b64(b"s7 binary"),
        b"ms s7 2 F4294967295 T0 s t f v\r\nhi\r\n", b"mg s7 f v\r\n",
        b"ms s7 2 F4294967296\r\nhi\r\n", b"mg s7 f\r\n",
        b"ms s8 2 T-1\r\nhi\r\n", b"mg s8 v\r\n",
    ],
    "ms quiet": [
        b"ms s9 1 q\r\na\r\n", b"ms s9 1 q ME\r\nb\r\n",
        b"ms s10 1 q MR\r\nb\r\n", b"ms s9 1 q C1\r\nc\r\n", b"mg s9 v\r\n",
    ],
    "ms errors": [
        b"ms s11\r\n", b"ms s11 xx\r\nab\r\n", b"ms s11 -1\r\n",
        b"ms s11 2\r\nabcd\r\n", b"ms s11 2 q\r\nabcd\r\n",
        b"ms s11 5 Z\r\nhello\r\n", b"ms s11 5 F1 F2\r\nhello\r\n",
        b"ms s11 5 Fx\r\nhello\r\n", b"ms s11 5 Cx\r\nhello\r\n",
        b"ms s11 %d\r\n%s\r\n" % (BIG, b"z" * BIG),
        b"ms s11 %d T0 q\r\n%s\r\n" % (BIG, b"z" * BIG),
        b"ms " + b"k" * 251 + b" 1\r\nx\r\n",
        b"mg s11 v\r\n",
    ],
    # ------------------------------------------------------------- md
    "md": [
        b"md d1\r\n", b"md d1 q\r\n", b"md d1 k O7\r\n",
        b"ms d1 1 c\r\na\r\n", b"md d1 C12345\r\n", b"md d1 C{cas} k O8\r\n",
        b"mg d1 v\r\n", b"ms d1 1\r\na\r\n", b"md d1 q\r\n", b"mg d1 v\r\n",
        b"ms %s 1\r\na\r\n" % b64(b"d1 b").replace(b"=", b""),
        b"md %s b k\r\n" % b64(b"d1 binary"),
    ],
    "md I marks stale": [
        b"ms d2 1 T100\r\na\r\n", b"md d2 I T30\r\n", b"mg d2 v c t\r\n",
        b"mg d2 v t\r\n", b"ms d2 1 C{cas} T0\r\nb\r\n", b"mg d2 v t\r\n",
        b"md d2 I q\r\n", b"mg d2 v\r\n", b"md d3 I\r\n",
    ],
    "md errors": [
        b"md\r\n", b"md d4 Z\r\n", b"md d4 q q\r\n", b"md d4 Cx\r\n",
        b"md d4 O" + b"x" * 32 + b"\r\n", b"md " + b"k" * 251 + b"\r\n",
    ],
    # ------------------------------------------------------------- ma
    "ma increments and decrements": [
        b"ma a1\r\n", b"ma a1 v\r\n", b"ma a1 q\r\n",
        b"ma a1 N0 J41 v\r\n", b"ma a1 v\r\n", b"ma a1 D10 v\r\n",
        b"ma a1 MD D100 v\r\n", b"ma a1 M- v\r\n", b"ma a1 M+ D7 v\r\n",
        b"ma a1 MI v t\r\n", b"ma a1 Md v\r\n", b"ma a1 Mi v\r\n",
        b"ma a1 q\r\n", b"ma a1 q v\r\n", b"ma a1 v\r\n", b"ma a1\r\n",
        b"mg a1 v\r\n",
    ],
    "ma N auto-creates with J": [
        b"ma a2 N100 J5 v t\r\n", b"ma a2 N100 J5 v t\r\n",
        b"ma a3 N0 v\r\n", b"ma a4 N0 J18446744073709551615 v\r\n",
        b"ma a4 v\r\n", b"ma a5 J5 v\r\n", b"ma a6 N0 J7 MD v\r\n",
        b"mg a2 v\r\n",
    ],
    # memcached 1.6.18 answers an auto-created ma even in quiet mode
    "ma N auto-create in quiet mode": [
        b"ma a7 N0 J7 q\r\n", b"ma a7 N0 J7 q\r\n", b"ma a7b N0 J7 q v\r\n",
        b"mg a7 v\r\n",
    ],
    "ma cas and return flags": [
        b"ma a8 N0 J1 c\r\n", b"ma a8 C{cas} v c\r\n",
        b"ma a8 C{first} v\r\n", b"ma a8 k O5 v\r\n",
        b"ma a8 T100 t v\r\n", b"ma a8 t v\r\n", b"ma a8 T0 t\r\n",
        b"ma %s b N0 J3 v k\r\n" % b64(b"a8 binary"),
    ],
    "ma on odd values": [
        b"ms a9 20\r\n18446744073709551615\r\n", b"ma a9 v\r\n",
        b"ms a10 3\r\nabc\r\n", b"ma a10 v\r\n",
        b"ms a11 3\r\n100\r\n", b"ma a11 MD D95 v\r\n", b"mg a11 v\r\n",
        b"ms a12 0\r\n\r\n", b"ma a12 v\r\n",
    ],
    "ma errors": [
        b"ma\r\n", b"ma a13 MX\r\n", b"ma a13 Dx\r\n", b"ma a13 D-1\r\n",
        b"ma a13 N0 Jx\r\n", b"ma a13 Z\r\n", b"ma a13 v v\r\n",
        b"ma a13 MII\r\n",
    ],
    # --------------------------------------------- mn, opaque, pipelines
    "mn": [b"mn\r\n", b"mn mn\r\n"],
    "opaque echo on every command": [
        b"ms o1 1 O1\r\na\r\n", b"mg o1 O2 v\r\n", b"mg o0 O3\r\n",
        b"ma o1 O4\r\n", b"ma o2 N0 O5 v\r\n", b"md o1 O6\r\n",
        b"md o1 O7\r\n", b"ms o1 1 ME O8\r\nb\r\n", b"ms o1 1 ME O9\r\nb\r\n",
        b"mg o1 Oa1b2c3 k v\r\n",
    ],
    "quiet pipeline ending in mn": [
        b"ms p1 1 q\r\na\r\nms p2 2 q\r\nbb\r\nmg p1 v q\r\nmg p0 v q\r\n"
        b"mg p2 v q k O2\r\nmd p0 q\r\nmd p1 q\r\nmg p1 v q\r\nma p0 q\r\n"
        b"ma p3 N0 J9 v\r\nma p3 q v\r\nms p2 1 q ME\r\nx\r\n"
        b"ms p2 1 q C1\r\nx\r\nmg p3 v q\r\nmn\r\n",
    ],
    "pipeline without quiet mode": [
        b"ms p4 1\r\na\r\nmg p4 v\r\nmg p5 v\r\nmd p4\r\nmd p4\r\nma p6\r\n"
        b"ma p6 N0 J1 v\r\nmn\r\nmg p6 v\r\n",
    ],
    "meta and text on one connection": [
        b"set t1 5 0 2\r\nhi\r\n", b"mg t1 v f s\r\n",
        b"ms t2 3 F9\r\nabc\r\n", b"get t2\r\n", b"gets t2\r\n",
        b"incr t3 1\r\n", b"ma t3 N0 J2\r\n", b"incr t3 1\r\n",
        b"delete t1\r\n", b"mg t1 v\r\n",
    ],
}

_CAS = re.compile(rb"(?:^|\n)(?:HD|VA \d+|NF|NS|EX|EN)[^\r\n]* c([1-9]\d*)\b")
_GETS_CAS = re.compile(rb"(?<=VALUE )\S+ \d+ \d+ (\d+)(?=\r\n)")


def play(port: int, steps: list[bytes]) -> list[bytes]:
    cas = CasMap()
    seen: list[bytes] = []
    replies = []
    with Conn(port) as conn:
        for step in steps:
            step = step.replace(b"{cas}", seen[-1] if seen else b"1")
            step = step.replace(b"{first}", seen[0] if seen else b"1")
            raw = conn.meta_step(step, timeout=5)
            seen += _CAS.findall(raw) + _GETS_CAS.findall(raw)
            reply = normalise_meta(raw, cas)
            reply = _GETS_CAS.sub(     # gets: "VALUE key flags len CAS"
                lambda m: m.group(0)[:m.start(1) - m.start(0)] + b"#%d"
                % cas.seen.setdefault(m.group(1), len(cas.seen) + 1), reply)
            replies.append(reply)
            if conn.closed:
                break
    return replies


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_answers_as_memcached(pair, name):
    ours, theirs = pair
    steps = SCENARIOS[name]
    expected = play(theirs.port, steps)
    got = play(ours.port, steps)
    shown = [s[:60] for s in steps]
    assert list(zip(shown, got)) == list(zip(shown, expected))


# --------------------------------------------------------------- me
ME_FIELDS = re.compile(rb"^ME (\S+) (.*)\r\n$")


def me_fields(reply: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    match = ME_FIELDS.match(reply)
    assert match, reply
    return match.group(1), [tuple(f.split(b"=", 1))
                            for f in match.group(2).split(b" ")]


def test_me_reports_memcached_fields(pair):
    """me: the same field names in the same order as memcached; the values
    that mean the same thing (exp, la, fetch; cas renumbered) agree.
    ``size`` is memcached's whole item (header, key, value), ours the value;
    it is left out of the value comparison. The two servers' clocks tick
    whole seconds at different moments: exp and la agree within one."""
    ours, theirs = pair
    steps = [b"ms me1 5 T100\r\nhello\r\n", b"mg me1 v\r\n", b"me me1\r\n",
             b"ms me2 1\r\nx\r\n", b"me me2\r\n",
             b"ms %s 1 b\r\nx\r\n" % b64(b"me 3"), b"me %s b\r\n" % b64(b"me 3")]
    results = []
    for server in (theirs, ours):
        with Conn(server.port) as conn:
            replies = [conn.meta_step(step) for step in steps]
        results.append([me_fields(r) for r in replies
                        if r.startswith(b"ME ")])
        with Conn(server.port) as conn:
            assert conn.meta_step(b"me me-missing\r\n") == b"EN\r\n"
    for (key_t, fields_t), (key_o, fields_o) in zip(*results):
        assert key_o == key_t
        assert [n for n, _ in fields_o] == [n for n, _ in fields_t]
        values_o, values_t = dict(fields_o), dict(fields_t)
        assert values_o[b"fetch"] == values_t[b"fetch"]
        for name in (b"exp", b"la"):
            assert abs(int(values_o[name]) - int(values_t[name])) <= 1, name


def test_l_counts_seconds_since_last_access(pair):
    """mg l and h after a pause (both servers stored, then read, together;
    memcached's clock ticks once a second: one second of slack)."""
    conns = [Conn(server.port) for server in pair]
    try:
        for conn in conns:
            assert conn.meta_step(b"ms la1 1\r\nx\r\n") == b"HD\r\n"
            assert conn.meta_step(b"mg la1 v\r\n") == b"VA 1\r\nx\r\n"
        time.sleep(2.2)
        replies = [conn.meta_step(b"mg la1 h l\r\n") for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    idle = []
    for reply in replies:
        match = re.match(rb"HD h1 l(\d+)\r\n\Z", reply)
        assert match, replies
        idle.append(int(match.group(1)))
    assert all(1 <= seconds <= 4 for seconds in idle), replies
    assert abs(idle[0] - idle[1]) <= 1, replies


# ------------------------------------------------------------ extension
def test_ms_explicit_cas_extension(pair):
    """ms E (memcached >= 1.6.21): the item takes the given cas; 1.6.18
    does not know the flag."""
    ours, theirs = pair
    with Conn(theirs.port) as conn:
        assert conn.meta_step(b"ms x1 1 E777000 c\r\nx\r\n") == \
            b"CLIENT_ERROR invalid flag\r\n"
    with Conn(ours.port) as conn:
        assert conn.meta_step(b"ms x1 1 E777000 c\r\nx\r\n") == \
            b"HD c777000\r\n"
        assert conn.meta_step(b"mg x1 c v\r\n") == b"VA 1 c777000\r\nx\r\n"
        assert conn.meta_step(b"ms x1 1 C777000 c\r\ny\r\n").startswith(b"HD c")
        assert conn.meta_step(b"ms x1 1 C777000\r\nz\r\n") == b"EX\r\n"


# ----------------------------------------------------------------- sweep
FLAG_ARGUMENT = {"T": b"30", "N": b"30", "R": b"30", "C": b"1", "E": b"5",
                 "F": b"3", "J": b"5", "D": b"2", "O": b"opq", "P": b"path",
                 "L": b"path", "K": b"x", "S": b"1"}
MODE = {b"ms": b"S", b"ma": b"I", b"mg": b"S", b"md": b"S"}


def sweep_request(command: bytes, letter: str) -> tuple[bytes, bytes]:
    key = b"sw_%s_%s%s" % (command, letter.encode(),
                           b"U" if letter.isupper() else b"l")
    token = letter.encode() + (MODE[command] if letter == "M" else
                               FLAG_ARGUMENT.get(letter, b""))
    wire = b64(key) if letter == "b" else key
    if command == b"ms":
        return key, b"ms %s 1 %s\r\nx\r\n" % (wire, token)
    return key, b"%s %s %s\r\n" % (command, wire, token)


def sweep(port: int) -> dict[tuple[bytes, str], bytes]:
    answers = {}
    with Conn(port) as conn:
        for command in (b"mg", b"ms", b"md", b"ma"):
            for letter in string.ascii_letters:
                key, request = sweep_request(command, letter)
                conn.meta_step(b"ms %s 1\r\n1\r\n" % key)
                answers[command, letter] = conn.meta_step(request)
    return answers


REFUSED = re.compile(rb"^CLIENT_ERROR (invalid flag|invalid or duplicate flag)")


def test_flag_sweep(pair):
    ours, theirs = pair
    expected, got = sweep(theirs.port), sweep(ours.port)
    unsupported = sorted(f"{c.decode()} {l}" for (c, l), r in got.items()
                         if REFUSED.match(r) and not REFUSED.match(expected[c, l]))
    extensions = sorted(f"{c.decode()} {l}" for (c, l), r in got.items()
                        if not REFUSED.match(r) and REFUSED.match(expected[c, l]))
    assert unsupported == []
    assert extensions == ["ms E"]
    cas_ours, cas_theirs = CasMap(), CasMap()
    differ = {f"{c.decode()} {l}": (normalise_meta(got[c, l], cas_ours),
                                    normalise_meta(expected[c, l], cas_theirs))
              for (c, l) in got if (c, l) != (b"ms", "E")}
    differ = {k: v for k, v in differ.items() if v[0] != v[1]}
    assert differ == {}
