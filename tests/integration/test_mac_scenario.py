"""The MAC scenario suite (issue 3, item 1) against a real daemon.

Every text command tried by every client domain of the test policy on every
item type, each step ok / denied / kept in a transcript that is written
under the test's tmp directory and compared with the committed expectation
tests/integration/data/mac_scenario.expected (a mismatch shows a diff).
The same scenario runs over the meta and the binary protocol with the same
outcomes (operations a protocol lacks are skipped), with clients told apart
by their loopback source address (`net` lines) and by their uid on the
UNIX socket (`uid` lines). Then: a boolean flipped by SIGHUP, and MCS.

One daemon for the module: every step makes its own fresh item, so the
steps do not depend on each other (flush_all included).
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from . import mac_scenario as S
from .mac_support import (
    RELOADING, TEST_MODULE, TextConn, build_policy, item, mac_daemon, sighup,
    tcp_from, unix_as_uid, write_peer_contexts,
)

DEFAULTS = "securecache_app_write_shared=false\nsctest_tenant_shared=false\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mac-scenario")
    policy = build_policy(tmp / "test.policy", TEST_MODULE)
    peers = write_peer_contexts(
        tmp / "peer_contexts",
        net={addr: ctx for ctx, addr, _ in S.ALL_CLIENTS.values()},
        uid={uid: ctx for ctx, _, uid in S.ALL_CLIENTS.values()})
    booleans = tmp / "booleans"
    booleans.write_text(DEFAULTS)
    daemon = mac_daemon(tmp, policy, peers, booleans=booleans).start()
    admin = TextConn(tcp_from(daemon.port, S.DOMAINS["admin"][1]))
    yield daemon, admin, booleans, policy
    admin.close()
    daemon.kill()


def tcp(daemon, name, conn=TextConn):
    return conn(tcp_from(daemon.port, S.ALL_CLIENTS[name][1]))


def check(steps, protocol, tmp_path, title):
    """Write the transcript; compare it with the expectation."""
    out = S.write_transcript(tmp_path / f"mac_scenario.{protocol.name}.out",
                             title, steps)
    expected = S.expected_lines(set(protocol.ops))
    actual = S.data_lines(out.read_text())
    assert actual == expected, f"transcript {out}:\n" + \
        S.diff(expected, actual, str(out))


def test_expectation_is_the_policy_table():
    """The committed expectation says, line by line, what README's table and
    DESIGN's request -> permission table say (no daemon involved): a
    regenerated expectation cannot silently drift from the policy."""
    expected = S.data_lines(S.EXPECTED.read_text())
    table = [step.line() for step in S.oracle()]
    assert expected == table, S.diff(table, expected, str(S.EXPECTED),
                                     "the policy table (mac_scenario.oracle)")
    outcomes = {line.split()[3] for line in expected}
    assert outcomes == {"ok", "denied", "kept"}
    assert len(expected) == len(S.DOMAINS) * (
        len(S.CACHE_OPS) + len(S.CREATE_OPS) + len(S.TYPES) * len(S.ITEM_OPS))


@pytest.mark.parametrize("name", ["text", "meta", "binary"])
def test_scenario_over_tcp_by_source_address(env, tmp_path, name):
    daemon, admin, *_ = env
    protocol = S.PROTOCOLS[name]
    conns = {d: tcp(daemon, d, protocol.connect) for d in S.DOMAINS}
    try:
        steps = S.run(protocol, conns, admin)
    finally:
        for conn in conns.values():
            conn.close()
    check(steps, protocol, tmp_path,
          f"{name} protocol over TCP; clients by loopback source address")


@pytest.mark.skipif(os.geteuid() != 0, reason="setuid needs root")
def test_scenario_over_unix_socket_by_uid(env, tmp_path):
    daemon, admin, *_ = env
    conns = {d: TextConn(unix_as_uid(daemon.socket_path, S.DOMAINS[d][2]))
             for d in S.DOMAINS}
    try:
        for domain, conn in conns.items():      # really told apart by uid
            assert conn.call(b"whoami\r\n") == \
                b"CONTEXT " + S.DOMAINS[domain][0].encode()
        steps = S.run(S.PROTOCOLS["text"], conns, admin)
    finally:
        for conn in conns.values():
            conn.close()
    check(steps, S.PROTOCOLS["text"], tmp_path,
          "text protocol over the UNIX socket; clients by uid")


def test_unmapped_client_is_refused(env):
    """127.0.0.1 and uid 0 have no line in the test peer_contexts (and there
    is no default): the connection is closed before any request."""
    daemon, *_ = env
    for sock in [tcp_from(daemon.port, "127.0.0.1")] + (
            [unix_as_uid(daemon.socket_path, 0)] if os.geteuid() == 0 else []):
        conn = TextConn(sock)
        try:
            with pytest.raises(ConnectionError):     # closed, or reset
                conn.call(b"version\r\n")
        finally:
            conn.close()


BOOLEAN_OPS = ["set", "replace", "cas", "append", "prepend", "incr", "decr",
               "get", "delete", "create", "create-config"]


def test_boolean_flip_by_sighup(env, tmp_path):
    """Both booleans on (booleans file + SIGHUP): the app may update shared
    items, the tenant's new items become shared; off again: back."""
    daemon, admin, booleans, _ = env
    domains = {d: S.DOMAINS[d] for d in ("app", "tenant")}
    text = S.PROTOCOLS["text"]
    shared = ["securecache_item_t"]
    conns = {d: tcp(daemon, d) for d in domains}
    on = {name: True for name in S.DEFAULT_BOOLEANS}
    try:
        before = S.run(text, conns, admin, domains, shared, BOOLEAN_OPS)
        assert before == S.oracle(domains, S.DEFAULT_BOOLEANS, shared,
                                  BOOLEAN_OPS)
        booleans.write_text("# flipped by the test\n"
                            "securecache_app_write_shared=true\n"
                            "sctest_tenant_shared = TRUE\n")
        sighup(daemon, lambda: admin.call(b"version\r\n"))
        after = S.run(text, conns, admin, domains, shared, BOOLEAN_OPS)
        S.write_transcript(tmp_path / "booleans-on.out",
                           "text protocol, both booleans on", after)
        assert after == S.oracle(domains, on, shared, BOOLEAN_OPS)
        changed = {(s.domain, s.op, s.outcome, s.detail)
                   for s in after} - {(s.domain, s.op, s.outcome, s.detail)
                                      for s in before}
        assert ("app", "set", "ok", "") in changed
        assert ("tenant", "create", "ok", item("securecache_item_t")) in changed
        assert ("tenant", "incr", "ok", "") in changed
        # the live connections saw the change: no reconnect was needed
    finally:
        booleans.write_text(DEFAULTS)
        sighup(daemon, lambda: admin.call(b"version\r\n"))
        for conn in conns.values():
            conn.close()
    conns = {d: tcp(daemon, d) for d in domains}
    try:
        again = S.run(text, conns, admin, domains, shared, BOOLEAN_OPS)
    finally:
        for conn in conns.values():
            conn.close()
    assert again == S.oracle(domains, S.DEFAULT_BOOLEANS, shared, BOOLEAN_OPS)


