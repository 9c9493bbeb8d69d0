"""Support for the MAC integration tests (test_mac_*.py): real policies
compiled by secilc, peer_contexts files, clients that connect from a chosen
loopback address or as a chosen uid over the UNIX socket, SIGHUP reloads
and the audit file -- all against real daemon processes (daemons.Daemon).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from securecache.security import policybuild

from .daemons import SECURECACHE, Daemon

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
POLICY_DIR = policybuild.policy_dir()
TEST_MODULE = policybuild.test_module()
CACHE = "system_u:system_r:securecache_t:s0"
UNLABELED = "system_u:object_r:unlabeled_t:s0"
RELOADING = "SIGHUP: reloading the security policy"
RELOAD_FAILED = "policy reload failed"


def item(type_: str, level: str = "s0") -> str:
    """An item context of type ``type_`` at ``level``."""
    return f"system_u:object_r:{type_}:{level}"


def client(type_: str, level: str = "s0-s0:c0.c1023") -> str:
    """A client (process) context of domain ``type_``."""
    return f"system_u:system_r:{type_}:{level}"


# ------------------------------------------------------------- policies
def build_policy(output: Path, *modules: Path) -> Path:
    """``securecache policy build [--module M ...] -o OUTPUT`` (the CLI)."""
    command = [str(SECURECACHE), "policy", "build"]
    for module in modules:
        command += ["--module", str(module)]
    result = subprocess.run(command + ["-o", str(output)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return Path(output)


def write_peer_contexts(path: Path, net: dict[str, str] | None = None,
                        uid: dict[int, str] | None = None) -> Path:
    """A peer_contexts file: ``net ADDR/32 CTX`` and ``uid N CTX`` lines."""
    lines = ["# written by the MAC integration tests"]
    lines += [f"net {addr}/32 {ctx}" for addr, ctx in (net or {}).items()]
    lines += [f"uid {n} {ctx}" for n, ctx in (uid or {}).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def private_socket_dir(tmp: Path) -> Path:
    """A directory for the UNIX socket that other uids may traverse (0711);
    the clients chdir into it as root and connect to the bare name."""
    directory = tmp / "sock"
    directory.mkdir(exist_ok=True)
    directory.chmod(0o711)
    return directory


def mac_daemon(tmp: Path, policy: Path, peer_contexts: Path, *extra: str,
               booleans: Path | None = None, audit: Path | None = None) -> Daemon:
    """A Daemon (not started) in --mac=policy with the given files; the UNIX
    socket is world-connectable (-a 0777) in a traversable directory."""
    args = ["--mac", "policy", "--policy", str(policy), "--peer-contexts",
            str(peer_contexts), "--durability", "async", "-a", "0777",
            "--audit-log", str(audit or tmp / "audit.log")]
    if booleans is not None:
        args += ["--booleans", str(booleans)]
    daemon = Daemon(tmp, *args, *extra)
    daemon.socket_path = str(private_socket_dir(tmp) / "sc.sock")
    return daemon


def sighup(daemon: Daemon, probe, timeout: float = 10.0) -> None:
    """SIGHUP the daemon and wait until it has reloaded.

    The daemon logs RELOADING and reloads in the same event-loop callback,
    so once the line is there, a round trip (``probe()``) is answered after
    the reload; a failed reload is an assertion error."""
    before = daemon.log().count(RELOADING)
    failed = daemon.log().count(RELOAD_FAILED)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while daemon.log().count(RELOADING) <= before:
        assert time.monotonic() < deadline, "the daemon did not log the reload"
        time.sleep(0.02)
    probe()
    assert daemon.log().count(RELOAD_FAILED) == failed, daemon.log()


# ------------------------------------------------------------- sockets
def tcp_from(port: int, source: str) -> socket.socket:
    """A TCP connection to 127.0.0.1:port from the loopback address
    ``source`` (the daemon maps it through `net` lines)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                    source_address=(source, 0))
    sock.settimeout(5)
    return sock


_AS_UID = r"""
import os, socket, sys
channel, uid, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.setgroups([])
os.setgid(uid)
os.setuid(uid)              # from here on this process is uid N ...
sock = socket.socket(socket.AF_UNIX)
sock.connect(name)          # ... so SO_PEERCRED says uid N
socket.send_fds(socket.socket(fileno=channel), [b"fd"], [sock.fileno()])
"""


def unix_as_uid(path: str, uid: int) -> socket.socket:
    """A UNIX-socket connection made by a child process running as ``uid``
    (it calls setuid before connect; the daemon maps it through `uid`
    lines); the child hands the connected socket back (SCM_RIGHTS)."""
    if os.geteuid() != 0:
        raise PermissionError("connecting as another uid needs root")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        child = subprocess.run(
            [sys.executable, "-c", _AS_UID, str(theirs.fileno()), str(uid),
             os.path.basename(path)],
            cwd=os.path.dirname(path), pass_fds=[theirs.fileno()],
            capture_output=True, text=True, timeout=30)
        assert child.returncode == 0, child.stderr
        ours.settimeout(5)
        _, fds, _, _ = socket.recv_fds(ours, 16, 1)
    finally:
        ours.close()
        theirs.close()
    sock = socket.socket(fileno=fds[0])
    sock.settimeout(5)
    return sock


