"""The simulation's report: figures computed from the simulator's records and the API's answers, written as
figures.json, report.md, PNG charts and ground_truth.json; the terminal summary and the policy comparison.

Money figures come from what the API answered (exposure prices, refunds, commission rate x reported
turnover), set against the truth only the simulator knows (true turnover): the difference is the
commission that dishonest businesses kept from the marketplace. Amounts are minor units, as charged
(gross, VAT included where the jurisdiction's prices include it).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from statistics import mean, median
from typing import Any

from marketplace.simulation.agents import HONEST
from marketplace.simulation.market import ExposureRecord, Result, commission

KINDS = (HONEST, "hider", "returner", "under_reporter")


def _day(result: Result, at: datetime) -> int:
    return min(max(int((at - result.scenario.start).total_seconds() // 86400), 0), result.scenario.days - 1)


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def _defined_ratio(part: float, whole: float) -> float | None:
    """A ratio that means nothing over nothing (precision with no alert): None, printed "n/a"."""
    return round(part / whole, 4) if whole else None


def _fmt(value: float | None, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def gini(values: list[int]) -> float:
    """0 when every business got as many exposures as every other, towards 1 when one got them all."""
    ordered = sorted(values)
    n, total = len(ordered), sum(ordered)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * v for i, v in enumerate(ordered))
    return round((2 * weighted) / (n * total) - (n + 1) / n, 4)


def lorenz(values: list[int], points: int = 101) -> list[tuple[float, float]]:
    ordered = sorted(values)
    n, total = len(ordered), sum(ordered)
    if n == 0 or total == 0:
        return [(0.0, 0.0), (1.0, 1.0)]
    cumulative = [0]
    for v in ordered:
        cumulative.append(cumulative[-1] + v)
    out = []
    for k in range(points):
        i = round(k * n / (points - 1))
        out.append((round(i / n, 4), round(cumulative[i] / total, 4)))
    return out


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def figures(result: Result) -> dict[str, Any]:
    s = result.scenario
    market = result.market
    days = s.days
    end = market.end
    leads = [lead for lead in result.leads if lead.id is not None and not lead.duplicate]
    exposures = result.exposures
    kind_of = {b.index: b.kind for b in market.businesses}

    # Leads, fill and speed.
    per_day_leads = [0] * days
    per_day_filled = [0] * days
    waits: list[float] = []
    for lead in leads:
        d = _day(result, lead.plan.at)
        per_day_leads[d] += 1
        if lead.exposures:
            per_day_filled[d] += 1
            assert lead.first_claim_at is not None
            waits.append((lead.first_claim_at - lead.plan.at).total_seconds() / 60)
    filled = sum(per_day_filled)

    # Money, from the API's answers: prices of claims, refunds of returns, commission on reported turnover.
    sales = [0] * days
    refunds = [0] * days
    commissions = [0] * days
    for e in exposures:
        sales[_day(result, e.claimed_at)] += e.price_minor
        if e.returned_at is not None:
            refunds[_day(result, e.returned_at)] += e.refund_minor
        if e.paid_at is not None:
            commissions[_day(result, e.paid_at)] += e.commission_minor
    revenue_per_day = [sales[d] - refunds[d] + commissions[d] for d in range(days)]
    revenue = sum(revenue_per_day)

    # Who got the exposures.
    signed_up = [b for b in market.businesses if b.id is not None]
    per_business = Counter(e.business for e in exposures)
    counts = [per_business.get(b.index, 0) for b in signed_up]

    # Newcomers: businesses that signed up during the run, for their first `newcomer_days` days. Those
    # present at the start stand for the market's established businesses (they joined before it).
    newcomer_window = timedelta(days=s.newcomer_days)

    def is_newcomer(b: int, at: datetime) -> bool:
        joined = market.businesses[b].joins_at
        return joined > s.start and at - joined < newcomer_window

    newcomer_exposures = [0] * days
    all_exposures = [0] * days
    for e in exposures:
        d = _day(result, e.claimed_at)
        all_exposures[d] += 1
        newcomer_exposures[d] += is_newcomer(e.business, e.claimed_at)
    newcomer_population = []
    for d in range(days):
        noon = s.start + timedelta(days=d, hours=12)
        present = [b for b in signed_up if b.joins_at <= noon]
        newcomer_population.append(_ratio(sum(is_newcomer(b.index, noon) for b in present), len(present)))
    newcomers = [b for b in signed_up if b.joins_at > s.start]
    newcomer_days_total = sum(min((end - b.joins_at).total_seconds() / 86400, s.newcomer_days) for b in newcomers)
    established_days_total = (len(signed_up) - len(newcomers)) * days

    # Returns.
    def return_rate(group: list[ExposureRecord]) -> dict[str, Any]:
        returned = [e for e in group if e.returned_at is not None]
        return {
            "exposures": len(group),
            "returned": len(returned),
            "rate": _ratio(len(returned), len(group)),
            "of_converted_leads": sum(1 for e in returned if e.converted),
        }

    by_kind: dict[str, list[ExposureRecord]] = defaultdict(list)
    for e in exposures:
        by_kind[kind_of[e.business]].append(e)

    # Commission owed vs charged: deal makers' deals whose customer paid before the end.
    owed: dict[str, int] = dict.fromkeys(KINDS, 0)
    charged: dict[str, int] = dict.fromkeys(KINDS, 0)
    for e in exposures:
        if e.mode != "deal_maker" or not e.converted or e.customer_paid_at is None or e.customer_paid_at > end:
            continue
        k = kind_of[e.business]
        owed[k] += commission(e.plan.turnover_minor, e.commission_rate_bp)
        charged[k] += e.commission_minor
    refunds_on_converted = sum(e.refund_minor for e in exposures if e.act == "returned_converted")

    acts = Counter(e.act or "undecided" for e in exposures)
    dishonest = Counter(b.kind for b in signed_up if b.kind != HONEST)

    trial = result.trial_balance
    # The ledger's view of the same money: what the marketplace kept plus the VAT it collected on it.
    ledger_gross = None
    if trial and trial.get("marketplace_accounts") is not None:
        ledger_gross = sum(
            a["balance"]["amount_minor"]
            for a in trial["marketplace_accounts"]
            if a["account"].split("::")[-1] in ("revenue", "vat_payable")
        )
    calls = {
        name: {
            "count": c.count,
            "mean_ms": round(1000 * c.seconds / c.count, 2) if c.count else 0.0,
            "total_s": round(c.seconds, 2),
            "statuses": {str(k): v for k, v in sorted(c.statuses.items())},
        }
        for name, c in sorted(result.calls.items())
    }
    return {
        "scenario": s.name,
        "seed": s.seed,
        "ranker": result.ranker,
        "mode": result.mode,
        "database": result.database,
        "days": days,
        "start": s.start.isoformat(),
        "businesses": {
            "signed_up": len(signed_up),
            "at_start": len(signed_up) - len(newcomers),
            "newcomers": len(newcomers),
            "deal_makers": sum(1 for b in signed_up if b.mode == "deal_maker"),
            "lead_buyers": sum(1 for b in signed_up if b.mode == "lead_buyer"),
            "dishonest": dict(sorted(dishonest.items())),
        },
        "leads": {
            "submitted": len(leads),
            "duplicates_answered_200": sum(1 for lead in result.leads if lead.duplicate),
            "refused": sum(1 for lead in result.leads if lead.status_code not in (200, 201)),
            "sold_by_businesses": sum(1 for lead in leads if lead.plan.seller is not None),
            "filled": filled,
            "fill_rate": _ratio(filled, len(leads)),
            "per_day": per_day_leads,
            "fill_rate_per_day": [_ratio(per_day_filled[d], per_day_leads[d]) for d in range(days)],
        },
        "time_to_first_claim_minutes": {
            "median": round(median(waits), 1) if waits else None,
            "mean": round(mean(waits), 1) if waits else None,
            "p90": round(_percentile(waits, 0.9), 1) if waits else None,
            "values": [round(w, 1) for w in waits],
        },
        "exposures": {
            "total": len(exposures),
            "per_lead": _ratio(len(exposures), len(leads)),
            "by_kind": dict(sorted(Counter(e.kind for e in exposures).items())),
            "claim_conflicts_409": result.claim_conflicts,
            "acts": dict(sorted(acts.items())),
        },
        "revenue": {
            "currency": market.catalog.currency,
            "total_minor": revenue,
            "per_lead_minor": round(revenue / len(leads)) if leads else 0,
            "lead_sales_minor": sum(sales),
            "refunds_minor": sum(refunds),
            "commission_charged_minor": sum(commissions),
            # Lower than total_minor when shares went to businesses that sold leads, referrers or clubs.
            "ledger_revenue_and_vat_minor": ledger_gross,
            "per_day_minor": revenue_per_day,
            "per_lead_per_day_minor": [
                round(revenue_per_day[d] / per_day_leads[d]) if per_day_leads[d] else 0 for d in range(days)
            ],
        },
        "exposure_share": {
            "gini": gini(counts),
            "businesses_with_none": sum(1 for c in counts if c == 0),
            "top_decile_share": _ratio(
                sum(sorted(counts, reverse=True)[: max(1, len(counts) // 10)]), sum(counts)
            ),
            "lorenz": lorenz(counts),
        },
        "newcomers": {
            "window_days": s.newcomer_days,
            "share_of_exposures": _ratio(sum(newcomer_exposures), len(exposures)),
            "share_of_exposures_per_day": [_ratio(newcomer_exposures[d], all_exposures[d]) for d in range(days)],
            "share_of_businesses_per_day": newcomer_population,
            # Exposures per business-day, newcomers against established businesses: 1.0 is parity; None (n/a)
            # when there were no newcomers, or the established businesses got no exposure to compare with.
            "exposure_rate_vs_established": _defined_ratio(
                _ratio(sum(newcomer_exposures), newcomer_days_total),
                _ratio(len(exposures) - sum(newcomer_exposures), established_days_total),
            )
            if newcomer_days_total
            else None,
        },
        "returns": {
            "overall": return_rate(exposures),
            "by_mode": {m: return_rate([e for e in exposures if e.mode == m]) for m in ("deal_maker", "lead_buyer")},
            "by_honesty": {k: return_rate(by_kind[k]) for k in KINDS},
        },
        "commission": {
            "note": "deal makers' deals whose customer paid before the end: owed = rate x true turnover, "
            "charged = rate x the turnover the business reported as paid",
            "owed_minor": sum(owed.values()),
            "charged_minor": sum(charged.values()),
            "leakage_minor": sum(owed.values()) - sum(charged.values()),
            "leakage_share": _ratio(sum(owed.values()) - sum(charged.values()), sum(owed.values())),
            "by_honesty": {
                k: {"owed_minor": owed[k], "charged_minor": charged[k], "leakage_minor": owed[k] - charged[k]}
                for k in KINDS
            },
            "refunds_on_converted_leads_minor": refunds_on_converted,
        },
        "fraud": _fraud_figures(result, signed_up),
        "trial_balance": {
            "source": result.trial_balance_note,
            "balanced": trial.get("balanced") if trial else None,
            "totals": trial.get("totals") if trial else None,
            "marketplace_accounts": trial.get("marketplace_accounts") if trial else None,
            "mismatches": trial.get("mismatches") if trial else None,
        },
        "errors": {
            "count": len(result.errors),
            "by_call_and_status": dict(
                sorted(Counter(f"{e['call']} {e['status']}" for e in result.errors).items())
            ),
            "examples": result.errors[:5],
        },
        "performance": {
            "wall_seconds": round(result.wall_seconds, 1),
            "http_calls": sum(c.count for c in result.calls.values()),
            "http_seconds": round(sum(c.seconds for c in result.calls.values()), 1),
            "jobs_run": result.jobs.count,
            "jobs_seconds": round(result.jobs.seconds, 1),
            "calls": calls,
            "jobs": {
                name: {"count": n, "mean_ms": round(1000 * seconds / n, 2) if n else 0.0, "total_s": round(seconds, 2)}
                for name, (n, seconds) in result.job_stats.items()
            },
        },
    }


# What a dishonest business does that the fraud module should catch (ExposureRecord.act).
CHEATS = ("hidden_lost", "hidden_silent", "returned_converted", "under_reported")


def _fraud_figures(result: Result, signed_up: list[Any]) -> dict[str, Any]:
    """The fraud module against the truth: the alerts open or decided at the end (nobody reviews them in a plain
    simulation; `benchmarks/fraud_detection.py` adds an operator and a trained model), the businesses alerted,
    how many of them are dishonest (precision) and how many cheaters were alerted (recall)."""
    ids = {b.index: b.id for b in signed_up}
    dishonest = {b.id for b in signed_up if b.kind != HONEST}
    cheated = {ids[e.business] for e in result.exposures if e.act in CHEATS and e.business in ids}
    # This run's businesses only: a running server may hold earlier runs' alerts.
    alerted = {a["business_id"] for a in result.alerts} & set(ids.values())
    note = (
        "alerts at the end against the ground truth; cheaters: dishonest businesses that cheated at least "
        "once (hid a won deal, returned a converted lead, under-reported a turnover)"
    )
    if not result.operator:
        note = (
            "not read: without an operator token (--url without --operator-token) the customers never saw the "
            "survey links and the fraud alerts were not listed"
        )
    return {
        "note": note,
        "read": result.operator,
        "survey_answers": result.survey_answers,
        "alerts": sum(a["business_id"] in alerted for a in result.alerts),
        "alerts_by_status": dict(
            sorted(Counter(a["status"] for a in result.alerts if a["business_id"] in alerted).items())
        ),
        "businesses_alerted": len(alerted),
        "alerted_dishonest": len(alerted & dishonest),
        "false_alerts": len(alerted - dishonest),
        # None (n/a) when undefined: no business alerted, no cheater to catch, or the alerts were not read.
        "precision": _defined_ratio(len(alerted & dishonest), len(alerted)) if result.operator else None,
        "cheaters": len(cheated),
        "cheaters_alerted": len(alerted & cheated),
        "recall": _defined_ratio(len(alerted & cheated), len(cheated)) if result.operator else None,
    }


def ground_truth(result: Result) -> dict[str, Any]:
    """What only the simulator knows: who cheated and how, and what each customer would answer a survey."""
    market = result.market
    ids = {b.index: b.id for b in market.businesses}
    acts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in result.exposures:
        business = market.businesses[e.business]
        if business.kind == HONEST or e.act is None:
            continue
        acts[str(business.id)].append(
            {
                "exposure_id": e.id,
                "lead_id": result.leads[e.lead].id,
                "act": e.act,
                "cheated": e.plan.cheats and bool(e.converted),
                "converted": e.converted,
                "true_turnover_minor": e.plan.turnover_minor if e.converted else None,
                "reported_status": e.status,
                "reported_turnover_minor": e.reported_turnover_minor,
            }
        )
    customers = []
    for lead in result.leads:
        if lead.id is None or lead.duplicate:
            continue
        hired = lead.hired_exposure
        record = result.exposures[hired] if hired is not None else None
        survey = None
        if lead.plan.answers_survey:
            plan = record.plan if record is not None else None
            survey = {
                "hired": record is not None,
                "business_id": ids[record.business] if record is not None else None,
                "amount_minor": max(0, int(round(record.plan.turnover_minor * (1 + record.plan.survey_noise), -2)))
                if record is not None
                else None,
                "satisfaction": plan.satisfaction if plan is not None else None,
            }
        customers.append(
            {
                "lead_id": lead.id,
                "customer": lead.plan.customer,
                "category": lead.plan.category,
                "budget_minor": lead.plan.budget_minor,
                "junk": lead.plan.junk,
                "sold_by": ids[lead.plan.seller] if lead.plan.seller is not None else None,
                "exposed_to": [ids[result.exposures[i].business] for i in lead.exposures],
                "hired_business_id": ids[record.business] if record is not None else None,
                "hired_amount_minor": record.plan.turnover_minor if record is not None else None,
                "customer_paid_at": record.customer_paid_at.isoformat()
                if record is not None and record.customer_paid_at is not None
                else None,
                "answers_survey": lead.plan.answers_survey,
                "survey": survey,
            }
        )
    dishonest: dict[str, list[str]] = defaultdict(list)
    for b in market.businesses:
        if b.kind != HONEST and b.id is not None:
            dishonest[b.kind].append(b.id)
    return {
        "scenario": result.scenario.to_json(),
        "ranker": result.ranker,
        "dishonest": dict(sorted(dishonest.items())),
        "dishonest_acts": dict(sorted(acts.items())),
        "businesses": [b.truth() for b in market.businesses if b.id is not None],
        "customers": customers,
    }


# --- writing -----------------------------------------------------------------------------------------


def money(minor: int | float | None, currency: str) -> str:
    if minor is None:
        return "n/a"
    return f"{minor / 100:,.2f} {currency}"


def write_report(result: Result, out: Path) -> dict[str, Any]:
    """figures.json, ground_truth.json, the charts and report.md in `out`; returns the figures."""
    out.mkdir(parents=True, exist_ok=True)
    data = figures(result)
    (out / "figures.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "ground_truth.json").write_text(json.dumps(ground_truth(result), indent=2) + "\n", encoding="utf-8")
    charts = draw_charts(data, out)
    (out / "report.md").write_text(markdown(data, charts), encoding="utf-8")
    return data


def draw_charts(data: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    days = list(range(1, data["days"] + 1))
    cur = data["revenue"]["currency"]
    charts: dict[str, str] = {}

    def save(fig: Any, name: str, title: str) -> None:
        for ax in fig.axes:
            if ax.get_xlabel().startswith("day"):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        charts[name] = title

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(days, [v / 100 for v in data["revenue"]["per_day_minor"]], color="#4c72b0", label=f"revenue ({cur})")
    ax.set_xlabel("day")
    ax.set_ylabel(f"revenue per day ({cur})")
    twin = ax.twinx()
    twin.plot(days, [v / 100 for v in data["revenue"]["per_lead_per_day_minor"]], color="#dd8452", marker=".")
    twin.set_ylabel(f"revenue per lead ({cur})", color="#dd8452")
    save(fig, "revenue.png", "Marketplace revenue per day (bars) and per lead (line)")

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(days, [100 * v for v in data["leads"]["fill_rate_per_day"]], marker=".")
    ax.set_ylim(0, 100)
    ax.set_xlabel("day the lead arrived")
    ax.set_ylabel("% of leads with at least one exposure")
    save(fig, "fill_rate.png", f"Fill rate (overall {100 * data['leads']['fill_rate']:.1f} %)")

    fig, ax = plt.subplots(figsize=(8, 4))
    waits = data["time_to_first_claim_minutes"]["values"]
    if waits:
        ax.hist(waits, bins=60, color="#55a868")
    ax.set_xlabel("minutes from the customer's request to the first claim")
    ax.set_ylabel("leads")
    med = data["time_to_first_claim_minutes"]["median"]
    save(fig, "time_to_first_claim.png", f"Time to first claim (median {med} min)")

    fig, ax = plt.subplots(figsize=(5, 5))
    xs, ys = zip(*data["exposure_share"]["lorenz"], strict=True)
    ax.plot(xs, ys, label="exposures")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="equal share")
    ax.set_xlabel("share of businesses (fewest exposures first)")
    ax.set_ylabel("share of exposures")
    ax.legend()
    save(fig, "lorenz.png", f"Exposure share: Lorenz curve, Gini {data['exposure_share']['gini']}")

    fig, ax = plt.subplots(figsize=(8, 4))
    n = data["newcomers"]
    ax.plot(days, [100 * v for v in n["share_of_exposures_per_day"]], marker=".", label="share of exposures")
    ax.plot(days, [100 * v for v in n["share_of_businesses_per_day"]], linestyle="--", label="share of businesses")
    ax.set_xlabel("day")
    ax.set_ylabel("%")
    ax.legend()
    save(fig, "newcomers.png", f"Newcomers (first {n['window_days']} days on the market)")

    fig, ax = plt.subplots(figsize=(8, 4))
    groups = [("all", data["returns"]["overall"])]
    groups += [(m.replace("_", " "), v) for m, v in data["returns"]["by_mode"].items()]
    groups += [(k.replace("_", " "), v) for k, v in data["returns"]["by_honesty"].items()]
    ax.bar([g[0] for g in groups], [100 * g[1]["rate"] for g in groups], color="#8172b3")
    ax.set_ylabel("% of exposures returned")
    ax.tick_params(axis="x", labelrotation=20)
    save(fig, "return_rates.png", "Return rates")

    fig, ax = plt.subplots(figsize=(8, 4))
    kinds = list(data["commission"]["by_honesty"])
    owed = [data["commission"]["by_honesty"][k]["owed_minor"] / 100 for k in kinds]
    charged = [data["commission"]["by_honesty"][k]["charged_minor"] / 100 for k in kinds]
    x = range(len(kinds))
    ax.bar([i - 0.2 for i in x], owed, width=0.4, label="owed (true turnover)")
    ax.bar([i + 0.2 for i in x], charged, width=0.4, label="charged (reported turnover)")
    ax.set_xticks(list(x), [k.replace("_", " ") for k in kinds])
    ax.set_ylabel(cur)
    ax.legend()
    leak = 100 * data["commission"]["leakage_share"]
    save(fig, "commission.png", f"Commission owed vs charged (leakage {leak:.1f} %)")
    return charts


def headline(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures worth a glance, as (label, value): the terminal summary and the comparison use them."""
    cur = data["revenue"]["currency"]
    tb = data["trial_balance"]
    if tb["balanced"] is None:
        trial = "not read"
    else:
        trial = "zero (balanced)" if tb["balanced"] else f"NOT zero: {tb['totals']}"
    ttfc = data["time_to_first_claim_minutes"]
    fraud = data["fraud"]
    remote = data["mode"] != "in-process"
    if fraud.get("read", True):
        surveys = f"{fraud['survey_answers']:,}"
        alerted = f"{fraud['businesses_alerted']} ({fraud['false_alerts']})"
        catch = f"{_fmt(fraud['precision'], '.2f')} / {_fmt(fraud['recall'], '.2f')} " + (
            f"({fraud['cheaters_alerted']} of {fraud['cheaters']})"
        )
    else:
        surveys = "none: no operator token, so no survey link was read"
        alerted = catch = "not read (no operator token)"
        if tb["balanced"] is None:
            trial = "not read (no operator token)"
    return [
        ("businesses (at start + newcomers)", f"{data['businesses']['at_start']} + {data['businesses']['newcomers']}"),
        ("leads submitted", f"{data['leads']['submitted']:,}"),
        ("exposures", f"{data['exposures']['total']:,} ({data['exposures']['per_lead']} per lead)"),
        ("fill rate", f"{100 * data['leads']['fill_rate']:.1f} %"),
        ("time to first claim, median / p90", f"{_fmt(ttfc['median'])} / {_fmt(ttfc['p90'])} min"),
        ("revenue", money(data["revenue"]["total_minor"], cur)),
        ("revenue per lead", money(data["revenue"]["per_lead_minor"], cur)),
        (
            "ledger: revenue + VAT payable" + (" (whole server, every run)" if remote else ""),
            money(data["revenue"]["ledger_revenue_and_vat_minor"], cur),
        ),
        ("exposure Gini", f"{data['exposure_share']['gini']}"),
        ("newcomers' share of exposures", f"{100 * data['newcomers']['share_of_exposures']:.1f} %"),
        ("newcomers' exposure rate vs established", _fmt(data["newcomers"]["exposure_rate_vs_established"])),
        ("return rate", f"{100 * data['returns']['overall']['rate']:.1f} %"),
        ("commission owed / charged", f"{money(data['commission']['owed_minor'], cur)} / "
         f"{money(data['commission']['charged_minor'], cur)}"),
        ("commission leakage", f"{money(data['commission']['leakage_minor'], cur)} "
         f"({100 * data['commission']['leakage_share']:.1f} %)"),
        ("survey answers", surveys),
        ("fraud alerts: businesses (false)", alerted),
        ("fraud: precision / recall of cheaters", catch),
        ("trial balance", trial),
        ("HTTP calls / errors", f"{data['performance']['http_calls']:,} / {data['errors']['count']}"),
        ("wall time", f"{data['performance']['wall_seconds']} s"),
    ]


