"""Who is the client: peer labels, peer credentials and peer_contexts.

How this works: a connection's client context is, in this order
(docs/design.md section 3, "Who is the client"):

  1. the peer's own SELinux label (SO_PEERSEC: a UNIX socket on an SELinux
     host, or labeled networking);
  2. the authenticated user (SASL PLAIN / text auth) mapped by `user` lines;
  3. the subject of the client's verified TLS certificate mapped by `cert`
     lines (a CA vouches for it, wherever the client connects from);
  4. the UNIX socket peer's uid (SO_PEERCRED) mapped by `uid` lines;
  5. the TCP source address mapped by `net` lines;
  6. the configured default (--default-client-context), else the file's
     `default` line;
  7. none: the connection is refused.

peer_contexts format: one rule per line, `KIND MATCH CONTEXT`; `#` starts a
comment; within a kind the first matching line wins:

    net      ADDR[/PREFIX] | *    TCP source address or network (IPv4/IPv6)
    uid      N | N-M | *           UNIX socket peer uid (or uid range)
    user     NAME | *              authenticated user name
    cert     ATTR=VALUE[,...] | *  verified TLS client certificate subject
    default  -                     everything else

IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match IPv4 rules. A `cert`
match names subject attributes by their short names (CN O OU C ST L DC
emailAddress serialNumber UID); every pair must be in the subject (an
attribute given twice in the subject matches either value), compared
exactly; values cannot hold a comma or white space. `*` matches any
verified certificate. Only a certificate that verified against the CA
file (--tls-ca) is a fact: without one the `cert` lines are skipped.
"""

import dataclasses
import errno
import ipaddress
import socket
import struct

from .servers import SecurityError, context_syntax_ok

SO_PEERSEC = getattr(socket, "SO_PEERSEC", 31)
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
_CRED = struct.Struct("3i")
KINDS = ("net", "uid", "user", "cert", "default")
# getpeercert()'s long attribute names -> the short ones `cert` lines use
SUBJECT_NAMES = {"commonName": "CN", "organizationName": "O",
                 "organizationalUnitName": "OU", "countryName": "C",
                 "stateOrProvinceName": "ST", "localityName": "L",
                 "domainComponent": "DC", "emailAddress": "emailAddress",
                 "serialNumber": "serialNumber", "userId": "UID"}


class PeerContextsError(SecurityError, ValueError):
    """A peer_contexts file is malformed; the message names the line."""


class PeerError(SecurityError):
    """A socket's peer identity could not be read."""


@dataclasses.dataclass(frozen=True)
class PeerCred:
    """SO_PEERCRED of a UNIX socket."""

    pid: int
    uid: int
    gid: int


@dataclasses.dataclass(frozen=True)
class PeerRule:
    """One line of a peer_contexts file."""

    kind: str
    match: str
    context: str
    lineno: int
    test: object = dataclasses.field(compare=False, repr=False)


# ------------------------------------------------------------------ matchers
def _any(_value):
    return True


def _net_matcher(text):
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"bad address or network {text!r}") from exc
    return lambda addr: addr is not None and addr.version == network.version and addr in network


def _uid_matcher(text):
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise ValueError(f"bad uid {text!r} (N, N-M or *)")
    low, high = int(low), int(high) if sep else int(low)
    if high < low:
        raise ValueError(f"empty uid range {text!r}")
    return lambda uid: uid is not None and low <= uid <= high


def _user_matcher(text):
    return lambda user: user == text


def _cert_matcher(text):
    wanted = []
    for pair in text.split(","):
        name, sep, value = pair.partition("=")
        if not sep or not value or name not in SUBJECT_NAMES.values():
            raise ValueError(f"bad certificate subject match {pair!r} "
                             f"(ATTR=VALUE, ATTR one of "
                             f"{' '.join(SUBJECT_NAMES.values())})")
        wanted.append((name, value))
    return lambda subject: subject is not None and all(
        pair in subject for pair in wanted)


def _default_matcher(text):
    if text != "-":
        raise ValueError(f"default takes '-' as its match, not {text!r}")
    return _any


MATCHERS = {"net": _net_matcher, "uid": _uid_matcher,
            "user": _user_matcher, "cert": _cert_matcher,
            "default": _default_matcher}


def normalize_address(address):
    """An ip_address from a str, an address tuple or an ip_address; None
    for anything else (e.g. a UNIX socket path).  ::ffff:a.b.c.d -> IPv4."""
    if isinstance(address, (tuple, list)):
        address = address[0] if address else None
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else None


