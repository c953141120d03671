"""`marketplace simulate` end to end in process, on the small scenario's first day (SQLite in the output folder):
a used database is refused before anything is written, and ratios over nothing are n/a."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from marketplace.simulation import cli

FIRST_DAY = ["--scenario", "small", "--days", "1", "--newcomers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Path:
    out = tmp_path_factory.mktemp("sim") / "first"
    assert cli.main([*FIRST_DAY, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DATABASE_URL", raising=False)  # the run's own SQLite file, never the test database
        yield mp


def _counts(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM businesses").fetchone()[0], db.execute(
            "SELECT count(*) FROM ledger_postings"
        ).fetchone()[0]


def test_a_used_database_is_refused_before_anything_is_written(finished_run: Path, tmp_path: Path, capsys) -> None:
    used = tmp_path / "used.db"
    shutil.copy(finished_run / "market.db", used)
    before = _counts(used)
    argv = [*FIRST_DAY, "--out", str(tmp_path / "second"), "--database-url", f"sqlite+aiosqlite:///{used}"]
    assert cli.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"simulation error: {used} already holds ")
    assert "--reset-database" in err[0]
    assert _counts(used) == before and before[0] > 0
    assert not (tmp_path / "second").exists()


def test_ratios_over_nothing_are_na(finished_run: Path) -> None:
    data = json.loads((finished_run / "figures.json").read_text())
    assert data["businesses"]["newcomers"] == 0
    assert data["newcomers"]["exposure_rate_vs_established"] is None
    report = (finished_run / "report.md").read_text()
    assert "| newcomers' exposure rate vs established | n/a |" in report
    fraud = data["fraud"]
    if fraud["businesses_alerted"] == 0:
        assert fraud["precision"] is None and "precision n/a" in report


def test_a_run_does_not_log_a_line_per_migration_of_its_own_database(
    tmp_path: Path, monkeypatch_module: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*FIRST_DAY, "--businesses", "4", "--out", str(tmp_path / "quiet")]) == 0
    logged = capfd.readouterr()
    assert "Running upgrade" not in logged.err + logged.out
    assert (tmp_path / "quiet" / "market.db").exists()  # it did migrate a database of its own
