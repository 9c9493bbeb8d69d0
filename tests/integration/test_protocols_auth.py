"""Issue 4, item 2: authentication (-Y FILE, -S) against real processes.

- python-binary-memcached (bmemcached) logs in with SASL PLAIN as a user of
  the auth file: get/set/delete/incr work, a wrong password fails, and the
  user's peer_contexts domain is what the binary requests run as.
- Over the text protocol the same user logs in with memcached's text auth
  and ``whoami`` reports the context peer_contexts gives that user.
- Unauthenticated requests are refused as memcached refuses them: text and
  meta compared byte for byte with Debian's memcached started with the same
  ``-Y FILE``; binary compared with memcached ``-S`` (SASL PLAIN; Debian's
  build has no password database of its own, so no login can succeed
  there, but its refusals can be measured).
- auth_cmds / auth_errors count as memcached counts them.

Requests are sent one at a time (each reply read before the next request):
memcached 1.6.18 loses replies of commands pipelined before a login (one
reply object is overwritten), which is not behaviour to copy.
"""

from __future__ import annotations

import struct
import subprocess

import bmemcached
import pytest
from bmemcached.exceptions import MemcachedException

from .daemons import Daemon
from .proto_support import (OP, Conn, RealMemcached, bin_request, bin_set,
                            context, normalise_version, sasl_memcached,
                            sasl_plain, start_daemon, stats, write_auth_file,
                            write_peer_contexts)

USERS = {"alice": "secret", "bob": "hunter2", "carol": "opensesame"}
ALICE = context("securecache_app_t")
BOB = context("securecache_readonly_t")
LOCAL = context("securecache_local_t")
AUTH_ERROR, ACCESS_DENIED = 0x20, 0x24


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth-files")
    auth = write_auth_file(tmp / "users", USERS)
    peers = write_peer_contexts(tmp / "peer_contexts", [
        ("user", "alice", ALICE),
        ("user", "bob", BOB),
        # carol has no user line: her context comes from her address
        ("net", "127.0.0.0/8", LOCAL),
    ])
    return auth, peers


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, files):
    auth, peers = files
    d = start_daemon(tmp_path_factory.mktemp("auth"), "-Y", str(auth), "-S",
                     "--peer-contexts", str(peers), "--durability", "async")
    yield d
    d.kill()


@pytest.fixture(scope="module")
def memcached_text(files):
    """memcached -Y FILE: ASCII authentication (and ASCII only)."""
    m = RealMemcached("-Y", str(files[0]))
    yield m
    m.stop()


@pytest.fixture(scope="module")
def memcached_sasl(tmp_path_factory):
    m = sasl_memcached(tmp_path_factory.mktemp("sasl"))
    yield m
    m.stop()


def bm(port: int, user: str, password: str) -> bmemcached.Client:
    return bmemcached.Client((f"127.0.0.1:{port}",), user, password,
                             socket_timeout=5)


def login(user: str, password: str | None = None) -> bytes:
    data = f"{user} {USERS[user] if password is None else password}".encode()
    return b"set auth 0 0 %d\r\n%s\r\n" % (len(data), data)


# --------------------------------------------------------------- bmemcached
def test_bmemcached_sasl_round_trip(daemon):
    mc = bm(daemon.port, "alice", "secret")
    try:
        assert mc.set("rt:k", b"value") is True
        assert mc.get("rt:k") == b"value"
        assert mc.add("rt:k", b"other") is False
        assert mc.replace("rt:k", b"v2") is True
        assert mc.get("rt:k") == b"v2"
        assert mc.set("rt:n", 10) is True
        assert mc.incr("rt:n", 5) == 15
        assert mc.decr("rt:n", 20) == 0
        assert mc.delete("rt:k") is True
        assert mc.get("rt:k") is None
        assert mc.set_multi({"rt:a": b"1", "rt:b": b"2"}) == []  # failures
        assert mc.get_multi(["rt:a", "rt:b", "rt:missing"]) == \
            {"rt:a": b"1", "rt:b": b"2"}
    finally:
        mc.disconnect_all()


@pytest.mark.parametrize("user,password", [("alice", "wrong"),
                                           ("nobody", "secret"),
                                           ("alice", "secret\0x")])
