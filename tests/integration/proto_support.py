"""Support for the protocol integration tests of issue 4 (test_protocols_*.py).

Real processes only: securecache daemons (``daemons.Daemon``) and Debian's
memcached 1.6.18 run side by side on loopback, driven with raw sockets, so
that the same bytes can be sent to both and the answers compared. Every read
here is bounded (a deadline, or the peer closing); nothing loops forever.

- ``start_daemon`` / ``RealMemcached``: start a server and make sure the
  port really belongs to the process we started (``free_port`` can race with
  other processes on a shared host).
- ``Conn``: a raw client with bounded reads: ``until`` (a predicate over the
  bytes received), ``line``, ``meta_step`` (send, then a ``version``
  sentinel), ``text_step`` (one request, one reply line), ``binary``
  (packets, then a NOOP or VERSION sentinel).
- binary packets: ``bin_request`` builds any header (also wrong ones),
  ``bin_responses`` parses what came back.
- ``normalise_meta``: cas values renumbered in order of appearance, TTLs
  rounded, so that two servers' answers compare byte for byte.
- ``parse_metadump``: reads ``lru_crawler metadump`` output the way
  memcached-tool's ``dump`` mode does.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import unquote_to_bytes

from .daemons import Daemon, free_port, wait_for_port

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
MEMCCAPABLE = shutil.which("memccapable") or "/usr/bin/memccapable"
MEMCACHED_TOOL = "/usr/share/memcached/scripts/memcached-tool"

CLOSED = b"<closed>"
TIMEOUT = b"<timeout>"
_VERSION_END = re.compile(rb"(?:^|(?<=\n))VERSION [^\r\n]*\r\n\Z")


# ------------------------------------------------------------ binary packets
HEADER = struct.Struct(">BBHBBHIIQ")
REQUEST, RESPONSE = 0x80, 0x81

OP = {"get": 0x00, "set": 0x01, "add": 0x02, "replace": 0x03,
      "delete": 0x04, "incr": 0x05, "decr": 0x06, "quit": 0x07,
      "flush": 0x08, "getq": 0x09, "noop": 0x0A, "version": 0x0B,
      "getk": 0x0C, "append": 0x0E, "stat": 0x10, "setq": 0x11,
      "verbosity": 0x1B, "touch": 0x1C, "gat": 0x1D,
      "sasl_list_mechs": 0x20, "sasl_auth": 0x21, "sasl_step": 0x22}


def bin_request(opcode: int, key: bytes = b"", extras: bytes = b"",
                value: bytes = b"", opaque: int = 0, cas: int = 0, *,
                magic: int = REQUEST, keylen: int | None = None,
                extlen: int | None = None, bodylen: int | None = None) -> bytes:
    """One request packet; the length fields may be forced to lie."""
    body = extras + key + value
    header = HEADER.pack(
        magic, opcode, len(key) if keylen is None else keylen,
        len(extras) if extlen is None else extlen, 0, 0,
        len(body) if bodylen is None else bodylen, opaque, cas)
    return header + body


def bin_set(key: bytes, value: bytes, opaque: int = 0, flags: int = 0,
            exptime: int = 0, opcode: int = OP["set"]) -> bytes:
    return bin_request(opcode, key, struct.pack(">II", flags, exptime), value,
                       opaque)


def bin_noop(opaque: int) -> bytes:
    return bin_request(OP["noop"], opaque=opaque)


def sasl_plain(user: str, password: str, opaque: int = 0) -> bytes:
    return bin_request(OP["sasl_auth"], b"PLAIN",
                       value=b"\0" + user.encode() + b"\0" + password.encode(),
                       opaque=opaque)


class Response(NamedTuple):
    opcode: int
    status: int
    opaque: int
    cas: int
    extras: bytes
    key: bytes
    value: bytes


def bin_responses(data: bytes) -> tuple[list[Response], bytes]:
    """The complete response packets at the start of ``data``, and the rest."""
    out = []
    while len(data) >= HEADER.size and data[0] == RESPONSE:
        (_, opcode, keylen, extlen, _, status, bodylen, opaque,
         cas) = HEADER.unpack_from(data)
        if len(data) < HEADER.size + bodylen:
            break
        body = data[HEADER.size:HEADER.size + bodylen]
        out.append(Response(opcode, status, opaque, cas, body[:extlen],
                            body[extlen:extlen + keylen],
                            body[extlen + keylen:]))
        data = data[HEADER.size + bodylen:]
    return out, data


def answered(opaque: int) -> Callable[[bytes], bool]:
    """A predicate for ``Conn.until``: a response with ``opaque`` arrived."""
    def done(data: bytes) -> bool:
        return any(r.opaque == opaque for r in bin_responses(data)[0])
    return done


# ------------------------------------------------------------- connections
class Conn:
    """A raw TCP client whose every read has a deadline."""

    def __init__(self, port: int, source: str | None = None,
                 host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(5)
        self.sock.connect((host, port))
        self.closed = False
        self.pending = b""

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """False when the peer has already closed (a reset or broken pipe)."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.closed = True
            return False

    def until(self, done: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
        """Bytes received until ``done(bytes)``, the peer closes (then
        ``closed`` is set) or ``timeout`` s pass."""
        data, self.pending = self.pending, b""
        deadline = time.monotonic() + timeout
        while not done(data) and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:          # reset by peer
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            data += chunk
        return data

    def line(self, request: bytes, timeout: float = 5.0) -> bytes:
        """Send ``request``; read until a reply ends in CRLF (or close)."""
        self.send(request)
        return self.until(lambda data: data.endswith(b"\r\n"), timeout)

    def text_step(self, request: bytes, timeout: float = 3.0) -> bytes:
        """One request, one reply line; the close and silence are shown."""
        reply = self.line(request, timeout)
        if self.closed:
            return reply + CLOSED
        if not reply.endswith(b"\r\n"):
            return reply + TIMEOUT
        return reply

    def through(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Read until the bytes end with ``marker``."""
        return self.until(lambda data: data.endswith(marker), timeout)

    def meta_step(self, request: bytes, timeout: float = 5.0) -> bytes:
        """Send ``request`` then ``version`` (a sentinel no meta reply can be
        mistaken for, unlike ``MN`` when the request holds ``mn`` itself);
        the replies before the VERSION line."""
        self.send(request + b"version\r\n")
        reply = self.until(lambda data: _VERSION_END.search(data), timeout)
        match = _VERSION_END.search(reply)
        if match:
            return reply[:match.start()]
        return reply + (CLOSED if self.closed else TIMEOUT)

    def binary(self, payload: bytes, sentinel: int | None = None,
               timeout: float = 5.0) -> tuple[list[Response], bytes, bool]:
        """Send ``payload``; read until the response with opaque ``sentinel``
        (or, without one, until the peer is quiet), a close, or the timeout.
        Returns (responses, trailing bytes, closed)."""
        self.send(payload)
        if sentinel is None:
            data = self.until(lambda data: False, timeout=0.5)
        else:
            data = self.until(answered(sentinel), timeout)
        responses, rest = bin_responses(data)
        return responses, rest, self.closed


def stats(port: int, login: bytes | None = None,
          source: str | None = None) -> dict[str, str]:
    """``stats`` over text; ``login`` is a text-auth ``user password``."""
    with Conn(port, source) as conn:
        if login is not None:
            reply = conn.text_step(b"set auth 0 0 %d\r\n%s\r\n"
                                   % (len(login), login))
            assert reply == b"STORED\r\n", reply
        conn.send(b"stats\r\n")
        data = conn.through(b"END\r\n")
    rows = {}
    for line in data.split(b"\r\n"):
        parts = line.split(b" ", 2)
        if len(parts) == 3 and parts[0] == b"STAT":
            rows[parts[1].decode()] = parts[2].decode()
    return rows


# ----------------------------------------------------------------- servers
def start_daemon(tmp: Path, *extra: str) -> Daemon:
    """A started ``Daemon`` (``Daemon.start`` checks that its port answers
    as securecache and picks another if the one it chose was taken)."""
    return Daemon(tmp, *extra).start()


def daemon_and_memcached(tmp: Path, *extra: str):
    """Yield (securecache, memcached) side by side; stop both after."""
    ours = start_daemon(tmp, *extra)
    theirs = RealMemcached()
    try:
        yield ours, theirs
    finally:
        ours.kill()
        theirs.stop()


class RealMemcached:
    """Debian's memcached 1.6.18 on a free loopback port (extra arguments and
    environment allowed, e.g. ``-Y FILE``, or ``-S`` with SASL_CONF_PATH)."""

    def __init__(self, *extra: str, env: dict[str, str] | None = None,
                 attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            args = [MEMCACHED, "-l", "127.0.0.1", "-p", str(self.port),
                    "-U", "0", *extra]
            if os.geteuid() == 0:
                args += ["-u", "root"]
            self.process = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, **(env or {})})
            try:
                wait_for_port(self.port, self.process, timeout=10)
                time.sleep(0.2)          # a failed bind exits at once
                if self.process.poll() is None:
                    return
            except RuntimeError:
                pass
            self.stop()
        raise RuntimeError("memcached did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def sasl_memcached(tmp: Path) -> RealMemcached:
    """memcached -S (binary SASL, PLAIN only). Debian's build has no
    password database of its own, so no login can succeed: it serves to
    measure how memcached refuses unauthenticated binary requests."""
    conf = tmp / "sasl"
    conf.mkdir(exist_ok=True)
    (conf / "memcached.conf").write_text("mech_list: plain\n")
    return RealMemcached("-S", env={"SASL_CONF_PATH": str(conf)})


# ------------------------------------------------------------ normalising
_CAS_TOKEN = re.compile(rb"(?<= )c([1-9][0-9]*)(?= |\r\n)")
_CAS_FIELD = re.compile(rb"(?<= )cas=([1-9][0-9]*)(?= |\r?\n)")
_TTL_TOKEN = re.compile(rb"(?<= )t([1-9][0-9]*)(?= |\r\n)")
_STATUS_LINE = re.compile(rb"^(?:HD|VA \d+|EN|NF|NS|EX|ME \S+)(?: |\r\n)")


class CasMap:
    """Renumbers cas values in order of first appearance (#1, #2, ...):
    equal cas values stay equal, and no server's counter leaks in."""

    def __init__(self) -> None:
        self.seen: dict[bytes, int] = {}

    def __call__(self, match: re.Match) -> bytes:
        number = self.seen.setdefault(match.group(1), len(self.seen) + 1)
        prefix = match.group(0)[:-len(match.group(1))]
        return prefix + b"#%d" % number


def _ttl(match: re.Match) -> bytes:
    """Remaining TTLs to the nearest 10 s: the two servers' clocks may tick
    between a store and a read."""
    return b"t~%d" % (round(int(match.group(1)) / 10) * 10)


def normalise_meta(reply: bytes, cas: CasMap) -> bytes:
    """Meta replies with cas values renumbered and TTLs rounded. Only reply
    header lines are touched, never data blocks."""
    out = []
    lines = reply.split(b"\r\n")
    skip = 0
    for line in lines:
        if skip:                 # a data block (cannot contain CRLF here)
            skip -= 1
            out.append(line)
            continue
        if _STATUS_LINE.match(line + b"\r\n"):
            line = _CAS_TOKEN.sub(cas, line + b"\r\n")[:-2]
            line = _CAS_FIELD.sub(cas, line + b"\r\n")[:-2]
            line = _TTL_TOKEN.sub(_ttl, line + b"\r\n")[:-2]
            if line.startswith(b"VA "):
                skip = 1
        out.append(line)
    return b"\r\n".join(out)


def normalise_version(reply: bytes) -> bytes:
    """Our VERSION names us (1.6.18-securecache-X); memcached's does not."""
    return re.sub(rb"VERSION \S+", b"VERSION x", reply)


# -------------------------------------------------------------- metadump
METADUMP_LINE = re.compile(
    rb"key=(?P<key>\S+) exp=(?P<exp>-?\d+) la=(?P<la>\d+) cas=(?P<cas>\d+) "
    rb"fetch=(?P<fetch>yes|no) cls=(?P<cls>\d+) size=(?P<size>\d+)\Z")


def metadump(conn: Conn, argument: bytes = b"all",
             timeout: float = 10.0) -> bytes:
    """The raw reply to ``lru_crawler metadump ARGUMENT``, through END."""
    def done(data: bytes) -> bool:
        # key lines end in a bare LF: a CRLF ends END or an error line
        if not data.endswith(b"\r\n"):
            return False
        return not data[:-2].rsplit(b"\n", 1)[-1].startswith(b"key=")

    conn.send(b"lru_crawler metadump %s\r\n" % argument)
    return conn.until(done, timeout)


def parse_metadump(text: bytes) -> list[dict]:
    """memcached-tool's way: every line up to ``END`` split on spaces into
    key=value pairs; the key is URL-decoded; ``exp=-1`` means no expiry."""
    rows = []
    for line in text.split(b"\n"):
        if line.startswith(b"END"):
            break
        if not line:
            continue
        fields = dict(part.split(b"=", 1) for part in line.split(b" "))
        row = {name.decode(): value.decode() for name, value in fields.items()}
        row["key"] = unquote_to_bytes(fields[b"key"])
        row["exptime"] = 0 if row["exp"] == "-1" else int(row["exp"])
        rows.append(row)
    return rows


# ------------------------------------------------------------------ files
def write_auth_file(path: Path, users: dict[str, str]) -> Path:
    path.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    return path


def write_peer_contexts(path: Path, lines: list[tuple[str, str, str]]) -> Path:
    path.write_text("# written by test_protocols_*\n" + "".join(
        f"{kind} {match} {context}\n" for kind, match, context in lines))
    return path


def context(domain: str, level: str = "s0") -> str:
    return f"system_u:system_r:{domain}:{level}"
