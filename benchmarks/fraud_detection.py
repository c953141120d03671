"""Fraud detection benchmark: the fraud module on simulated markets whose dishonest businesses are known.

    python benchmarks/fraud_detection.py [--train-seed 11] [--eval-seed 12] [--businesses 400] [--days 28]

Two seeded markets (5 % dishonest businesses of each kind: hiders, returners, under-reporters), each run in
process through the service's HTTP API by `marketplace.simulation` on simulated time:

1. Training: customers answer the survey links the service sends (read from GET /v1/notifications, answered
   with what the simulator knows: whom they hired, for how much, how satisfied they are); the fraud workers
   run on their schedule (scans every hour, the daily rescan); a simulated operator reviews the open alerts
   every day and decides by the ground truth (confirm a cheat, dismiss an honest business). To label
   borderline cases too, the training market alerts from a lower risk (`--train-threshold`). At the end the
   model is trained on those decisions.
2. Evaluation, on another seed: the same, at the service's alert threshold, with the trained model copied in
   and never retrained.

Printed for the evaluation market: precision (alerted businesses that are dishonest), recall (dishonest
businesses that cheated at least once, alerted by the end), false alerts among honest businesses, and the
median simulated days from a business's first cheat (a hidden deal, a converted lead returned, an
under-reported turnover) to its first alert. Recall is also given over the cheaters that could be witnessed:
a cheat at least 7 days before the end on a lead whose customer answers surveys (a third of customers never
do, and most cheaters of a 28-day market cheat once or twice).

Each market's folder keeps `market.db` and `truth.json` (who is dishonest, what each business did with each
lead) for study afterwards; the service never reads the truth. `figures.json` lists every missed cheater
with its cheats and the surveys of those leads.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from marketplace.db import migrate
from marketplace.db.engine import create_engine, create_session_factory
from marketplace.db.models import FraudAlert, FraudAssessment, FraudDecision, FraudModel, Survey
from marketplace.fraud import model as risk_model
from marketplace.fraud import services as fraud
from marketplace.settings import Settings
from marketplace.simulation.agents import HONEST
from marketplace.simulation.cli import in_process_app, simulation_settings
from marketplace.simulation.market import InProcessService, Result, Simulation
from marketplace.simulation.report import CHEATS
from marketplace.simulation.scenario import Scenario, load_scenario


class FraudSimulation(Simulation):
    """The simulated market plus what the fraud module needs from the world: customers who answer the survey
    links they receive, the fraud workers on their schedule, and an operator who reviews alerts daily."""

    # The fraud model is trained once, on the training market's decisions, and never retrained during a run.
    daily_jobs = ("train_ranking_model",)

    def __init__(self, scenario: Scenario, service: InProcessService, *, ranker: str, progress: bool) -> None:
        super().__init__(scenario, service, ranker=ranker, progress=progress)
        self.app = service.app
        self._handlers["fraud_day"] = self._on_fraud_day
        self.decisions: list[tuple[str, str]] = []
        self._push(scenario.start + timedelta(days=1, hours=6), "fraud_day")

    async def _on_fraud_day(self, _: Any) -> None:
        # The daily rescan (time alone moves some signals); the model is not retrained during a run.
        state = self.app.state
        found = await fraud.scan_all(state.uow, state.settings)
        if found.reliability_changed:
            state.ranking_sync.changed(*found.reliability_changed)
        await self.service.settle()
        await self._review()
        self._push(self.now + timedelta(days=1), "fraud_day")

    async def _review(self) -> None:
        """The operator's daily review: every open alert decided by the ground truth."""
        assert self.market is not None
        kind_of = {b.id: b.kind for b in self.market.businesses if b.id is not None}
        response = await self._call("GET /v1/fraud/alerts", "GET", "/v1/fraud/alerts", token=self._operator,
                                    params={"status": "open", "limit": 200})
        for alert in sorted(response.json()["items"], key=lambda a: a["business_id"]):
            cheat = kind_of.get(alert["business_id"], HONEST) != HONEST
            decision = "confirm" if cheat else "dismiss"
            await self._call(
                "POST /v1/fraud/alerts/{id}/decision", "POST", f"/v1/fraud/alerts/{alert['id']}/decision",
                token=self._operator,
                body={"decision": decision, "note": "simulated operator: checked with the customers"},
            )
            self.decisions.append((alert["business_id"], decision))
        await self._run_jobs()  # confirmations send the freed leads' waves


