"""A small demo market (a few businesses of each mode, an operator, some leads) for trying the API at once."""

from __future__ import annotations

from sqlalchemy import select

from marketplace.businesses import schemas as bschemas
from marketplace.businesses.services import register_business
from marketplace.db.engine import create_engine, create_session_factory
from marketplace.db.models import Operator
from marketplace.errors import Conflict
from marketplace.identity.services import create_operator
from marketplace.leads import schemas as lschemas
from marketplace.leads.services import submit_lead
from marketplace.settings import Settings
from marketplace.uow import UnitOfWorkFactory

DEMO_OPERATOR = "Demo operator"
_BUSINESSES = [
    ("Cohen Renovations", "deal_maker", ["renovation", "plumbing"], "+972525550101"),
    ("Levi & Sons Plumbing", "deal_maker", ["plumbing"], "+972525550102"),
    ("Tel Aviv Leads Ltd", "lead_buyer", ["renovation", "web-design"], "+972525550103"),
    ("Mizrahi Accounting", "lead_buyer", ["accounting", "legal"], "+972525550104"),
]
_LEADS = [
    ("renovation", "Kitchen renovation, 12 sqm, new cabinets and tiles", 4_500_000, "+972544567001"),
    ("plumbing", "Leaking water heater, needs replacement this week", 250_000, "+972544567002"),
    ("accounting", "Annual report for a small company (3 employees)", 800_000, "+972544567003"),
]


async def load_demo(settings: Settings) -> list[str]:
    """Create the demo market (idempotent: a second run reports what exists) and return lines to print."""
    engine = create_engine(settings.service.database_url, settings.database)
    uow_factory = UnitOfWorkFactory(create_session_factory(engine))
    lines = ["Demo market:"]
    regions = list(settings.regions)
    try:
        async with uow_factory() as uow:
            # One demo operator however often the demo is loaded (a restart with --demo): its token, like the
            # businesses', is shown when it is first created.
            existing = await uow.session.scalar(select(Operator.id).where(Operator.name == DEMO_OPERATOR).limit(1))
            token = None if existing else (await create_operator(uow.session, DEMO_OPERATOR))[1]
        lines.append(
            f"  operator token: {token}"
            if token
            else "  operator token: already created (shown when first created; "
            "`marketplace operator create --name NAME` prints a new one)"
        )
        for i, (name, mode, categories, phone) in enumerate(_BUSINESSES):
            data = bschemas.BusinessCreate(
                name=name,
                email=f"demo{i + 1}@example.com",
                phone=phone,
                mode=mode,  # type: ignore[arg-type]
                currency=settings.currency,
                profile=bschemas.ProfileIn(
                    categories=[c for c in categories if c in settings.categories] or [next(iter(settings.categories))],
                    regions=regions,
                    min_deal_minor=0,
                    max_deal_minor=100_000_000,
                    daily_cap=20,
                    monthly_cap=300,
                ),
            )
            try:
                async with uow_factory() as uow:
                    business, btoken = await register_business(uow.session, settings, data, by_the_marketplace=True)
                lines.append(f"  {mode:<10} {name:<24} {business.id}  token: {btoken}")
            except Conflict:
                lines.append(f"  {mode:<10} {name:<24} already registered (token shown when first created)")
        for category, description, budget, phone in _LEADS:
            if category not in settings.categories:
                continue
            lead_data = lschemas.LeadCreate(
                category=category,
                region=regions[0],
                description=description,
                budget=lschemas.MoneyIn(amount_minor=budget, currency=settings.currency),
                contact=lschemas.ContactIn(name="Demo customer", phone=phone, email="customer@example.com"),
                consent=True,
            )
            async with uow_factory() as uow:
                lead, duplicate = await submit_lead(uow.session, settings, lead_data)
            lines.append(f"  lead {lead.id} ({category}){' already there' if duplicate else ''}")
    finally:
        await engine.dispose()
    return lines
