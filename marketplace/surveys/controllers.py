"""HTTP routes of customers' surveys: their signed link is the credential."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from marketplace.http.access import Access, access
from marketplace.surveys import schemas, services


async def _survey_link_first(request: Request[Any, Any, Any]) -> None:
    """Before the answer's body is read: a forged link is a 404 and a spent or expired one a 410 whatever the
    body says (the body's own errors are 422s only on a link that still works)."""
    state = request.app.state
    async with state.uow() as uow:
        await services.check_survey_link(uow.session, state.settings, request.path_params["token"])


class SurveyController(Controller):
    path = "/v1/surveys"
    tags = ["surveys"]

    @get("/{token:str}", opt=access(Access.PUBLIC))
    async def show(self, state: State, token: FromPath[str]) -> schemas.SurveyView:
        """The customer's survey: its request and the businesses that received its contact. A forged link is
        a 404; an expired or already answered one a 410."""
        async with state.uow() as uow:
            return await services.survey_view(uow.session, state.settings, token)

    @post("/{token:str}", opt=access(Access.PUBLIC), status_code=200, before_request=_survey_link_first)
    async def answer(
        self, state: State, token: FromPath[str], data: JSONBody[schemas.SurveyAnswerIn]
    ) -> schemas.SurveyAnswer:
        """Whether the customer hired one of the businesses, for how much, and how satisfied it is. The link
        works once; the answer is news for the lead's businesses, which the scheduled scan re-assesses (every
        30 seconds in a served process), and for the hired one again when its grace for reporting the deal has
        passed. "Hired nobody" puts back on the market a lead a deal maker's `won` alone had taken off it: its
        next wave goes out once the answer commits."""
        async with state.uow() as uow:
            survey, _, next_wave = await services.answer_survey(uow.session, state.settings, token, data)
            hired = survey.business_id
            if hired is not None:
                delay = services.recheck_delay_seconds(state.settings)
                uow.after_commit(lambda: state.jobs.enqueue("fraud_recheck", hired, delay_seconds=delay))
            if next_wave is not None:
                lead_id, wave = survey.lead_id, next_wave
                uow.after_commit(lambda: state.jobs.enqueue("send_wave", lead_id, wave))
            return schemas.SurveyAnswer.of(survey)
