"""`marketplace bench http`: what a run shares with another run."""

from __future__ import annotations

import pytest

from marketplace.bench import cli
from marketplace.bench.server import ServerConfig


def test_each_run_logs_to_a_folder_of_its_own():
    first, second = ServerConfig(), ServerConfig()
    assert first.log_dir != second.log_dir
    assert first.log_dir.is_dir() and first.log_dir.name.startswith("marketplace-bench-")
    for config in (first, second):
        config.log_dir.rmdir()


def test_help_says_the_redis_database_is_emptied(capsys):
    with pytest.raises(SystemExit):
        cli.main(["http", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "FLUSHDB" in text and "--redis-url" in text and "no other service or benchmark" in text
