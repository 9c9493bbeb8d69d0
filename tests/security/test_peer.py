"""peer_contexts parsing, lookup and resolution order, on real sockets."""

import ipaddress
import os
import socket
import ssl

import pytest

from securecache.security import policybuild
from securecache.security.peer import (
    PeerContexts, PeerContextsError, cert_subject, identify, normalize_address,
    peer_cred, peer_label, resolve,
)

import sechelpers as H

SAMPLE = f"""
# comment
user   alice            {H.APP}
user   *                {H.READONLY}   # any other authenticated user
uid    0                {H.ADMIN}
uid    1000-1999        {H.APP2}
net    10.0.0.0/8       {H.TENANT}
net    10.1.0.0/16      {H.APP}        # shadowed: first match wins
net    2001:db8::/32    {H.APP2}
net    127.0.0.2        {H.READONLY}
default -               {H.PERMISSIVE}
"""


@pytest.fixture
def contexts():
    return PeerContexts.parse(SAMPLE, "sample")


def test_lookup_by_kind(contexts):
    assert contexts.for_user("alice") == H.APP
    assert contexts.for_user("bob") == H.READONLY
    assert contexts.for_uid(0) == H.ADMIN
    assert contexts.for_uid(1500) == H.APP2
    assert contexts.for_uid(2000) is None
    assert contexts.for_address("10.1.2.3") == H.TENANT
    assert contexts.for_address(("2001:db8::1", 11211, 0, 0)) == H.APP2
    assert contexts.for_address("::ffff:10.9.9.9") == H.TENANT
    assert contexts.for_address(ipaddress.ip_address("127.0.0.2")) == H.READONLY
    assert contexts.for_address("127.0.0.1") is None
    assert contexts.for_address("/run/securecache.sock") is None
    assert contexts.default == H.PERMISSIVE
    assert [r.lineno for r in contexts.rules][:2] == [3, 4]


def test_resolution_order(contexts):
    label = "system_u:system_r:securecache_local_t:s0"
    assert resolve(contexts, peer_label=label, user="alice", uid=0, address="10.0.0.1") == label
    assert resolve(contexts, user="alice", uid=0, address="10.0.0.1") == H.APP
    assert resolve(contexts, uid=0, address="10.0.0.1") == H.ADMIN
    assert resolve(contexts, uid=5, address="10.0.0.1") == H.TENANT
    assert resolve(contexts, uid=5, default=H.LOCAL) == H.LOCAL      # command line beats file
    assert resolve(contexts, uid=5) == H.PERMISSIVE                  # the file's default
    no_default = PeerContexts.parse(f"uid 0 {H.ADMIN}\n")
    assert resolve(no_default, uid=5, address="192.0.2.1") is None   # refuse
    assert resolve(None, uid=5) is None


@pytest.mark.parametrize("text, line, message", [
    ("user alice", 1, "expected KIND MATCH CONTEXT"),
    ("\n\nhost x " + H.APP, 3, "unknown kind 'host'"),
    ("net 10.0.0.300 " + H.APP, 1, "bad address"),
    ("uid abc " + H.APP, 1, "bad uid"),
    ("uid 9-3 " + H.APP, 1, "empty uid range"),
    ("default * " + H.APP, 1, "default takes '-'"),
    ("user a notacontext", 1, "not a security context"),
    (f"default - {H.APP}\ndefault - {H.APP}", 2, "second default"),
])
def test_parse_errors_name_the_line(text, line, message):
    with pytest.raises(PeerContextsError) as err:
        PeerContexts.parse(text, "pc")
    assert str(err.value).startswith(f"pc:{line}: ") and message in str(err.value)


def test_contexts_checked_and_canonicalized_by_the_server(server):
    parsed = PeerContexts.parse("uid 1 system_u:system_r:securecache_app_t:s0:c3,c2,c1\n",
                                server=server)
    assert parsed.for_uid(1) == "system_u:system_r:securecache_app_t:s0:c1.c3"
    with pytest.raises(PeerContextsError, match="pc:2: context .* is not valid"):
        PeerContexts.parse(f"uid 1 {H.APP}\nuid 2 system_u:system_r:nope_t:s0\n", "pc", server)


def test_bundled_file_parses_against_the_default_policy(base_policy):
    from securecache.security.sepol import PolicyServer
    srv = PolicyServer(base_policy)
    try:
        bundled = PeerContexts.load(policybuild.bundled_peer_contexts(), srv)
        assert bundled.for_address("127.0.0.1") == H.LOCAL
        assert bundled.for_address("::1") == H.LOCAL
        assert bundled.for_uid(12345) == H.LOCAL
        assert bundled.for_address("192.0.2.1") is None and bundled.default is None
    finally:
        srv.close()


def test_load_missing_file(tmp_path):
    with pytest.raises(PeerContextsError, match="cannot read"):
        PeerContexts.load(tmp_path / "none")


def test_unix_socketpair_credentials_and_no_label():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        cred = peer_cred(a)
        assert (cred.pid, cred.uid, cred.gid) == (os.getpid(), os.getuid(), os.getgid())
        assert peer_label(a) is None                         # SO_PEERSEC: ENOPROTOOPT here
        contexts = PeerContexts.parse(f"uid {os.getuid()} {H.ADMIN}\n")
        assert identify(a, contexts) == H.ADMIN
        assert identify(a, contexts, user="x", default=H.LOCAL) == H.ADMIN


