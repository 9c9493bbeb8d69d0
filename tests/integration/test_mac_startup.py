"""Start-up (issue 3, item 5): an enforcing daemon refuses a policy without
kv_item, clearly; --mac=off says so loudly at start and in `stats`.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from .daemons import Daemon, free_port, wait_for_port
from .mac_support import DATA, POLICY_DIR, TextConn, tcp_from, write_peer_contexts

NO_KV_ITEM = DATA / "mac_no_kv_item.cil"
DAEMON_CONTEXT = "system_u:system_r:securecache_t:s0"


@pytest.fixture(scope="module")
def no_kv_item_policy(tmp_path_factory):
    """base.cil + a module with kv_cache but no kv_item, compiled by secilc
    (without securecache.cil: nothing of ours defines kv_item)."""
    out = tmp_path_factory.mktemp("no-kv-item") / "no-kv-item.policy"
    result = subprocess.run(["secilc", "-M", "true", "-f", "/dev/null", "-o",
                             str(out), str(POLICY_DIR / "base.cil"),
                             str(NO_KV_ITEM)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("mode", ["policy", "auto"])
def test_enforcing_serve_refuses_a_policy_without_kv_item(tmp_path, mode,
                                                          no_kv_item_policy):
    daemon = Daemon(tmp_path, "--mac", mode, "--policy", str(no_kv_item_policy))
    result = subprocess.run(daemon.command(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "lacks" in line]
    assert len(lines) == 1, result.stderr
    # one clear line: which policy, what is missing, what to do
    assert str(no_kv_item_policy.name) in lines[0]
    assert "lacks kv_item" in lines[0]
    assert "kv_cache" not in lines[0].split("lacks", 1)[1]
    assert "securecache.cil" in lines[0] and "--permissive" in lines[0]
    assert "Traceback" not in result.stderr
    assert "ready" not in result.stderr
    assert not daemon.data_dir.exists()          # refused before touching data


def test_permissive_without_kv_item_survives_a_client(tmp_path,
                                                      no_kv_item_policy):
    """The refusal suggests --permissive. Then the daemon starts (denials
    are logged, not enforced) -- and a client's set of a new item, whose
    label cannot be computed without kv_item, must not stop it."""
    peers = write_peer_contexts(tmp_path / "peer_contexts",
                                net={"127.0.0.2": DAEMON_CONTEXT})
    daemon = Daemon(tmp_path, "--mac", "policy", "--policy",
                    str(no_kv_item_policy), "--permissive", "--peer-contexts",
                    str(peers), "--audit-log", str(tmp_path / "audit.log"))
    daemon.start()
    try:
        conn = TextConn(tcp_from(daemon.port, "127.0.0.2"))
        stats = conn.lines_until_end(b"stats\r\n")
        assert b"STAT enforcing 0" in stats
        try:
            reply = conn.call(b"set k 0 0 1\r\nx\r\n")
        except ConnectionError:
            reply = b"<connection closed>"
        assert reply.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")), \
            f"reply {reply!r}; the daemon's log:\n" + daemon.log()[-2500:]
        assert daemon.process.poll() is None
        other = TextConn(tcp_from(daemon.port, "127.0.0.2"))
        assert other.call(b"version\r\n").startswith(b"VERSION ")
    finally:
        daemon.kill()


def test_mac_off_warns_at_start_and_in_stats(tmp_path):
    daemon = Daemon(tmp_path, "--mac", "off")
    err = tmp_path / "stderr"
    with open(err, "wb") as stderr:
        daemon.process = subprocess.Popen(daemon.command(),
                                          stdout=subprocess.DEVNULL,
                                          stderr=stderr)
    try:
        wait_for_port(daemon.port, daemon.process)
        deadline = time.monotonic() + 20     # listeners are bound before
        while "ready" not in err.read_text():  # the storage opens
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        text = err.read_text()
        warning = [line for line in text.splitlines() if "MAC IS OFF" in line]
        assert len(warning) == 1, text
        assert "--mac=off" in warning[0] and "no access control" in warning[0]
        assert text.index("MAC IS OFF") < text.index("ready")
        conn = TextConn(tcp_from(daemon.port, "127.0.0.1"))
        stats = conn.lines_until_end(b"stats\r\n")
        assert b"STAT mac_mode off" in stats and b"STAT enforcing 0" in stats
        settings = conn.lines_until_end(b"stats settings\r\n")
        assert b"STAT mac_mode off" in settings
        # and it means it: any context, any relabel
        assert conn.call(b"set k 0 0 1\r\nx\r\n") == b"STORED"
        assert conn.call(b"relabel k system_u:object_r:anything_t:s0\r\n") \
            == b"RELABELED"
        assert conn.call(b"getlabel k\r\n") == \
            b"LABEL system_u:object_r:anything_t:s0"
    finally:
        daemon.kill()


def test_default_is_enforcing(tmp_path):
    """Without --mac (auto, no SELinux host): the bundled policy, enforcing,
    no warning."""
    daemon = Daemon(tmp_path, port=free_port()).start()
    try:
        conn = TextConn(tcp_from(daemon.port, "127.0.0.1"))
        stats = conn.lines_until_end(b"stats\r\n")
        assert b"STAT enforcing 1" in stats
        assert b"STAT mac_mode policy" in stats or b"STAT mac_mode kernel" in stats
        assert "MAC IS OFF" not in daemon.log()
    finally:
        daemon.kill()


def test_reload_to_a_policy_without_kv_item_is_refused(tmp_path,
                                                      no_kv_item_policy):
    """SIGHUP with a policy lacking kv_item (enforcing): the reload is
    refused with a clear line and the loaded policy stays in force."""
    import shutil
    import signal
    import time

    from .mac_support import RELOAD_FAILED, build_policy
    policy = build_policy(tmp_path / "live.policy")
    peers = write_peer_contexts(tmp_path / "peer_contexts", net={
        "127.0.0.2": "system_u:system_r:securecache_local_t:s0",
        "127.0.0.3": "system_u:system_r:securecache_app_t:s0"})
    daemon = Daemon(tmp_path, "--mac", "policy", "--policy", str(policy),
                    "--peer-contexts", str(peers), "--audit-log", "none")
    daemon.start()
    try:
        local = TextConn(tcp_from(daemon.port, "127.0.0.2"))
        assert local.call(b"set k 0 0 1\r\nx\r\n") == b"STORED"
        shutil.copyfile(no_kv_item_policy, policy)
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while RELOAD_FAILED not in daemon.log():
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.02)
        assert "lacks kv_item" in daemon.log()
        assert "Traceback" not in daemon.log()
        app = TextConn(tcp_from(daemon.port, "127.0.0.3"))
        assert app.call(b"delete k\r\n") == b"CLIENT_ERROR access denied"
        assert local.call(b"delete k\r\n") == b"DELETED"
    finally:
        daemon.kill()
