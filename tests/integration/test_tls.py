"""Issue 9, acceptance item 6 (TLS): ``-Z`` with memcached's semantics on
real daemons, spoken to by pymemcache's TLS support and raw ``ssl``
sockets; a test PKI made by Debian's ``openssl``. A verified client
certificate mapped by a ``cert`` line of peer_contexts gives the client
its context, and the bundled policy then keeps securecache_app_t's items
and securecache_local_t's apart."""

from __future__ import annotations

import socket
import ssl
import subprocess

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import (MemcacheClientError,
                                   MemcacheUnexpectedCloseError)

from ..security.tlscerts import client_context, issue, make_pki
from .daemons import SECURECACHE, Daemon, as_root, free_port
from .mac_support import sighup

APP = "system_u:system_r:securecache_app_t:s0"
LOCAL = "system_u:system_r:securecache_local_t:s0"
REFUSED = (ssl.SSLError, ConnectionError, MemcacheUnexpectedCloseError,
           socket.timeout)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def peer_contexts(tmp_path):
    path = tmp_path / "peer_contexts"
    path.write_text(f"cert O=acme,CN=batch-42 {APP}\n"
                    f"net 127.0.0.0/8 {LOCAL}\n"
                    f"uid * {LOCAL}\n")
    return path


def tls_daemon(tmp_path, pki, *flags) -> Daemon:
    return Daemon(tmp_path, "-Z", "--tls-cert", str(pki.server.cert),
                  "--tls-key", str(pki.server.key), "--mac", "policy",
                  "--peer-contexts", str(peer_contexts(tmp_path)),
                  "--durability", "async", *flags).start()


def client(daemon, pki, pair=None) -> Client:
    return Client(("127.0.0.1", daemon.port), timeout=5, connect_timeout=5,
                  tls_context=client_context(pki, pair))


def raw_call(daemon, pki, pair, line: bytes) -> tuple[bytes, dict]:
    """One text request over TLS: (the reply line, the server's cert)."""
    context = client_context(pki, pair)
    with socket.create_connection(("127.0.0.1", daemon.port), 5) as sock:
        with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            tls.sendall(line)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = tls.recv(4096)
                if not chunk:
                    raise ConnectionError(f"closed after {reply!r}")
                reply += chunk
            return reply, tls.getpeercert()


def whoami(daemon, pki, pair) -> bytes:
    return raw_call(daemon, pki, pair, b"whoami\r\n")[0]


def context_line(context: str) -> bytes:
    return f"CONTEXT {context}\r\n".encode()


def verifying(tmp_path, pki, mode: str) -> Daemon:
    return tls_daemon(tmp_path, pki, "--tls-ca", str(pki.ca.cert),
                      "--tls-verify", mode)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_round_trip_with_pymemcache(tmp_path, pki, threads):
    daemon = tls_daemon(tmp_path, pki, "-t", threads)
    try:
        mc = client(daemon, pki)
        assert mc.set("greeting", b"hello over TLS")
        assert mc.get("greeting") == b"hello over TLS"
        assert mc.get_many(["greeting", "missing"]) == {
            "greeting": b"hello over TLS"}
        big = bytes(range(256)) * 3600              # ~900 KB: many records
        assert mc.set("big", big) and mc.get("big") == big
        mc.close()
        assert "(TLS: TLS certificate" in daemon.log()
        # a plaintext client on the TLS port gets no reply
        with socket.create_connection(("127.0.0.1", daemon.port), 5) as s:
            s.sendall(b"version\r\n")
            s.settimeout(5)
            assert b"VERSION" not in s.recv(4096)
        # the UNIX socket is not TLS, as in memcached
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(daemon.socket_path)
            s.sendall(b"get greeting\r\n")
            s.settimeout(5)
            assert s.recv(4096).startswith(b"VALUE greeting 0 14\r\n")
    finally:
        assert daemon.stop() == 0


