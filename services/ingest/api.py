"""Ingest HTTP: one event (201 accepted, 200 duplicate, 409 conflict, 422, 404) or a batch of up to 500."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, post
from litestar.params import JSONBody
from litestar.response import Response

from schemas.ingest import MAX_BATCH, BatchAnswer, EventAnswer, EventBatchIn, VisitEventIn
from services.common.auth import Principal, allow
from services.common.deps import Caller
from services.common.errors import decode_problem, field_problems_of, problem
from services.ingest.accept import Outcome, Poster, Submission, accept_committed
from services.ingest.committer import GroupCommitter
from services.ingest.rules import EventProblem
from services.monitoring.timers import note_events


class _GoodBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`EventBatchIn` when every event is good: decoded in one pass (the usual case), not event by event."""

    events: Annotated[list[VisitEventIn], msgspec.Meta(max_length=MAX_BATCH)]


_DECODER = msgspec.json.Decoder(VisitEventIn)
_BATCH_DECODER = msgspec.json.Decoder(EventBatchIn)
_GOOD_BATCH_DECODER = msgspec.json.Decoder(_GoodBatch)
_ID_ONLY = msgspec.json.Decoder(dict[str, Any])


def _poster(caller: Principal) -> Poster:
    assert caller.carer_id is not None
    assert caller.provider_id is not None
    return Poster(carer_id=caller.carer_id, provider_id=caller.provider_id)


class IngestController(Controller):
    """Visit events from carers' phones; the carer is the token's, never the body's."""

    path = "/v1/visit-events"
    tags = ["ingest"]
    guards = [allow("carer")]

    @post("/", operation_id="postVisitEvent")
    async def post_event(
        self, request: Request[Any, Any, Any], data: JSONBody[VisitEventIn], caller: Caller
    ) -> Response[EventAnswer]:
        """One event: 201 once committed, 200 for a duplicate of an accepted one."""
        committer: GroupCommitter = request.app.state.committer
        answer = await committer.submit(caller.tenant, Submission(_poster(caller), data))
        if isinstance(answer, EventProblem):
            raise problem(answer.status, answer.code, answer.problems[0].message, answer.problems)
        noted = (
            note_events(request.app.state, caller.tenant, caller.carer_id, [answer.visit_id])
            if answer.status == "accepted"
            else None
        )
        return Response(answer, status_code=201 if answer.status == "accepted" else 200, background=noted)

    @post("/batch", operation_id="postVisitEventBatch", status_code=200)
    async def post_batch(self, request: Request[Any, Any, Any], caller: Caller) -> Response[BatchAnswer]:
        """Up to 500 events `{"events": [...]}`, stored in one transaction; each gets its own answer, in order."""
        decoded = _decode_batch(await request.body())
        poster = _poster(caller)
        submissions = [Submission(poster, event) for event in decoded if isinstance(event, VisitEventIn)]
        outcomes = await accept_committed(request.app.state.pool, caller.tenant, submissions)
        accepted = [o.visit_id for o in outcomes if isinstance(o, EventAnswer) and o.status == "accepted"]
        noted = note_events(request.app.state, caller.tenant, caller.carer_id, accepted)
        answers = iter([_as_answer(sub, outcome) for sub, outcome in zip(submissions, outcomes, strict=True)])
        results = [next(answers) if isinstance(item, VisitEventIn) else item for item in decoded]
        return Response(BatchAnswer(results=results), background=noted)


def _decode_batch(body: bytes) -> Sequence[VisitEventIn | EventAnswer]:
    """The batch's events; a bad event becomes its own `rejected` answer, a bad batch a 400/422."""
    try:  # the usual case, every event good: one pass in C
        return _GOOD_BATCH_DECODER.decode(body).events
    except msgspec.MsgspecError:
        pass
    try:
        # Decoded here, not by Litestar, so each event stays raw and is checked on its own.
        data = _BATCH_DECODER.decode(body)
    except msgspec.MsgspecError as exc:
        raise decode_problem(exc) from None
    return [_decode(raw) for raw in data.events]


def _decode(raw: msgspec.Raw) -> VisitEventIn | EventAnswer:
    """One event of a batch; a bad one becomes its own `rejected` answer."""
    try:
        return _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        return EventAnswer(event_id=_event_id_of(raw), status="rejected", errors=field_problems_of(exc))


def _event_id_of(raw: msgspec.Raw) -> UUID | None:
    """The event id of an event that did not decode, when it has a readable one."""
    try:
        return msgspec.convert(_ID_ONLY.decode(raw).get("event_id"), UUID | None)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _as_answer(submission: Submission, outcome: Outcome) -> EventAnswer:
    if isinstance(outcome, EventAnswer):
        return outcome
    return EventAnswer(
        event_id=submission.event.event_id,
        status="conflict" if outcome.code == "conflict" else "rejected",
        errors=outcome.problems,
    )