def test_mcs_categories_keep_tenants_apart(env, tmp_path):
    """The app domain at s0:c1 and at s0:c2 (and at s0): each sees only the
    items at a level its clearance dominates; the admin sees all."""
    daemon, admin, *_ = env
    names = ["app-c1", "app-c2", "app-s0", "readonly", "admin"]
    conns = {n: tcp(daemon, n) for n in names}
    transcript = []

    def step(name, command, reply, expect):
        shown = command.split(b"\r\n")[0].decode()
        transcript.append(f"{name:<9} {shown:<70} {reply.decode()}")
        assert reply == expect, (name, command, reply)

    try:
        c1, c2, s0 = conns["app-c1"], conns["app-c2"], conns["app-s0"]
        admin.remove(b"mcs-c1")
        admin.remove(b"mcs-c2")
        step("app-c1", b"set mcs-c1 0 0 2\r\n10\r\n",
             c1.call(b"set mcs-c1 0 0 2\r\n10\r\n"), b"STORED")
        step("app-c2", b"set mcs-c2 0 0 2\r\n20\r\n",
             c2.call(b"set mcs-c2 0 0 2\r\n20\r\n"), b"STORED")
        for name, conn, key, level in (("app-c1", c1, b"mcs-c1", "s0:c1"),
                                       ("app-c2", c2, b"mcs-c2", "s0:c2")):
            label = item("securecache_app_item_t", level).encode()
            step(name, b"getlabel " + key, conn.call(b"getlabel %s\r\n" % key),
                 b"LABEL " + label)
            step("admin", b"getlabel " + key,
                 admin.call(b"getlabel %s\r\n" % key), b"LABEL " + label)
        for name, conn, own, other in (("app-c1", c1, b"mcs-c1", b"mcs-c2"),
                                       ("app-c2", c2, b"mcs-c2", b"mcs-c1")):
            value = {b"mcs-c1": b"10", b"mcs-c2": b"20"}
            values, end = conn.retrieve(b"get %s %s\r\n" % (own, other))
            step(name, b"get %s %s" % (own, other),
                 b" ".join(v[0] for v in values) + b" " + end,
                 b"VALUE %s 0 2 END" % own)
            assert values[0][1] == value[own]
            for command, denied in (
                    (b"getlabel %s\r\n" % other, b"NOT_FOUND"),
                    (b"mg %s v\r\n" % other, b"EN"),
                    (b"set %s 0 0 1\r\nx\r\n" % other, S.DENIED),
                    (b"delete %s\r\n" % other, S.DENIED),
                    (b"incr %s 1\r\n" % other, S.DENIED),
                    (b"touch %s 100\r\n" % other, S.DENIED)):
                step(name, command, conn.call(command), denied)
            dump = conn.lines_until_end(b"lru_crawler metadump mcs-\r\n")
            listed = sorted(line.split()[0] for line in dump)
            step(name, b"lru_crawler metadump mcs-", b" ".join(listed),
                 b"key=" + own)
            # nor may it create an item at the other tenant's level
            level = "s0:c2" if own == b"mcs-c1" else "s0:c1"
            ctx = item("securecache_app_item_t", level).encode()
            step(name, b"createlabel " + ctx,
                 conn.call(b"createlabel %s\r\n" % ctx), b"OK")
            step(name, b"set %s-x" % own,
                 conn.call(b"set %s-x 0 0 1\r\nx\r\n" % own), S.DENIED)
            conn.call(b"createlabel default\r\n")
        # at s0 the app domain dominates neither category
        for key in (b"mcs-c1", b"mcs-c2"):
            values, end = s0.retrieve(b"get %s\r\n" % key)
            step("app-s0", b"get " + key, end if not values else b"HIT", b"END")
        # clearance s0-s0:c0.c1023 dominates both
        for name in ("admin", "readonly"):
            values, end = conns[name].retrieve(b"get mcs-c1 mcs-c2\r\n")
            step(name, b"get mcs-c1 mcs-c2",
                 b" ".join(v[1] for v in values) + b" " + end, b"10 20 END")
    finally:
        (tmp_path / "mcs.out").write_text("\n".join(transcript) + "\n")
        for conn in conns.values():
            conn.close()