def summary(data: dict[str, Any]) -> str:
    rows = headline(data)
    width = max(len(label) for label, _ in rows)
    lines = [f"Simulated market {data['scenario']!r}, seed {data['seed']}, ranker {data['ranker']}, "
             f"{data['days']} days from {data['start'][:10]} ({data['mode']})"]
    if data["mode"] != "in-process":
        lines.append(f"  warning: {REMOTE_WARNING}")
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


# What a --url run's figures do not mean; the summary and the report say it first.
REMOTE_WARNING = (
    "a running server (--url) keeps its wall clock while the simulated days pass in minutes: waves after the first, "
    "expiries, stale sweeps and return windows did not follow the simulated days, so time figures (time to first "
    "claim, returns, payments, figures per day) are not meaningful; the ledger figures cover the whole server"
)


def markdown(data: dict[str, Any], charts: dict[str, str]) -> str:
    cur = data["revenue"]["currency"]
    lines = [
        f"# Simulated market: {data['scenario']} (seed {data['seed']}, ranker {data['ranker']})",
        "",
        f"{data['days']} simulated days from {data['start'][:10]}, {data['mode']}, database {data['database']}. "
        "Every figure below comes from the service's HTTP answers (claims, prices, refunds, reported "
        "turnover) set against the simulator's ground truth (`ground_truth.json`).",
        "",
    ]
    remote = data["mode"] != "in-process"
    if remote:
        lines += [f"**Warning:** {REMOTE_WARNING}.", ""]
    lines += [
        "| figure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {label} | {value} |" for label, value in headline(data)]
    for name, title in charts.items():
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    c = data["commission"]
    lines += [
        "",
        "## Commission and leakage",
        "",
        f"{c['note']}. Refunds lead buyers obtained by returning leads they had converted: "
        f"{money(c['refunds_on_converted_leads_minor'], cur)}.",
        "",
        "| businesses | owed | charged | leakage |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, v in c["by_honesty"].items():
        lines.append(
            f"| {kind} | {money(v['owed_minor'], cur)} | {money(v['charged_minor'], cur)} | "
            f"{money(v['leakage_minor'], cur)} |"
        )
    f = data["fraud"]
    lines += [
        "",
        "## Fraud",
        "",
        f"{f['note']}. Customers answered {f['survey_answers']:,} surveys; {f['alerts']} alerts "
        f"({f['alerts_by_status']}) on {f['businesses_alerted']} businesses, {f['alerted_dishonest']} of them "
        f"dishonest (precision {_fmt(f['precision'], '.2f')}); {f['cheaters_alerted']} of {f['cheaters']} "
        f"cheaters alerted (recall {_fmt(f['recall'], '.2f')}).",
    ]
    if not f.get("read", True):
        lines[-1] = f"Fraud figures {f['note']}."
    r = data["returns"]
    lines += ["", "## Returns", "", "| exposures of | exposures | returned | rate | of converted leads |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for label, v in [("all", r["overall"]), *r["by_mode"].items(), *r["by_honesty"].items()]:
        lines.append(f"| {label} | {v['exposures']} | {v['returned']} | {100 * v['rate']:.1f} % | "
                     f"{v['of_converted_leads']} |")
    tb = data["trial_balance"]
    lines += ["", "## Ledger", "", f"Source: {tb['source']}."]
    if remote and tb["balanced"] is not None:
        lines += ["", "The trial balance is the whole server's: every earlier run's and every other client's money "
                  "is in it, not only this run's."]
    if tb["balanced"] is not None:
        lines += [
            "",
            f"Balanced: **{tb['balanced']}**; postings summed per currency: `{tb['totals']}`; "
            f"business accounts disagreeing with their postings: {len(tb['mismatches'] or [])}.",
            "",
            "| marketplace account | balance |",
            "| --- | ---: |",
        ]
        for account in tb["marketplace_accounts"] or []:
            balance = account["balance"]
            lines.append(f"| {account['account']} | {money(balance['amount_minor'], balance['currency'])} |")
    acts = data["exposures"]["acts"]
    lines += ["", "## What businesses did with their exposures", "", "| act | exposures |", "| --- | ---: |"]
    lines += [f"| {act} | {n} |" for act, n in acts.items()]
    perf = data["performance"]
    lines += [
        "",
        "## Where the time went",
        "",
        f"{perf['wall_seconds']} s wall; {perf['http_calls']:,} HTTP calls took {perf['http_seconds']} s, "
        f"{perf['jobs_run']:,} jobs (waves, sweeps) {perf['jobs_seconds']} s. In process, a call's time is the "
        "service's time plus the in-process transport's.",
        "",
        "| call | count | mean ms | total s | statuses |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, v in perf["calls"].items():
        lines.append(f"| {name} | {v['count']:,} | {v['mean_ms']} | {v['total_s']} | {v['statuses']} |")
    if perf.get("jobs"):
        lines += ["", "| job | count | mean ms | total s |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {name} | {v['count']:,} | {v['mean_ms']} | {v['total_s']} |" for name, v in perf["jobs"].items()]
    if data["errors"]["count"]:
        lines += ["", "## Unexpected answers", "", "```", json.dumps(data["errors"]["by_call_and_status"], indent=2),
                  "```"]
    lines += [
        "",
        "## How to read it",
        "",
        "- Revenue: lead prices charged on claims, minus refunds of returned leads, plus commission charged on "
        "deals reported paid (rate x reported turnover), gross as invoiced.",
        "- Fill rate: leads that got at least one exposure. Time to first claim: from the customer's request to "
        "the first successful claim.",
        "- Newcomers: businesses that signed up during the run, in their first window days; those present at "
        "the start stand for established businesses. n/a: no newcomers, or nothing to compare them with.",
    ]
    if remote:
        lines += [
            "- Businesses cannot be notified of new offers by a running server: each looks at `GET /v1/offers` on "
            "its own cadence (at least every 30 simulated minutes of its working hours).",
            "- Service settings: the server's own. The simulator cannot lift its intake rate limit or credit "
            "limits; what they refused shows in the statuses per call under \"Where the time went\".",
        ]
    else:
        lines += [
            "- Businesses hear of new offers as they would by a notification; the service has no notification feed "
            "for them yet, so the simulator stands in for it and each business then reads `GET /v1/offers`.",
            "- Service settings for the run: intake rate limit and credit limit lifted (one address sends every "
            "request; nobody confirms bank transfers), everything else as configured.",
        ]
    return "\n".join(lines) + "\n"


COMPARED = (
    ("fill rate", lambda d: f"{100 * d['leads']['fill_rate']:.1f} %"),
    ("time to first claim (median min)", lambda d: str(d["time_to_first_claim_minutes"]["median"])),
    ("exposures per lead", lambda d: str(d["exposures"]["per_lead"])),
    ("revenue", lambda d: money(d["revenue"]["total_minor"], d["revenue"]["currency"])),
    ("revenue per lead", lambda d: money(d["revenue"]["per_lead_minor"], d["revenue"]["currency"])),
    ("exposure Gini", lambda d: str(d["exposure_share"]["gini"])),
    ("businesses with no exposure", lambda d: str(d["exposure_share"]["businesses_with_none"])),
    ("newcomers' share of exposures", lambda d: f"{100 * d['newcomers']['share_of_exposures']:.1f} %"),
    ("newcomers' rate vs established", lambda d: _fmt(d["newcomers"]["exposure_rate_vs_established"])),
    ("return rate", lambda d: f"{100 * d['returns']['overall']['rate']:.1f} %"),
    ("commission charged", lambda d: money(d["commission"]["charged_minor"], d["revenue"]["currency"])),
    ("commission leakage", lambda d: f"{100 * d['commission']['leakage_share']:.1f} %"),
    ("fraud: precision / recall", lambda d: f"{_fmt(d['fraud']['precision'], '.2f')} / "
     f"{_fmt(d['fraud']['recall'], '.2f')}"),
    ("trial balance zero", lambda d: str(d["trial_balance"]["balanced"])),
    ("wall time (s)", lambda d: str(d["performance"]["wall_seconds"])),
)


def comparison_table(runs: dict[str, dict[str, Any]]) -> list[list[str]]:
    header = ["figure", *runs]
    return [header] + [[label, *(fn(d) for d in runs.values())] for label, fn in COMPARED]


def comparison_text(runs: dict[str, dict[str, Any]]) -> str:
    table = comparison_table(runs)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table)


def comparison_markdown(runs: dict[str, dict[str, Any]]) -> str:
    table = comparison_table(runs)
    first = next(iter(runs.values()))
    lines = [
        f"# Ranking policies compared: {first['scenario']} (seed {first['seed']}, {first['days']} days)",
        "",
        "The same seeded market (businesses, customers, deals, cheats) under each policy; each run's full "
        "report is in the folder named after the policy.",
        "",
        "| " + " | ".join(table[0]) + " |",
        "| --- |" + " ---: |" * (len(table[0]) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines) + "\n"


def write_comparison(runs: dict[str, dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(comparison_markdown(runs), encoding="utf-8")
    (out / "comparison.json").write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
