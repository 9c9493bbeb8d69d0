"""The MAC scenario, in the style of PostgreSQL sepgsql's regression tests:
every operation tried by every client domain of the test policy
(policy/test/securecache-test.cil) on every item type, each step written to
a readable transcript as ok / denied / kept.

Three parts:

* the **table** (``oracle``): the expected outcome of (domain, operation,
  item type), computed from the access table of policy/README.md ("The test
  policy") and the request -> permission table of docs/design.md section 3.
  It is deliberately independent of the daemon's code;
* one small **adapter per protocol** (text, meta, binary): how to run an
  operation on a connection and read its outcome. Operations a protocol
  lacks are simply not in its adapter (binary has no relabel, ...);
* the **runner** (``run``): for each step the admin creates a fresh item of
  the type (``createlabel TYPE`` + ``set``) on its own text connection, the
  domain runs the operation on its connection, and (for flush_all) the
  admin looks whether the item is still there.

The committed expectation is tests/integration/data/mac_scenario.expected.
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .mac_support import DATA, BinConn, TextConn, client, item

EXPECTED = DATA / "mac_scenario.expected"

# ------------------------------------------------------------------ clients
# short name -> (context, loopback source address, uid on the UNIX socket);
# every domain at s0-s0:c0.c1023 as in README's table.
DOMAINS = {
    "admin": (client("securecache_admin_t"), "127.0.0.2", 2001),
    "app": (client("securecache_app_t"), "127.0.0.3", 2002),
    "readonly": (client("securecache_readonly_t"), "127.0.0.4", 2003),
    "local": (client("securecache_local_t"), "127.0.0.5", 2004),
    "tenant": (client("sctest_tenant_t"), "127.0.0.6", 2005),
    "permissive": (client("sctest_permissive_t"), "127.0.0.7", 2006),
}
# MCS: two tenants of the app domain, and one with no category at all
MCS_CLIENTS = {
    "app-c1": (client("securecache_app_t", "s0:c1"), "127.0.0.8", 2011),
    "app-c2": (client("securecache_app_t", "s0:c2"), "127.0.0.9", 2012),
    "app-s0": (client("securecache_app_t", "s0"), "127.0.0.10", 2013),
}
ALL_CLIENTS = {**DOMAINS, **MCS_CLIENTS}

TYPES = ["securecache_item_t", "securecache_app_item_t",
         "securecache_local_item_t", "sctest_tenant_item_t",
         "sctest_config_item_t", "sctest_secret_item_t"]

CACHE_OPS = ["whoami", "stats", "verbosity"]
CREATE_OPS = ["create", "create-config", "create-incr"]
ITEM_OPS = ["get", "gets", "gat", "gats", "set", "add", "replace", "append",
            "prepend", "cas", "delete", "incr", "decr", "touch", "getlabel",
            "relabel", "createlabel", "metadump", "flush_all"]

DEFAULT_BOOLEANS = {"securecache_app_write_shared": False,
                    "sctest_tenant_shared": False}

# ---------------------------------------------------------------- the table
ALL = frozenset("create getattr setattr remove relabelfrom relabelto read "
                "write append calculate".split())
MANAGE = ALL - {"relabelfrom", "relabelto"}      # C g s D r w a i
READ = frozenset({"getattr", "read"})            # g r
CACHE_ALL = frozenset({"connect", "getattr", "setattr", "flush"})
CACHE_USE = frozenset({"connect", "getattr"})

# docs/design.md section 3: what each request needs on the item
NEEDS = {
    "get": {"read"}, "gets": {"read"},
    "gat": {"read", "setattr"}, "gats": {"read", "setattr"},
    "set": {"write"}, "replace": {"write"}, "cas": {"write"},
    "add": {"getattr"},                       # an existing key: NOT_STORED
    "append": {"append"}, "prepend": {"append"},
    "delete": {"remove"}, "incr": {"calculate"}, "decr": {"calculate"},
    "touch": {"setattr"}, "getlabel": {"getattr"}, "metadump": {"getattr"},
    "relabel": {"setattr", "relabelfrom", "relabelto"},   # to its own label
    "createlabel": {"create"},                # createlabel TYPE + set new key
}
CACHE_NEEDS = {"stats": "getattr", "verbosity": "setattr", "flush_all": "flush"}


def item_perms(domain: str, type_: str, booleans: dict) -> frozenset:
    """README.md's table: the kv_item permissions of a domain on a type."""
    if domain in ("admin", "permissive"):       # permissive: logged, allowed
        return ALL
    if domain == "app":
        if type_ in ("securecache_app_item_t", "sctest_config_item_t"):
            return MANAGE
        if type_ == "securecache_item_t":
            extra = {"write", "append", "calculate"} \
                if booleans["securecache_app_write_shared"] else set()
            return READ | extra
    if domain == "readonly" and type_ != "sctest_secret_item_t":
        return READ
    if domain == "local":
        if type_ == "securecache_local_item_t":
            return MANAGE
        if type_ == "securecache_item_t":
            return READ
    if domain == "tenant":
        if type_ == "sctest_tenant_item_t":
            return MANAGE
        if type_ == "securecache_item_t":
            extra = {"create", "write", "append", "calculate"} \
                if booleans["sctest_tenant_shared"] else set()
            return READ | extra
    return frozenset()