def test_bmemcached_bad_credentials_fail_like_memcached(daemon, memcached_sasl,
                                                        user, password):
    codes = []
    for port in (daemon.port, memcached_sasl.port):
        mc = bm(port, user, password)
        with pytest.raises(MemcachedException) as caught:
            mc.set("bad:k", b"x")
        codes.append(caught.value.code)
        mc.disconnect_all()
    assert codes == [AUTH_ERROR, AUTH_ERROR]
    alice = bm(daemon.port, "alice", "secret")
    assert alice.get("bad:k") is None         # nothing was stored
    alice.disconnect_all()


def test_sasl_user_runs_in_its_peer_context(daemon):
    """bob (securecache_readonly_t) reads alice's items, may not write."""
    alice = bm(daemon.port, "alice", "secret")
    bob = bm(daemon.port, "bob", "hunter2")
    try:
        assert alice.set("ctx:item", b"from alice") is True
        assert bob.get("ctx:item") == b"from alice"
        with pytest.raises(MemcachedException) as caught:
            bob.set("ctx:bob", b"x")
        assert caught.value.code == ACCESS_DENIED
        with pytest.raises(MemcachedException) as caught:
            bob.delete("ctx:item")
        assert caught.value.code == ACCESS_DENIED
        assert alice.get("ctx:item") == b"from alice"
    finally:
        alice.disconnect_all()
        bob.disconnect_all()
    # the item alice created over binary carries her domain's item type
    with Conn(daemon.port) as conn:
        assert conn.text_step(login("alice")) == b"STORED\r\n"
        assert conn.text_step(b"getlabel ctx:item\r\n") == \
            b"LABEL system_u:object_r:securecache_app_item_t:s0\r\n"


@pytest.mark.parametrize("user,expected", [("alice", ALICE), ("bob", BOB),
                                           ("carol", LOCAL)])
def test_whoami_after_text_login(daemon, user, expected):
    with Conn(daemon.port) as conn:
        assert conn.text_step(b"whoami\r\n") == \
            b"CLIENT_ERROR unauthenticated\r\n"
        assert conn.text_step(login(user)) == b"STORED\r\n"
        assert conn.text_step(b"whoami\r\n") == \
            b"CONTEXT %s\r\n" % expected.encode()


def test_text_login_then_commands(daemon):
    with Conn(daemon.port) as conn:
        assert conn.text_step(login("alice")) == b"STORED\r\n"
        assert conn.text_step(b"set tl:k 3 0 2\r\nhi\r\n") == b"STORED\r\n"
        conn.send(b"get tl:k\r\n")
        assert conn.through(b"END\r\n") == b"VALUE tl:k 3 2\r\nhi\r\nEND\r\n"
        assert conn.meta_step(b"mg tl:k v f\r\n") == b"VA 2 f3\r\nhi\r\n"


def test_auth_settings_rows(daemon, memcached_text):
    rows = []
    for server in (daemon, memcached_text):
        with Conn(server.port) as conn:
            assert conn.text_step(login("alice")) == b"STORED\r\n"
            conn.send(b"stats settings\r\n")
            reply = conn.through(b"END\r\n")
        rows.append({line.split(b" ")[1]: line.split(b" ")[2] for line in
                     reply.split(b"\r\n") if line.startswith(b"STAT auth_")})
    # the auth file as memcached names it; -Y turns SASL on here too
    assert rows[0][b"auth_enabled_ascii"] == rows[1][b"auth_enabled_ascii"]
    assert rows[0][b"auth_enabled_sasl"] == b"yes"