def scenario_for(seed: int, args: argparse.Namespace, changes: list[str] | None = None) -> Scenario:
    """The benchmark's market for a seed; `changes` (KEY=VALUE, as `marketplace simulate --set`) make the
    evaluation market another scenario than the one the model was trained on, not only another draw."""
    return load_scenario(
        "default",
        settings_overrides=changes,
        overrides={
            "seed": seed,
            "days": args.days,
            "businesses": args.businesses,
            "newcomers": args.businesses // 5,
            "leads_per_day": args.businesses * 0.4,
            "honesty.dishonest_share": 0.15,
            "honesty.mix": {"hider": 1.0, "returner": 1.0, "under_reporter": 1.0},
        },
    )


def fresh_database(out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("market.db*"):
        stale.unlink()
    return f"sqlite+aiosqlite:///{(out / 'market.db').resolve()}"


async def run_market(
    scenario: Scenario, out: Path, threshold_bp: int, model_blob: tuple[bytes, str, str] | None, progress: bool
) -> tuple[Result, FraudSimulation, Settings, str]:
    url = fresh_database(out)
    settings = simulation_settings(url, scenario)
    settings = dataclasses.replace(settings, fraud=dataclasses.replace(settings.fraud, alert_threshold_bp=threshold_bp))
    engine = create_engine(url)
    await migrate.upgrade(engine)
    if model_blob is not None:
        blob, signature, secret = model_blob
        model = risk_model.loads(blob, signature, secret)
        blob, signature = risk_model.dumps(model, settings.service.secret_key)
        async with create_session_factory(engine)() as session:
            session.add(FraudModel(id="fmod_trained", kind=model.kind, trained_at=scenario.start - timedelta(days=1),
                                   samples=model.samples, labels=model.labels, metrics=model.metrics, blob=blob,
                                   signature=signature))
            await session.commit()
    await engine.dispose()
    app = in_process_app(settings, None, scenario.seed, migrate=False)
    simulation = FraudSimulation(scenario, InProcessService(app), ranker=app.state.ranker.name, progress=progress)
    result = await simulation.run()
    write_truth(result, out / "truth.json")
    return result, simulation, settings, url


def write_truth(result: Result, path: Path) -> None:
    """The market's ground truth next to its database, to study afterwards what was caught and why (never read
    by the service)."""
    market = result.market
    truth = {
        "start": market.scenario.start.isoformat(),
        "end": market.end.isoformat(),
        "businesses": [b.truth() for b in market.businesses if b.id is not None],
        "exposures": [
            {
                "id": e.id,
                "business": market.businesses[e.business].id,
                "lead": result.leads[e.lead].id,
                "act": e.act,
                "decided_at": None if e.decided_at is None else e.decided_at.isoformat(),
                "answers_survey": result.leads[e.lead].plan.answers_survey,
            }
            for e in result.exposures
        ],
    }
    path.write_text(json.dumps(truth) + "\n", encoding="utf-8")


async def train(url: str, settings: Settings) -> FraudModel | None:
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            row = await fraud.train_model(session, settings)
            await session.commit()
            return row
    finally:
        await engine.dispose()


async def first_alerts(url: str) -> dict[str, datetime]:
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            alerts: dict[str, datetime] = {}
            for business_id, opened_at in await session.execute(
                select(FraudAlert.business_id, FraudAlert.opened_at).order_by(FraudAlert.opened_at)
            ):
                alerts.setdefault(business_id, opened_at)
            return alerts
    finally:
        await engine.dispose()


async def missed(url: str, result: Result, alerts: dict[str, datetime]) -> list[dict[str, Any]]:
    """Why each dishonest business that cheated was not alerted: its cheats, and what the surveys of those
    leads asked and heard."""
    market = result.market
    engine = create_engine(url)
    out = []
    try:
        async with create_session_factory(engine)() as session:
            for b in market.businesses:
                if b.kind == HONEST or b.id is None or b.id in alerts:
                    continue
                cheats = [e for e in result.exposures if e.business == b.index and e.act in CHEATS]
                if not cheats:
                    continue
                rows = []
                for e in cheats:
                    lead = result.leads[e.lead]
                    surveys = await session.scalars(select(Survey).where(Survey.lead_id == lead.id))
                    rows.append({
                        "act": e.act,
                        "day": round((e.decided_at - market.scenario.start).total_seconds() / 86400, 1)
                        if e.decided_at else None,
                        "answers_surveys": lead.plan.answers_survey,
                        "surveys": [
                            (s.cause, round((s.created_at - market.scenario.start).total_seconds() / 86400, 1),
                             None if s.answered_at is None else ("hired " + str(s.business_id == b.id)
                                                                 if s.hired else "not hired"))
                            for s in surveys
                        ],
                    })
                assessment = await session.get(FraudAssessment, b.id)
                out.append({
                    "business_id": b.id, "kind": b.kind, "mode": b.mode, "cheats": rows,
                    "risk": None if assessment is None else round(assessment.risk_score, 3),
                    "signals": [] if assessment is None else [s["text"] for s in assessment.signals],
                })
    finally:
        await engine.dispose()
    return out


async def decisions(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            rows = list(await session.scalars(select(FraudDecision.decision)))
            return {d: rows.count(d) for d in ("confirm", "dismiss")}
    finally:
        await engine.dispose()


def evaluate(result: Result, alerts: dict[str, datetime]) -> dict[str, Any]:
    market = result.market
    businesses = [b for b in market.businesses if b.id is not None]
    first_cheat: dict[str, datetime] = {}
    witnessed: set[str] = set()  # a cheat on a lead whose customer answers surveys, a week before the end
    for e in result.exposures:
        if e.act in CHEATS and e.decided_at is not None:
            business_id = market.businesses[e.business].id
            assert business_id is not None
            if business_id not in first_cheat or e.decided_at < first_cheat[business_id]:
                first_cheat[business_id] = e.decided_at
            if result.leads[e.lead].plan.answers_survey and market.end - e.decided_at >= timedelta(days=7):
                witnessed.add(business_id)
    dishonest = {b.id for b in businesses if b.kind != HONEST}
    honest = {b.id for b in businesses if b.kind == HONEST}
    cheated = {b for b in dishonest if b in first_cheat}
    alerted = set(alerts)
    caught = alerted & dishonest
    days = sorted(
        (alerts[b] - first_cheat[b]).total_seconds() / 86400 for b in caught & cheated if alerts[b] >= first_cheat[b]
    )
    end = market.end
    settled = {b for b in cheated if end - first_cheat[b] >= timedelta(days=7)}
    kinds = {}
    for kind in ("hider", "returner", "under_reporter"):
        of_kind = {b.id for b in businesses if b.kind == kind and b.id in cheated}
        kinds[kind] = (len(of_kind & alerted), len(of_kind))
    return {
        "businesses": len(businesses),
        "dishonest": len(dishonest),
        "dishonest_who_cheated": len(cheated),
        "alerted": len(alerted),
        "precision": len(caught) / len(alerted) if alerted else float("nan"),
        "recall": len(alerted & cheated) / len(cheated) if cheated else float("nan"),
        "recall_cheated_7_days_before_end": len(alerted & settled) / len(settled) if settled else float("nan"),
        "recall_with_a_witness": len(alerted & witnessed) / len(witnessed) if witnessed else float("nan"),
        "with_a_witness": len(witnessed),
        "false_alerts_among_honest": len(alerted & honest) / len(honest) if honest else float("nan"),
        "false_alerts": len(alerted & honest),
        "median_days_to_alert": statistics.median(days) if days else float("nan"),
        "p90_days_to_alert": float(np.percentile(days, 90)) if days else float("nan"),
        "caught_by_kind": kinds,
    }


async def main_async(args: argparse.Namespace) -> int:
    progress = not args.no_progress and sys.stderr.isatty()
    out = Path(args.out)
    started = time.perf_counter()
    if args.train_db:
        # A training market run before (its operator's decisions are in its database): train on it again.
        url = f"sqlite+aiosqlite:///{args.train_db}"
        settings = simulation_settings(url, scenario_for(args.train_seed, args))
        summary = f"training market from {args.train_db}"
    else:
        train_scenario = scenario_for(args.train_seed, args)
        result, simulation, settings, url = await run_market(
            train_scenario, out / "train", args.train_threshold, None, progress
        )
        summary = (f"training market (seed {args.train_seed}): {len(result.exposures)} exposures, "
                   f"{simulation.survey_answers} survey answers")
    labels = await decisions(url)
    row = await train(url, settings)
    if row is None:
        print("the training market produced too few decisions or businesses to train a model", file=sys.stderr)
        return 2
    print(f"{summary}, {labels['confirm']} confirmed and {labels['dismiss']} dismissed alerts; trained {row.kind} "
          f"{json.dumps(row.metrics)}")
    model = (row.blob, row.signature, settings.service.secret_key)
    eval_scenario = scenario_for(args.eval_seed, args, args.eval_set)
    # The service's own threshold (the training market's settings carry the lower training threshold).
    service_threshold = simulation_settings(url, eval_scenario).fraud.alert_threshold_bp
    threshold = service_threshold if args.eval_threshold is None else args.eval_threshold
    result, simulation, settings, url = await run_market(eval_scenario, out / "eval", threshold, model, progress)
    alerted = await first_alerts(url)
    figures = evaluate(result, alerted)
    figures["missed"] = await missed(url, result, alerted)
    figures.update(
        train_seed=args.train_seed,
        eval_seed=args.eval_seed,
        eval_changes=args.eval_set,
        days=args.days,
        alert_threshold=threshold / 10_000,
        survey_answers=simulation.survey_answers,
        model=row.kind,
        wall_seconds=round(time.perf_counter() - started, 1),
    )
    (out / "figures.json").write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"evaluation market (seed {args.eval_seed}, {figures['businesses']} businesses, {figures['dishonest']} "
          f"dishonest of whom {figures['dishonest_who_cheated']} cheated, {args.days} days):")
    print(f"  precision                               {figures['precision']:.3f}   (goal >= 0.9)")
    print(f"  recall                                  {figures['recall']:.3f}   (goal >= 0.8)")
    print(f"  recall, first cheat >= 7 days before end {figures['recall_cheated_7_days_before_end']:.3f}")
    print(f"  recall, a cheat >= 7 days before end whose customer answers surveys "
          f"{figures['recall_with_a_witness']:.3f} ({figures['with_a_witness']} businesses)")
    print(f"  false alerts among honest businesses    {figures['false_alerts_among_honest']:.2%}  "
          f"({figures['false_alerts']})   (goal <= 1 %)")
    print(f"  median days, first cheat to alert       {figures['median_days_to_alert']:.1f}   (goal <= 14; "
          f"p90 {figures['p90_days_to_alert']:.1f})")
    print("  caught by kind                          " + ", ".join(
        f"{k} {a}/{n}" for k, (a, n) in figures["caught_by_kind"].items()))
    print(f"figures: {out / 'figures.json'} (wall time {figures['wall_seconds']} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-seed", type=int, default=11)
    parser.add_argument("--eval-seed", type=int, default=12)
    parser.add_argument("--businesses", type=int, default=400, help="businesses at the start (a fifth more join)")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--train-threshold", type=int, default=2500,
                        help="alert threshold (bp) of the training market: borderline cases get labels too")
    parser.add_argument("--eval-threshold", type=int, help="alert threshold (bp) of the evaluation market "
                                                           "(default: the service's setting)")
    parser.add_argument("--train-db", help="skip the training market: train on this earlier one's market.db")
    parser.add_argument("--eval-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a scenario field of the evaluation market only (repeatable), e.g. "
                             "customers.survey_response_rate=0.5: evaluate on a scenario the model was not trained on")
    parser.add_argument("--out", default="reports/fraud-bench")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.train_db:
        args.train_db = str(Path(args.train_db).resolve())
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
