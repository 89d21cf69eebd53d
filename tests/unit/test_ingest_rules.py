"""Ingest rules without I/O: the content hash that tells a duplicate from a conflict, and the order
in which an event's own checks refuse it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import pytest

from schemas.ingest import VisitEventIn
from services.ingest import rules

CARER = UUID("0196a3c0-0000-7000-8000-000000000001")
CHECK_IN = {
    "event_id": "0196a3c0-0000-7000-8000-0000000000e1",
    "visit_id": "0196a3c0-0000-7000-8000-0000000000a1",
    "kind": "check_in",
    "occurred_at": "2026-10-25T08:02:00+00:00",
    "method": "gps",
    "location": {"lat": 53.7632, "lon": -2.7031, "accuracy_m": 12},
    "device_id": "phone-1",
}
CHECK_OUT = {
    "event_id": "0196a3c0-0000-7000-8000-0000000000e2",
    "person_id": "0196a3c0-0000-7000-8000-0000000000b1",
    "kind": "check_out",
    "occurred_at": "2026-10-25T08:40:00+00:00",
    "method": "nfc",
    "tag": "NFC-1",
    "device_id": "phone-1",
    "outcomes": [{"outcome_id": "wash", "status": "met"}, {"outcome_id": "eat", "status": "refused"}],
    "note": "ok",
}


def decoded(body: dict[str, Any], **changes: Any) -> VisitEventIn:
    return msgspec.json.decode(msgspec.json.encode({**body, **changes}), type=VisitEventIn)


# Digests stored by earlier versions: a change to the hash would turn every re-sent event into a conflict.
@pytest.mark.parametrize(
    ("event", "digest"),
    [
        (decoded(CHECK_IN), "11c44d97228399d0f64d04ac42f16586d611dae18ec143db21d2e932d177a079"),
        (
            decoded(CHECK_IN, occurred_at="2026-10-25T08:02:00Z"),
            "11c44d97228399d0f64d04ac42f16586d611dae18ec143db21d2e932d177a079",
        ),
        (
            decoded(CHECK_IN, occurred_at="2026-10-25T09:02:00+01:00"),
            "11c44d97228399d0f64d04ac42f16586d611dae18ec143db21d2e932d177a079",
        ),
        (decoded(CHECK_OUT), "693712f653af339c02deb28c581fb565c8e39d74d269ed48fd746a3f209232eb"),
        (
            decoded(CHECK_OUT, occurred_at="2026-10-25T08:40:00Z", outcomes=CHECK_OUT["outcomes"][::-1]),
            "693712f653af339c02deb28c581fb565c8e39d74d269ed48fd746a3f209232eb",
        ),
        (
            decoded(
                CHECK_OUT,
                event_id="0196a3c0-0000-7000-8000-0000000000e3",
                method="manual",
                tag=None,
                note=None,
                outcomes=[{"outcome_id": "eat", "status": "met"}],
            ),
            "db61179d07b24e1617ee550ac75928549bd805669d2817d5c3ff4b373daff54b",
        ),
    ],
)
def test_content_hash_is_what_stored_events_carry(event: VisitEventIn, digest: str) -> None:
    assert rules.content_hash(event, CARER) == digest


def test_content_hash_differs_with_content_or_carer() -> None:
    same = rules.content_hash(decoded(CHECK_IN), CARER)
    assert rules.content_hash(decoded(CHECK_IN, device_id="phone-2"), CARER) != same
    assert rules.content_hash(decoded(CHECK_IN), UUID(int=CARER.int + 1)) != same


NOW = datetime(2026, 10, 25, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"occurred_at": "2026-10-25T09:06:00Z", "device_id": "a\x00"}, "clock_ahead", "occurred_at"),
        ({"occurred_at": "2026-09-01T09:00:00Z", "device_id": "a\x00"}, "too_old", "occurred_at"),
        ({"note": "n\x00", "tag": "t\x00", "visit_id": None}, "nul_character", "note"),
        (
            {"outcomes": [{"outcome_id": "a", "status": "met"}, {"outcome_id": "b\x00", "status": "met"}]},
            "nul_character",
            "outcomes[1].outcome_id",
        ),
        ({"visit_id": None, "tag": None}, "required", "visit_id"),
        ({"kind": "check_in", "tag": None}, "outcomes_on_check_in", "outcomes"),
        ({"tag": None}, "required", "tag"),
        ({"method": "telephony", "tag": None}, "required", "phone"),
        (
            {"outcomes": [{"outcome_id": "a", "status": "met"}, {"outcome_id": "a", "status": "refused"}]},
            "duplicate_outcome",
            "outcomes[1].outcome_id",
        ),
    ],
)
def test_the_first_failing_check_refuses(changes: dict[str, Any], code: str, field: str) -> None:
    body = {**CHECK_OUT, "visit_id": CHECK_IN["visit_id"], "person_id": None, **changes}
    with pytest.raises(rules.EventProblem) as refused:
        rules.check_event(decoded(body), NOW, 45)
    assert (refused.value.code, refused.value.problems[0].field) == (code, field)


def test_a_good_event_passes_its_checks() -> None:
    rules.check_event(decoded(CHECK_OUT), NOW, 45)
    rules.check_event(decoded(CHECK_IN, method="manual", location=None), NOW, 45)
