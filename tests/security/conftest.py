"""Fixtures of the security tests: real policies compiled by secilc into
temporary directories, real libsepol (private and system)."""

import pytest

from securecache.security.audit import AuditLog
from securecache.security.sepol import PolicyServer

import sechelpers as H


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("policies")


@pytest.fixture(scope="session")
def base_policy(policy_dir):
    """base.cil + securecache.cil: the embedded default."""
    return H.build(policy_dir, name="base.policy")


@pytest.fixture(scope="session")
def test_policy(policy_dir):
    """base + securecache + policy/test/securecache-test.cil."""
    return H.build(policy_dir, H.TEST_MODULE, name="test.policy")


@pytest.fixture(scope="session")
def create_policy(policy_dir):
    """The test policy + tests/security/policy/create-rules.cil."""
    return H.build(policy_dir, H.TEST_MODULE, H.CREATE_MODULE, name="create.policy")


@pytest.fixture(scope="module")
def server(test_policy):
    """A PolicyServer on the test policy (default booleans)."""
    srv = PolicyServer(test_policy)
    yield srv
    srv.close()


@pytest.fixture
def audit_file(tmp_path):
    return tmp_path / "audit.log"


@pytest.fixture
def audit_log(audit_file):
    log = AuditLog(audit_file)
    yield log
    log.close()
