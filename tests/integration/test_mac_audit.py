"""Denials logged by a real daemon (--audit-log FILE) and read by the
standard tools (issue 3, item 3): each denial fed to
`audit2allow -p POLICY -i FILE` gives the allow rule for exactly the denied
permission; dontaudit, permissive and auditallow behave as in the kernel.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from . import mac_scenario as S
from .mac_support import (
    CACHE, TEST_MODULE, TextConn, build_policy, item, mac_daemon, tcp_from,
    write_peer_contexts,
)

# policycoreutils-python-utils is installed by tools/setup: missing, the
# acceptance tests below fail (they are not skipped).
AUDIT2ALLOW = shutil.which("audit2allow") or "audit2allow"
AUDIT2WHY = shutil.which("audit2why") or "audit2why"
AVC = re.compile(r'^avc:  (denied|granted)  \{ (\S+) \} for  pid=\d+ '
                 r'comm="securecache" (?:key=(\S+) )?scontext=(\S+) tcontext=(\S+) '
                 r'tclass=(\S+)(?: permissive=([01]))?$')


class Audit:
    """The daemon's audit file, read from where the last look ended."""

    def __init__(self, path):
        self.path = path
        self.seen = 0

    def new(self) -> list[str]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        fresh, self.seen = lines[self.seen:], len(lines)
        return fresh


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mac-audit")
    policy = build_policy(tmp / "test.policy", TEST_MODULE)
    peers = write_peer_contexts(
        tmp / "peer_contexts",
        net={addr: ctx for ctx, addr, _ in S.ALL_CLIENTS.values()})
    audit_file = tmp / "audit.log"
    daemon = mac_daemon(tmp, policy, peers, audit=audit_file).start()
    conns = {name: TextConn(tcp_from(daemon.port, addr))
             for name, (_, addr, _) in S.ALL_CLIENTS.items()}
    audit = Audit(audit_file)
    audit.new()
    yield policy, conns, audit, tmp
    for conn in conns.values():
        conn.close()
    daemon.kill()


