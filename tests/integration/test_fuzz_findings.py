"""What fuzzing the running service through its served OpenAPI schema (schemathesis, and odd input by hand) found:
each case as the fuzzer sent it, answered as the contract says."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Any

import msgspec.inspect as mi
import pytest
from litestar import Litestar, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery
from sqlalchemy import select

from marketplace.db.models import Business, Exposure
from marketplace.http.access import Access, access, check_declared
from marketplace.http.openapi import _structs
from marketplace.http.strict import QueryTime
from tests.factories import auth, business_body, offer_lead_to, operator_token, register, submit_lead
from tests.integration.test_bad_input import Table, assert_problem, money


async def test_a_body_not_in_utf8_sent_to_a_call_that_takes_none_is_a_400_not_a_500(app, client, db):
    """`{"a": "\\xff\\xfe"}` to a call without a body (an upgrade, a settlement's confirmation) was a 500: the check
    that refuses a body there decoded it as JSON and met a UnicodeDecodeError. It is malformed, as on every call."""
    lb_id, lb = await register(client, "lead_buyer")
    (offer_id,) = await offer_lead_to(app, await submit_lead(client), [lb_id])
    exposure_id = (await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(lb))).json()["id"]
    op = await operator_token(app)
    json_header = {"Content-Type": "application/json"}
    for content in (b'{"a":"\xff\xfe"}', b"\xff\xfe{}", b'"\xc3"'):
        for url, token in (
            (f"/v1/exposures/{exposure_id}/exclusive", lb),
            ("/v1/settlements/stl_unknown/confirm", op),
            ("/v1/settlements/stl_unknown/fail", op),
            ("/v1/clubs/club_unknown/operator-token", op),
        ):
            response = await client.post(url, headers={**auth(token), **json_header}, content=content)
            problem = assert_problem(response, 400)  # malformed-request, whichever layer found it
            assert content.startswith(b"\xff") or "UTF-8" in problem["detail"], (url, content, problem)
    assert await db.scalar(select(Exposure.kind).where(Exposure.id == exposure_id)) == "shared"


async def test_statement_dates_are_rfc_3339_times_not_numbers(client):
    """`GET /v1/wallet/entries?since=2026` was a 200 listing every entry since 1970-01-01T00:33:46Z: a number was
    read as seconds since the epoch (`?until=0.5` too). The contract's times are RFC 3339: a number is a 422."""
    _, token = await register(client, "lead_buyer")
    for query in ("since=2026", "until=0.5", "since=-1", "until=1700000000", "since=1e9", "until=nan", "since=inf"):
        response = await client.get(f"/v1/wallet/entries?{query}", headers=auth(token))
        field = query.split("=")[0]
        problem = assert_problem(response, 422, field)
        assert "RFC 3339" in problem["errors"][0]["message"], (query, problem)
    # The same with the CSV export, and RFC 3339 times are still read (with a space for the T, as RFC 3339 allows).
    response = await client.get("/v1/wallet/entries?format=csv&since=0", headers=auth(token))
    assert_problem(response, 422, "since")
    for query in ("since=2026-01-01T00:00:00Z", "until=2026-01-01T02:00:00%2B02:00", "since=2026-01-01 00:00:00Z"):
        response = await client.get(f"/v1/wallet/entries?{query}", headers=auth(token))
        assert response.status_code == 200, (query, response.text)


async def test_a_time_query_parameter_read_as_a_number_is_refused_at_start_up():
    @get("/strict", opt=access(Access.PUBLIC), sync_to_thread=False)
    def strict(since: FromQuery[QueryTime | None] = None) -> str:
        return "ok"

    @get("/loose", opt=access(Access.PUBLIC), sync_to_thread=False)
    def loose(since: FromQuery[datetime | None] = None, until: FromQuery[datetime] = datetime(2026, 1, 1)) -> str:
        return "ok"

    check_declared(Litestar(route_handlers=[strict], openapi_config=None))
    with pytest.raises(RuntimeError, match="QueryTime") as raised:  # `?since=2026` would be 2,026 s after the epoch
        check_declared(Litestar(route_handlers=[strict, loose], openapi_config=None))
    assert "/loose ?since" in str(raised.value) and "/loose ?until" in str(raised.value)
    assert "/strict" not in str(raised.value)


async def test_a_time_query_parameter_is_documented_as_a_date_time(client):
    schema = (await client.get("/schema/openapi.json")).json()
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/v1/wallet/entries"]["get"]["parameters"]}
    for name in ("since", "until"):
        assert {"type": "string", "format": "date-time"} in parameters[name].get("oneOf", [parameters[name]]), name


def _schema_path(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


async def test_a_body_the_server_lets_be_left_out_is_documented_as_optional(app: Litestar, client):
    """`POST /v1/businesses/{id}/block` takes no body (a block, listed as unreliable), yet the schema said the body
    was required: a generated client had to send `null`. Every call whose body may be left out says so."""
    schema = (await client.get("/schema/openapi.json")).json()
    optional, failures = set(), []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is None:
                continue
            for method in handler.http_methods:
                operation = schema["paths"][_schema_path(route.path)][method.lower()]
                documented = operation["requestBody"]["required"]
                if documented == data.has_default:
                    failures.append(f"{method} {route.path}: body documented as required={documented}")
                if data.has_default:
                    optional.add((method, _schema_path(route.path)))
    assert ("POST", "/v1/businesses/{business_id}/block") in optional
    assert not failures, failures


def _fixed_values(annotation: mi.Type) -> tuple[str, ...] | None:
    for inner in annotation.types if isinstance(annotation, mi.UnionType) else (annotation,):
        if isinstance(inner, mi.LiteralType):
            return tuple(sorted(str(v) for v in inner.values))
    return None


async def test_a_field_with_a_fixed_set_of_values_documents_them_also_when_it_may_be_left_out(client):
    """`POST /v1/referral-codes {"referrer": "partner-1", "kind": ""}` was a 422 ("Invalid enum value ''") for a
    body the schema allowed: `kind` (partner or customer, may be left out) was documented as any string."""
    components = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
    checked, failures = [], []
    for name, struct in _structs().items():
        if name not in components:
            continue
        info = mi.type_info(struct)
        for field in info.fields if isinstance(info, mi.StructType) else ():
            values = _fixed_values(field.type)
            if values is None:
                continue
            checked.append(f"{name}.{field.encode_name}")
            documented = components[name]["properties"][field.encode_name].get("enum")
            if tuple(sorted(documented or ())) != values:
                failures.append(f"{name}.{field.encode_name}: documented {documented}, takes {values}")
    assert "ReferralCodeIn.kind" in checked and "StatusUpdate.status" in checked, checked
    assert not failures, failures


async def test_a_request_with_two_different_idempotency_keys_is_refused_and_does_nothing(app, client, db):
    """`POST /v1/offers/{id}/claim` with `Idempotency-Key: a` and `Idempotency-Key: b` was answered under the first
    key alone: a retry whose keys came in the other order (a proxy, a client library) was a second request, and a
    second charge where the first had gone through. Two different keys are now a 422 naming the header, as a query
    parameter given twice is; the same key twice is one key."""
    lb_id, lb = await register(client, "lead_buyer")
    (offer_id,) = await offer_lead_to(app, await submit_lead(client), [lb_id])
    url = f"/v1/offers/{offer_id}/claim"
    two_keys = [*auth(lb).items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    assert_problem(await client.post(url, headers=two_keys, json={"exclusive": False}), 422, "Idempotency-Key")
    assert await db.count(Exposure) == 0
    withdrawal = await client.post("/v1/wallet/withdrawals", headers=two_keys, json={"amount": money(100)})
    assert_problem(withdrawal, 422, "Idempotency-Key")
    same_key = [*auth(lb).items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "a")]
    claimed = await client.post(url, headers=same_key, json={"exclusive": False})
    assert claimed.status_code == 201, claimed.text
    again = await client.post(url, headers=auth(lb) | {"Idempotency-Key": "a"}, json={"exclusive": False})
    assert again.status_code == 201 and again.json()["id"] == claimed.json()["id"]
    assert await db.count(Exposure) == 1


async def test_a_request_with_two_different_tokens_is_401_whichever_comes_first(app, client, db):
    """Two `Authorization` headers were read as the first alone: the same request acted as a business or was
    refused as an operator's depending on their order. Whose request it is cannot be told: a 401."""
    business_id, token = await register(client)
    op = await operator_token(app)
    for first, second in ((token, op), (op, token), (token, "mkb_forged")):
        headers = [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]
        assert_problem(await client.patch("/v1/businesses/me", headers=headers, json={"name": "Twice"}), 401)
        assert_problem(await client.get("/v1/businesses/me", headers=headers), 401)
    assert await db.scalar(select(Business.name).where(Business.id == business_id)) != "Twice"
    same = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    assert (await client.get("/v1/businesses/me", headers=same)).status_code == 200


async def test_the_word_malformed_in_a_wrong_value_or_name_does_not_make_it_a_400(app, client, db):
    """`GET /v1/unreliable?limit=malformed`, `{"status": "malformed"}` or a body with a field named `malformed` was a
    400 "the body is not valid JSON": the 422 handler took any message (or the URL in Litestar's detail) holding the
    word for a JSON syntax error. Well-formed input with a wrong value is a 422 naming the field."""
    lb_id, lb = await register(client, "lead_buyer")
    (offer_id,) = await offer_lead_to(app, await submit_lead(client), [lb_id])
    exposure_id = (await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(lb))).json()["id"]
    status_url = f"/v1/exposures/{exposure_id}/status"
    for case, response, field in (
        ("limit", await client.get("/v1/unreliable?limit=malformed"), "limit"),
        ("limit-url", await client.get("/v1/offers?limit=JSON%20is%20malformed", headers=auth(lb)), "limit"),
        ("enum", await client.post(status_url, headers=auth(lb), json={"status": "malformed"}), "status"),
        ("enum-msg", await client.post(status_url, headers=auth(lb), json={"status": "JSON is malformed"}), "status"),
        ("field", await client.post(status_url, headers=auth(lb), json={"status": "won", "malformed": 1}), "malformed"),
        ("truncated", await client.post("/v1/businesses", json=business_body(mode="Input data was truncated")), "mode"),
    ):
        problem = assert_problem(response, 422, field)
        assert problem["type"].endswith("/invalid-input"), (case, problem)
    assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == "new"
    # JSON that is not JSON is still a 400, truncated or malformed.
    for content in (b'{"status": "won"', b'{"status": won}'):
        response = await client.post(
            status_url, headers={**auth(lb), "Content-Type": "application/json"}, content=content
        )
        assert_problem(response, 400)


async def test_a_commission_plan_with_a_list_or_object_where_a_name_goes_is_a_422_not_a_500(app, client, db):
    """`POST /v1/commission-plans` with `rewards[0].on` or `customer_referrer.mode` a list or an object was a 500 (the
    value was looked up in a set: unhashable). And `"tiers": 0`, `"commission_rates_bp": ""` (a wrong type that
    happens to be falsy) were saved as if left out. Each is a 422 naming the field; nothing is saved."""
    operator = await operator_token(app)
    listed = await client.get("/v1/commission-plans", headers=auth(operator))
    plan = listed.json()["items"][0]["definition"]
    saved_before = len(listed.json()["items"])
    table = Table()
    cases: list[tuple[tuple[str | int, ...], Any, str]] = []
    for value in ([], {}, ["deal_paid"], {"a": 1}):
        cases.append((("rewards", 0, "on"), value, "rewards[0].on"))
        cases.append((("customer_referrer", "mode"), value, "customer_referrer.mode"))
    for value in (0, "", [], False):
        cases.append((("tiers",), value, "tiers"))
        cases.append((("commission_rates_bp",), value, "commission_rates_bp"))
    for path, value, field in cases:
        definition = copy.deepcopy(plan)
        target = definition
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        response = await client.post("/v1/commission-plans", headers=auth(operator), json={"definition": definition})
        table.check(f"{field}={value!r}", response, 422, f"definition.{field}")
    table.done()
    listed = await client.get("/v1/commission-plans", headers=auth(operator))
    assert len(listed.json()["items"]) == saved_before


async def test_a_ranking_cursor_that_is_not_ascii_is_a_422_not_a_500(app, client, db):
    """`?cursor=%C3%A9` reached base64 decoding as text it cannot take (a ValueError, not a binascii.Error): a 500."""
    lead_id = await submit_lead(client)
    op = await operator_token(app)
    for cursor in ("%C3%A9", "%FF", "%ED%A0%80", "%D7%A9%D7%9C%D7%95%D7%9D"):
        r = await client.get(f"/v1/leads/{lead_id}/ranking?cursor={cursor}", headers=auth(op))
        assert_problem(r, 422, "cursor")


async def test_a_call_that_takes_no_body_refuses_one_on_delete_too_and_keeps_the_member(app, client, db):
    """A DELETE acted whatever its body was (malformed JSON, text, a field): a call that takes no body refuses one."""
    from tests.integration.test_clubs import found_club, member

    op = await operator_token(app)
    club = await found_club(client, op)
    member_id, token = await member(client, op, club, "deal_maker")
    for url, headers in (
        (f"/v1/businesses/me/clubs/{club}", auth(token)),
        (f"/v1/clubs/{club}/members/{member_id}", auth(op)),
    ):
        for content, content_type, status in (
            (b"{", "application/json", 400),
            (b"hello", "text/plain", 415),
            (b'{"reason": 5}', "application/json", 422),
        ):
            r = await client.request("DELETE", url, headers={**headers, "Content-Type": content_type}, content=content)
            assert_problem(r, status)
    members = (await client.get(f"/v1/clubs/{club}/members", headers=auth(op))).json()["items"]
    assert [m["business_id"] for m in members] == [member_id]
    r = await client.request("DELETE", f"/v1/businesses/me/clubs/{club}", headers=auth(token))
    assert r.status_code == 204, r.text


async def test_a_compressed_body_is_a_415_and_one_labelled_compressed_is_not_read_as_plain(app, client, db):
    import gzip

    _, token = await register(client, "lead_buyer")
    plain = b'{"name": "Renamed Ltd"}'
    for content, encoding in ((gzip.compress(plain), "gzip"), (plain, "br"), (plain, "gzip, identity")):
        r = await client.patch(
            "/v1/businesses/me",
            headers={**auth(token), "Content-Type": "application/json", "Content-Encoding": encoding},
            content=content,
        )
        assert_problem(r, 415)
    assert (await client.get("/v1/businesses/me", headers=auth(token))).json()["name"] != "Renamed Ltd"
    r = await client.patch(
        "/v1/businesses/me",
        headers={**auth(token), "Content-Type": "application/json", "Content-Encoding": "identity"},
        content=plain,
    )
    assert r.status_code == 200 and r.json()["name"] == "Renamed Ltd", r.text


async def test_an_empty_filter_value_is_a_422_not_every_item(app, client, db):
    op = await operator_token(app)
    assert_problem(await client.get("/v1/notifications?reference=", headers=auth(op)), 422, "reference")
    assert_problem(await client.get("/v1/notifications?kind=", headers=auth(op)), 422, "kind")
    assert_problem(await client.get("/v1/invoices?business_id=", headers=auth(op)), 422, "business_id")
    assert (await client.get("/v1/notifications?reference=nope", headers=auth(op))).status_code == 200
