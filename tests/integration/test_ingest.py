"""Visit events over HTTP: accepted once committed, duplicates and conflicts, refusals that write
nothing, reach, verification, matching of person-only events, batches and group commit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from tests.integration.test_planning import plan_body
from tests.support import Client, World, build_world, create, reconciled

LONDON = ZoneInfo("Europe/London")
HOME = {"lat": 53.7632, "lon": -2.7031}


@pytest.fixture
async def world(client: Client, db: asyncpg.Connection) -> World:
    built = await build_world(client, db)
    tw = built.a
    await client.patch(
        f"/v1/people/{tw.person_id}", json={"tags": ["NFC-1"], "phones": ["01772 254868"]}, headers=tw.commissioner
    )
    await create(client, tw.commissioner, "/v1/care-plans", plan_body(tw))
    return built


async def visit_at(db: asyncpg.Connection, person_id: str, local_day: datetime) -> UUID:
    """The planned 08:00 visit of that local day."""
    start = datetime(local_day.year, local_day.month, local_day.day, 8, tzinfo=LONDON)
    value = await db.fetchval(
        "SELECT id FROM visits WHERE person_id = $1 AND planned_start = $2", UUID(person_id), start
    )
    assert isinstance(value, UUID)
    return value


def yesterday() -> datetime:
    return datetime.now(tz=LONDON) - timedelta(days=1)


def at(day: datetime, hhmm: str) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=LONDON)


def event(kind: str = "check_in", when: datetime | None = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid4()),
        "kind": kind,
        "occurred_at": (when or at(yesterday(), "08:02")).isoformat(),
        "method": "gps",
        "location": {**HOME, "accuracy_m": 12},
        "device_id": "phone-1",
    }
    return {**body, **changes}


async def events_count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM visit_events"))


async def test_accept_duplicate_conflict(client: Client, world: World, db: asyncpg.Connection) -> None:
    carer = world.a.carer_headers[0]
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    body = event(visit_id=str(visit_id))
    first = await client.post("/v1/visit-events", json=body, headers=carer)
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "accepted"
    assert first.json()["visit_id"] == str(visit_id)
    assert first.json()["verified"] is True
    again = await client.post("/v1/visit-events", json=body, headers=carer)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    same_instant_other_offset = {
        **body,
        "occurred_at": datetime.fromisoformat(body["occurred_at"]).astimezone(UTC).isoformat(),
    }
    assert (await client.post("/v1/visit-events", json=same_instant_other_offset, headers=carer)).status_code == 200
    changed = await client.post("/v1/visit-events", json={**body, "device_id": "phone-2"}, headers=carer)
    assert changed.status_code == 409
    assert changed.json()["code"] == "conflict"
    assert await events_count(db) == 1
    stored = await db.fetchrow("SELECT carer_id, person_id, verified FROM visit_events")
    assert stored is not None
    assert str(stored["carer_id"]) == world.a.carers[0]
    assert str(stored["person_id"]) == world.a.person_id


async def test_outcome_order_does_not_make_a_conflict(client: Client, world: World, db: asyncpg.Connection) -> None:
    carer = world.a.carer_headers[0]
    visit_id = str(await visit_at(db, world.a.person_id, yesterday()))
    outcomes = [{"outcome_id": "wash", "status": "met"}, {"outcome_id": "eat", "status": "refused"}]
    body = event("check_out", at(yesterday(), "08:31"), visit_id=visit_id, outcomes=outcomes)
    assert (await client.post("/v1/visit-events", json=body, headers=carer)).status_code == 201
    reordered = {**body, "outcomes": outcomes[::-1]}
    assert (await client.post("/v1/visit-events", json=reordered, headers=carer)).json()["status"] == "duplicate"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"occurred_at": "in 6 minutes"}, "clock_ahead"),
        ({"occurred_at": "46 days ago"}, "too_old"),
        ({"outcomes": [{"outcome_id": "wash", "status": "met"}]}, "outcomes_on_check_in"),
        ({"kind": "check_out", "outcomes": [{"outcome_id": "fly", "status": "met"}]}, "unknown_outcome"),
        ({"location": None}, "required"),
        ({"method": "nfc", "location": None}, "required"),
    ],
)
async def test_refused_events_write_nothing(
    client: Client, world: World, db: asyncpg.Connection, changes: dict[str, Any], code: str
) -> None:
    visit_id = str(await visit_at(db, world.a.person_id, yesterday()))
    # Relative instants are made now, not when the test was collected (a long run would age them).
    relative = {"in 6 minutes": timedelta(minutes=6), "46 days ago": -timedelta(days=46)}
    if changes.get("occurred_at") in relative:
        changes = {**changes, "occurred_at": (datetime.now(tz=UTC) + relative[changes["occurred_at"]]).isoformat()}
    response = await client.post(
        "/v1/visit-events", json=event(visit_id=visit_id, **changes), headers=world.a.carer_headers[0]
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == code
    assert await events_count(db) == 0


async def test_the_body_cannot_name_the_carer(client: Client, world: World, db: asyncpg.Connection) -> None:
    visit_id = str(await visit_at(db, world.a.person_id, yesterday()))
    body = event(visit_id=visit_id, carer_id=world.a.carers[1])
    assert (await client.post("/v1/visit-events", json=body, headers=world.a.carer_headers[0])).status_code == 400


async def test_other_providers_and_tenants_visits_are_404(client: Client, world: World, db: asyncpg.Connection) -> None:
    visit_id = str(await visit_at(db, world.a.person_id, yesterday()))
    for headers in (world.a.carer_headers[1], world.b.carer_headers[0]):
        response = await client.post("/v1/visit-events", json=event(visit_id=visit_id), headers=headers)
        assert response.status_code == 404
    missing = await client.post("/v1/visit-events", json=event(visit_id=str(uuid4())), headers=world.a.carer_headers[0])
    assert missing.status_code == 404
    other_person = await client.post(
        "/v1/visit-events", json=event(person_id=world.a.person_id), headers=world.a.carer_headers[1]
    )
    assert other_person.status_code == 404
    assert await events_count(db) == 0
    assert (
        await client.post("/v1/visit-events", json=event(visit_id=visit_id), headers=world.a.commissioner)
    ).status_code == 403


@pytest.mark.parametrize(
    ("changes", "verified"),
    [
        ({"location": {"lat": 53.7632, "lon": -2.7031, "accuracy_m": 500}}, True),
        ({"location": {"lat": 53.7632 + 0.0013, "lon": -2.7031, "accuracy_m": 50}}, True),  # ~145 m <= 100 + 50
        ({"location": {"lat": 53.7632 + 0.0013, "lon": -2.7031, "accuracy_m": 10}}, False),  # ~145 m > 100 + 10
        ({"location": {"lat": 53.7632 + 0.0020, "lon": -2.7031, "accuracy_m": 500}}, False),  # ~222 m > 100 + 50
        ({"method": "nfc", "location": None, "tag": "NFC-1"}, True),
        ({"method": "qr", "location": None, "tag": "NFC-2"}, False),
        ({"method": "telephony", "location": None, "phone": "+44 1772 254868"}, True),
        ({"method": "telephony", "location": None, "phone": "01772 000000"}, False),
        ({"method": "manual", "location": None}, False),
    ],
)
async def test_verification(
    client: Client, world: World, db: asyncpg.Connection, changes: dict[str, Any], verified: bool
) -> None:
    visit_id = str(await visit_at(db, world.a.person_id, yesterday()))
    response = await client.post(
        "/v1/visit-events", json=event(visit_id=visit_id, **changes), headers=world.a.carer_headers[0]
    )
    assert response.status_code == 201, response.text
    assert response.json()["verified"] is verified


async def visit_of_event(db: asyncpg.Connection, event_id: str) -> UUID:
    value = await db.fetchval("SELECT visit_id FROM visit_events WHERE event_id = $1", UUID(event_id))
    assert isinstance(value, UUID)
    return value


async def test_person_only_events_match_by_time_or_become_unplanned(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    carer = world.a.carer_headers[0]
    planned = await visit_at(db, world.a.person_id, yesterday())
    near = event(when=at(yesterday(), "09:30"), person_id=world.a.person_id)  # +90 min: in the window
    response = await client.post("/v1/visit-events", json=near, headers=carer)
    assert response.status_code == 201, response.text
    assert response.json()["visit_id"] == str(planned)
    far = event(when=at(yesterday(), "14:00"), person_id=world.a.person_id)
    made = await client.post("/v1/visit-events", json=far, headers=carer)
    unplanned_id = made.json()["visit_id"]
    assert unplanned_id != str(planned)
    unplanned = (await client.get(f"/v1/visits/{unplanned_id}", headers=world.a.commissioner)).json()
    assert unplanned["status"] == "unplanned"
    assert unplanned["origin"] == "unplanned"
    assert unplanned["planned_start"] == at(yesterday(), "14:00").astimezone(UTC).isoformat().replace("+00:00", "Z")
    later = event("check_out", at(yesterday(), "14:40"), person_id=world.a.person_id)
    paired = await client.post("/v1/visit-events", json=later, headers=carer)
    assert paired.json()["visit_id"] == unplanned_id  # the carer's latest check-in before it


async def test_ties_go_to_the_earlier_visit(client: Client, world: World, db: asyncpg.Connection) -> None:
    tw = world.a
    day = yesterday()
    extra = await create(
        client,
        tw.commissioner,
        "/v1/visits",
        {
            "person_id": tw.person_id,
            "contract_id": tw.contracts[0],
            "planned_start": at(day, "09:00").isoformat(),
            "planned_min": 30,
        },
    )
    planned = await visit_at(db, tw.person_id, day)
    midway = await client.post(
        "/v1/visit-events", json=event(when=at(day, "08:30"), person_id=tw.person_id), headers=tw.carer_headers[0]
    )
    assert midway.json()["visit_id"] == str(planned)  # 30 min after 08:00, 30 min before 09:00
    closer = await client.post(
        "/v1/visit-events", json=event(when=at(day, "08:45"), person_id=tw.person_id), headers=tw.carer_headers[0]
    )
    assert closer.json()["visit_id"] == extra["id"]


async def test_a_late_check_in_takes_over_its_check_out(
    client: Client, world: World, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    carer = world.a.carer_headers[0]
    planned = await visit_at(db, world.a.person_id, yesterday())
    # The check-out arrives first and, +135 min after the planned start, matches nothing: unplanned.
    out = event("check_out", at(yesterday(), "10:15"), person_id=world.a.person_id)
    first = await client.post("/v1/visit-events", json=out, headers=carer)
    assert first.json()["visit_id"] != str(planned)
    check_in = event(when=at(yesterday(), "07:58"), person_id=world.a.person_id)
    assert (await client.post("/v1/visit-events", json=check_in, headers=carer)).json()["visit_id"] == str(planned)
    assert await visit_of_event(db, out["event_id"]) == planned
    orphan = await db.fetchval(
        "SELECT id FROM visits WHERE origin = 'unplanned' AND person_id = $1", UUID(world.a.person_id)
    )
    assert orphan is not None
    # the check-out's own unplanned visit is left with no events: nothing to approve or pay
    orphan_id = first.json()["visit_id"]
    await reconciled(pool)
    orphan = (await client.get(f"/v1/visits/{orphan_id}", headers=world.a.commissioner)).json()
    assert orphan["exceptions"] == []
    # the stored event itself is unchanged: the answer to a resend stays a duplicate
    assert (await client.post("/v1/visit-events", json=out, headers=carer)).json()["status"] == "duplicate"


async def test_an_offline_batch_pairs_within_itself(client: Client, world: World, db: asyncpg.Connection) -> None:
    day = datetime.now(tz=LONDON) - timedelta(days=2)
    out = event(
        "check_out", at(day, "15:32"), person_id=world.a.person_id, outcomes=[{"outcome_id": "eat", "status": "met"}]
    )
    check_in = event(when=at(day, "15:01"), person_id=world.a.person_id)
    response = await client.post(
        "/v1/visit-events/batch", json={"events": [out, check_in]}, headers=world.a.carer_headers[0]
    )
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "accepted"]
    assert results[0]["visit_id"] == results[1]["visit_id"]
    assert [r["event_id"] for r in results] == [out["event_id"], check_in["event_id"]]


async def test_a_batch_stores_the_good_and_names_the_bad(client: Client, world: World, db: asyncpg.Connection) -> None:
    carer = world.a.carer_headers[0]
    visit_id = str(await visit_at(db, world.a.person_id, yesterday()))
    earlier = event(visit_id=visit_id)
    assert (await client.post("/v1/visit-events", json=earlier, headers=carer)).status_code == 201
    good = [event(when=at(yesterday(), "08:00") + timedelta(seconds=i), visit_id=visit_id) for i in range(494)]
    twin = {**good[0], "device_id": "other"}
    bad: list[Any] = [
        event(visit_id=visit_id, occurred_at=(datetime.now(tz=UTC) + timedelta(hours=1)).isoformat()),
        event(visit_id=str(uuid4())),
        {"event_id": str(uuid4()), "kind": "check_in"},
        "not an object",
        earlier,
        twin,
    ]
    response = await client.post("/v1/visit-events/batch", json={"events": good + bad}, headers=carer)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 500
    assert all(r["status"] == "accepted" for r in results[:494])
    tail = results[494:]
    assert [r["status"] for r in tail] == ["rejected", "rejected", "rejected", "rejected", "duplicate", "conflict"]
    assert tail[0]["errors"][0]["code"] == "clock_ahead"
    assert tail[1]["errors"][0]["code"] == "not_found"
    assert tail[2]["event_id"] == bad[2]["event_id"]
    assert tail[2]["errors"][0]["field"] in ("occurred_at", "method", "device_id")
    assert tail[3]["event_id"] is None
    assert await events_count(db) == 1 + 494
    too_many = await client.post("/v1/visit-events/batch", json={"events": good + bad + [good[0]]}, headers=carer)
    assert too_many.status_code == 422


async def test_concurrent_single_events_are_all_committed(client: Client, world: World, db: asyncpg.Connection) -> None:
    visit_id = str(await visit_at(db, world.a.person_id, yesterday()))
    bodies = [event(when=at(yesterday(), "08:00") + timedelta(seconds=i), visit_id=visit_id) for i in range(60)]
    responses = await asyncio.gather(
        *(client.post("/v1/visit-events", json=b, headers=world.a.carer_headers[0]) for b in bodies)
    )
    assert [r.status_code for r in responses] == [201] * 60
    assert await events_count(db) == 60
    twice = await asyncio.gather(
        *(client.post("/v1/visit-events", json=bodies[0], headers=world.a.carer_headers[0]) for _ in range(5))
    )
    assert {r.json()["status"] for r in twice} == {"duplicate"}


async def test_accepted_events_cannot_be_changed_or_deleted(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    visit_id = str(await visit_at(db, world.a.person_id, yesterday()))
    await client.post("/v1/visit-events", json=event(visit_id=visit_id), headers=world.a.carer_headers[0])
    with pytest.raises(asyncpg.RestrictViolationError):
        await db.execute("UPDATE visit_events SET occurred_at = occurred_at + interval '1 hour'")
    with pytest.raises(asyncpg.RestrictViolationError):
        await db.execute("DELETE FROM visit_events")
    assert await events_count(db) == 1


async def test_events_must_name_a_visit_with_its_person_and_a_carer_of_their_tenant(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """What the dropped foreign keys checked (migration 0015), now checked once per statement."""
    visit_id = await visit_at(db, world.a.person_id, yesterday())
    await client.post("/v1/visit-events", json=event(visit_id=str(visit_id)), headers=world.a.carer_headers[0])
    copy = """INSERT INTO visit_events (tenant_id, event_id, carer_id, provider_id, person_id, posted_visit_id,
                  visit_id, kind, occurred_at, method, device_id, verified, content_hash)
              SELECT tenant_id, $1, {carer}, provider_id, {person}, posted_visit_id, {visit}, kind, occurred_at,
                  method, device_id, verified, content_hash FROM visit_events"""
    refused = [
        (copy.format(carer="carer_id", person="person_id", visit="$2"), uuid4()),  # no such visit
        (copy.format(carer="carer_id", person="$2", visit="visit_id"), UUID(world.b.person_id)),  # not its person
        (copy.format(carer="$2", person="person_id", visit="visit_id"), uuid4()),  # no such carer
        (copy.format(carer="$2", person="person_id", visit="visit_id"), UUID(world.b.carers[0])),  # another tenant's
    ]
    for sql, value in refused:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await db.execute(sql, uuid4(), value)
    with pytest.raises(asyncpg.ForeignKeyViolationError):  # a re-match is checked too
        await db.execute("UPDATE visit_events SET visit_id = $1", uuid4())
    assert await events_count(db) == 1
    await db.execute(copy.format(carer="$2", person="person_id", visit="visit_id"), uuid4(), UUID(world.a.carers[1]))
    assert await events_count(db) == 2


def test_generated_events_never_break_ingest(client: Client, world: World, db: asyncpg.Connection) -> None:
    """Well-shaped events with random values: every answer is a 2xx or a problem, and a refusal writes nothing."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    loop = asyncio.get_event_loop()
    visit_id = loop.run_until_complete(visit_at(db, world.a.person_id, yesterday()))
    now = datetime.now(tz=UTC)
    fields = {
        "event_id": st.uuids().map(str),
        "kind": st.sampled_from(["check_in", "check_out"]),
        "occurred_at": st.datetimes(
            min_value=(now - timedelta(days=50)).replace(tzinfo=None),
            max_value=(now + timedelta(hours=1)).replace(tzinfo=None),
        ).map(lambda d: d.replace(tzinfo=UTC).isoformat()),
        "method": st.sampled_from(["gps", "nfc", "qr", "telephony", "manual"]),
        "device_id": st.text(min_size=1, max_size=8),
        "visit_id": st.sampled_from([str(visit_id), str(uuid4()), None]),
        "person_id": st.sampled_from([world.a.person_id, world.b.person_id, None]),
        "location": st.none()
        | st.fixed_dictionaries(
            {"lat": st.floats(-90, 90), "lon": st.floats(-180, 180), "accuracy_m": st.floats(0, 1000)}
        ),
        "tag": st.none() | st.sampled_from(["NFC-1", "x"]),
        "phone": st.none() | st.sampled_from(["01772 254868", "not a phone", "+999"]),
        "outcomes": st.lists(
            st.fixed_dictionaries(
                {
                    "outcome_id": st.sampled_from(["wash", "eat", "zzz"]),
                    "status": st.sampled_from(["met", "not_met", "refused"]),
                }
            ),
            max_size=3,
        ),
    }

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.fixed_dictionaries({}, optional=fields), st.booleans())
    def check(body: dict[str, Any], as_batch: bool) -> None:
        async def run() -> None:
            before = await events_count(db)
            headers = world.a.carer_headers[0]
            if as_batch:
                response = await client.post("/v1/visit-events/batch", json={"events": [body, body]}, headers=headers)
                assert response.status_code == 200, response.text
                statuses = [r["status"] for r in response.json()["results"]]
                accepted = statuses.count("accepted")
                assert accepted <= 1
                assert await events_count(db) == before + accepted
            else:
                response = await client.post("/v1/visit-events", json=body, headers=headers)
                assert response.status_code in (200, 201, 400, 404, 409, 422), response.text
                written = 1 if response.status_code == 201 else 0
                assert await events_count(db) == before + written

        loop.run_until_complete(run())

    check()


