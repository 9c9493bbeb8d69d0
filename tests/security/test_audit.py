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
