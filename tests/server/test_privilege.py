"""server/privilege.py: the audit log's path check."""

from __future__ import annotations

import pytest

from securecache.server.privilege import check_audit_path


@pytest.fixture
def shared_cwd(tmp_path, monkeypatch):
    """Work in a directory anyone may write to (as /tmp)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.chdir(shared)


@pytest.mark.parametrize("target", ["none", "stderr", "syslog"])
def test_audit_sinks_that_are_not_files_pass_from_any_directory(
        shared_cwd, target):
    """``--audit-log none`` names no file: it must not be checked as
    ./none (it was, and a daemon started from /tmp refused to start)."""
    assert check_audit_path(target) is None


def test_a_file_named_like_a_sink_is_still_checked(shared_cwd):
    """Only the bare words are sinks: a path is a file, checked as one."""
    assert "group- or other-writable" in check_audit_path("./none")
