"""Building policies with secilc; the default policy; bundled files;
tools/build-policy."""

import os
import subprocess

import pytest
import setools

from securecache.security import native, policybuild
from securecache.security.policybuild import PolicyBuildError

import sechelpers as H


def test_build_base_policy(base_policy):
    policy = setools.SELinuxPolicy(str(base_policy))
    assert policy.mls
    assert str(policy.handle_unknown) == "deny"
    assert {"kv_item", "kv_cache", "process"} <= {str(c) for c in policy.classes()}
    assert str(policy.lookup_initialsid("unlabeled").context) == H.UNLABELED
    assert len(list(policy.categories())) == 1024


def test_build_with_site_module(test_policy):
    policy = setools.SELinuxPolicy(str(test_policy))
    assert policy.lookup_type("sctest_tenant_t")
    assert {str(b) for b in policy.bools()} == {"securecache_app_write_shared", "sctest_tenant_shared"}


def test_secilc_error_is_reported_with_its_diagnostics(tmp_path):
    bad = tmp_path / "bad.cil"
    bad.write_text("(allow nosuch_t securecache_t (kv_cache (connect)))\n")
    with pytest.raises(PolicyBuildError) as err:
        H.build(tmp_path, bad)
    message = str(err.value)
    assert "secilc failed" in message and "bad.cil" in message
    assert "nosuch_t" in message or "resolve" in message
    assert not (tmp_path / "policy.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.cil"]   # no temp file left


def test_missing_module_is_an_error(tmp_path):
    with pytest.raises(PolicyBuildError, match="not found"):
        H.build(tmp_path, tmp_path / "nope.cil")


def test_default_policy_is_built_on_demand_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SECURECACHE_BUILD_DIR", str(tmp_path / "build"))
    path = policybuild.default_policy_path()
    assert path == tmp_path / "build" / "policy" / "securecache.policy"
    first = path.stat().st_mtime_ns
    assert policybuild.default_policy_path() == path
    assert path.stat().st_mtime_ns == first
    setools.SELinuxPolicy(str(path))


def test_default_policy_falls_back_to_cache_dir(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SECURECACHE_BUILD_DIR", str(blocker / "build"))   # not creatable
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = policybuild.default_policy_path()
    assert path == tmp_path / "cache" / "securecache" / "securecache.policy"


def test_bundled_files_exist():
    assert policybuild.bundled_peer_contexts().is_file()
    assert policybuild.bundled_kv_contexts().is_file()
    assert policybuild.test_module() == H.TEST_MODULE


def test_build_policy_script_is_idempotent(tmp_path):
    env = dict(os.environ, SECURECACHE_BUILD_DIR=str(tmp_path / "b"))
    script = H.REPO / "tools" / "build-policy"
    first = subprocess.run([script], env=env, capture_output=True, text=True, check=True)
    assert "built" in first.stderr
    lib = tmp_path / "b" / "native" / native.LIB_NAME
    pol = tmp_path / "b" / "policy" / "securecache.policy"
    assert lib.is_file() and pol.is_file()
    second = subprocess.run([script], env=env, capture_output=True, text=True, check=True)
    assert second.stderr == ""
    # the library exports libsepol's hidden calls and ours
    symbols = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True,
                             text=True, check=True).stdout
    for name in ("scs_compute_create", "sepol_compute_av", "policydb_read", "evaluate_conds"):
        assert f" T {name}\n" in symbols