async def test_an_unplanned_visit_starts_at_its_first_check_in_whatever_arrived_first(
    client: Client, world: World
) -> None:
    carer = world.a.carer_headers[0]
    day = yesterday()
    out = event("check_out", at(day, "15:40"), person_id=world.a.person_id)
    created = await client.post("/v1/visit-events", json=out, headers=carer)
    visit_id = created.json()["visit_id"]
    late_in = event("check_in", at(day, "15:00"), person_id=world.a.person_id)
    assert (await client.post("/v1/visit-events", json=late_in, headers=carer)).json()["visit_id"] == visit_id
    shown = (await client.get(f"/v1/visits/{visit_id}", headers=world.a.commissioner)).json()
    expected = at(day, "15:00").astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert (shown["planned_start"], shown["band_start"]) == (expected, expected)


async def test_a_group_picked_as_a_deadlock_victim_is_run_again(
    client: Client, world: World, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.ingest import accept as accept_module

    real_accept = accept_module.accept
    tries: list[bool] = []

    async def deadlocked_once(*args: Any, **kwargs: Any) -> Any:
        """Every request's first try is a deadlock's victim, after writing (rolled back with it)."""
        result = await real_accept(*args, **kwargs)
        tries.append(len(tries) % 2 == 0)
        if tries[-1]:
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return result

    monkeypatch.setattr(accept_module, "accept", deadlocked_once)
    carer = world.a.carer_headers[0]
    visit_id = str(await visit_at(db, world.a.person_id, yesterday()))
    single = await client.post("/v1/visit-events", json=event(visit_id=visit_id), headers=carer)
    assert single.status_code == 201, single.text
    batch = [event("check_out", at(yesterday(), "08:40"), visit_id=visit_id)]
    answered = await client.post("/v1/visit-events/batch", json={"events": batch}, headers=carer)
    assert answered.status_code == 200, answered.text
    assert [r["status"] for r in answered.json()["results"]] == ["accepted"]
    assert tries == [True, False, True, False]  # each request refused once, then stored
    assert await events_count(db) == 2  # once each
