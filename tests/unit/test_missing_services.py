"""Under CI=true a test that cannot reach PostgreSQL or Redis fails; only on a developer's machine does it skip."""

import pytest

import tests.conftest as conftest


def test_a_missing_service_fails_under_ci(monkeypatch):
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true: a missing service is a failure"):
        conftest.unavailable("PostgreSQL", OSError("connection refused"))


def test_a_missing_service_skips_outside_ci(monkeypatch):
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="Redis is not reachable"):
        conftest.unavailable("Redis", OSError("connection refused"))