# ------------------------------------------------------------- clients
class TextConn:
    """A text/meta-protocol connection that reads replies by their grammar
    (no sleeping, no guessing: every read is bounded by the socket timeout)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.createlabel: str | None = None

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        self.buffer += chunk

    def line(self) -> bytes:
        """One reply line without its end (\\r\\n, or \\n in metadump)."""
        while b"\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.removesuffix(b"\r")

    def block(self, length: int) -> bytes:
        while len(self.buffer) < length + 2:
            self._fill()
        data, self.buffer = self.buffer[:length], self.buffer[length + 2:]
        return data

    def call(self, command: bytes) -> bytes:
        """Send one command; its one-line reply."""
        self.send(command)
        return self.line()

    def retrieve(self, command: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """get/gets/gat/gats: ([(VALUE line, data)], the last line)."""
        self.send(command)
        values = []
        while True:
            line = self.line()
            if not line.startswith(b"VALUE "):
                return values, line
            values.append((line, self.block(int(line.split()[3]))))

    def lines_until_end(self, command: bytes) -> list[bytes]:
        """stats / metadump: every line up to END (or the one error line)."""
        self.send(command)
        lines = []
        while True:
            line = self.line()
            if line == b"END":
                return lines
            lines.append(line)
            if line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR", b"ERROR")):
                return lines

    def meta_get(self, command: bytes) -> tuple[bytes, bytes | None]:
        """mg: (the status line, the value or None)."""
        self.send(command)
        line = self.line()
        if line.startswith(b"VA "):
            return line, self.block(int(line.split()[1]))
        return line, None

    # the admin's helpers (set-up and checks)
    def set_createlabel(self, context: str | None) -> None:
        if context != self.createlabel:
            word = context.encode() if context else b"default"
            assert self.call(b"createlabel %s\r\n" % word) == b"OK"
            self.createlabel = context

    def make(self, key: bytes, context: str | None, value: bytes = b"10") -> None:
        """Create ``key`` labelled ``context`` (createlabel + set)."""
        self.set_createlabel(context)
        reply = self.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        assert reply == b"STORED", (key, context, reply)

    def label(self, key: bytes) -> str | None:
        reply = self.call(b"getlabel %s\r\n" % key)
        if reply == b"NOT_FOUND":
            return None
        assert reply.startswith(b"LABEL "), reply
        return reply[6:].decode()

    def exists(self, key: bytes) -> bool:
        values, end = self.retrieve(b"get %s\r\n" % key)
        assert end == b"END", end
        return bool(values)

    def cas_of(self, key: bytes) -> int:
        values, end = self.retrieve(b"gets %s\r\n" % key)
        assert end == b"END" and values, (key, end)
        return int(values[0][0].split()[4])

    def remove(self, key: bytes) -> None:
        assert self.call(b"delete %s\r\n" % key) in (b"DELETED", b"NOT_FOUND")


BIN_HEADER = struct.Struct(">BBHBBHIIQ")


class BinConn:
    """A binary-protocol connection: one request, its response packet(s)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.opaque = 0

    def close(self) -> None:
        self.sock.close()

    def _exact(self, length: int) -> bytes:
        while len(self.buffer) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return data

    def send(self, opcode: int, key: bytes = b"", extras: bytes = b"",
             value: bytes = b"", cas: int = 0) -> None:
        self.opaque += 1
        body = extras + key + value
        self.sock.sendall(BIN_HEADER.pack(0x80, opcode, len(key), len(extras),
                                          0, 0, len(body), self.opaque, cas)
                          + body)

    def response(self) -> tuple[int, bytes, bytes]:
        """(status, key, value) of the next response packet."""
        (magic, _opcode, keylen, extlen, _dt, status, bodylen, opaque,
         _cas) = BIN_HEADER.unpack(self._exact(BIN_HEADER.size))
        assert magic == 0x81 and opaque == self.opaque, (magic, opaque)
        body = self._exact(bodylen)
        return status, body[extlen:extlen + keylen], body[extlen + keylen:]

    def call(self, opcode: int, key: bytes = b"", extras: bytes = b"",
             value: bytes = b"", cas: int = 0) -> tuple[int, bytes]:
        self.send(opcode, key, extras, value, cas)
        status, _, body = self.response()
        return status, body

    def stats(self) -> tuple[int, int]:
        """STAT: (status, number of rows) -- rows end with an empty key."""
        self.send(0x10)
        rows = 0
        while True:
            status, key, _ = self.response()
            if status or not key:
                return status, rows
            rows += 1
