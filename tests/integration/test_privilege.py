"""Issue 9, acceptance item 6 (least privilege): ``-u USER`` drops root
once the listeners are bound and the data directory is open, hands root's
files to the user (modes kept), and root without ``-u`` is refused as
memcached refuses it; a file audit log that others could tamper with is
refused. Real daemons, the real ``nobody`` account."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from pymemcache.client.base import Client

from .daemons import SECURECACHE, Daemon, as_root, free_port, wait_for_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="dropping root needs root")
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def base():
    """A directory that ``nobody`` may traverse (pytest's tmp_path is
    root's alone), with a ``run`` directory of nobody's for the socket."""
    path = Path(tempfile.mkdtemp(prefix="sc-priv-"))
    path.chmod(0o711)
    run = path / "run"
    run.mkdir()
    os.chown(run, NOBODY.pw_uid, NOBODY.pw_gid)
    yield path
    shutil.rmtree(path)


def ids(pid: int) -> dict[str, str]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.split() for k, _, v in (line.partition(":") for line in status)
            if k in ("Uid", "Gid", "Groups", "CapEff")}


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in tasks]


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_dash_u_drops_root_and_hands_over_the_data(base, threads):
    daemon = Daemon(base, "-t", threads, "--durability", "async")
    daemon.socket_path = str(base / "run" / "sc.sock")
    daemon.start()                                  # as root (-u root)
    mc = Client(("127.0.0.1", daemon.port), timeout=5)
    assert mc.set("kept", b"from the root run")
    mc.close()
    assert daemon.stop() == 0
    assert owner_and_mode(daemon.data_dir)[0] == 0  # root made it

    daemon.extra += ["-u", "nobody"]
    daemon.start()
    try:
        for pid in [daemon.process.pid] + (children(daemon.process.pid)
                                           if threads == "2" else []):
            seen = ids(pid)
            assert seen["Uid"] == [str(NOBODY.pw_uid)] * 4, seen
            assert seen["Gid"] == [str(NOBODY.pw_gid)] * 4, seen
            assert seen["Groups"] == [] and seen["CapEff"] == ["0" * 16]
        mc = Client(("127.0.0.1", daemon.port), timeout=5)
        assert mc.get("kept") == b"from the root run"
        assert mc.set("new", b"as nobody")
        assert mc.get("new") == b"as nobody"
        mc.close()
        nobody = (NOBODY.pw_uid, NOBODY.pw_gid)
        assert owner_and_mode(daemon.data_dir) == (*nobody, 0o700)
        files = sorted(daemon.data_dir.iterdir())
        assert [f.name for f in files] == ["data.mdb", "lock.mdb"]
        assert all(owner_and_mode(f) == (*nobody, 0o600) for f in files)
        assert owner_and_mode(Path(daemon.socket_path))[:2] == nobody
        assert "running as user nobody" in daemon.log()
    finally:
        assert daemon.stop() == 0
    assert not Path(daemon.socket_path).exists()   # removed as nobody


def free_low_port() -> int:
    for port in range(1000, 1024):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


def test_a_privileged_port_is_bound_before_dropping_root(base):
    """memcached binds after dropping root (it cannot listen on port
    <1024 with -u); securecache binds first."""
    daemon = Daemon(base, "-u", "nobody", port=free_low_port())
    daemon.socket_path = str(base / "run" / "sc.sock")
    daemon.start()
    try:
        assert ids(daemon.process.pid)["Uid"][0] == str(NOBODY.pw_uid)
        mc = Client(("127.0.0.1", daemon.port), timeout=5)
        assert mc.set("low", b"port") and mc.get("low") == b"port"
        mc.close()
    finally:
        assert daemon.stop() == 0


def test_not_root_needs_no_dash_u_and_ignores_it(base):
    """As memcached: -u applies only to a daemon started as root."""
    data = base / "run" / "data"
    port = free_port()
    log = base / "run" / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}",
             "--clear-groups", str(SECURECACHE), "serve", "-u", "daemon",
             "--data-dir", str(data), "-l", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        mc = Client(("127.0.0.1", port), timeout=5)
        assert mc.set("k", b"v") and mc.get("k") == b"v"
        mc.close()
        assert ids(proc.pid)["Uid"][0] == str(NOBODY.pw_uid)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    assert "-u daemon: not started as root, running as uid 65534" in \
        log.read_text()
    assert owner_and_mode(data)[0] == NOBODY.pw_uid


def serve(tmp_path, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([str(SECURECACHE), "serve", "--data-dir",
                           str(tmp_path / "d"), "-p", str(free_port()), *flags],
                          capture_output=True, text=True, timeout=30)


def memcached(*flags) -> subprocess.CompletedProcess:
    return subprocess.run(["memcached", "-p", "0", "-U", "0", *flags],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("flags, status", [
    ([], 64), (["-u", "no-such-user-here"], 67)])
def test_root_needs_a_known_user_as_memcached(tmp_path, flags, status):
    ours, theirs = serve(tmp_path, *flags), memcached(*flags)
    assert ours.returncode == theirs.returncode == status
    assert ours.stderr.strip() == theirs.stderr.strip()
    assert not (tmp_path / "d").exists()            # refused before anything


def test_audit_log_others_could_tamper_with_is_refused(tmp_path):
    real = tmp_path / "real.log"
    real.write_text("")
    (tmp_path / "link.log").symlink_to(real)
    shared = tmp_path / "shared.log"
    shared.write_text("")
    shared.chmod(0o620)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    cases = {"link.log": "is a symlink",
             "shared.log": "is group- or other-writable",
             "open/audit.log": "is group- or other-writable; others could "
                               "replace the log"}
    for name, reason in cases.items():
        result = serve(tmp_path, *as_root(), "--audit-log",
                       str(tmp_path / name))
        assert result.returncode == 1 and reason in result.stderr, \
            result.stderr
    assert real.read_text() == ""
    daemon = Daemon(tmp_path, "--audit-log", str(real)).start()
    assert daemon.stop() == 0


def test_hand_over_takes_only_what_root_made_for_the_daemon(tmp_path):
    """The data directory and LMDB's two files change owner; a hard link
    (another file of root's under LMDB's name) or a symlink does not."""
    from securecache.server.privilege import _hand_over, _owned_paths
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.mdb").write_bytes(b"")
    precious = tmp_path / "precious"
    precious.write_bytes(b"root's")
    os.link(precious, data / "lock.mdb")
    (data / "other").symlink_to(precious)
    for path in _owned_paths(str(data), str(data / "other")):
        _hand_over(path, NOBODY)
    assert owner_and_mode(data)[0] == NOBODY.pw_uid
    assert owner_and_mode(data / "data.mdb")[0] == NOBODY.pw_uid
    assert owner_and_mode(precious)[0] == 0
    assert os.lstat(data / "other").st_uid == 0