def cache_perms(domain: str) -> frozenset:
    """README.md's table, last column: kv_cache permissions."""
    if domain in ("admin", "local", "permissive"):
        return CACHE_ALL
    return CACHE_USE


def new_item_type(domain: str, key: bytes, booleans: dict) -> str:
    """README.md's "New items" table."""
    if domain == "app":
        return "sctest_config_item_t" if key == b"config" \
            else "securecache_app_item_t"
    if domain == "local":
        return "securecache_local_item_t"
    if domain == "tenant" and not booleans["sctest_tenant_shared"]:
        return "sctest_tenant_item_t"
    return "securecache_item_t"


@dataclass(frozen=True)
class Step:
    domain: str
    op: str
    target: str               # an item type, "kv_cache" or "new-item"
    outcome: str              # ok | denied | kept | error(...)
    detail: str = ""

    def line(self) -> str:
        text = f"{self.domain:<11} {self.op:<13} {self.target:<25} {self.outcome}"
        return f"{text} {self.detail}" if self.detail else text


def oracle(domains=DOMAINS, booleans=DEFAULT_BOOLEANS, types=TYPES,
           ops=None) -> list[Step]:
    """The expected transcript, step by step, from the tables above."""
    steps = []
    for domain in domains:
        cache = cache_perms(domain)
        for op in CACHE_OPS:
            if ops is not None and op not in ops:
                continue
            if op == "whoami":
                steps.append(Step(domain, op, "kv_cache", "ok",
                                  DOMAINS[domain][0]))
            else:
                ok = CACHE_NEEDS[op] in cache
                steps.append(Step(domain, op, "kv_cache",
                                  "ok" if ok else "denied"))
        for op in CREATE_OPS:
            if ops is not None and op not in ops:
                continue
            key = b"config" if op == "create-config" else b"new"
            type_ = new_item_type(domain, key, booleans)
            ok = "create" in item_perms(domain, type_, booleans)
            steps.append(Step(domain, op, "new-item", "ok" if ok else "denied",
                              item(type_) if ok else ""))
        for type_ in types:
            perms = item_perms(domain, type_, booleans)
            for op in ITEM_OPS:
                if ops is not None and op not in ops:
                    continue
                if op == "flush_all":
                    outcome = "denied" if "flush" not in cache else \
                        "ok" if "remove" in perms else "kept"
                else:
                    outcome = "ok" if NEEDS[op] <= perms else "denied"
                steps.append(Step(domain, op, type_, outcome))
    return steps