def test_unix_peer_with_another_uid():
    address = f"\0securecache-test-{os.getpid()}"          # abstract: no file permissions
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(1)
    server.settimeout(10)
    pid = os.fork()
    if pid == 0:                                             # child: become uid 4242
        try:
            os.setgid(4242)
            os.setuid(4242)
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(address)
            c.settimeout(10)
            c.recv(1)
        finally:
            os._exit(0)
    try:
        conn, _ = server.accept()
        with conn:
            contexts = PeerContexts.parse(f"uid 0 {H.ADMIN}\nuid 4000-4999 {H.APP}\n")
            assert peer_cred(conn).uid == 4242
            assert identify(conn, contexts) == H.APP
    finally:
        server.close()
        os.waitpid(pid, 0)


def test_tcp_loopback_addresses():
    contexts = PeerContexts.parse(f"net 127.0.0.2 {H.APP}\nnet 127.0.0.0/8 {H.LOCAL}\n")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        for source, expected in (("127.0.0.2", H.APP), ("127.0.0.3", H.LOCAL)):
            client = socket.socket()
            client.bind((source, 0))
            client.connect(("127.0.0.1", port))
            conn, _ = listener.accept()
            with client, conn:
                assert peer_cred(conn) is None and peer_label(conn) is None
                assert identify(conn, contexts) == expected
    finally:
        listener.close()


def test_tcp_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    contexts = PeerContexts.parse(f"net ::1 {H.LOCAL}\n")
    with listener, socket.create_connection(("::1", listener.getsockname()[1])):
        conn, _ = listener.accept()
        with conn:
            assert identify(conn, contexts) == H.LOCAL


def test_normalize_address():
    assert normalize_address("::ffff:127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert normalize_address(("fe80::1%eth0", 1, 0, 2)) == ipaddress.ip_address("fe80::1")
    assert normalize_address("") is None and normalize_address(None) is None
    assert normalize_address(b"\0abstract") is None


# ------------------------------------------------------------ cert kind
CERTS = f"""
cert   O=acme,OU=batch,CN=batch-42   {H.APP}
cert   CN=batch-42                   {H.APP2}   # any other issuer's batch-42
cert   OU=web                        {H.TENANT}
user   alice                         {H.READONLY}
net    127.0.0.0/8                   {H.LOCAL}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    import tlscerts
    return tlscerts.make_pki(tmp_path_factory.mktemp("pki"))


def handshake(pki, client_pair, verify=ssl.CERT_REQUIRED):
    """A real TLS handshake in memory between a server context like the
    daemon's and a client presenting ``client_pair``: the server side's
    getpeercert() (what the TLS transport's "peercert" gives)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server.cert, pki.server.key)
    server_ctx.load_verify_locations(cafile=pki.ca.cert)
    server_ctx.verify_mode = verify
    import tlscerts
    client_ctx = tlscerts.client_context(pki, client_pair)
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname="localhost")
    for _ in range(10):
        for side, outgoing, peer_in in ((client, bios[3], bios[0]),
                                        (server, bios[1], bios[2])):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            peer_in.write(outgoing.read())
    return server.getpeercert()


def test_cert_subject_of_a_verified_certificate(pki):
    subject = cert_subject(handshake(pki, pki.batch))
    assert subject == (("O", "acme"), ("OU", "batch"), ("CN", "batch-42"))


def test_unverified_or_absent_certificate_is_no_fact(pki):
    assert cert_subject(handshake(pki, None, ssl.CERT_OPTIONAL)) is None
    assert cert_subject(None) is None and cert_subject({}) is None


def test_cert_lines_match_every_named_attribute():
    contexts = PeerContexts.parse(CERTS, "certs")
    batch = (("O", "acme"), ("OU", "batch"), ("CN", "batch-42"))
    assert contexts.for_cert(batch) == H.APP
    assert contexts.for_cert((("O", "other"), ("CN", "batch-42"))) == H.APP2
    assert contexts.for_cert((("OU", "ops"), ("OU", "web"))) == H.TENANT
    assert contexts.for_cert((("CN", "batch-4"),)) is None     # exact values
    assert contexts.for_cert(None) is None


def test_cert_comes_after_the_user_and_before_uid_and_address():
    contexts = PeerContexts.parse(CERTS, "certs")
    batch = (("O", "acme"), ("OU", "batch"), ("CN", "batch-42"))
    assert resolve(contexts, user="alice", cert=batch, address="127.0.0.1") == H.READONLY
    assert resolve(contexts, user="bob", cert=batch, address="127.0.0.1") == H.APP
    assert resolve(contexts, cert=batch, address="127.0.0.1") == H.APP
    assert resolve(contexts, cert=(("CN", "x"),), address="127.0.0.1") == H.LOCAL


@pytest.mark.parametrize("line, message", [
    (f"cert CN {H.APP}", "bad certificate subject match 'CN'"),
    (f"cert CN= {H.APP}", "bad certificate subject match 'CN='"),
    (f"cert commonName=x {H.APP}", "bad certificate subject match .commonName=x. .ATTR=VALUE, ATTR one of CN O OU"),
    (f"cert CN=a,,O=b {H.APP}", "bad certificate subject match ''"),
])
def test_bad_cert_lines_name_the_line(line, message):
    with pytest.raises(PeerContextsError, match="certs:1: " + message):
        PeerContexts.parse(line, "certs")


def test_identify_passes_the_certificate(pki):
    contexts = PeerContexts.parse(CERTS, "certs")
    peercert = handshake(pki, pki.batch)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()) as c:
            conn, _ = listener.accept()
            with conn:
                assert identify(conn, contexts) == H.LOCAL
                assert identify(conn, contexts, peercert=peercert) == H.APP
