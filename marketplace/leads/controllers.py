"""HTTP routes of lead intake (customers, businesses selling an inquiry) and operators' lead view."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from msgspec import UNSET

from marketplace.http.access import Access, access, current_principal
from marketplace.http.idempotency import IdempotencyKey, request_hash, run_idempotent
from marketplace.http.problems import documented
from marketplace.identity.links import sign_referral_code
from marketplace.leads import schemas, services
from marketplace.uow import UnitOfWork
from marketplace.wallet.referrals import register_referrer

# A new lead is a 201; the same customer's same need within the dedup window is a 200 naming the lead it is.
INTAKE_RESPONSES = {
    201: documented(schemas.LeadAccepted, "A new lead"),
    200: documented(schemas.LeadAccepted, "A duplicate within the window: the existing lead's id"),
}


class LeadController(Controller):
    path = "/v1"
    tags = ["leads"]

    @post("/leads", opt=access(Access.PUBLIC, rate_limit="intake"), status_code=201, responses=INTAKE_RESPONSES)
    async def submit(self, state: State, data: JSONBody[schemas.LeadCreate]) -> Response[schemas.LeadAccepted]:
        """A customer's request. A duplicate within the window answers 200 with the existing lead's id. Rate-limited
        per client address, every request counted before anything else is read: a flood of invalid requests is
        refused as soon as a flood of valid ones would be."""
        return await self._accept(state, data, seller_business_id=None)

    @post("/businesses/me/leads", opt=access(Access.BUSINESS), status_code=201, responses=INTAKE_RESPONSES)
    async def sell(
        self,
        state: State,
        request: Request[Any, Any, Any],
        data: JSONBody[schemas.LeadCreate],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        """Sell an inquiry the business cannot serve; it earns from the lead's exposures. One its own profile holds (one
        of its categories and regions, and a budget within its deal range or not stated, 0: as matching reads a
        profile) is a 422 naming `category`, `region` and `budget.amount_minor`: serve it, or change the profile. A
        customer whose phone or email the business got from the marketplace (any lead it held, any category) is a 409
        naming the field, asked first. With an `Idempotency-Key`, a retry gets the first answer, a refusal included
        (`Idempotent-Replayed: true`), and the key with another inquiry is a 422."""
        seller = current_principal(request).id

        async def work(uow: UnitOfWork) -> tuple[int, Any]:
            return await self._submit(uow, state, data, seller_business_id=seller)

        fingerprint = request_hash("POST", request.url.path, data)
        return await run_idempotent(state.uow, seller, idempotency_key, fingerprint, work)

    @classmethod
    async def _accept(
        cls, state: State, data: schemas.LeadCreate, seller_business_id: str | None
    ) -> Response[schemas.LeadAccepted]:
        async with state.uow() as uow:
            status, accepted = await cls._submit(uow, state, data, seller_business_id)
        return Response(accepted, status_code=status)

    @staticmethod
    async def _submit(
        uow: UnitOfWork, state: State, data: schemas.LeadCreate, seller_business_id: str | None
    ) -> tuple[int, schemas.LeadAccepted]:
        lead, duplicate = await services.submit_lead(
            uow.session, state.settings, data, seller_business_id=seller_business_id
        )
        if not duplicate:
            uow.after_commit(lambda: state.jobs.enqueue("lead_submitted", lead.id))
        return 200 if duplicate else 201, schemas.LeadAccepted(id=lead.id, status=lead.status, duplicate=duplicate)

    @post("/referral-codes", opt=access(Access.OPERATOR), status_code=201)
    async def referral_code(
        self, state: State, request: Request[Any, Any, Any], data: JSONBody[schemas.ReferralCodeIn]
    ) -> schemas.ReferralCode:
        """Register a referrer (a partner, or a customer who refers others, with its sponsor) and give its referral
        code, for `referral_code` at intake: the referrer, and its sponsors, earn what the commission plan grants
        on the leads the code brings (wallet/referrals.py). Codes are signed, so a lead can name only a referrer the
        marketplace issued a code to; the same referrer always gets the same code. A known referrer asked for again
        gets its code; with another kind or sponsor, a 409 (they do not change)."""
        async with state.uow() as uow:
            row = await register_referrer(
                uow.session,
                data.referrer,
                None if data.kind is UNSET else data.kind,
                None if data.sponsor is UNSET else data.sponsor,
                current_principal(request).actor,
                sponsor_given=data.sponsor is not UNSET,
            )
            kind, sponsor = row.kind, row.sponsor_id
        code = sign_referral_code(state.settings.service.secret_key, data.referrer)
        return schemas.ReferralCode(data.referrer, code, kind, sponsor)

    @get("/leads/{lead_id:str}", opt=access(Access.OPERATOR))
    async def get_one(self, state: State, lead_id: FromPath[str]) -> schemas.LeadDetail:
        """One lead as operators see it: its status, exposures and offers."""
        async with state.uow() as uow:
            return await services.detail(uow.session, await services.get_lead(uow.session, lead_id))