BAD_RELOADS = {
    "bad-booleans-line": ("booleans", "securecache_app_write_shared=true\n"
                                      "this is not name=value\n"),
    "unknown-boolean": ("booleans", "securecache_app_write_shared=true\n"
                                    "no_such_boolean=true\n"),
    "not-a-policy": ("policy", "garbage, not a binary policy\n"),
}


@pytest.mark.parametrize("case", BAD_RELOADS)
def test_failed_reload_keeps_the_old_policy(env, tmp_path, case):
    """A SIGHUP whose policy or booleans file is bad keeps the loaded policy
    (and booleans), and says so in one clear log line."""
    daemon, admin, booleans, policy = env
    app = tcp(daemon, "app")
    shared = b"bad-reload-" + case.encode()
    admin.make(shared, item("securecache_item_t"))
    saved = tmp_path / "policy.saved"
    shutil.copy(policy, saved)
    try:
        booleans.write_text("securecache_app_write_shared=true\n")
        sighup(daemon, lambda: admin.call(b"version\r\n"))
        assert app.call(b"set %s 0 0 1\r\nx\r\n" % shared) == b"STORED"

        which, content = BAD_RELOADS[case]
        (booleans if which == "booleans" else policy).write_text(content)
        log_before = len(daemon.log())
        reloads = daemon.log().count(RELOADING)
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while daemon.log().count(RELOADING) <= reloads:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert admin.call(b"version\r\n").startswith(b"VERSION ")
        # the old policy and booleans are still in force
        assert daemon.process.poll() is None
        assert app.call(b"set %s 0 0 1\r\ny\r\n" % shared) == b"STORED"
        assert app.call(b"delete %s\r\n" % shared) == S.DENIED
        # ... and the log says what went wrong, in one line
        log = daemon.log()[log_before:]
        assert "policy reload failed, keeping the old one" in log, log
        assert "Traceback" not in log, log
    finally:
        shutil.copy(saved, policy)
        booleans.write_text(DEFAULTS)
        sighup(daemon, lambda: admin.call(b"version\r\n"))
        app.close()