# ------------------------------------------------------------ the adapters
class Context:
    """What an adapter's operation gets: the domain's connection, the admin's
    text connection (set-up and checks), the step's key and item label."""

    def __init__(self, conn, admin: TextConn, key: bytes, label: str) -> None:
        self.conn = conn
        self.admin = admin
        self.key = key
        self.label = label


def _error(reply) -> str:
    text = reply.decode("ascii", "replace") if isinstance(reply, bytes) \
        else str(reply)
    return f"error({text.strip()})"


# --- text -------------------------------------------------------------------
DENIED = b"CLIENT_ERROR access denied"


def _text_status(ok: bytes):
    def run(c: Context, command: bytes) -> str:
        reply = c.conn.call(command)
        return "ok" if reply == ok else "denied" if reply == DENIED \
            else _error(reply)
    return run


def _text_read(c: Context, command: bytes) -> str:
    values, end = c.conn.retrieve(command)
    if end != b"END":
        return _error(end)
    if not values:
        return "denied"                  # the item exists: a miss is a denial
    return "ok" if values[0][1] == b"10" else _error(values[0][1])


def _text_number(c: Context, command: bytes) -> str:
    reply = c.conn.call(command)
    return "ok" if reply.isdigit() else "denied" if reply == DENIED \
        else _error(reply)


def _text_getlabel(c: Context) -> str:
    reply = c.conn.call(b"getlabel %s\r\n" % c.key)
    if reply == b"NOT_FOUND":
        return "denied"
    return "ok" if reply == b"LABEL " + c.label.encode() else _error(reply)


def _createlabel(store, line: bytes):
    """createlabel LABEL, create ``KEY-new`` with ``line``, back to default:
    the outcome of the creation (``store`` judges its reply)."""
    def run(c: Context) -> str:
        if c.conn.call(b"createlabel %s\r\n" % c.label.encode()) != b"OK":
            return "error(createlabel refused)"
        outcome = store(c, line % c.key)
        if c.conn.call(b"createlabel default\r\n") != b"OK":
            return "error(createlabel default refused)"
        return outcome
    return run


_text_createlabel = _createlabel(_text_status(b"STORED"),
                                 b"set %s-new 0 0 2\r\n10\r\n")


def _text_metadump(c: Context) -> str:
    lines = c.conn.lines_until_end(b"lru_crawler metadump all\r\n")
    if lines and not lines[-1].startswith(b"key="):
        return _error(lines[-1])
    listed = {line.split()[0] for line in lines}
    return "ok" if b"key=" + c.key in listed else "denied"


def _flush_outcome(c: Context, reply_ok: bool | None, reply) -> str:
    if reply_ok is None:
        return "denied"
    if not reply_ok:
        return _error(reply)
    return "kept" if c.admin.exists(c.key) else "ok"


def _text_flush(c: Context) -> str:
    reply = c.conn.call(b"flush_all\r\n")
    return _flush_outcome(c, None if reply == DENIED else reply == b"OK", reply)


def _text_stats(c: Context) -> str:
    lines = c.conn.lines_until_end(b"stats\r\n")
    if lines == [DENIED]:
        return "denied"
    return "ok" if any(line.startswith(b"STAT mac_mode policy")
                       for line in lines) else _error(lines[-1:])


def _text_whoami(c: Context) -> tuple[str, str]:
    reply = c.conn.call(b"whoami\r\n")
    if not reply.startswith(b"CONTEXT "):
        return _error(reply), ""
    return "ok", reply[8:].decode()


