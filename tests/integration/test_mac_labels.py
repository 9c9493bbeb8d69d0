"""Labels are data (issue 3, item 4): they survive SIGKILL and restart, and
a label the reloaded policy no longer knows is checked as unlabeled -- not
lost, not "no check" -- and comes back when the policy knows it again.
"""

from __future__ import annotations

import pytest

from . import mac_scenario as S
from .mac_support import (
    DATA, TEST_MODULE, UNLABELED, TextConn, build_policy, item, mac_daemon,
    sighup, tcp_from, write_peer_contexts,
)

GONE_MODULE = DATA / "mac_gone_type.cil"
GONE = item("mactest_gone_item_t")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mac-labels")
    policy = build_policy(tmp / "site.policy", TEST_MODULE, GONE_MODULE)
    peers = write_peer_contexts(
        tmp / "peer_contexts",
        net={addr: ctx for ctx, addr, _ in S.ALL_CLIENTS.values()})
    daemon = mac_daemon(tmp, policy, peers).start()
    yield daemon, policy, tmp
    daemon.kill()


class Clients:
    """One text connection per client name, opened on first use."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.conns: dict[str, TextConn] = {}

    def __getitem__(self, name) -> TextConn:
        if name not in self.conns:
            self.conns[name] = TextConn(tcp_from(self.daemon.port,
                                                 S.ALL_CLIENTS[name][1]))
        return self.conns[name]

    def close(self):
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()


@pytest.fixture
def clients(env):
    c = Clients(env[0])
    yield c
    c.close()


def values(conn, key):
    found, end = conn.retrieve(b"get %s\r\n" % key)
    assert end == b"END", end
    return [data for _, data in found]


def test_labels_survive_sigkill_and_restart(env, clients):
    daemon = env[0]
    admin = clients["admin"]
    made = {}
    for type_ in S.TYPES + ["mactest_gone_item_t"]:      # by the admin
        key = b"lab-admin-" + type_.encode()
        admin.make(key, item(type_))
        made[key] = item(type_)
    admin.make(b"lab-admin-c5", item("securecache_app_item_t", "s0:c5"))
    made[b"lab-admin-c5"] = item("securecache_app_item_t", "s0:c5")
    for name, key, label in (                            # by their owners
            ("app", b"lab-app", item("securecache_app_item_t")),
            ("app", b"config", item("sctest_config_item_t")),
            ("local", b"lab-local", item("securecache_local_item_t")),
            ("tenant", b"lab-tenant", item("sctest_tenant_item_t")),
            ("app-c1", b"lab-c1", item("securecache_app_item_t", "s0:c1"))):
        clients[name].remove(key)
        assert clients[name].call(b"set %s 0 0 2\r\n10\r\n" % key) == b"STORED"
        made[key] = label
    # relabelled by the admin: the new label is stored, not the old one
    admin.make(b"lab-relabel", item("securecache_item_t"))
    assert admin.call(b"relabel lab-relabel %s\r\n"
                      % item("sctest_secret_item_t").encode()) == b"RELABELED"
    made[b"lab-relabel"] = item("sctest_secret_item_t")
    before = {key: admin.label(key) for key in made}
    assert before == made

    clients.close()
    daemon.kill()                                         # SIGKILL
    daemon.start()

    admin = clients["admin"]
    assert {key: admin.label(key) for key in made} == before
    # ... and they are enforced as before
    assert values(clients["readonly"], b"lab-app") == [b"10"]
    assert values(clients["readonly"], b"lab-relabel") == []     # secret now
    assert values(clients["app-c2"], b"lab-c1") == []
    assert values(clients["app-c1"], b"lab-c1") == [b"10"]
    assert clients["app"].label(b"config") == item("sctest_config_item_t")
    assert clients["tenant"].call(b"delete lab-local\r\n") == S.DENIED
    assert clients["local"].call(b"incr lab-local 1\r\n") == b"11"


def test_removed_type_is_unlabeled_then_restored(env, clients, tmp_path):
    daemon, policy, tmp = env
    admin, readonly, tenant = clients["admin"], clients["readonly"], clients["tenant"]
    for key in (b"gone-1", b"gone-2"):
        admin.make(key, GONE)
    assert tenant.call(b"append gone-1 0 0 1\r\n0\r\n") == b"STORED"  # "100"
    assert values(readonly, b"gone-1") == [b"100"]
    assert tenant.call(b"set keep-t 0 0 1\r\nt\r\n") == b"STORED"
    probe = lambda: admin.call(b"version\r\n")              # noqa: E731

    # the same policy file, rebuilt without the module that declares the type
    build_policy(policy, TEST_MODULE)
    sighup(daemon, probe)

    assert admin.label(b"gone-1") == UNLABELED
    assert admin.label(b"keep-t") == item("sctest_tenant_item_t")
    # invisible (and untouchable) for every domain without unlabeled_t access
    for name in ("readonly", "tenant", "app", "local"):
        conn = clients[name]
        assert values(conn, b"gone-1") == [], name
        assert conn.call(b"getlabel gone-1\r\n") == b"NOT_FOUND", name
        assert conn.call(b"mg gone-1 s v\r\n") == b"EN", name
        dump = conn.lines_until_end(b"lru_crawler metadump gone-\r\n")
        assert dump == [], name
    assert tenant.call(b"set gone-1 0 0 1\r\nx\r\n") == S.DENIED
    assert tenant.call(b"delete gone-1\r\n") == S.DENIED
    # not lost: the admin still sees, reads and removes them (audited) ...
    dump = admin.lines_until_end(b"lru_crawler metadump gone-\r\n")
    assert [line.split()[0] for line in dump] == [b"key=gone-1", b"key=gone-2"]
    audit = (tmp / "audit.log")
    seen = len(audit.read_text().splitlines())
    assert values(admin, b"gone-1") == [b"100"]
    assert admin.call(b"delete gone-2\r\n") == b"DELETED"
    granted = audit.read_text().splitlines()[seen:]
    assert any("granted  { read }" in line and f"tcontext={UNLABELED}" in line
               for line in granted), granted
    assert any("granted  { remove }" in line for line in granted), granted
    # ... but may not write an item whose label it cannot know
    assert admin.call(b"set gone-1 0 0 1\r\nx\r\n") == S.DENIED

    # the stored label is not rewritten: still unlabeled after a SIGKILL
    clients.close()
    daemon.kill()
    daemon.start()
    admin, readonly, tenant = clients["admin"], clients["readonly"], clients["tenant"]
    assert admin.label(b"gone-1") == UNLABELED
    assert values(readonly, b"gone-1") == []

    # the type is back: so is the label, and the access it gives
    build_policy(policy, TEST_MODULE, GONE_MODULE)
    sighup(daemon, lambda: admin.call(b"version\r\n"))
    assert admin.label(b"gone-1") == GONE
    assert values(readonly, b"gone-1") == [b"100"]
    assert tenant.call(b"incr gone-1 1\r\n") == b"101"
    assert admin.label(b"gone-2") is None                  # removed is removed
    assert values(admin, b"gone-2") == []


def test_reload_that_removes_a_connected_clients_domain(tmp_path):
    """A connected client whose domain the reloaded policy no longer has is
    checked as unlabeled: its requests are denied -- and the daemon keeps
    serving everyone (a client must never be able to stop the daemon)."""
    gone_domain = DATA / "mac_gone_domain.cil"
    ctx = "system_u:system_r:mactest_gone_t:s0"
    policy = build_policy(tmp_path / "site.policy", TEST_MODULE, gone_domain)
    peers = write_peer_contexts(tmp_path / "peer_contexts", net={
        "127.0.0.2": S.DOMAINS["admin"][0], "127.0.0.11": ctx})
    daemon = mac_daemon(tmp_path, policy, peers).start()
    try:
        admin = TextConn(tcp_from(daemon.port, "127.0.0.2"))
        gone = TextConn(tcp_from(daemon.port, "127.0.0.11"))
        assert gone.call(b"set dom-1 0 0 1\r\nx\r\n") == b"STORED"
        assert admin.label(b"dom-1") == item("securecache_app_item_t")

        build_policy(policy, TEST_MODULE)                  # without the domain
        sighup(daemon, lambda: admin.call(b"version\r\n"))

        assert values(gone, b"dom-1") == []                # as unlabeled_t
        assert gone.call(b"delete dom-1\r\n") == S.DENIED
        try:
            reply = gone.call(b"set dom-2 0 0 1\r\nx\r\n")  # a new item
        except ConnectionError:
            reply = b"<connection closed>"
        assert reply == S.DENIED, \
            f"reply {reply!r}; the daemon's log:\n" + daemon.log()[-2500:]
        assert daemon.process.poll() is None
        assert admin.call(b"version\r\n").startswith(b"VERSION ")
        assert admin.label(b"dom-2") is None
        assert admin.label(b"dom-1") == item("securecache_app_item_t")
    finally:
        daemon.kill()
