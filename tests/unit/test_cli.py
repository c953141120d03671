"""`marketplace serve`: the links in messages point at the address the service answers on."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from marketplace import cli
from marketplace.settings import load_settings


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:
    # Set, then removed: monkeypatch restores the variable's absence after the test, even if serve sets it.
    monkeypatch.setenv(cli._BASE_URL_ENV, "placeholder")
    monkeypatch.delenv(cli._BASE_URL_ENV)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("SECRET_KEY", "unit-test-secret-0123456789abcdef")
    cli.get_settings.cache_clear()
    yield monkeypatch
    cli.get_settings.cache_clear()


def test_links_follow_the_served_port_while_the_base_url_is_the_shipped_default(environment):
    settings = cli.get_settings()  # as `main` reads them first (and keeps them)
    assert settings.notifications.public_base_url == cli._SHIPPED_BASE_URL
    served = cli._served_at(settings, argparse.Namespace(host="0.0.0.0", port=8768))
    assert served.notifications.public_base_url == "http://127.0.0.1:8768"
    environment.delenv(cli._BASE_URL_ENV)
    served = cli._served_at(settings, argparse.Namespace(host="::1", port=8769))
    assert served.notifications.public_base_url == "http://[::1]:8769"


def test_a_configured_base_url_is_kept(environment):
    environment.setenv(cli._BASE_URL_ENV, "https://leads.example")
    settings = load_settings()
    served = cli._served_at(settings, argparse.Namespace(host="127.0.0.1", port=9000))
    assert served.notifications.public_base_url == "https://leads.example"