TEXT_OPS: dict[str, Callable] = {
    "get": lambda c: _text_read(c, b"get %s\r\n" % c.key),
    "gets": lambda c: _text_read(c, b"gets %s\r\n" % c.key),
    "gat": lambda c: _text_read(c, b"gat 3000 %s\r\n" % c.key),
    "gats": lambda c: _text_read(c, b"gats 3000 %s\r\n" % c.key),
    "set": lambda c: _text_status(b"STORED")(
        c, b"set %s 0 0 2\r\n11\r\n" % c.key),
    "add": lambda c: _text_status(b"NOT_STORED")(
        c, b"add %s 0 0 2\r\n11\r\n" % c.key),
    "replace": lambda c: _text_status(b"STORED")(
        c, b"replace %s 0 0 2\r\n11\r\n" % c.key),
    "append": lambda c: _text_status(b"STORED")(
        c, b"append %s 0 0 1\r\n1\r\n" % c.key),
    "prepend": lambda c: _text_status(b"STORED")(
        c, b"prepend %s 0 0 1\r\n1\r\n" % c.key),
    "cas": lambda c: _text_status(b"STORED")(
        c, b"cas %s 0 0 2 %d\r\n11\r\n" % (c.key, c.admin.cas_of(c.key))),
    "delete": lambda c: _text_status(b"DELETED")(c, b"delete %s\r\n" % c.key),
    "incr": lambda c: _text_number(c, b"incr %s 5\r\n" % c.key),
    "decr": lambda c: _text_number(c, b"decr %s 5\r\n" % c.key),
    "touch": lambda c: _text_status(b"TOUCHED")(c, b"touch %s 3000\r\n" % c.key),
    "getlabel": _text_getlabel,
    "relabel": lambda c: _text_status(b"RELABELED")(
        c, b"relabel %s %s\r\n" % (c.key, c.label.encode())),
    "createlabel": _text_createlabel,
    "metadump": _text_metadump,
    "flush_all": _text_flush,
    "stats": _text_stats,
    "verbosity": lambda c: _text_status(b"OK")(c, b"verbosity 1\r\n"),
    "whoami": _text_whoami,
    "create": lambda c: _text_status(b"STORED")(
        c, b"set %s 0 0 2\r\n10\r\n" % c.key),
}
TEXT_OPS["create-config"] = TEXT_OPS["create"]


# --- meta -------------------------------------------------------------------
def _meta_get(c: Context, flags: bytes) -> str:
    line, value = c.conn.meta_get(b"mg %s %s\r\n" % (c.key, flags))
    if line == b"EN":
        return "denied"                  # the item exists: a miss is a denial
    if line.startswith(b"VA "):
        return "ok" if value == b"10" else _error(value)
    if line.startswith(b"HD") and b"v" not in flags.split():
        return "ok"
    return _error(line)


def _meta_status(ok: bytes):
    def run(c: Context, command: bytes) -> str:
        reply = c.conn.call(command)
        return "ok" if reply.split()[:1] == [ok] else "denied" \
            if reply == DENIED else _error(reply)
    return run


_meta_createlabel = _createlabel(_meta_status(b"HD"),
                                 b"ms %s-new 2\r\n10\r\n")