def audit2allow(policy, lines, path) -> list[str]:
    """The allow rules audit2allow writes for these AVC lines."""
    path.write_text("\n".join(lines) + "\n")
    result = subprocess.run([AUDIT2ALLOW, "-p", str(policy), "-i", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines()
            if line.startswith("allow ")]


# (who, set-up by the admin: key -> label, the request, its reply,
#  the one denial: perm, source domain, target context, class,
#  the rule audit2allow must give)
CASES = [
    ("tenant", {b"a-local": item("securecache_local_item_t")},
     b"get a-local\r\n", b"END",
     "read", "sctest_tenant_t", item("securecache_local_item_t"), "kv_item",
     "allow sctest_tenant_t securecache_local_item_t:kv_item read;"),
    ("readonly", {}, b"flush_all\r\n", S.DENIED,
     "flush", "securecache_readonly_t", CACHE, "kv_cache",
     "allow securecache_readonly_t securecache_t:kv_cache flush;"),
    ("readonly", {}, b"set a-new 0 0 1\r\nx\r\n", S.DENIED,
     "create", "securecache_readonly_t", item("securecache_item_t"), "kv_item",
     "allow securecache_readonly_t securecache_item_t:kv_item create;"),
    ("local", {b"a-app": item("securecache_app_item_t")},
     b"incr a-app 1\r\n", S.DENIED,
     "calculate", "securecache_local_t", item("securecache_app_item_t"),
     "kv_item",
     "allow securecache_local_t securecache_app_item_t:kv_item calculate;"),
    ("app", {b"a-shared": item("securecache_item_t")},
     b"touch a-shared 100\r\n", S.DENIED,
     "setattr", "securecache_app_t", item("securecache_item_t"), "kv_item",
     "allow securecache_app_t securecache_item_t:kv_item setattr;"),
    # setattr is granted (its own item), relabelfrom is the one denied
    ("app", {b"a-own": item("securecache_app_item_t")},
     b"relabel a-own %s\r\n" % item("securecache_app_item_t").encode(),
     S.DENIED, "relabelfrom", "securecache_app_t",
     item("securecache_app_item_t"), "kv_item",
     "allow securecache_app_t securecache_app_item_t:kv_item relabelfrom;"),
    ("local", {b"a-cfg": item("sctest_config_item_t")},
     b"append a-cfg 0 0 1\r\nx\r\n", S.DENIED,
     "append", "securecache_local_t", item("sctest_config_item_t"), "kv_item",
     "allow securecache_local_t sctest_config_item_t:kv_item append;"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[4] + "-" + c[0] for c in CASES])
def test_each_denial_gives_exactly_its_allow_rule(env, tmp_path, case):
    policy, conns, audit, _ = env
    who, setup, request, reply, perm, source, target, tclass, rule = case
    for key, label in setup.items():
        conns["admin"].make(key, label)
    audit.new()
    assert conns[who].call(request) == reply
    lines = audit.new()
    assert len(lines) == 1, lines
    match = AVC.match(lines[0])
    assert match, lines[0]
    verdict, perms, key, scontext, tcontext, cls, permissive = match.groups()
    assert (verdict, perms, scontext, tcontext, cls, permissive) == (
        "denied", perm, S.DOMAINS[who][0], target, tclass, "0")
    if tclass == "kv_item":
        assert key == '"%s"' % request.split()[1].decode()
    else:
        assert key is None
    assert audit2allow(policy, lines, tmp_path / "one.log") == [rule]


def test_all_denials_together(env, tmp_path):
    """The whole audit file: one rule per denied (domain, type, class, perm)."""
    policy, _, audit, tmp = env
    lines = [line for line in audit.path.read_text().splitlines()
             if " denied " in line and "permissive=0" in line]
    rules = audit2allow(policy, lines, tmp_path / "all.log")
    expected = {case[-1] for case in CASES}
    assert expected <= set(rules), rules
    denied = {(m[4].split(":")[2], m[5].split(":")[2], m[2])
              for m in map(AVC.match, lines)}
    for rule in rules:                    # and nothing that was not denied
        domain, target, perms = re.match(
            r"allow (\S+) (\S+):\S+ (.+);", rule).groups()
        for perm in perms.strip("{} ").split():
            assert (domain, target, perm) in denied, rule


def test_dontaudit_permissive_and_auditallow(env, tmp_path):
    policy, conns, audit, _ = env
    admin = conns["admin"]
    admin.make(b"b-secret", item("sctest_secret_item_t"))
    admin.make(b"b-app", item("securecache_app_item_t"))
    audit.new()
    # dontaudit sctest_tenant_t sctest_secret_item_t (getattr read): denied, silent
    assert conns["tenant"].retrieve(b"get b-secret\r\n") == ([], b"END")
    assert conns["tenant"].call(b"getlabel b-secret\r\n") == b"NOT_FOUND"
    assert audit.new() == []
    # ... but what is not dontaudit'ed is logged
    assert conns["tenant"].call(b"delete b-secret\r\n") == S.DENIED
    assert [AVC.match(l)[2] for l in audit.new()] == ["remove"]
    # a permissive domain: logged once (permissive=1), allowed
    for _ in range(2):
        values, end = conns["permissive"].retrieve(b"get b-app\r\n")
        assert [v[1] for v in values] == [b"10"]
    lines = audit.new()
    assert len(lines) == 1 and lines[0].endswith("permissive=1"), lines
    assert audit2allow(policy, lines, tmp_path / "permissive.log") == [
        "allow sctest_permissive_t securecache_app_item_t:kv_item read;"]
    # auditallow securecache_admin_t sctest_secret_item_t (read write):
    # a "granted" line, which is no denial: audit2allow asks for nothing
    values, _ = admin.retrieve(b"get b-secret\r\n")
    assert [v[1] for v in values] == [b"10"]
    lines = audit.new()
    assert len(lines) == 1 and AVC.match(lines[0])[1] == "granted", lines
    assert "permissive=" not in lines[0]
    assert audit2allow(policy, lines, tmp_path / "granted.log") == []


def test_mcs_denial_is_a_constraint_violation(env, tmp_path):
    """app at s0:c2 reading an s0:c1 item: no TE rule is missing (audit2why
    names the MLS constraint)."""
    policy, conns, audit, _ = env
    assert conns["app-c1"].call(b"set c-mcs 0 0 2\r\n10\r\n") == b"STORED"
    audit.new()
    assert conns["app-c2"].retrieve(b"get c-mcs\r\n") == ([], b"END")
    lines = audit.new()
    assert len(lines) == 1, lines
    match = AVC.match(lines[0])
    assert (match[2], match[4], match[5]) == (
        "read", S.MCS_CLIENTS["app-c2"][0],
        item("securecache_app_item_t", "s0:c1"))
    path = tmp_path / "mcs.log"
    path.write_text(lines[0] + "\n")
    why = subprocess.run([AUDIT2WHY, "-p", str(policy), "-i", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert why.returncode == 0, why.stderr
    assert "Constraint DENIED" in why.stdout
    assert "Missing type enforcement" not in why.stdout
