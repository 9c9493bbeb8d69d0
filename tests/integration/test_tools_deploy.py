"""Deployment files (issue 8): the systemd unit passes `systemd-analyze
verify`; the host module (policy/securecache-host.cil) compiles with the
full reference policy, through `policy build --base` exactly as plain
secilc does; `policy why` explains denials from the loaded policy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import setools

from securecache.security import policybuild

from .daemons import SECURECACHE

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "tools" / "securecache.service"
REFPOLICY = Path("/etc/selinux/default/policy/policy.33")
HOST_MODULE = policybuild.policy_dir() / "securecache-host.cil"


def securecache(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(SECURECACHE), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_systemd_unit_verifies(tmp_path):
    """`systemd-analyze verify` on the unit, with ExecStart pointing at this
    checkout's securecache (verify insists the binaries exist)."""
    text = UNIT.read_text()
    for option in ("StateDirectory=securecache", "User=securecache", "ProtectSystem=strict",
                   "NoNewPrivileges=yes", "ExecReload=/bin/kill -HUP $MAINPID",
                   "--data-dir /var/lib/securecache"):
        assert option in text
    unit = tmp_path / "securecache.service"
    unit.write_text(text.replace("/usr/bin/securecache", str(SECURECACHE)))
    result = subprocess.run([shutil.which("systemd-analyze"), "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.fixture(scope="module")
def refpolicy_cil(tmp_path_factory):
    """Debian's reference policy converted to CIL (checkpolicy -M -b -C)."""
    out = tmp_path_factory.mktemp("ref") / "ref.cil"
    subprocess.run(["checkpolicy", "-M", "-b", "-C", "-o", str(out), str(REFPOLICY)],
                   check=True, capture_output=True, timeout=120)
    return out


def test_host_module_builds_on_the_reference_policy_as_secilc_does(tmp_path, refpolicy_cil):
    ours = tmp_path / "ours.policy"
    result = securecache("policy", "build", "--base", refpolicy_cil, "--module", HOST_MODULE,
                         "-o", ours)
    assert result.returncode == 0, result.stderr
    plain = tmp_path / "plain.policy"
    subprocess.run(["secilc", "-M", "true", "-f", "/dev/null", "-o", str(plain),
                    str(refpolicy_cil), str(policybuild.policy_dir() / "securecache.cil"),
                    str(HOST_MODULE)], check=True, capture_output=True, timeout=120)
    assert ours.read_bytes() == plain.read_bytes()
    policy = setools.SELinuxPolicy(str(ours))
    # systemd (init_t) running securecache_exec_t enters securecache_t
    rules = list(setools.TERuleQuery(policy, ruletype=["type_transition"], source="init_t",
                                     target="securecache_exec_t", tclass=["process"]).results())
    assert [str(r.default) for r in rules] == ["securecache_t"]
    allowed = list(setools.TERuleQuery(policy, ruletype=["allow"], source="securecache_t",
                                       target="memcache_port_t", tclass=["tcp_socket"],
                                       perms=["name_bind"]).results())
    assert allowed


def test_without_base_the_reference_policy_clashes_with_base_cil(tmp_path, refpolicy_cil):
    """What --base is for: the full policy as a module collides with base.cil."""
    result = securecache("policy", "build", "--module", refpolicy_cil, "-o", tmp_path / "x")
    assert result.returncode == 1 and "Re-declaration" in result.stderr


@pytest.fixture(scope="module")
def test_policy(tmp_path_factory):
    out = tmp_path_factory.mktemp("why") / "test.policy"
    return policybuild.build_policy([policybuild.test_module()], out)


def avc(perm, source, target, tclass="kv_item"):
    return (f'avc:  denied  {{ {perm} }} for  pid=1 comm="securecache" key="k" '
            f"scontext={source} tcontext={target} tclass={tclass} permissive=0")


@pytest.mark.parametrize("line, expected", [
    (avc("read", "system_u:system_r:securecache_local_t:s0",
         "system_u:object_r:securecache_app_item_t:s0"),
     "(allow securecache_local_t securecache_app_item_t (kv_item (read)))"),
    (avc("write", "system_u:system_r:securecache_app_t:s0",
         "system_u:object_r:securecache_item_t:s0"),
     "securecache_app_write_shared=true"),
    (avc("read", "system_u:system_r:securecache_app_t:s0:c1",
         "system_u:object_r:securecache_app_item_t:s0:c2"),
     "h1 dom h2"),
    (avc("read", "system_u:system_r:securecache_app_t:s0",
         "system_u:object_r:securecache_app_item_t:s0"),
     "Allowed by the loaded policy"),
])
def test_policy_why(test_policy, line, expected):
    result = securecache("policy", "why", line, "--policy", test_policy)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_policy_why_refuses_what_is_not_an_avc_line(test_policy):
    result = securecache("policy", "why", "hello", "--policy", test_policy)
    assert result.returncode == 1 and "not an AVC line" in result.stderr