META_OPS: dict[str, Callable] = {
    "get": lambda c: _meta_get(c, b"v"),
    "gets": lambda c: _meta_get(c, b"v c"),
    "gat": lambda c: _meta_get(c, b"v T3000"),
    "gats": lambda c: _meta_get(c, b"v c T3000"),
    "touch": lambda c: _meta_get(c, b"T3000"),           # mg without v
    "getlabel": lambda c: _meta_get(c, b"s"),    # metadata only: getattr
    "set": lambda c: _meta_status(b"HD")(c, b"ms %s 2 MS\r\n11\r\n" % c.key),
    "add": lambda c: _meta_status(b"NS")(c, b"ms %s 2 ME\r\n11\r\n" % c.key),
    "replace": lambda c: _meta_status(b"HD")(c, b"ms %s 2 MR\r\n11\r\n" % c.key),
    "append": lambda c: _meta_status(b"HD")(c, b"ms %s 1 MA\r\n1\r\n" % c.key),
    "prepend": lambda c: _meta_status(b"HD")(c, b"ms %s 1 MP\r\n1\r\n" % c.key),
    "cas": lambda c: _meta_status(b"HD")(
        c, b"ms %s 2 C%d\r\n11\r\n" % (c.key, c.admin.cas_of(c.key))),
    "delete": lambda c: _meta_status(b"HD")(c, b"md %s\r\n" % c.key),
    "incr": lambda c: _meta_status(b"HD")(c, b"ma %s D5\r\n" % c.key),
    "decr": lambda c: _meta_status(b"HD")(c, b"ma %s MD D5\r\n" % c.key),
    "createlabel": _meta_createlabel,
    "create": lambda c: _meta_status(b"HD")(c, b"ms %s 2\r\n10\r\n" % c.key),
}
META_OPS["create-config"] = META_OPS["create"]
# ma N: auto-create a missing counter (kv_item:create)
META_OPS["create-incr"] = lambda c: _meta_status(b"HD")(
    c, b"ma %s N0 J7\r\n" % c.key)


# --- binary -----------------------------------------------------------------
EACCESS, KEY_ENOENT, KEY_EEXISTS = 0x24, 0x01, 0x02
STORE_EXTRAS = b"\0\0\0\0\0\0\0\0"                  # flags 0, exptime 0
ARITH_EXTRAS = (5).to_bytes(8, "big") + bytes(8) + b"\xff\xff\xff\xff"
TOUCH_EXTRAS = (3000).to_bytes(4, "big")


def _bin_status(ok: int, opcode: int, **fields):
    def run(c: Context) -> str:
        status, body = c.conn.call(opcode, key=c.key, **fields)
        return "ok" if status == ok else "denied" if status == EACCESS \
            else _error(f"status 0x{status:02x} {body!r}")
    return run


def _bin_read(opcode: int, extras: bytes = b""):
    def run(c: Context) -> str:
        status, body = c.conn.call(opcode, key=c.key, extras=extras)
        if status == KEY_ENOENT:
            return "denied"              # the item exists: a miss is a denial
        if status == 0:
            return "ok" if body.endswith(b"10") else _error(body)
        return _error(f"status 0x{status:02x}")
    return run


def _bin_flush(c: Context) -> str:
    status, body = c.conn.call(0x08)
    return _flush_outcome(c, None if status == EACCESS else status == 0,
                          f"status 0x{status:02x}")


def _bin_stats(c: Context) -> str:
    status, rows = c.conn.stats()
    return "denied" if status == EACCESS else "ok" if status == 0 and rows \
        else _error(f"status 0x{status:02x}")


def _bin_cas(c: Context) -> str:
    cas = c.admin.cas_of(c.key)
    return _bin_status(0, 0x01, extras=STORE_EXTRAS, value=b"11", cas=cas)(c)


def _bin_verbosity(c: Context) -> str:
    status, _ = c.conn.call(0x1B, extras=(1).to_bytes(4, "big"))
    return "ok" if status == 0 else "denied" if status == EACCESS \
        else _error(f"status 0x{status:02x}")