# ------------------------------------------- refusals: text and meta paths
TEXT_CASES = {
    "get": [b"get k\r\n"],
    "gets": [b"gets k\r\n"],
    "version": [b"version\r\n"],
    "stats": [b"stats\r\n"],
    "quit": [b"quit\r\n", b"version\r\n"],
    "delete": [b"delete k\r\n"],
    "incr": [b"incr k 1\r\n"],
    "touch": [b"touch k 10\r\n"],
    "flush_all": [b"flush_all\r\n"],
    "verbosity": [b"verbosity 1\r\n"],
    "unknown command": [b"foo bar\r\n"],
    "add is not a login": [b"add auth 0 0 12\r\n", b"alice secret\r\n",
                           b"version\r\n"],
    "cas is not a login": [b"cas auth 0 0 12 1\r\n", b"alice secret\r\n"],
    "upper-case SET": [b"SET auth 0 0 12\r\n", b"alice secret\r\n"],
    "whoami": [b"whoami\r\n"],
    "metadump": [b"lru_crawler metadump all\r\n"],
    "mn": [b"mn\r\n"],
    "mg": [b"mg k v\r\n"],
    "ms": [b"ms k 1 T0\r\n", b"a\r\n"],
    "md": [b"md k q\r\n"],
    "ma": [b"ma k N0 J5\r\n"],
    "me": [b"me k\r\n"],
    # the login's set stores nothing
    "login": [login("alice"), b"version\r\n", b"mn\r\n", b"get auth\r\n"],
    "login noreply still answers": [b"set auth 0 0 12 noreply\r\n"
                                    b"alice secret\r\n", b"version\r\n"],
    "login twice": [login("alice"), login("alice"), b"delete auth\r\n"],
    "wrong password, then retry": [login("alice", "wrong!"), b"version\r\n",
                                   b"mn\r\n", login("alice"), b"version\r\n"],
    "unknown user": [login("alice").replace(b"alice", b"zelda"),
                     b"get k\r\n"],
    "empty password": [b"set auth 0 0 6\r\nalice \r\n", b"version\r\n"],
    "LF-only login line": [b"set auth 0 0 12\nalice secret\r\n",
                           b"version\r\n"],
    # the payload is tokenised by memcached: extra spaces do not matter
    "two spaces in payload": [b"set auth 0 0 12\r\nbob  hunter2\r\n",
                              b"version\r\n"],
    "trailing space in payload": [b"set auth 0 0 13\r\nalice secret \r\n",
                                  b"version\r\n"],
    "payload without a space": [b"set auth 0 0 11\r\nalicesecret\r\n",
                                b"version\r\n"],
    "payload user:password": [b"set auth 0 0 12\r\nalice:secret\r\n",
                              b"version\r\n"],
    "login block without CRLF, then retry": [
        b"set auth 0 0 12\r\nalice secretXY", b"version\r\n",
        login("alice"), b"get k\r\n"],
    "login line with extra tokens": [b"set auth 0 0 12 x y\r\n"
                                     b"alice secret\r\n", b"version\r\n"],
    "login line too short": [b"set auth 0\r\n", b"version\r\n"],
    "login negative length": [b"set auth 0 0 -1\r\n", b"version\r\n"],
    "empty line": [b"\r\n", b"version\r\n"],
}


def converse(port: int, steps: list[bytes]) -> list[bytes]:
    with Conn(port) as conn:
        replies = []
        for step in steps:
            replies.append(normalise_version(conn.text_step(step,
                                                            timeout=1.5)))
            if conn.closed:
                break
        return replies


@pytest.mark.parametrize("name", list(TEXT_CASES))
def test_text_and_meta_refusals_as_memcached(daemon, memcached_text, name):
    steps = TEXT_CASES[name]
    expected = converse(memcached_text.port, steps)
    assert converse(daemon.port, steps) == expected


def test_login_with_bad_data_terminator_can_be_retried(daemon,
                                                      memcached_text):
    """A login whose data block lacks its CRLF fails; the connection is
    still unauthenticated and a correct login afterwards succeeds (memcached
    measured in the same test; the error wording is compared above)."""
    steps = [b"set auth 0 0 12\r\nalice secretXY", b"version\r\n", b"mn\r\n",
             login("alice"), b"get k\r\n"]
    expected = [b"CLIENT_ERROR unauthenticated\r\n"] * 2 + \
        [b"STORED\r\n", b"END\r\n"]
    assert converse(memcached_text.port, steps)[1:] == expected
    assert converse(daemon.port, steps)[1:] == expected


# ------------------------------------------------- refusals: binary path
KEYED = {"get": b"", "delete": b"", "getk": b"",
         "touch": struct.pack(">I", 10), "gat": struct.pack(">I", 10),
         "incr": struct.pack(">QQI", 1, 0, 0)}
