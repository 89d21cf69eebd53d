"""Amendment rules (pure): what a proposal must say, and when it approves itself."""

from __future__ import annotations

from datetime import datetime

from schemas.reconcile import AmendmentCreate
from services.common.domain import RuleError, check_instant
from services.ingest.rules import CLOCK_SKEW


def check_amendment(data: AmendmentCreate, *, unplanned: bool, now: datetime) -> None:
    """A note for `other`; extensions and moves with their own reason; planned minutes only for
    unplanned visits; times within 2000-2100 and not ahead of `now` (beyond an event's allowed skew:
    an amendment says what happened, decision 147); and something to change."""
    for field, instant in (("check_in_at", data.check_in_at), ("check_out_at", data.check_out_at)):
        if instant is not None:
            check_instant(instant, field)
            if instant > now + CLOCK_SKEW:
                raise RuleError("clock_ahead", f"{field} is more than 5 minutes ahead of the server clock", field)
    if data.reason_code == "other" and not (data.note and data.note.strip()):
        raise RuleError("required", "a note is required when the reason is other", "note")
    if data.extension_min is not None and data.reason_code != "extended_visit_authorised":
        raise RuleError("wrong_reason", "an extension needs the reason extended_visit_authorised", "reason_code")
    if data.move_to_visit_id is not None and data.reason_code != "wrong_visit_selected":
        raise RuleError("wrong_reason", "a move needs the reason wrong_visit_selected", "reason_code")
    if data.planned_min is not None and not unplanned:
        raise RuleError("not_unplanned", "planned_min is set only when approving an unplanned visit", "planned_min")
    if data.planned_min is not None and data.move_to_visit_id is not None:
        # A move's other fields go with the carer's events to the other visit; planned minutes are the visit's.
        raise RuleError("move_with_planned_min", "a move cannot also set planned_min", "planned_min")
    changes = (data.check_in_at, data.check_out_at, data.extension_min, data.planned_min, data.move_to_visit_id)
    if all(change is None for change in changes):
        raise RuleError("nothing_to_change", "an amendment changes at least one thing", "check_in_at")
    if data.check_in_at and data.check_out_at and data.check_out_at <= data.check_in_at:
        raise RuleError("out_before_in", "check_out_at must be after check_in_at", "check_out_at")


def approves_itself(
    *,
    payable_before: int,
    payable_after: int,
    banked_before: int,
    banked_after: int,
    auto_approve_min: int,
    unplanned: bool,
    awaiting_approval: bool,
    extension: bool,
    move: bool,
    final: bool,
) -> bool:
    """Auto-approved when pay falls or moves by at most `auto_approve_min` and banked time does not
    fall; never for unplanned visits, extensions or moves between visits, and never before the visit
    is final or while it awaits a commissioner's approval (both sides may then be 0 while the amendment
    would raise pay later: decision 145)."""
    if unplanned or awaiting_approval or extension or move or not final:
        return False
    change = payable_after - payable_before
    return (change < 0 or abs(change) <= auto_approve_min) and banked_after >= banked_before
