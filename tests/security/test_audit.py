"""Audit lines: kernel format, untrusted-string encoding, sinks, and what
the standard tools (audit2allow, audit2why) make of them."""

import re
import shutil
import subprocess

import pytest

from securecache.security import open_mac
from securecache.security.audit import AuditLog, format_avc, untrusted

import sechelpers as H


def test_format_denied_line():
    line = format_avc(True, ["read"], H.APP, H.item("x_t"), "kv_item", key=b"k1",
                      pid=42, permissive=False)
    assert line == ('avc:  denied  { read } for  pid=42 comm="securecache" key="k1" '
                    f'scontext={H.APP} tcontext=system_u:object_r:x_t:s0 '
                    'tclass=kv_item permissive=0')


def test_format_granted_line_has_no_permissive_field():
    line = format_avc(False, ["read", "write"], H.ADMIN, H.CACHE, "kv_cache", pid=1)
    assert line.startswith("avc:  granted  { read write } for  pid=1 comm=\"securecache\" scontext=")
    assert "key=" not in line and "permissive" not in line


@pytest.mark.parametrize("raw, shown", [
    (b"plain:key", '"plain:key"'),
    (b"with space", "77697468207370616365"),
    (b'quo"te', "71756F227465"),
    (b"tab\there", "7461620968657265"),
    (b"\xc3\xa9t\xc3\xa9", "C3A974C3A9"),
    ("str-key", '"str-key"'),
])
def test_untrusted_strings_like_the_kernel(raw, shown):
    assert untrusted(raw) == shown


def test_file_sink_appends_and_reopens(tmp_path):
    path = tmp_path / "avc.log"
    log = AuditLog(path)
    log.avc(True, ["read"], H.APP, H.CACHE, "kv_item", pid=1)
    path.rename(tmp_path / "avc.log.1")
    log.reopen()
    log.avc(True, ["write"], H.APP, H.CACHE, "kv_item", pid=1)
    log.close()
    assert "{ read }" in (tmp_path / "avc.log.1").read_text()
    assert "{ write }" in path.read_text()
    assert log.lines == 2


def test_stderr_and_other_sinks(capsys):
    AuditLog("stderr").avc(True, ["read"], H.APP, H.CACHE, "kv_item", pid=7)
    assert capsys.readouterr().err.startswith("avc:  denied  { read } for  pid=7 ")
    AuditLog("none").avc(True, ["read"], H.APP, H.CACHE, "kv_item")
    syslog_log = AuditLog("syslog")
    syslog_log.avc(True, ["read"], H.APP, H.CACHE, "kv_item")
    syslog_log.close()
    assert capsys.readouterr().err == ""


def _audit2allow(policy, log):
    tool = shutil.which("audit2allow")
    assert tool, "audit2allow (policycoreutils-python-utils) is required"
    proc = subprocess.run([tool, "-p", str(policy), "-i", str(log)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return re.findall(r"^allow .*;$", proc.stdout, re.M)


CASES = [
    (H.APP, H.item("securecache_local_item_t"), "kv_item", "read", b"k"),
    (H.TENANT, H.item("securecache_item_t"), "kv_item", "write", b"key with space"),
    (H.READONLY, H.CACHE, "kv_cache", "flush", None),
    (H.APP2, H.item("securecache_app_item_t", "s0:c1"), "kv_item", "remove", b'q"uote'),
]


@pytest.mark.parametrize("scontext, tcontext, tclass, perm, key", CASES)
def test_audit2allow_reads_our_denials(test_policy, tmp_path, scontext, tcontext, tclass, perm, key):
    log = tmp_path / "avc.log"
    mac = open_mac("policy", test_policy, audit=log)
    assert not mac.has_perm(scontext, tcontext, tclass, perm, key=key)
    mac.close()
    assert len(H.read_lines(log)) == 1
    stype, ttype = scontext.split(":")[2], tcontext.split(":")[2]
    assert _audit2allow(test_policy, log) == [f"allow {stype} {ttype}:{tclass} {perm};"]


def test_audit2allow_one_rule_per_denied_permission(test_policy, tmp_path):
    log = tmp_path / "avc.log"
    mac = open_mac("policy", test_policy, audit=log)
    for perm in ("read", "write", "relabelto"):
        assert not mac.has_perm(H.APP, H.item("sctest_secret_item_t"), "kv_item", perm, key=b"s")
    mac.close()
    rules = _audit2allow(test_policy, log)
    assert rules == ["allow securecache_app_t sctest_secret_item_t:kv_item { read relabelto write };"]


def test_audit2why_explains_a_constraint_denial(test_policy, tmp_path):
    log = tmp_path / "avc.log"
    mac = open_mac("policy", test_policy, audit=log)
    assert not mac.has_perm(H.APP2, H.item("securecache_app_item_t", "s0:c1"), "kv_item", "read")
    mac.close()
    proc = subprocess.run(["audit2why", "-p", str(test_policy), "-i", str(log)],
                          capture_output=True, text=True)
    assert "constraint" in proc.stdout.lower(), proc.stdout + proc.stderr


class _Clock:
    """Time the test moves by hand (the rate limit's clock)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_audit_lines_are_rate_limited_with_a_summary(audit_file):
    clock = _Clock()
    log = AuditLog(audit_file, rate=10, burst=5, clock=clock)
    try:
        for n in range(50):                   # a burst of 5, then nothing
            log.avc(True, ["read"], H.APP, H.item("x_t"), "kv_item", key=b"k%d" % n)
        assert (log.lines, log.suppressed) == (5, 45)
        for step in range(20):                # 2 s: 10 lines/s get through
            clock.now += 0.1
            for n in range(3):
                log.avc(True, ["read"], H.APP, H.item("x_t"), "kv_item", key=b"l%d" % n)
        assert (log.lines, log.suppressed) == (25, 85)
        clock.now += 60                       # the bucket refills to its burst only
        for n in range(10):
            log.avc(True, ["read"], H.APP, H.item("x_t"), "kv_item")
        assert (log.lines, log.suppressed) == (30, 90)
        assert log.stats() == {"audit_lines": 30, "audit_suppressed": 90}
    finally:
        log.close()                           # writes the last summary
    lines = H.read_lines(audit_file)
    summaries = [line for line in lines if not line.startswith("avc:")]
    assert summaries[0] == "audit: rate limit exceeded: 45 AVC lines suppressed (rate=10/s burst=5)"
    assert lines[5] == summaries[0]           # written before the next line
    assert sum(int(line.split()[4]) for line in summaries) == 90
    assert summaries[-1].startswith("audit: rate limit exceeded: 5 ")   # at close
    assert sum(line.startswith("avc:") for line in lines) == 30


def test_rate_zero_writes_every_line(audit_file):
    log = AuditLog(audit_file, rate=0)
    for _ in range(2000):
        log.avc(True, ["read"], H.APP, H.item("x_t"), "kv_item")
    log.close()
    assert len(H.read_lines(audit_file)) == 2000 and log.suppressed == 0


def test_audit2allow_skips_the_summary_line(tmp_path, test_policy):
    clock = _Clock()
    path = tmp_path / "audit.log"
    log = AuditLog(path, rate=1, burst=1, clock=clock)
    for perm in ("read", "write", "write"):
        log.avc(True, [perm], H.APP, H.item("sctest_secret_item_t"), "kv_item")
    clock.now += 5
    log.avc(True, ["read"], H.APP, H.item("sctest_secret_item_t"), "kv_item")
    log.close()
    assert "suppressed" in path.read_text()
    assert _audit2allow(test_policy, path) == [
        "allow securecache_app_t sctest_secret_item_t:kv_item read;"]
