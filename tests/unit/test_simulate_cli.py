"""`marketplace simulate`: what it refuses before it starts, and the policies `compare` runs by default."""

from __future__ import annotations

import pytest

from marketplace.simulation import cli


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--scenario", "small", "--url", "http://127.0.0.1:9"],
        ["--scenario", "small", "--url", "http://127.0.0.1:9", "--ranker", "rotation"],
    ],
)
def test_a_policy_cannot_be_chosen_for_a_running_server(argv, capsys):
    # Refused before anything is sent (nothing listens on port 9): the server ranks with its own policy, and a
    # report labelled with another would be wrong.
    assert cli.main(argv) == 2
    assert "ranks with its own ranking.policy" in capsys.readouterr().err


def test_compare_runs_the_three_policies_by_default():
    args = cli._parser(compare=True).parse_args([])
    assert args.rankers.split(",") == ["rotation", "random", "profitability"]


def test_the_services_own_policy_is_seeded_with_the_scenarios_seed(monkeypatch, tmp_path):
    """Without --ranker the policy is the service's setting, made with the scenario's seed as with --ranker (the
    same --seed, the same market, whether the policy is named or not)."""
    made: list[tuple[str | None, int]] = []

    def record(settings, ranker, seed, **_):
        made.append((ranker, seed))
        raise RuntimeError("stop here")

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(cli, "in_process_app", record)
    assert cli.main(["--scenario", "small", "--seed", "41", "--out", str(tmp_path), "--no-progress"]) == 2
    assert made == [("profitability", 41)]
