"""HTTP routes of the wallet: balances, entries (JSON or CSV), withdrawals, invoices (JSON or PDF),
settlements confirmed by operators, the trial balance, commission plans and credit limits."""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Annotated, Any

import anyio
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import rfc3339
from marketplace.db.models import Business, Settlement
from marketplace.db.models.wallet import SETTLEMENT_STATUSES
from marketplace.errors import FieldError, InvalidInput
from marketplace.http.access import Access, access, current_principal
from marketplace.http.idempotency import IdempotencyKey, request_hash, run_idempotent
from marketplace.http.negotiation import CHOOSES_FORM, negotiate
from marketplace.http.problems import documented
from marketplace.http.strict import QueryInt, QueryTime, one_of
from marketplace.ids import new_id
from marketplace.money import Money
from marketplace.offers.closing import apply_credit_limit
from marketplace.pagination import Page, check_limit
from marketplace.ranking.sync import ALL
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.uow import UnitOfWork
from marketplace.wallet import payables, provider, queries, schemas, store, withdrawals
from marketplace.wallet.invoice_pdf import render_invoice_pdf
from marketplace.wallet.ledger import TransferKind
from marketplace.wallet.plan_versions import active_plan, save_plan
from marketplace.wallet.settlements import confirm_settlement, fail_settlement

CSV_PAGE = 1000
ENTRY_FORMATS = ("json", "csv")
ENTRY_MEDIA = {"json": "application/json", "csv": "text/csv"}
KINDS = frozenset(k.value for k in TransferKind)
# The headers of an answer whose form the request's Accept header chose (RFC 9110 12.5.5).
NEGOTIATED = {"Vary": "Accept"}
# The forms an invoice comes in, the first the default (no Accept header, or one that takes both alike).
INVOICE_FORMS = ["application/json", "application/pdf"]
# A list's one form.
LIST_FORMS = ["application/json"]
_PDF_HINT = " (an invoice's PDF is at GET /v1/invoices/{id})"


# A posting's id is a 64-bit integer in both databases: a larger "cursor" was never given out (and SQLite cannot
# even compare it: an OverflowError, a 500).
_LARGEST_ID = 2**63 - 1


def _cursor(raw: str | None) -> int | None:
    if not raw:  # `?cursor=` is the first page, as on every other list (pagination.check_cursor)
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) > _LARGEST_ID:
        raise InvalidInput.field("cursor", "not a cursor this list gave out")
    return int(raw)


