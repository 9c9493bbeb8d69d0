"""Restore after a reboot (issue 8, item 4): a daemon with items, TTLs and
labels is stopped as systemd stops it (SIGTERM) and started again with a
policy where one item type was removed: the items are back with their
TTLs, `check` reports the now-invalid labels, `relabel` (run while the
daemon serves) repairs them and the items are visible to their domain
again."""

from __future__ import annotations

import signal
import time

from tests.tools.toolsupport import items, run

from .mac_support import (
    DATA, TextConn, build_policy, client, item, mac_daemon, tcp_from, write_peer_contexts,
)

ADMIN = client("securecache_admin_t")
APP = client("reboot_app_t", "s0")
GONE = item("reboot_item_t")
NEW = item("securecache_app_item_t")
KEYS = [b"r:%02d" % i for i in range(40)]


def ttl_of(i: int) -> int:
    return 3600 if i % 2 == 0 else 0


def test_reboot_with_a_removed_item_type(tmp_path):
    policy = tmp_path / "site.policy"
    build_policy(policy, DATA / "reboot_before.cil")
    peers = write_peer_contexts(tmp_path / "peer_contexts",
                                net={"127.0.0.2": ADMIN, "127.0.0.3": APP})
    daemon = mac_daemon(tmp_path, policy, peers).start()
    try:
        app = TextConn(tcp_from(daemon.port, "127.0.0.3"))
        for i, key in enumerate(KEYS):
            reply = app.call(b"set %s %d %d 2\r\nv%d\r\n" % (key, i, ttl_of(i), i % 10))
            assert reply == b"STORED"
        admin = TextConn(tcp_from(daemon.port, "127.0.0.2"))
        assert admin.label(KEYS[0]) == GONE
        before = items(daemon.data_dir)
        assert daemon.stop(signal.SIGTERM) == 0               # as systemd stops it

        build_policy(policy, DATA / "reboot_after.cil")       # the type is gone
        daemon.start()
        after = items(daemon.data_dir)
        assert after == before                                # items, exptimes, labels, cas
        app = TextConn(tcp_from(daemon.port, "127.0.0.3"))
        assert not app.exists(KEYS[0])                        # unlabeled: hidden from the app
        admin = TextConn(tcp_from(daemon.port, "127.0.0.2"))
        assert admin.label(KEYS[0]) == item("unlabeled_t")

        check = run("check", "--data-dir", daemon.data_dir, "--mac", "policy",
                    "--policy", policy)
        assert check.returncode == 3, check.stdout
        assert f"invalid label: {GONE} ({len(KEYS)} items)" in check.stdout.decode()

        contexts = tmp_path / "kv_contexts"
        contexts.write_text(f"r:* {NEW}\n* <<none>>\n")
        fixed = run("relabel", "--data-dir", daemon.data_dir, "--mac", "policy", "--policy",
                    policy, "--contexts", contexts, "--context", ADMIN, "-v",
                    "--audit-log", tmp_path / "relabel-audit.log")
        assert fixed.returncode == 0, fixed.stderr
        assert len(fixed.stdout.splitlines()) == len(KEYS)

        now = time.time()
        for i, key in enumerate(KEYS):                        # visible again, TTLs right
            status, value = app.meta_get(b"mg %s v t f\r\n" % key)
            assert value == b"v%d" % (i % 10), (key, status)
            ttl = int(status.split(b" t")[1].split()[0])
            assert (ttl == -1) if not ttl_of(i) else (3500 < ttl <= 3600), status
            assert b"f%d" % i in status.split()
            assert after[key][2] == items(daemon.data_dir)[key][2]
            assert not after[key][2] or abs(after[key][2] - now - 3600) < 120
        assert admin.label(KEYS[0]) == NEW
        recheck = run("check", "--data-dir", daemon.data_dir, "--mac", "policy",
                      "--policy", policy)
        assert recheck.returncode == 0, recheck.stdout
    finally:
        daemon.stop()
