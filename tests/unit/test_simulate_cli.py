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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, never a traceback
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--url", "127.0.0.1:8199"], "--url 127.0.0.1:8199: expected the server's base URL"),
        (["--url", "ftp://127.0.0.1:8199"], "--url ftp://127.0.0.1:8199: expected the server's base URL"),
        (["--out", "{file}"], "exists and is not a folder"),
        (["--seed", "-1"], "scenario error: seed (--seed): must be a non-negative integer, got -1"),
        (["--ranker", "profitabilty"], "--ranker: unknown ranking policy 'profitabilty'"),
    ],
)
def test_bad_options_are_refused_with_one_line_before_anything_is_written(extra, says, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    out = tmp_path / "out"
    argv = ["--scenario", "small", "--days", "1", "--no-progress", "--out", str(out)]
    argv += [str(afile) if arg == "{file}" else arg for arg in extra]
    assert cli.main(argv) == 2
    assert says in _one_line(capsys.readouterr().err)
    assert not out.exists() and afile.read_text() == "mine"


def test_compare_refuses_a_misspelt_policy_before_the_first_run(tmp_path, capsys, monkeypatch):
    ran: list[str | None] = []

    async def simulate(scenario, ranker, out, args, **_):
        ran.append(ranker)
        return {}

    monkeypatch.setattr(cli, "_simulate", simulate)
    argv = ["compare", "--scenario", "small", "--out", str(tmp_path / "cmp")]
    argv += ["--rankers", "rotation,random,profitabilty"]
    assert cli.main(argv) == 2
    assert "--rankers: unknown ranking policy 'profitabilty' (known: " in _one_line(capsys.readouterr().err)
    assert ran == [] and not (tmp_path / "cmp").exists()


def test_a_server_nobody_listens_on_is_one_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}"
    assert cli.main(["--scenario", "small", "--no-progress", "--out", str(tmp_path / "o"), "--url", url]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"simulation error: cannot reach {url} (ConnectError")


def test_a_wrong_operator_token_is_refused_at_the_start(tmp_path, capsys, monkeypatch):
    """One operator-only read at the start: a wrong token stops the run before any business signs up."""
    import httpx

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        if request.headers.get("authorization") != "Bearer right":
            return httpx.Response(401, json={"detail": "unauthorized"})
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    real = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(handler), **kw))
    argv = ["--scenario", "small", "--no-progress", "--out", str(tmp_path / "o"), "--url", "http://sim.test"]
    assert cli.main([*argv, "--operator-token", "bogus"]) == 2
    assert "--operator-token: http://sim.test refused it (401)" in _one_line(capsys.readouterr().err)
    assert seen == ["GET /health", "GET /v1/fraud/alerts"]


def test_help_says_what_is_missing_without_an_operator_token(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "survey links" in text and "fraud alerts" in text and "trial balance" in text


def test_a_misspelt_category_in_a_scenario_file_is_refused_naming_the_known_ones(tmp_path, capsys):
    scenario = tmp_path / "typo.toml"
    scenario.write_text("days = 1\nbusinesses = 5\nnewcomers = 0\n[categories.plumbnig]\nclose_rate = 0.9\n")
    out = tmp_path / "out"
    assert cli.main(["--scenario", str(scenario), "--no-progress", "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("scenario error: categories.plumbnig: unknown category (known: ")
    assert "plumbing" in line
    assert not out.exists()


def test_undefined_fraud_ratios_are_none_not_zero():
    from types import SimpleNamespace

    from marketplace.simulation.report import _fraud_figures

    businesses = [SimpleNamespace(index=0, id="b0", kind="honest"), SimpleNamespace(index=1, id="b1", kind="hider")]
    result = SimpleNamespace(exposures=[], alerts=[], survey_answers=0, operator=True)
    fraud = _fraud_figures(result, businesses)  # type: ignore[arg-type]
    assert fraud["precision"] is None and fraud["recall"] is None  # no alert, no cheater: n/a, not 0.00
    result.alerts = [{"business_id": "b0", "status": "open"}]
    assert _fraud_figures(result, businesses)["precision"] == 0.0  # type: ignore[arg-type]
    result.operator = False
    unread = _fraud_figures(result, businesses)  # type: ignore[arg-type]
    assert unread["read"] is False and unread["precision"] is None and "not read" in unread["note"]