class WalletController(Controller):
    path = "/v1"
    tags = ["wallet"]

    @get("/wallet", opt=access(Access.BUSINESS))
    async def wallet(self, state: State, request: Request[Any, Any, Any]) -> schemas.Wallet:
        """Balances per account kind: `available` (withdrawable), `credit`, and what the business owes."""
        async with state.uow() as uow:
            return await queries.wallet_of(uow.session, state.settings, current_principal(request).id)

    @get(
        "/wallet/entries",
        opt={**access(Access.BUSINESS), CHOOSES_FORM: True},
        responses={200: documented(Page[schemas.Entry], "A page of entries; `?format=csv` gives CSV")},
    )
    async def entries(
        self,
        state: State,
        request: Request[Any, Any, Any],
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
        since: FromQuery[QueryTime | None] = None,
        until: FromQuery[QueryTime | None] = None,
        kind: Annotated[str | None, one_of(sorted(KINDS), "only the entries shown with this kind")] = None,
        format: Annotated[str, one_of(ENTRY_FORMATS, "json: a page; csv: every entry (no limit or cursor)")] = "json",
    ) -> Response[Any]:
        """Own ledger entries, newest first, filtered by date and kind; `?format=csv` exports them all. The form is
        the one `?format=` names: an Accept header that does not take it is a 406."""
        business_id = current_principal(request).id
        if format not in ENTRY_FORMATS:
            raise InvalidInput.field("format", " or ".join(ENTRY_FORMATS))
        # `?format=` chooses the form (README); an Accept header that does not take it is a 406 (the contract's rule
        # for invoices), not an answer in a form the client said it cannot read.
        negotiate(
            request.headers.get("accept", ""),
            [ENTRY_MEDIA[format]],
            "this export" if format == "csv" else "this page of entries",
            "" if format == "csv" else " (`?format=csv` gives the entries as text/csv)",
        )
        if format == "csv":
            # The export is every entry the filters take; a page's limit or cursor there would be ignored, and a
            # client that sent one expects fewer rows than it gets.
            for name in ("limit", "cursor"):
                if name in request.query_params:
                    raise InvalidInput.field(name, "the CSV export holds every entry; page the JSON list instead")
        if kind is not None and kind not in KINDS:
            raise InvalidInput.field("kind", f"one of {', '.join(sorted(KINDS))}")
        for name, value in (("since", since), ("until", until)):  # each an RFC 3339 time with its offset
            if value is None:
                continue
            try:
                value.astimezone(UTC)  # as it is stored and compared
            except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first moment UTC has
                raise InvalidInput.field(name, "outside the years 1 to 9999 in UTC") from None
        if since is not None and until is not None and since > until:
            raise InvalidInput.field("until", "must not be before since")
        async with state.uow() as uow:
            if format == "json":
                items, next_cursor = await queries.entries_of(
                    uow.session,
                    business_id,
                    limit=check_limit(limit),
                    cursor=_cursor(cursor),
                    since=since,
                    until=until,
                    kind=kind,
                )
                return Response(Page(items=items, next_cursor=next_cursor))
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(
                [
                    "posting_id",
                    "at",
                    "transaction_id",
                    "kind",
                    "account",
                    "amount_minor",
                    "currency",
                    "memo",
                    "reference",
                ]
            )
            page_cursor: int | None = None
            while True:
                items, next_cursor = await queries.entries_of(
                    uow.session,
                    business_id,
                    limit=CSV_PAGE,
                    cursor=page_cursor,
                    since=since,
                    until=until,
                    kind=kind,
                )
                for e in items:
                    writer.writerow(
                        [
                            e.posting_id,
                            rfc3339(e.at),
                            e.transaction_id,
                            e.kind,
                            e.account,
                            e.amount.amount_minor,
                            e.amount.currency,
                            e.memo,
                            e.reference or "",
                        ]
                    )
                if next_cursor is None:
                    break
                page_cursor = int(next_cursor)
        return Response(
            buffer.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="wallet-entries.csv"'},
        )

    @post(
        "/wallet/withdrawals",
        opt=access(Access.LEAD_BUYER),
        status_code=201,
        responses={201: documented(schemas.Settlement, "The payout, pending until an operator confirms")},
    )
    async def withdraw(
        self,
        state: State,
        request: Request[Any, Any, Any],
        data: JSONBody[schemas.WithdrawalRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        """Pay out part of the available balance (lead buyers only; credit is never paid out). Open debts are paid
        from the wallet first; asking for more than is left after them is a 409 naming the debts."""
        principal = current_principal(request)
        ledger_key = idempotency_key or new_id("wd")

        async def work(uow: UnitOfWork) -> tuple[int, Any]:
            business = await uow.session.get(Business, principal.id)
            assert business is not None
            amount = Money(data.amount.amount_minor, data.amount.currency)
            settlement = await withdrawals.withdraw(uow.session, state.settings, business, amount, ledger_key)
            return 201, queries.settlement_out(settlement)

        fingerprint = request_hash("POST", request.url.path, data)
        return await run_idempotent(state.uow, principal.id, idempotency_key, fingerprint, work)

    @get("/wallet/trial-balance", opt=access(Access.OPERATOR))
    async def trial_balance(self, state: State) -> schemas.TrialBalance:
        """Every posting summed per currency (zero when sound), the marketplace's accounts, and any business
        account whose kept balance disagrees with its postings."""
        async with state.uow() as uow:
            totals = await store.trial_balance(uow.session)
            accounts = await store.marketplace_balances(uow.session)
            mismatches = await store.balance_mismatches(uow.session)
        return schemas.TrialBalance(
            totals=totals,
            balanced=all(v == 0 for v in totals.values()) and not mismatches,
            marketplace_accounts=[
                schemas.AccountBalance(account=code, balance=MoneyOut(amount, cur)) for code, cur, amount in accounts
            ],
            mismatches=[
                {"account": code, "currency": cur, "kept_minor": kept, "from_postings_minor": derived}
                for code, cur, kept, derived in mismatches
            ],
        )

    @get("/invoices", opt={**access(Access.BUSINESS_OR_OPERATOR), CHOOSES_FORM: True})
    async def invoices(
        self,
        state: State,
        request: Request[Any, Any, Any],
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
        business_id: FromQuery[str | None] = None,
    ) -> Page[schemas.InvoiceSummary]:
        """The calling business's invoices and credit notes, newest first (operators: every business's, or
        `?business_id=`). The list comes as JSON only (each invoice's PDF is at its own address): an Accept that
        does not take JSON is a 406."""
        negotiate(request.headers.get("accept", ""), LIST_FORMS, "the list of invoices", _PDF_HINT)
        if business_id is not None and not business_id:  # `?business_id=` would otherwise list every business's
            raise InvalidInput.field("business_id", "must not be empty (leave it out for every business's invoices)")
        async with state.uow() as uow:
            items, next_cursor = await queries.invoices_for(
                uow.session, current_principal(request), business_id, check_limit(limit), cursor
            )
        return Page(items=items, next_cursor=next_cursor)

    @get(
        "/invoices/{invoice_id:str}",
        opt={**access(Access.BUSINESS_OR_OPERATOR), CHOOSES_FORM: True},
        responses={200: documented(schemas.InvoiceDetail, "The invoice; with `Accept: application/pdf`, its PDF")},
    )
    async def invoice(self, state: State, request: Request[Any, Any, Any], invoice_id: FromPath[str]) -> Response[Any]:
        """The invoice as JSON, or as a PDF with `Accept: application/pdf`; an Accept that takes neither is a 406."""
        async with state.uow() as uow:
            invoice = await queries.invoice_for(uow.session, current_principal(request), invoice_id)
            # As issued, with its payment steps as they stand (the charge paid later from the wallet, cancelled...).
            document = await queries.invoice_document(uow.session, invoice)
        # The Accept header's preference, q-values included (q=0 refuses); JSON unless the PDF is preferred, and a
        # 406 naming both when it takes neither (after the lookup: another's invoice is a 404 whatever is asked).
        # Every answer says it depends on Accept, so that a cache never gives one to a client that asked for another.
        form = negotiate(request.headers.get("accept", ""), INVOICE_FORMS, "an invoice")
        if form == "application/pdf":
            pdf = await anyio.to_thread.run_sync(render_invoice_pdf, document)
            number = invoice.document["number"]
            return Response(
                pdf,
                media_type="application/pdf",
                headers={"Content-Disposition": f'inline; filename="{number}.pdf"', **NEGOTIATED},
            )
        return Response(queries.invoice_detail(invoice, document), headers=NEGOTIATED)

    @get("/settlements", opt=access(Access.BUSINESS_OR_OPERATOR))
    async def settlements(
        self,
        state: State,
        request: Request[Any, Any, Any],
        status: Annotated[str | None, one_of(SETTLEMENT_STATUSES, "only the settlements in this status")] = None,
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
    ) -> Page[schemas.Settlement]:
        """Charges and payouts through the payment provider, newest first: a business sees its own, operators every one;
        `?status=` keeps one status."""
        if status is not None and status not in SETTLEMENT_STATUSES:
            raise InvalidInput.field("status", f"one of {', '.join(SETTLEMENT_STATUSES)}")
        async with state.uow() as uow:
            items, next_cursor = await queries.settlements_for(
                uow.session, current_principal(request), status, check_limit(limit), cursor
            )
        return Page(items=items, next_cursor=next_cursor)

    @post(
        "/settlements/{settlement_id:str}/confirm",
        opt=access(Access.OPERATOR),
        status_code=200,
        responses={200: documented(schemas.Settlement, "The settlement, confirmed")},
    )
    async def confirm(
        self,
        state: State,
        request: Request[Any, Any, Any],
        settlement_id: FromPath[str],
        idempotency_key: IdempotencyKey = None,
        already_sent: Annotated[
            str | None,
            one_of(["true"], "a payout to a business blocked or suspended since: the transfer had left before"),
        ] = None,
    ) -> Response[Any]:
        """A bank transfer was received (a charge, pending or failed and still owed) or paid out (a withdrawal): the
        ledger moves it. A cancelled charge is a 409, naming the attempt that took its place. A payout to a business
        blocked or suspended since it asked is a 409 (fail it, and its money goes back to the wallet), unless
        `?already_sent=true` says the transfer left before: then it is recorded as any payout. Money moves, so an
        `Idempotency-Key` replays the first answer."""
        if already_sent is not None and already_sent != "true":
            raise InvalidInput.field("already_sent", "true, or leave it out")
        confirm = functools.partial(confirm_settlement, already_sent=already_sent == "true")
        options = {"already_sent": True} if already_sent == "true" else None
        return await _decide_settlement(state, request, settlement_id, idempotency_key, confirm, options)

    @post(
        "/settlements/{settlement_id:str}/fail",
        opt=access(Access.OPERATOR),
        status_code=200,
        responses={200: documented(schemas.Settlement, "The settlement, failed")},
    )
    async def fail(
        self,
        state: State,
        request: Request[Any, Any, Any],
        settlement_id: FromPath[str],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        """The transfer did not happen: a charge's debt stays open, a payout goes back to the wallet (money moves,
        so an `Idempotency-Key` replays the first answer instead of a 409 for a failure already recorded)."""
        return await _decide_settlement(state, request, settlement_id, idempotency_key, fail_settlement)

    @get("/payables", opt=access(Access.OPERATOR))
    async def list_payables(
        self,
        state: State,
        account: Annotated[str | None, one_of(payables.KINDS, "only the payables on this kind of account")] = None,
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
    ) -> Page[schemas.Payable]:
        """What the marketplace owes each club operator (its club's share of commissions) and each referrer (its
        rewards), payouts already made or pending taken off; `account` keeps one kind."""
        async with state.uow() as uow:
            items, next_cursor = await payables.payables(
                uow.session, state.settings, account, check_limit(limit), cursor
            )
        return Page(items=items, next_cursor=next_cursor)

    @post(
        "/payables/payouts",
        opt=access(Access.OPERATOR),
        status_code=201,
        responses={201: documented(schemas.Settlement, "The payout, pending until an operator confirms the transfer")},
    )
    async def pay_out(
        self,
        state: State,
        request: Request[Any, Any, Any],
        data: JSONBody[schemas.PayableOut],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        """Pay a club operator or a referrer (by bank transfer) part or all of what the marketplace owes it; more than
        it is owed is a 409. Confirmed like any payout (POST /v1/settlements/{id}/confirm); a failed one is owed
        again."""
        operator = current_principal(request)
        ledger_key = idempotency_key or new_id("po")

        async def work(uow: UnitOfWork) -> tuple[int, Any]:
            settlement = await payables.pay_out(uow.session, state.settings, provider.in_use, data, ledger_key)
            return 201, queries.settlement_out(settlement)

        fingerprint = request_hash("POST", request.url.path, data)
        return await run_idempotent(state.uow, operator.id, idempotency_key, fingerprint, work)

    @get("/commission-plans", opt=access(Access.OPERATOR))
    async def plans(
        self, state: State, limit: FromQuery[QueryInt] = QueryInt(50), cursor: FromQuery[str | None] = None
    ) -> Page[schemas.Plan]:
        """Every version of the commission plan, newest first (settled deals name the version they used)."""
        async with state.uow() as uow:
            await active_plan(uow.session, state.settings)
            rows, next_cursor = await queries.plan_versions(uow.session, limit, cursor)
            items = [schemas.Plan(r.id, r.version, r.definition, r.created_by, r.created_at) for r in rows]
        return Page(items=items, next_cursor=next_cursor)

    @post("/commission-plans", opt=access(Access.OPERATOR), status_code=201)
    async def new_plan(
        self, state: State, request: Request[Any, Any, Any], data: JSONBody[schemas.PlanIn]
    ) -> schemas.Plan:
        """A new plan version, in force for exposures from now on; every field is checked, errors name it."""
        async with state.uow() as uow:
            try:
                row = await save_plan(
                    uow.session,
                    data.definition,
                    current_principal(request).actor,
                    currency=state.settings.currency,
                    categories=state.settings.categories,
                )
            except InvalidInput as exc:  # the plan's fields are the body's `definition.`: named as the client sent them
                errors = [FieldError(f"definition.{e.field}", e.message) for e in exc.errors]
                detail = f"{errors[0].field}: {errors[0].message}" if len(errors) == 1 else exc.detail
                raise InvalidInput(detail, errors=errors, extra=exc.extra) from None
            out = schemas.Plan(row.id, row.version, row.definition, row.created_by, row.created_at)
        state.ranking_sync.changed(ALL)  # deal makers' scores follow the plan's rates at once, in every process
        return out

    @get("/businesses/{business_id:str}/wallet", opt=access(Access.OPERATOR))
    async def wallet_of_business(self, state: State, business_id: FromPath[str]) -> schemas.Wallet:
        """A business's wallet as the business sees it at `GET /v1/wallet`: what an operator deciding a settlement,
        a credit limit or a fraud alert needs to see (an unknown business is a 404)."""
        async with state.uow() as uow:
            return await queries.wallet_of(uow.session, state.settings, business_id)

    @post("/businesses/{business_id:str}/credit-limit", opt=access(Access.OPERATOR), status_code=200)
    async def credit_limit(
        self, state: State, business_id: FromPath[str], data: JSONBody[schemas.CreditLimit]
    ) -> schemas.Wallet:
        """How much a business may owe through the payment provider before purchases are refused. A deal maker that
        now owes more has its open offers withdrawn (its claims would be refused until it pays); one let owe more is
        offered the open leads that fit it again."""
        amount = Money(data.amount.amount_minor, data.amount.currency)
        async with state.uow() as uow:
            await apply_credit_limit(uow, state.settings, state.jobs, business_id, amount)
            out = await queries.wallet_of(uow.session, state.settings, business_id)
        return out


async def _decide_settlement(
    state: State,
    request: Request[Any, Any, Any],
    settlement_id: str,
    idempotency_key: str | None,
    decide: Callable[[AsyncSession, Settings, str, str], Awaitable[Settlement]],
    options: dict[str, Any] | None = None,
) -> Response[Any]:
    """An operator's confirmation or failure of a settlement, replayed for a repeated `Idempotency-Key`. `options`:
    the query's choices that change the decision (`already_sent`), part of the request a key stands for: the same key
    with other options is another request (a 422), never the first one's answer."""
    operator = current_principal(request)

    async def work(uow: UnitOfWork) -> tuple[int, Any]:
        return 200, queries.settlement_out(await decide(uow.session, state.settings, settlement_id, operator.actor))

    fingerprint = request_hash("POST", request.url.path, options)
    return await run_idempotent(state.uow, operator.id, idempotency_key, fingerprint, work)
