"""What can be tested of the kernel server without SELinux in the kernel,
and the package's never-fail-open rules, checked on its source."""

import ast
from pathlib import Path

import pytest
import selinux

import securecache.security as security
from securecache.security import kernel
from securecache.security.servers import PolicyLoadError

PACKAGE = Path(security.__file__).parent


def test_no_selinux_here_so_auto_is_policy():
    assert selinux.is_selinux_enabled() == 0
    assert kernel.selinux_enabled() is False
    with pytest.raises(PolicyLoadError, match="not enabled"):
        kernel.KernelServer()


def test_bindings_are_the_real_ones():
    for name in ("security_compute_av_flags_raw", "security_compute_create_name_raw",
                 "security_check_context_raw", "security_canonicalize_context_raw",
                 "selinux_status_updated", "selinux_status_getenforce", "string_to_av_perm",
                 "security_deny_unknown", "security_get_initial_context_raw", "getcon_raw"):
        assert hasattr(selinux, name), name
    assert selinux.SELINUX_AVD_FLAGS_PERMISSIVE == 1


def test_object_names_for_the_kernel():
    assert kernel._object_name(None) is None
    assert kernel._object_name(b"config") == "config"
    assert kernel._object_name("config") == "config"
    assert kernel._object_name(b"") is None
    assert kernel._object_name(b"a\0b") is None
    # a NUL ends a C string in every buffer type the key may arrive in
    assert kernel._object_name(bytearray(b"a\0b")) is None
    assert kernel._object_name(memoryview(b"a\0b")) is None
    assert kernel._object_name(b"\xff") is None       # not passable as a C string name
    assert kernel._result([0, "ctx"]) == "ctx" and kernel._result("ctx") == "ctx"


def sources():
    return sorted(PACKAGE.glob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.name)
def test_never_fail_open(path):
    text = path.read_text()
    assert "selinux_check_access" not in text.replace("selinux_check_access is NEVER used", "")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ExceptHandler):
            names = ast.unparse(node.type) if node.type else "bare"
            assert names not in ("bare", "Exception", "BaseException"), f"{path.name}:{node.lineno}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.name)
def test_module_size(path):
    assert len(path.read_text().splitlines()) <= 600
