"""A site module written only from policy/README.md (issue 3, item 6):
it builds with `securecache policy build --module` and a daemon enforces it
-- its domains may do what the module grants and are denied the rest.
"""

from __future__ import annotations

import re

import pytest

from .mac_support import (
    DATA, POLICY_DIR, TextConn, build_policy, client, item, mac_daemon,
    tcp_from, write_peer_contexts,
)

SITE_MODULE = DATA / "mac_site_module.cil"
ADMIN = client("securecache_admin_t")
WEB = client("mactest_web_t", "s0")
OPS = client("mactest_ops_t", "s0")
PEERS = {"127.0.0.2": ADMIN, "127.0.0.3": WEB, "127.0.0.4": OPS}
SESSION = item("mactest_session_item_t")
DENIED = "CLIENT_ERROR access denied"


def test_readme_example_site_module_builds(tmp_path):
    """The example module printed in policy/README.md compiles as is."""
    readme = (POLICY_DIR / "README.md").read_text()
    example = re.search(r"Example site module:\s*```\n(.*?)```", readme, re.S)
    assert example, "README.md has no example site module"
    module = tmp_path / "example.cil"
    module.write_text(example.group(1))
    policy = build_policy(tmp_path / "example.policy", module)
    assert policy.stat().st_size > 0


# (who, request, expected reply) in order; "get" replies are shown as
# "VALUE <data>" or "END" (a miss).  The admin sets things up and looks.
STEPS = [
    ("admin", "set app-1 0 0 2\r\n10", "STORED", "securecache_app_item_t"),
    ("admin", "set local-1 0 0 2\r\n10", "STORED", "securecache_local_item_t"),
    ("admin", "set shared-1 0 0 2\r\n10", "STORED", "securecache_item_t"),
    # --- web: its own session items
    ("web", "whoami", f"CONTEXT {WEB}"),
    ("web", "set s-1 0 0 2\r\n10", "STORED"),
    ("admin", "getlabel s-1", f"LABEL {SESSION}"),
    ("web", "get s-1", "VALUE 10"),
    ("web", "incr s-1 5", "15"),
    ("web", "append s-1 0 0 1\r\n!", "STORED"),
    ("web", "touch s-1 1000", "TOUCHED"),
    ("web", "getlabel s-1", f"LABEL {SESSION}"),
    ("web", "set s-2 0 0 1\r\nx", "STORED"),
    ("web", "delete s-2", "DELETED"),
    ("web", f"relabel s-1 {item('securecache_item_t')}", DENIED),
    # --- web: the app's items, read only; local items, invisible
    ("web", "get app-1", "VALUE 10"),
    ("web", "set app-1 0 0 1\r\nx", DENIED),
    ("web", "incr app-1 1", DENIED),
    ("web", "delete app-1", DENIED),
    ("web", "get local-1", "END"),
    ("web", "getlabel local-1", "NOT_FOUND"),
    ("web", "delete local-1", DENIED),
    # --- web: shared items, managed; "motd" is created shared
    ("web", "set shared-1 0 0 2\r\n20", "STORED"),
    ("web", "set motd 0 0 5\r\nhello", "STORED"),
    ("admin", "getlabel motd", f"LABEL {item('securecache_item_t')}"),
    ("web", "createlabel " + item("securecache_app_item_t"), "OK"),
    ("web", "set s-3 0 0 1\r\nx", DENIED),          # may not create app items
    ("web", "createlabel default", "OK"),
    # --- web: the cache
    ("web", "stats", "STATS"),
    ("web", "verbosity 1", DENIED),
    ("web", "flush_all", DENIED),
    # --- ops: the cache's administration
    ("ops", "whoami", f"CONTEXT {OPS}"),
    ("ops", "stats", "STATS"),
    ("ops", "verbosity 1", "OK"),
    # --- ops: reads sessions, changes none, moves them to shared and back
    ("ops", "get s-1", "VALUE 15!"),
    ("ops", "set s-1 0 0 1\r\nx", DENIED),
    ("ops", "delete s-1", DENIED),
    ("ops", "get app-1", "END"),
    ("ops", "get local-1", "END"),
    ("ops", f"relabel s-1 {item('securecache_item_t')}", "RELABELED"),
    ("admin", "getlabel s-1", f"LABEL {item('securecache_item_t')}"),
    ("ops", "get s-1", "END"),                       # no read on shared items
    ("ops", f"relabel s-1 {SESSION}", "RELABELED"),
    ("ops", "get s-1", "VALUE 15!"),
    ("ops", f"relabel shared-1 {item('securecache_app_item_t')}", DENIED),
    ("ops", f"relabel app-1 {SESSION}", DENIED),
    ("ops", "set ops-1 0 0 1\r\nx", DENIED),         # creates nothing
    # flush_all: allowed on the cache, but ops may remove no item
    ("ops", "flush_all", "OK"),
    ("admin", "get s-1", "VALUE 15!"),
    ("admin", "get app-1", "VALUE 10"),
    ("admin", "get shared-1", "VALUE 20"),
    ("admin", "get motd", "VALUE hello"),
]


def reply_of(conn: TextConn, request: str) -> str:
    command = request.encode() + b"\r\n"
    word = command.split()[0]
    if word == b"get":
        values, end = conn.retrieve(command)
        return f"VALUE {values[0][1].decode()}" if values else end.decode()
    if word == b"stats":
        lines = conn.lines_until_end(command)
        return "STATS" if any(l.startswith(b"STAT pid ") for l in lines) \
            else lines[-1].decode()
    return conn.call(command).decode()


@pytest.fixture
def daemon(tmp_path):
    policy = build_policy(tmp_path / "site.policy", SITE_MODULE)
    peers = write_peer_contexts(tmp_path / "peer_contexts", net=PEERS)
    d = mac_daemon(tmp_path, policy, peers).start()
    yield d
    d.kill()


def test_site_module_is_enforced(daemon, tmp_path):
    conns = {name: TextConn(tcp_from(daemon.port, addr)) for name, addr in
             zip(("admin", "web", "ops"), PEERS)}
    expected, actual = [], []
    try:
        for who, request, reply, *label in STEPS:
            if label:                                  # admin set-up
                conns["admin"].set_createlabel(item(label[0]))
            got = reply_of(conns[who], request)
            shown = request.replace("\r\n", " | ")
            expected.append(f"{who:<6} {shown:<60} {reply}")
            actual.append(f"{who:<6} {shown:<60} {got}")
        conns["admin"].set_createlabel(None)
    finally:
        (tmp_path / "site.out").write_text("\n".join(actual) + "\n")
        for conn in conns.values():
            conn.close()
    assert actual == expected