BINARY_OPS: dict[str, Callable] = {
    "get": _bin_read(0x00),                         # GET
    "gets": _bin_read(0x0C),                        # GETK (with the cas)
    "gat": _bin_read(0x1D, TOUCH_EXTRAS),           # GAT
    "gats": _bin_read(0x23, TOUCH_EXTRAS),          # GATK
    "set": _bin_status(0, 0x01, extras=STORE_EXTRAS, value=b"11"),
    "add": _bin_status(KEY_EEXISTS, 0x02, extras=STORE_EXTRAS, value=b"11"),
    "replace": _bin_status(0, 0x03, extras=STORE_EXTRAS, value=b"11"),
    "append": _bin_status(0, 0x0E, value=b"1"),
    "prepend": _bin_status(0, 0x0F, value=b"1"),
    "cas": _bin_cas,                                # SET with a cas
    "delete": _bin_status(0, 0x04),
    "incr": _bin_status(0, 0x05, extras=ARITH_EXTRAS),   # no auto-create
    "decr": _bin_status(0, 0x06, extras=ARITH_EXTRAS),
    "touch": _bin_status(0, 0x1C, extras=TOUCH_EXTRAS),
    "flush_all": _bin_flush,
    "stats": _bin_stats,
    "verbosity": _bin_verbosity,
    "create": _bin_status(0, 0x01, extras=STORE_EXTRAS, value=b"10"),
}
BINARY_OPS["create-config"] = BINARY_OPS["create"]
# INCREMENT with an initial value: auto-create a missing counter
BINARY_OPS["create-incr"] = _bin_status(
    0, 0x05, extras=(5).to_bytes(8, "big") + (7).to_bytes(8, "big") + bytes(4))


@dataclass(frozen=True)
class Protocol:
    name: str
    ops: dict
    connect: Callable            # socket -> connection object


PROTOCOLS = {
    "text": Protocol("text", TEXT_OPS, TextConn),
    "meta": Protocol("meta", META_OPS, TextConn),
    "binary": Protocol("binary", BINARY_OPS, BinConn),
}


# ----------------------------------------------------------------- the runner
_runs = itertools.count(1)


def run(protocol: Protocol, conns: dict, admin: TextConn,
        domains=DOMAINS, types=TYPES, ops=None) -> list[Step]:
    """Run the scenario; ``conns``: domain -> connection of ``protocol``,
    ``admin``: the admin's text connection for set-up and checks."""
    prefix = b"r%d" % next(_runs)
    keys = itertools.count(1)
    steps = []

    def wanted(op):
        return op in protocol.ops and (ops is None or op in ops)

    for domain in domains:
        conn = conns[domain]
        for op in CACHE_OPS:
            if wanted(op):
                result = protocol.ops[op](Context(conn, admin, b"", ""))
                outcome, detail = result if isinstance(result, tuple) \
                    else (result, "")
                steps.append(Step(domain, op, "kv_cache", outcome, detail))
        for op in CREATE_OPS:
            if not wanted(op):
                continue
            key = b"config" if op == "create-config" \
                else b"%s-%d" % (prefix, next(keys))
            admin.remove(key)
            outcome = protocol.ops[op](Context(conn, admin, key, ""))
            detail = (admin.label(key) or "(gone)") if outcome == "ok" else ""
            admin.remove(key)
            steps.append(Step(domain, op, "new-item", outcome, detail))
        for type_ in types:
            label = item(type_)
            for op in ITEM_OPS:
                if not wanted(op):
                    continue
                key = b"%s-%d" % (prefix, next(keys))
                admin.make(key, label)
                outcome = protocol.ops[op](Context(conn, admin, key, label))
                steps.append(Step(domain, op, type_, outcome))
    return steps


# ---------------------------------------------------------- transcripts
def header(title: str) -> list[str]:
    return [f"# {title}",
            "# DOMAIN     OPERATION     TARGET                    OUTCOME [DETAIL]"]


def write_transcript(path: Path, title: str, steps: list[Step]) -> Path:
    path.write_text("\n".join(header(title) + [s.line() for s in steps]) + "\n")
    return path


def data_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()
            if line.strip() and not line.startswith("#")]


def expected_lines(ops=None) -> list[str]:
    """The committed expectation, restricted to the operations in ``ops``."""
    lines = data_lines(EXPECTED.read_text())
    if ops is None:
        return lines
    return [line for line in lines if line.split()[1] in ops]


def diff(expected: list[str], actual: list[str], name: str,
         expected_name: str = str(EXPECTED)) -> str:
    return "\n".join(difflib.unified_diff(expected, actual, expected_name,
                                          name, lineterm="", n=1))
