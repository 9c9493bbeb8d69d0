"""Fixtures of the offline tools' tests: real LMDB directories under tmp,
the real test policy compiled by secilc, the real `securecache` command."""

from __future__ import annotations

import pytest

from securecache.security import policybuild

from .toolsupport import fill


@pytest.fixture(scope="session")
def test_policy(tmp_path_factory):
    """base + securecache + policy/test/securecache-test.cil."""
    out = tmp_path_factory.mktemp("tools-policy") / "test.policy"
    return policybuild.build_policy([policybuild.test_module()], out)


@pytest.fixture()
def filled(tmp_path):
    """A data directory with 3,000 items under 3 labels (some with TTLs)."""
    directory = tmp_path / "data"
    fill(directory, 3000)
    return directory