BINARY_CASES = {
    **{op: bin_request(OP[op], b"k", extras, opaque=0x11)
       for op, extras in KEYED.items()},
    "set": bin_set(b"k", b"v", opaque=0x11),
    "append": bin_request(OP["append"], b"k", value=b"v", opaque=0x11),
    "flush": bin_request(OP["flush"], opaque=0x11),
    "stat": bin_request(OP["stat"], opaque=0x11),
    "verbosity": bin_request(OP["verbosity"], extras=struct.pack(">I", 1),
                             opaque=0x11),
    "noop": bin_request(OP["noop"], opaque=0x11),
    "quit": bin_request(OP["quit"], opaque=0x11),
    "version": bin_request(OP["version"], opaque=0x11),
    "sasl list mechs": bin_request(OP["sasl_list_mechs"], opaque=0x11),
    "sasl auth, wrong password": sasl_plain("alice", "wrong", opaque=0x11),
    "sasl auth, unknown mechanism": bin_request(
        OP["sasl_auth"], b"CRAM-MD5", value=b"x", opaque=0x11),
    "sasl auth wrong, then get": sasl_plain("alice", "wrong", opaque=0x11)
    + bin_request(OP["get"], b"k", opaque=0x12),
}
SENTINEL = 0xE0F


def refusal(port: int, payload: bytes):
    """The responses (version text normalised) and whether the server
    closed; a VERSION (allowed before login by both servers) ends the
    exchange unless the connection was closed first."""
    with Conn(port) as conn:
        responses, rest, closed = conn.binary(
            payload + bin_request(OP["version"], opaque=SENTINEL),
            sentinel=SENTINEL, timeout=3)
    seen = [(r.opcode, r.status, r.opaque,
             b"<version>" if r.opcode == OP["version"] and not r.status
             else r.value) for r in responses]
    return seen, rest, closed


@pytest.mark.parametrize("name", list(BINARY_CASES))
def test_binary_refusals_as_memcached_sasl(daemon, memcached_sasl, name):
    payload = BINARY_CASES[name]
    expected = refusal(memcached_sasl.port, payload)
    got = refusal(daemon.port, payload)
    assert got == expected


# ------------------------------------------------------------- counters
def counters(port: int) -> tuple[int, int]:
    rows = stats(port, login=b"alice secret")
    return int(rows["auth_cmds"]), int(rows["auth_errors"])


def run_text(port: int, steps: list[bytes]) -> None:
    with Conn(port) as conn:
        for step in steps:
            conn.text_step(step, timeout=1.5)


COUNTED = {
    "logins and failures": [
        [login("alice")], [login("alice", "nope!")], [login("bob")],
        [login("alice").replace(b"alice", b"zelda")],
        [b"get k\r\n", b"version\r\n"],            # refusals: not auth_cmds
        [login("bob", "x"), login("bob")],
    ],
    "malformed payload": [[b"set auth 0 0 11\r\nalicesecret\r\n"]],
}


@pytest.mark.parametrize("name", list(COUNTED))
def test_text_auth_counters_as_memcached(daemon, memcached_text, name):
    deltas = []
    for port in (daemon.port, memcached_text.port):
        before = counters(port)
        for steps in COUNTED[name]:
            run_text(port, steps)
        after = counters(port)
        deltas.append((after[0] - before[0], after[1] - before[1]))
    assert deltas[0] == deltas[1]


def test_sasl_auth_counters(daemon):
    before = counters(daemon.port)
    good = bm(daemon.port, "alice", "secret")
    assert good.set("cnt:k", b"v")
    good.disconnect_all()
    with pytest.raises(MemcachedException):
        bm(daemon.port, "bob", "wrong").get("cnt:k")
    with Conn(daemon.port) as conn:          # LIST MECHS is not an auth cmd
        responses, _, closed = conn.binary(
            bin_request(OP["sasl_list_mechs"], opaque=1), sentinel=1)
        assert responses[0].value == b"PLAIN" and not closed
        responses, _, _ = conn.binary(sasl_plain("carol", "opensesame", 2),
                                      sentinel=2)
        assert (responses[0].status, responses[0].value) == \
            (0, b"Authenticated")
    after = counters(daemon.port)
    # +1 each side: counters() itself logs in over text
    assert (after[0] - before[0], after[1] - before[1]) == (3 + 1, 1)


def test_sasl_flag_needs_an_auth_file(tmp_path):
    """-S without -Y: SASL PLAIN would have no users to check; refused."""
    command = Daemon(tmp_path, "-S").command()
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "-S needs -Y" in result.stderr