def test_client_certificate_gives_the_context_the_mac_enforces(tmp_path, pki):
    """memcached's -o ssl_* spelling; ssl_verify_mode=2: required."""
    daemon = Daemon(tmp_path, "-Z", "-o", f"ssl_chain_cert={pki.server.cert},"
                    f"ssl_key={pki.server.key},ssl_ca_cert={pki.ca.cert},"
                    "ssl_verify_mode=2", "--mac", "policy", "--peer-contexts",
                    str(peer_contexts(tmp_path)), "--durability", "async").start()
    try:
        assert whoami(daemon, pki, pki.batch) == context_line(APP)
        assert whoami(daemon, pki, pki.other) == context_line(LOCAL)  # by address
        batch, web = client(daemon, pki, pki.batch), client(daemon, pki, pki.other)
        assert batch.set("job:1", b"batch secret")
        assert web.set("web:1", b"web secret")
        assert batch.get("job:1") == b"batch secret"
        assert batch.get("web:1") is None           # denied reads are misses
        assert web.get("job:1") is None
        assert web.get("web:1") == b"web secret"
        with pytest.raises(MemcacheClientError, match="access denied"):
            web.delete("job:1", noreply=False)
        assert batch.get("job:1") == b"batch secret"
        label = raw_call(daemon, pki, pki.batch, b"getlabel job:1\r\n")[0]
        assert b"securecache_app_item_t" in label
        rows = batch.stats("settings")              # memcached's rows
        assert rows[b"ssl_enabled"] == b"yes"
        assert rows[b"ssl_verify_mode"] in (2, b"2")
        assert rows[b"ssl_ca_cert"] == str(pki.ca.cert).encode()
        batch.close()
        web.close()
        assert f"scontext={APP} tcontext=system_u:object_r:" \
               "securecache_local_item_t:s0 tclass=kv_item" in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_required_certificate_refuses_others(tmp_path, pki):
    daemon = verifying(tmp_path, pki, "require")
    try:
        for pair in (None, pki.stranger):      # none; another CA's batch-42
            with pytest.raises(REFUSED):
                mc = client(daemon, pki, pair)
                mc.set("job:1", b"x")
                mc.get("job:1")
        mc = client(daemon, pki, pki.batch)
        assert mc.get("job:1") is None and mc.set("job:1", b"ok")
        assert mc.get("job:1") == b"ok"
        mc.close()
    finally:
        assert daemon.stop() == 0


def test_requested_certificate_is_optional(tmp_path, pki):
    daemon = verifying(tmp_path, pki, "request")
    try:
        assert whoami(daemon, pki, None) == context_line(LOCAL)
        assert whoami(daemon, pki, pki.batch) == context_line(APP)
        with pytest.raises(REFUSED):               # sent, it must verify
            whoami(daemon, pki, pki.stranger)
    finally:
        assert daemon.stop() == 0


def test_a_login_maps_the_user_first_then_the_certificate(tmp_path, pki):
    """-Y: the session keeps the certificate among its facts, so a login
    resolves user > cert > address (docs/design.md, "Who is the client")."""
    readonly = "system_u:system_r:securecache_readonly_t:s0"
    users = tmp_path / "users"
    users.write_text("alice:secret\ncarol:pw\n")
    contexts = peer_contexts(tmp_path)
    contexts.write_text(f"user alice {readonly}\n" + contexts.read_text())
    daemon = Daemon(tmp_path, "-Z", "--tls-cert", str(pki.server.cert),
                    "--tls-key", str(pki.server.key), "--tls-ca",
                    str(pki.ca.cert), "--tls-verify", "request", "-Y",
                    str(users), "--mac", "policy", "--peer-contexts",
                    str(contexts)).start()

    def whoami_after_login(pair, user, password):
        data = f"{user} {password}".encode()
        context = client_context(pki, pair)
        with socket.create_connection(("127.0.0.1", daemon.port), 5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"set auth 0 0 %d\r\n%s\r\nwhoami\r\n"
                            % (len(data), data))
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = tls.recv(4096)
                    assert chunk, reply
                    reply += chunk
                return reply
    try:
        stored = b"STORED\r\n"
        assert whoami_after_login(pki.batch, "carol", "pw") == \
            stored + context_line(APP)                     # no user line
        assert whoami_after_login(pki.batch, "alice", "secret") == \
            stored + context_line(readonly)
        assert whoami_after_login(None, "carol", "pw") == \
            stored + context_line(LOCAL)
    finally:
        assert daemon.stop() == 0


