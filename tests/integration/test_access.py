"""Who may call what: every route's declared rule matches the contract and is enforced, a business sees only
its own data, and a lead's contact is shown only to whoever holds an exposure of it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromQuery
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from marketplace import app as app_module
from marketplace.app import create_app
from marketplace.db.models import ApiToken, Business, Exposure, Lead
from marketplace.http.access import Access, access, access_guard, check_declared
from marketplace.http.problems import EXCEPTION_HANDLERS, PROBLEM
from marketplace.http.strict import QueryInt
from tests.conftest import make_settings
from tests.factories import auth, lead_body, offer_lead_to, operator_token, register

A = Access
# Who may call each route, as API.md gives it ("anyone", "business", "lead buyer", "operator", ...), plus
# the routes the implementation added in the same style. Path parameters are written `{}`. Every route the
# app serves must be listed here: a new route has its rule reviewed against the contract, not guessed.
CONTRACT: dict[tuple[str, str], Access] = {
    ("GET", "/health"): A.PUBLIC,
    ("GET", "/v1/regions"): A.PUBLIC,
    ("GET", "/v1/categories"): A.PUBLIC,
    ("POST", "/v1/businesses"): A.PUBLIC,
    ("GET", "/v1/businesses/me"): A.BUSINESS,
    ("PATCH", "/v1/businesses/me"): A.BUSINESS,
    ("GET", "/v1/businesses/me/stats"): A.BUSINESS,
    ("GET", "/v1/businesses/{}"): A.OPERATOR,
    ("GET", "/v1/businesses/{}/stats"): A.OPERATOR,
    ("POST", "/v1/businesses/{}/status"): A.OPERATOR,
    ("POST", "/v1/businesses/{}/block"): A.OPERATOR,
    ("GET", "/v1/businesses/{}/status-changes"): A.OPERATOR,
    ("POST", "/v1/businesses/me/api-token"): A.BUSINESS_SETTLING,
    ("POST", "/v1/businesses/{}/api-token"): A.OPERATOR,
    ("GET", "/v1/unreliable"): A.PUBLIC,
    ("POST", "/v1/leads"): A.PUBLIC,
    ("POST", "/v1/businesses/me/leads"): A.BUSINESS,
    ("GET", "/v1/leads/{}"): A.OPERATOR,
    ("GET", "/v1/leads/{}/ranking"): A.OPERATOR,
    ("GET", "/v1/offers"): A.BUSINESS,
    ("POST", "/v1/offers/{}/claim"): A.BUSINESS,
    ("GET", "/v1/exposures"): A.BUSINESS,
    ("GET", "/v1/exposures/{}"): A.BUSINESS,
    ("POST", "/v1/exposures/{}/exclusive"): A.LEAD_BUYER,
    ("POST", "/v1/exposures/{}/status"): A.BUSINESS_SETTLING,
    ("POST", "/v1/exposures/{}/return"): A.BUSINESS,
    ("GET", "/v1/wallet"): A.BUSINESS,
    ("GET", "/v1/wallet/entries"): A.BUSINESS,
    ("POST", "/v1/wallet/withdrawals"): A.LEAD_BUYER,
    ("GET", "/v1/invoices"): A.BUSINESS_OR_OPERATOR,
    ("GET", "/v1/invoices/{}"): A.BUSINESS_OR_OPERATOR,
    ("GET", "/v1/surveys/{}"): A.PUBLIC,
    ("POST", "/v1/surveys/{}"): A.PUBLIC,
    ("GET", "/v1/notifications"): A.OPERATOR,
    ("GET", "/v1/fraud/alerts"): A.OPERATOR,
    ("POST", "/v1/fraud/alerts/{}/decision"): A.OPERATOR,
    ("POST", "/v1/settlements/{}/confirm"): A.OPERATOR,
    # Beyond API.md, in the same style:
    ("GET", "/v1/settlements"): A.BUSINESS_OR_OPERATOR,
    ("POST", "/v1/settlements/{}/fail"): A.OPERATOR,
    ("GET", "/v1/wallet/trial-balance"): A.OPERATOR,
    ("POST", "/v1/businesses/{}/credit-limit"): A.OPERATOR,
    ("GET", "/v1/businesses/{}/wallet"): A.OPERATOR,
    ("GET", "/v1/commission-plans"): A.OPERATOR,
    ("POST", "/v1/commission-plans"): A.OPERATOR,
    ("POST", "/v1/referral-codes"): A.OPERATOR,
    ("GET", "/v1/businesses/me/bids"): A.LEAD_BUYER,
    ("PUT", "/v1/businesses/me/bids"): A.LEAD_BUYER,
    ("GET", "/v1/fraud/alerts/{}"): A.OPERATOR,
    ("GET", "/v1/fraud/businesses/{}"): A.OPERATOR,
    ("GET", "/openapi.json"): A.PUBLIC,
    ("GET", "/schema/openapi.json"): A.PUBLIC,
    ("POST", "/v1/clubs"): A.OPERATOR,
    ("GET", "/v1/clubs"): A.OPERATOR,
    ("GET", "/v1/clubs/{}"): A.CLUB_OR_OPERATOR,
    ("POST", "/v1/clubs/{}/invitations"): A.CLUB_OR_OPERATOR,
    ("POST", "/v1/clubs/{}/operator-token"): A.OPERATOR,
    ("GET", "/v1/businesses/me/clubs"): A.BUSINESS,
    ("POST", "/v1/businesses/me/clubs"): A.BUSINESS,
    ("DELETE", "/v1/businesses/me/clubs/{}"): A.BUSINESS,
    ("GET", "/v1/clubs/{}/members"): A.CLUB_OR_OPERATOR,
    ("DELETE", "/v1/clubs/{}/members/{}"): A.CLUB_OR_OPERATOR,
    ("GET", "/v1/payables"): A.OPERATOR,
    ("POST", "/v1/payables/payouts"): A.OPERATOR,
}
# The routes of the foundation (issue 2) that must exist now, so the table can never match an empty app.
FOUNDATION = {
    ("GET", "/v1/regions"),
    ("GET", "/v1/categories"),
    ("POST", "/v1/businesses"),
    ("GET", "/v1/businesses/me"),
    ("PATCH", "/v1/businesses/me"),
    ("GET", "/v1/businesses/{}"),
    ("POST", "/v1/businesses/{}/status"),
    ("POST", "/v1/businesses/{}/block"),
    ("GET", "/v1/unreliable"),
    ("POST", "/v1/leads"),
    ("POST", "/v1/businesses/me/leads"),
    ("GET", "/v1/leads/{}"),
    ("GET", "/health"),
}
_PARAM = re.compile(r"\{(?P<name>[^}:]+)(?::[^}]*)?\}")


def routes(app: Litestar) -> list[tuple[str, str, Any]]:
    """(method, path template, declared access) of every route, without the docs and CORS preflights."""
    found = []
    for route in app.routes:
        if route.path == "/docs" or route.path.startswith("/docs/"):
            continue
        for handler in getattr(route, "route_handlers", []):
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                found.append((method, route.path, handler.opt.get("access")))
    return sorted(found)


def shape(path: str) -> str:
    return _PARAM.sub("{}", path)


def fill(path: str, values: dict[str, str] | None = None) -> str:
    values = values or {}
    return _PARAM.sub(lambda m: values.get(m.group("name"), f"nope_{m.group('name')}"), path)


def refusal(level: Access, caller: str, method: str) -> int | None:
    """The status the rule gives `caller`, or None when it lets the caller through."""
    if level == A.PUBLIC:
        return None
    if caller in ("anonymous", "garbage token", "basic scheme", "revoked token"):
        return 401
    if caller == "operator":
        return None if level in (A.OPERATOR, A.BUSINESS_OR_OPERATOR, A.CLUB_OR_OPERATOR) else 403
    if caller == "club operator" or level == A.CLUB_OR_OPERATOR:
        return None if caller == "club operator" and level == A.CLUB_OR_OPERATOR else 403
    if level == A.OPERATOR:
        return 403
    if caller == "deal maker" and level == A.LEAD_BUYER:
        return 403
    if caller == "blocked lead buyer" and method not in ("GET", "HEAD") and level != A.BUSINESS_SETTLING:
        return 403  # (what a blocked business may settle, the service decides: tests/integration/test_fraud.py)
    return None


def is_problem(response: httpx.Response, status: int) -> bool:
    if response.status_code != status or response.headers.get("content-type") != PROBLEM:
        return False
    body = response.json()
    return body.get("status") == status and all(body.get(k) for k in ("type", "title", "detail"))


async def test_every_route_declares_the_rule_the_contract_gives_it(app):
    declared = {(method, shape(path)): level for method, path, level in routes(app)}
    assert not FOUNDATION - declared.keys(), sorted(FOUNDATION - declared.keys())
    unlisted = sorted(set(declared) - set(CONTRACT))
    assert not unlisted, f"routes missing from CONTRACT in {__name__} (add each with its rule): {unlisted}"
    wrong = {route: (level, CONTRACT[route]) for route, level in declared.items() if level != CONTRACT[route]}
    assert not wrong, f"declared vs contract: {wrong}"


async def test_every_route_enforces_its_rule_for_every_kind_of_caller(app, client, db):
    _, buyer = await register(client, "lead_buyer")
    _, maker = await register(client, "deal_maker")
    blocked_id, blocked = await register(client, "lead_buyer")
    revoked_id, revoked = await register(client, "lead_buyer")
    operator = await operator_token(app)
    assert (await client.post(f"/v1/businesses/{blocked_id}/block", headers=auth(operator))).status_code == 200
    async with app.state.uow() as uow:
        await uow.session.execute(
            update(ApiToken).where(ApiToken.business_id == revoked_id).values(revoked_at=ApiToken.created_at)
        )
    founded = await client.post("/v1/clubs", headers=auth(operator), json={"name": "Club", "operator_name": "Its op"})
    callers: dict[str, dict[str, str]] = {
        "anonymous": {},
        "garbage token": auth("mkb_not-a-token-the-service-issued"),
        "basic scheme": {"Authorization": f"Basic {buyer}"},
        "revoked token": auth(revoked),
        "lead buyer": auth(buyer),
        "deal maker": auth(maker),
        "blocked lead buyer": auth(blocked),
        "operator": auth(operator),
        "club operator": auth(founded.json()["operator_token"]),
    }
    failures = []
    checked = 0
    # Replacing its own token revokes the one the caller came with: that route last, or every caller let through
    # would be a 401 on the routes after it.
    for method, path, level in sorted(routes(app), key=lambda route: route[1] == "/v1/businesses/me/api-token"):
        assert level is not None, f"{method} {path} declares no access rule"
        for caller, headers in callers.items():
            response = await client.request(method, fill(path), headers=headers)
            expected = refusal(level, caller, method)
            checked += 1
            if expected is None:
                if response.status_code in (401, 403):
                    failures.append(f"{caller} {method} {path} [{level}]: refused {response.status_code}")
            elif not is_problem(response, expected):
                failures.append(
                    f"{caller} {method} {path} [{level}]: {response.status_code} "
                    f"{response.headers.get('content-type')} instead of {expected} problem+json"
                )
    assert not failures, "\n".join(failures)
    assert checked >= len(FOUNDATION) * len(callers)
    # None of these calls carried a valid body or id, so nothing was written: only the four sign-ups above.
    assert await db.count(Business) == 4
    assert await db.count(Lead) == 0


async def test_a_route_without_an_access_rule_is_refused_at_start_up():
    @get("/declared", opt=access(Access.PUBLIC), sync_to_thread=False)
    def declared() -> str:
        return "ok"

    @get("/forgotten", sync_to_thread=False)
    def forgotten() -> str:
        return "secret"

    check_declared(Litestar(route_handlers=[declared], openapi_config=None))  # declared routes and preflights pass
    with pytest.raises(RuntimeError, match="/forgotten") as raised:
        check_declared(Litestar(route_handlers=[declared, forgotten], openapi_config=None))
    assert "/declared" not in str(raised.value)


async def test_an_integer_query_parameter_read_as_a_json_number_is_refused_at_start_up():
    @get("/strict", opt=access(Access.PUBLIC), sync_to_thread=False)
    def strict(limit: FromQuery[QueryInt] = QueryInt(50), cursor: FromQuery[str | None] = None) -> str:
        return "ok"

    @get("/loose", opt=access(Access.PUBLIC), sync_to_thread=False)
    def loose(limit: FromQuery[int] = 50, page: FromQuery[int | None] = None) -> str:
        return "ok"

    check_declared(Litestar(route_handlers=[strict], openapi_config=None))
    with pytest.raises(RuntimeError, match="QueryInt") as raised:  # `?limit=1e2` would be 100, `?limit=05` a 422
        check_declared(Litestar(route_handlers=[strict, loose], openapi_config=None))
    assert "/loose ?limit" in str(raised.value) and "/loose ?page" in str(raised.value)
    assert "/strict" not in str(raised.value)


async def test_create_app_refuses_a_controller_with_an_undeclared_route(monkeypatch, tmp_path):
    @get("/v1/forgotten", sync_to_thread=False)
    def forgotten() -> str:
        return "secret"

    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    create_app(settings, migrate_on_start=False, run_jobs_in_background=False)  # the real routes all declare
    monkeypatch.setattr(app_module, "CONTROLLERS", [*app_module.CONTROLLERS, forgotten])
    with pytest.raises(RuntimeError, match="/v1/forgotten"):
        create_app(settings, migrate_on_start=False, run_jobs_in_background=False)


async def test_the_guard_refuses_an_undeclared_route_at_request_time():
    # Belt and braces: should a route ever slip past check_declared, the guard still answers 403.
    @get("/forgotten", sync_to_thread=False)
    def forgotten() -> str:
        return "secret"

    @get("/open", opt=access(Access.PUBLIC), sync_to_thread=False)
    def open_route() -> str:
        return "ok"

    app = Litestar(
        route_handlers=[forgotten, open_route],
        guards=[access_guard],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=None,
    )
    async with AsyncTestClient(app) as client:
        refused = await client.get("/forgotten")
        allowed = await client.get("/open")
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    assert "secret" not in refused.text
    assert allowed.status_code == 200 and allowed.text == "ok"


async def test_a_business_never_sees_another_business_data(app, client, db):
    a_id, a_token = await register(client, "lead_buyer", name="Alpha Plumbing", email="alpha@example.com")
    b_id, b_token = await register(client, "lead_buyer", name="Beta Plumbing", email="beta@example.com")
    alpha = (await client.get(f"/v1/businesses/{a_id}", headers=auth(await operator_token(app)))).json()
    assert alpha["email"] == "alpha@example.com"

    other = await client.get(f"/v1/businesses/{a_id}", headers=auth(b_token))
    assert is_problem(other, 403)
    for secret in (alpha["name"], alpha["email"], alpha["phone"]):
        assert secret not in other.text
    me = await client.get("/v1/businesses/me", headers=auth(b_token))
    assert me.json()["id"] == b_id and "alpha" not in me.text.lower()
    stats = await client.get(f"/v1/businesses/{a_id}/stats", headers=auth(b_token))
    assert is_problem(stats, 403)

    # Another's exposure is a 404 (ids reveal nothing), whatever the business tries to do with it.
    body = lead_body()
    lead_id = (await client.post("/v1/leads", json=body)).json()["id"]
    a_offer, b_offer = await offer_lead_to(app, lead_id, [a_id, b_id])
    claimed = await client.post(f"/v1/offers/{a_offer}/claim", headers=auth(a_token), json={"exclusive": False})
    assert claimed.status_code == 201, claimed.text
    exposure_id = claimed.json()["id"]
    phone = body["contact"]["phone"]
    assert phone in claimed.text  # the holder of the exposure does see the contact

    for method, path, data in (
        ("GET", f"/v1/exposures/{exposure_id}", None),
        ("POST", f"/v1/exposures/{exposure_id}/status", {"status": "contacted"}),
        ("POST", f"/v1/exposures/{exposure_id}/return", {"reason": "not mine"}),
        ("POST", f"/v1/exposures/{exposure_id}/exclusive", None),
        ("POST", f"/v1/offers/{a_offer}/claim", {"exclusive": False}),
    ):
        response = await client.request(method, path, headers=auth(b_token), json=data)
        assert is_problem(response, 404), (method, path, response.status_code, response.text)
        assert phone not in response.text
    assert (await client.get("/v1/exposures", headers=auth(b_token))).json()["items"] == []
    exposure = await db.scalar(select(Exposure).where(Exposure.id == exposure_id))
    assert exposure.status == "new" and exposure.business_id == a_id
    assert await db.count(Exposure) == 1
    still_offered = await client.get("/v1/offers", headers=auth(b_token))
    assert [o["offer_id"] for o in still_offered.json()["items"]] == [b_offer]


async def test_no_one_sees_a_lead_contact_without_an_exposure(app, client):
    holder_id, holder = await register(client, "deal_maker")
    offered_id, offered = await register(client, "lead_buyer")
    seller_id, seller = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    body = lead_body(contact={"name": "Noa Secretname", "phone": "052-555-0142", "email": "noa.secret@example.com"})
    needles = ("+972525550142", "0525550142", "525550142", "052-555-0142", "noa.secret", "Secretname")

    def leaks(response: httpx.Response) -> list[str]:
        return [n for n in needles if n.lower() in response.text.lower()]

    intake = await client.post("/v1/leads", json=body)
    assert intake.status_code == 201 and leaks(intake) == []
    duplicate = await client.post("/v1/leads", json=body)
    assert duplicate.status_code == 200 and leaks(duplicate) == []
    sold = await client.post("/v1/businesses/me/leads", headers=auth(seller), json=dict(body, category="renovation"))
    assert sold.status_code == 201 and leaks(sold) == []
    lead_id = intake.json()["id"]

    holder_offer, offered_offer = await offer_lead_to(app, lead_id, [holder_id, offered_id])
    claimed = await client.post(f"/v1/offers/{holder_offer}/claim", headers=auth(holder))
    assert claimed.status_code == 201, claimed.text
    exposure_id = claimed.json()["id"]
    holder_view = await client.get(f"/v1/exposures/{exposure_id}", headers=auth(holder))
    assert "+972525550142" in leaks(holder_view)  # the needles do find a contact where there is one

    offers = await client.get("/v1/offers", headers=auth(offered))
    assert [o["offer_id"] for o in offers.json()["items"]] == [offered_offer]
    for business_id, token in ((offered_id, offered), (seller_id, seller)):
        operators_view = await client.get(f"/v1/leads/{lead_id}", headers=auth(token))
        assert is_problem(operators_view, 403) and leaks(operators_view) == []
        # Every route a business can read, with the ids of this lead, its offer and the other's exposure.
        values = {"lead_id": lead_id, "offer_id": offered_offer, "exposure_id": exposure_id, "business_id": business_id}
        for _, path, _ in [r for r in routes(app) if r[0] == "GET"]:
            response = await client.get(fill(path, values), headers=auth(token))
            assert leaks(response) == [], (business_id, path, response.status_code, leaks(response))
    anonymous = await client.get(f"/v1/leads/{lead_id}")
    assert is_problem(anonymous, 401) and leaks(anonymous) == []


async def test_a_deal_maker_asking_to_buy_a_lead_exclusively_is_not_allowed_and_changes_nothing(app, client, db):
    maker_id, maker = await register(client, "deal_maker")
    lead_id = (await client.post("/v1/leads", json=lead_body())).json()["id"]
    (offer_id,) = await offer_lead_to(app, lead_id, [maker_id])
    refused = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(maker), json={"exclusive": True})
    assert is_problem(refused, 403), refused.text  # as the exclusive upgrade answers a deal maker
    assert "lead buyers" in refused.json()["detail"]
    assert await db.count(Exposure) == 0
    claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(maker), json={"exclusive": False})
    assert claimed.status_code == 201 and claimed.json()["kind"] == "assigned"  # the offer is still open