# ------------------------------------------------------------------ the file
class PeerContexts:
    """A parsed peer_contexts file; see the module docstring."""

    def __init__(self, rules, source="<peer_contexts>"):
        self.rules = list(rules)
        self.source = source
        self._by_kind = {kind: [r for r in self.rules if r.kind == kind] for kind in KINDS}

    @classmethod
    def parse(cls, text, source="<peer_contexts>", server=None):
        """Parse peer_contexts text.  With a security server, every context
        must be valid under its policy and is stored canonical.  Raises
        PeerContextsError naming the line."""
        rules = [cls._parse_line(line, lineno, source, server)
                 for lineno, line in enumerate(text.splitlines(), 1)]
        rules = [r for r in rules if r is not None]
        defaults = [r.lineno for r in rules if r.kind == "default"]
        if len(defaults) > 1:
            raise PeerContextsError(f"{source}:{defaults[1]}: second default (first on line {defaults[0]})")
        return cls(rules, source)

    @classmethod
    def load(cls, path, server=None):
        """Parse the file at `path` (see parse)."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise PeerContextsError(f"cannot read peer_contexts {path}: {exc}") from exc
        return cls.parse(text, str(path), server)

    @staticmethod
    def _parse_line(line, lineno, source, server):
        fields = line.split("#", 1)[0].split()
        if not fields:
            return None
        where = f"{source}:{lineno}"
        if len(fields) != 3:
            raise PeerContextsError(f"{where}: expected KIND MATCH CONTEXT, got {len(fields)} fields")
        kind, match, context = fields
        if kind not in MATCHERS:
            raise PeerContextsError(f"{where}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        try:
            test = _any if match == "*" and kind != "default" else MATCHERS[kind](match)
        except ValueError as exc:
            raise PeerContextsError(f"{where}: {exc}") from None
        return PeerRule(kind, match, _checked_context(context, where, server), lineno, test)

    def lookup(self, kind, value):
        """The context of the first `kind` rule matching `value`, or None."""
        for rule in self._by_kind.get(kind, ()):
            if rule.test(value):
                return rule.context
        return None

    def for_user(self, user):
        """Context for an authenticated user name, or None."""
        return self.lookup("user", user) if user is not None else None

    def for_cert(self, subject):
        """Context for a verified certificate's subject (cert_subject()),
        or None."""
        return self.lookup("cert", subject) if subject is not None else None

    def for_uid(self, uid):
        """Context for a UNIX socket peer uid, or None."""
        return self.lookup("uid", uid) if uid is not None else None

    def for_address(self, address):
        """Context for a TCP peer address (str, tuple or ip_address), or None."""
        address = normalize_address(address)
        return self.lookup("net", address) if address is not None else None

    @property
    def default(self):
        """The `default` line's context, or None."""
        return self.lookup("default", None)


def _checked_context(context, where, server):
    if not context_syntax_ok(context):
        raise PeerContextsError(f"{where}: not a security context: {context!r}")
    if server is None:
        return context
    if not server.check_context(context):
        raise PeerContextsError(f"{where}: context {context} is not valid under the loaded policy")
    return server.canonical(context)


# ------------------------------------------------------------------ sockets
def peer_label(sock):
    """The peer's SELinux context (SO_PEERSEC), or None where there is none
    (ENOPROTOOPT: no SELinux, or TCP without labeled networking)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERSEC, 1024)  # Python caps buflen at 1024
    except OSError as exc:
        if exc.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
            return None
        raise PeerError(f"SO_PEERSEC failed: {exc}") from exc
    label = raw.split(b"\0", 1)[0]
    if not label:
        return None
    try:
        return label.decode("ascii")
    except UnicodeDecodeError as exc:
        raise PeerError(f"peer label is not ASCII: {label!r}") from exc


def peer_cred(sock):
    """PeerCred(pid, uid, gid) of a UNIX socket's peer; None for others."""
    if sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, _CRED.size)
    return PeerCred(*_CRED.unpack(raw))


def cert_subject(peercert):
    """The subject of a verified client certificate as ((ATTR, VALUE), ...)
    with short names (SUBJECT_NAMES; others keep OpenSSL's long name), from
    ``SSLObject.getpeercert()``; None when there is none: no TLS, no
    certificate sent, or not verified (getpeercert() is then None or {})."""
    if not peercert or not peercert.get("subject"):
        return None
    return tuple((SUBJECT_NAMES.get(name, name), value)
                 for rdn in peercert["subject"] for name, value in rdn)


def resolve(contexts, *, peer_label=None, user=None, cert=None, uid=None,
            address=None, default=None):
    """The client context, in DESIGN order: peer label > authenticated user
    > verified certificate subject > UNIX peer uid > TCP address >
    `default` (the command line's) > the file's default line > None
    (refuse the connection)."""
    if peer_label:
        return peer_label
    candidates = ()
    if contexts is not None:
        candidates = (contexts.for_user(user), contexts.for_cert(cert),
                      contexts.for_uid(uid), contexts.for_address(address))
    for context in candidates:
        if context is not None:
            return context
    if default is not None:
        return default
    return contexts.default if contexts is not None else None


def facts(sock, peercert=None):
    """What identifies a connected socket's peer, as resolve() keywords:
    its SELinux label (SO_PEERSEC), its uid (SO_PEERCRED, UNIX), its
    address (TCP) and, for TLS, its verified certificate's subject
    (``peercert``: the TLS transport's getpeercert(), see cert_subject)."""
    cred = peer_cred(sock)
    address = None
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        address = sock.getpeername()
    return {"peer_label": peer_label(sock), "cert": cert_subject(peercert),
            "uid": cred.uid if cred else None, "address": address}


def identify(sock, contexts, *, user=None, default=None, peercert=None):
    """resolve() for a connected socket (see facts())."""
    return resolve(contexts, user=user, default=default,
                   **facts(sock, peercert))