def test_sighup_reloads_the_certificate(tmp_path, pki):
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(pki.server.cert.read_bytes())
    key.write_bytes(pki.server.key.read_bytes())
    daemon = Daemon(tmp_path, "-Z", "--tls-cert", str(cert), "--tls-key",
                    str(key)).start()
    try:
        probe = lambda: raw_call(daemon, pki, None, b"version\r\n")  # noqa: E731
        assert dict(x[0] for x in probe()[1]["subject"])["commonName"] == \
            "localhost"
        fresh = issue(pki.ca, tmp_path, "fresh", "/CN=localhost-2",
                      server=True)
        cert.write_bytes(fresh.cert.read_bytes())
        key.write_bytes(fresh.key.read_bytes())
        sighup(daemon, probe)
        reply, peercert = probe()
        assert reply == b"VERSION 1.6.18\r\n"
        assert dict(x[0] for x in peercert["subject"])["commonName"] == \
            "localhost-2"
        key.write_text("not a key\n")                # a bad file: kept
        sighup(daemon, probe)
        reply, peercert = probe()
        assert dict(x[0] for x in peercert["subject"])["commonName"] == \
            "localhost-2"
        assert "TLS certificate reload failed, keeping the old one" in \
            daemon.log()
    finally:
        assert daemon.stop() == 0


def negotiated(daemon, pki, maximum) -> tuple[str, str]:
    """(TLS version, cipher) of a handshake by a client capped at
    ``maximum``."""
    context = client_context(pki)
    context.maximum_version = maximum
    with socket.create_connection(("127.0.0.1", daemon.port), 5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"version\r\n")
            assert tls.recv(100) == b"VERSION 1.6.18\r\n"
            return tls.version(), tls.cipher()[0]


def test_ciphers_and_minimum_version(tmp_path, pki):
    cipher = "ECDHE-ECDSA-AES256-GCM-SHA384"
    (tmp_path / "a").mkdir()
    daemon = tls_daemon(tmp_path / "a", pki, "--tls-ciphers", cipher)
    try:
        assert negotiated(daemon, pki, ssl.TLSVersion.TLSv1_2) == \
            ("TLSv1.2", cipher)
    finally:
        assert daemon.stop() == 0
    (tmp_path / "b").mkdir()
    daemon = tls_daemon(tmp_path / "b", pki, "-o", "ssl_min_version=3")
    try:
        assert negotiated(daemon, pki, ssl.TLSVersion.TLSv1_3)[0] == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            negotiated(daemon, pki, ssl.TLSVersion.TLSv1_2)
    finally:
        assert daemon.stop() == 0


def serve(tmp_path, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([str(SECURECACHE), "serve", *as_root(),
                           "--data-dir", str(tmp_path / "d"), *flags],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("flags, status, message", [
    (["-Z", "-p", "0"], 64, "ERROR: You cannot enable SSL without a TCP port."),
    (["-Z"], 64, "-Z needs a certificate chain: --tls-cert FILE"),
    (["--tls-cert", "CERT"], 64, "TLS options given without -Z"),
    (["-o", "ssl_verify_mode=2"], 64, "TLS options given without -Z"),
    (["-Z", "--tls-cert", "CERT", "--tls-verify", "require"], 64,
     "--tls-verify require needs --tls-ca FILE"),
    (["-Z", "--tls-cert", "CERT"], 1, "cannot load the TLS certificate"),
    (["-Z", "--tls-cert", "CERT", "--tls-key", "ROGUE"], 1,
     "cannot load the TLS certificate"),
    (["-Z", "--tls-cert", "/nonexistent.pem"], 1, "No such file"),
    (["-Z", "--tls-cert", "CERT", "--tls-key", "KEY", "--tls-ciphers",
      "NO-SUCH-CIPHER"], 1, "TLS ciphers 'NO-SUCH-CIPHER'"),
    (["-o", "ssl_verify_mode=4"], 2, "-o ssl_verify_mode is 0 to 3"),
    (["-o", "ssl_min_version=1"], 2, "TLS 1.0 and 1.1 are not served"),
    (["-o", "ssl_kernel_tls"], 2, "not offloaded to the kernel"),
    (["-o", "ssl_keyformat=1"], 2, "keys are read as PEM"),
])
def test_impossible_tls_settings_are_refused(tmp_path, pki, flags, status,
                                             message):
    files = {"CERT": str(pki.server.cert), "KEY": str(pki.server.key),
             "ROGUE": str(pki.stranger.key)}
    port = [] if "-p" in flags else ["-p", str(free_port())]
    result = serve(tmp_path, *port, *[files.get(f, f) for f in flags])
    assert result.returncode == status, result.stderr
    assert message in result.stderr


def test_no_tcp_port_is_memcacheds_sentence(tmp_path):
    ours = serve(tmp_path, "-Z", "-p", "0")
    theirs = subprocess.run(["memcached", "-Z", "-p", "0", "-U", "0",
                             *as_root()], capture_output=True, text=True,
                            timeout=30)
    assert ours.returncode == theirs.returncode == 64
    assert ours.stderr.strip() == theirs.stderr.strip()
