"""`carebank demo`: build a county through the real HTTP API, play its carers' phones over a few past
weeks, reconcile, amend, bank, invoice, and read the commissioners' reports back.

The API runs as its own process (`carebank serve` on a free 127.0.0.1 port) against the embedded
servers under `<data dir>/demo`, or against DATABASE_URL / REDIS_URL when they are set; the demo
drives it with httpx and runs the worker's reconciliation and expiry jobs in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infra.settings import Settings
from services.demo import phones
from services.demo.api import Api, DemoError, Headers
from services.demo.county import County, build_county

ZONE = ZoneInfo("Europe/London")
T = TypeVar("T")
BANK_UNAVAILABLE = "banking not available"
# The demo's tenant accepts events this old (the default is 45 days), so six past weeks fit.
MAX_AGE_DAYS = 60


@dataclass(frozen=True)
class Options:
    """What the command line chose."""

    people: int = 300
    carers: int = 80
    weeks: int = 4
    seed: int = 1
    sync_days: int = 3
    start: date | None = None
    report: Path = Path("demo-report.html")
    json_out: Path | None = None


def default_start(weeks: int, today: date) -> date:
    """The first Monday of the `weeks` full weeks ending last Sunday."""
    this_monday = today - timedelta(days=today.weekday())
    return this_monday - timedelta(days=7 * weeks)


def check_start(start: date, weeks: int, today: date) -> None:
    """Events must lie in the past and within the tenant's 45 days of accepted age."""
    if start.weekday() != 0:
        raise DemoError(f"--start {start} is not a Monday")
    end = start + timedelta(days=7 * weeks)
    if end > today:
        raise DemoError(f"--start {start} with --weeks {weeks} ends after today: events must lie in the past")
    if (today - start).days > MAX_AGE_DAYS - 1:
        raise DemoError(
            f"--start {start} is more than {MAX_AGE_DAYS - 1} days ago: the phones' events would be too old"
        )


@dataclass
class World:
    """What the demo made, with the credentials it logged in with."""

    tenant_id: str = ""
    commissioner: Headers = field(default_factory=dict)
    second_commissioner: Headers = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)
    provider_headers: list[Headers] = field(default_factory=list)
    contracts: list[str] = field(default_factory=list)
    carers: list[list[str]] = field(default_factory=list)
    carer_headers: list[list[Headers]] = field(default_factory=list)
    people: list[str] = field(default_factory=list)


@dataclass
class Tally:
    """Counts of what the demo did, for the summary."""

    events_sent: int = 0
    duplicates: int = 0
    syncs: int = 0
    single_posts: int = 0
    amendments: int = 0
    late_amendments: int = 0
    invoices: int = 0
    adjustment_lines: int = 0
    redeploy_visits: int = 0
    redeployed_min: int = 0
    transfers: int = 0
    transferred_min: int = 0
    expired_lots: int = 0
    missed_by_phones: int = 0
    checked: int = 0
    stale_fixed: int = 0
    bank: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`carebank serve` in a process of its own (so the API and the phones do not share one core)."""

    def __init__(self, settings: Settings, log_path: Path, namespace: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": settings.database_url or "",
            "REDIS_URL": settings.redis_url or "",
            "CAREBANK_JWT_SECRET": settings.jwt_secret or "",
            "CAREBANK_DATA_DIR": settings.data_dir,
            "CAREBANK_LOG_LEVEL": "WARNING",
            # The demo logs in a hundred phones from one address in a few seconds.
            "CAREBANK_AUTH_RATE_LIMIT_PER_MINUTE": "1000000",
            "CAREBANK_REDIS_NAMESPACE": namespace,
            # Unless told otherwise, the demo's own credentials (synthetic data in a tenant of its own)
            # use the cheapest argon2 profile: a hundred phones log in within seconds on two cores.
            "CAREBANK_ARGON2_PROFILE": os.environ.get("CAREBANK_ARGON2_PROFILE", "CHEAPEST"),
            # The demo drains the reconciliation queue itself, as the worker would: the API's one core
            # is left to the phones.
            "CAREBANK_RECONCILE_IN_API": "0",
        }
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "services.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"the API process exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DemoError(f"the API did not answer within {timeout_s:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def gather_limited(
    items: Iterable[T], work: Callable[[T], Awaitable[Any]], limit: int, tick: Callable[[], None]
) -> list[Any]:
    """Run `work` over items with at most `limit` in flight, in order of items; results in that order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with semaphore:
            result = await work(item)
            tick()
            return result

    return list(await asyncio.gather(*(one(item) for item in items)))


def local(day: date, hhmm: str) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=ZONE)


class Demo:
    """One run: the county, the API it talks to, the progress display and what it counted."""

    def __init__(self, settings: Settings, options: Options, console: Console, api_urls: list[str]) -> None:
        self.settings = settings
        self.options = options
        self.console = console
        # Behind a load balancer each phone would reach any API process; here each phone keeps one.
        self.apis = [Api(url) for url in api_urls]
        self.api = self.apis[0]
        self.today = datetime.now(tz=ZONE).date()
        self.start = options.start or default_start(options.weeks, self.today)
        check_start(self.start, options.weeks, self.today)
        self.county: County = build_county(options.seed, self.start, options.weeks, options.people, options.carers)
        self.world = World()
        self.tally = Tally()
        self.pool: Any = None
        self.progress = Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )

    # ---- steps ---------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        from infra.db import create_pool

        started = time.monotonic()
        assert self.settings.database_url is not None
        self.pool = await create_pool(self.settings.database_url, max_size=2)
        try:
            with self.progress:
                await self.build()
                visits = await self.list_visits()
                played = phones.play(self.county, visits, self.options.seed, sync_days=self.options.sync_days)
                self.tally.missed_by_phones = played.missed
                await self.sync(played.syncs, "Phones syncing visit events")
                await self.reconcile("Reconciling")
                late = await self.amend(played.fixes)
                await self.verify()
                weeks = [self.start + timedelta(days=7 * w) for w in range(self.options.weeks)]
                await self.invoice(weeks[:-1], late)
                self.tally.bank = await self.bank_available()
                if not self.tally.bank:
                    # Time has passed for the bank too: what is past its expiry goes first, then the
                    # reviews redeploy and transfer what is left; the last week's invoices carry it all.
                    await self.expire()
                    await self.redeploy()
                    await self.transfer()
                await self.invoice(weeks[-1:], late)
                await self.reconcile("Reconciling (final)")
            result = await self.results()
        finally:
            await self.pool.close()
            for api in self.apis:
                await api.close()
        result["seconds"] = round(time.monotonic() - started, 1)
        return result

    async def build(self) -> None:
        county, api, world = self.county, self.api, self.world
        creations = 3 + len(county.providers) * 2 + sum(len(c) for c in county.carers) + 2 * len(county.people)
        task = self.progress.add_task("Building the county", total=creations)

        def tick() -> None:
            self.progress.advance(task)

        admin = await self.admin_headers()
        stamp = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        tenant = await api.post(
            "/v1/tenants",
            admin,
            {"name": f"Demo County (seed {self.options.seed}, {stamp})", "max_event_age_days": MAX_AGE_DAYS},
        )
        world.tenant_id = tenant["id"]
        world.commissioner = await api.credential(admin, {"role": "commissioner", "tenant_id": tenant["id"]})
        world.second_commissioner = await api.credential(admin, {"role": "commissioner", "tenant_id": tenant["id"]})
        self.progress.advance(task, 3)
        for spec, carer_names in zip(county.providers, county.carers, strict=True):
            provider = await api.post("/v1/providers", world.commissioner, {"code": spec.code, "name": spec.name})
            world.providers.append(provider["id"])
            world.provider_headers.append(
                await api.credential(world.commissioner, {"role": "provider", "provider_id": provider["id"]})
            )
            contract = await api.post(
                "/v1/contracts",
                world.commissioner,
                {
                    "provider_id": provider["id"],
                    "model": spec.model,
                    "period": "week",
                    "rates": spec.rates,
                    "pay_rules": spec.pay_rules,
                    "banking": spec.banking,
                    "valid_from": self.start.isoformat(),
                },
            )
            world.contracts.append(contract["id"])
            self.progress.advance(task, 2)
            headers = world.provider_headers[-1]

            async def carer(name: str, headers: Headers = headers) -> tuple[str, Headers]:
                made = await api.post("/v1/carers", headers, {"name": name})
                return made["id"], await api.credential(headers, {"role": "carer", "carer_id": made["id"]})

            made = await gather_limited(carer_names, carer, 4, tick)
            world.carers.append([m[0] for m in made])
            world.carer_headers.append([m[1] for m in made])

        async def person(spec: Any) -> str:
            made = await api.post(
                "/v1/people",
                world.commissioner,
                {
                    "reference": spec.reference,
                    "display_name": spec.display_name,
                    "location": {"lat": spec.lat, "lon": spec.lon},
                    "tags": [spec.tag],
                    "phones": [spec.phone],
                },
            )
            return str(made["id"])

        world.people = await gather_limited(county.people, person, 6, tick)

        async def plan(index: int) -> None:
            spec = county.people[index]
            await api.post(
                "/v1/care-plans",
                world.commissioner,
                {
                    "person_id": world.people[index],
                    "contract_id": world.contracts[spec.provider],
                    "weekly_min": spec.weekly_min,
                    "outcomes": [{"id": o[0], "domain": o[1], "text": o[2], "key": o[3]} for o in spec.outcomes],
                    "schedule": [
                        {
                            "weekday": s.weekday,
                            "start": s.start,
                            "minutes": s.minutes,
                            "carers_required": s.carers_required,
                            "outcome_ids": list(s.outcome_ids),
                        }
                        for s in spec.slots
                    ],
                    "valid_from": self.start.isoformat(),
                    "valid_to": county.end.isoformat(),
                },
            )

        await gather_limited(range(len(county.people)), plan, 4, tick)

    async def admin_headers(self) -> Headers:
        """An admin credential made in-process, as `carebank credentials create --role admin` does."""
        from infra.db import connect
        from services.identity.issue import issue_credential
        from services.identity.rules import Binding, SecretHasher

        assert self.settings.database_url is not None
        conn = await connect(self.settings.database_url)
        try:
            secret = await issue_credential(
                conn,
                SecretHasher.for_profile(os.environ.get("CAREBANK_ARGON2_PROFILE", "CHEAPEST")),
                Binding("admin", None, None, None),
                created_by="demo",
            )
        finally:
            await conn.close()
        return await self.api.login(secret.client_id, secret.client_secret)

    async def list_visits(self) -> list[phones.PlannedVisit]:
        task = self.progress.add_task("Reading the planned visits", total=len(self.world.providers))
        person_index = {pid: i for i, pid in enumerate(self.world.people)}
        calls = {(i, s.weekday, s.start): s.call for i, spec in enumerate(self.county.people) for s in spec.slots}
        visits = []
        for provider, headers in enumerate(self.world.provider_headers):
            items = await self.api.pages(
                "/v1/visits", headers, **{"from": self.start.isoformat(), "to": self.county.end.isoformat()}
            )
            for item in items:
                start = datetime.fromisoformat(item["planned_start"])
                person = person_index[item["person_id"]]
                local_start = start.astimezone(ZONE)
                visits.append(
                    phones.PlannedVisit(
                        id=item["id"],
                        person=person,
                        planned_start=start,
                        planned_min=item["planned_min"],
                        carers_required=item["carers_required"],
                        outcome_ids=tuple(item["outcome_ids"]),
                        call=calls[(person, local_start.isoweekday(), local_start.strftime("%H:%M"))],
                        provider=provider,
                    )
                )
            self.progress.advance(task)
        return visits

    async def sync(self, syncs: list[phones.Sync], description: str) -> None:
        """Post the phones' syncs: batches of up to 500, a few phones one event at a time, and the retried
        ones sent twice (the second time every event answers `duplicate`)."""
        total = sum(len(s.events) * (2 if s.retried else 1) for s in syncs)
        task = self.progress.add_task(description, total=total)
        headers_of = self.world.carer_headers

        async def send(sync: phones.Sync) -> None:
            headers = headers_of[sync.provider][sync.carer]
            api = self.apis[(sync.provider + sync.carer) % len(self.apis)]
            for attempt in range(2 if sync.retried else 1):
                if sync.one_by_one:
                    for event in sync.events:
                        await api.post("/v1/visit-events", headers, event, expect=(200, 201))
                        self.tally.single_posts += 1
                        self.tally.duplicates += attempt
                        self.progress.advance(task)
                    continue
                for offset in range(0, len(sync.events), 500):
                    chunk = sync.events[offset : offset + 500]
                    answer = await api.post("/v1/visit-events/batch", headers, {"events": chunk})
                    statuses = [r["status"] for r in answer["results"]]
                    bad = [r for r in answer["results"] if r["status"] not in ("accepted", "duplicate")]
                    if bad:
                        raise DemoError(f"events refused: {bad[:3]}")
                    self.tally.duplicates += statuses.count("duplicate")
                    self.progress.advance(task, len(chunk))
            self.tally.events_sent += len(sync.events) * (2 if sync.retried else 1)
            self.tally.syncs += 1

        # Phones posting one event at a time go first, so they do not make a long tail at the end.
        ordered = sorted(syncs, key=lambda s: not s.one_by_one)
        worker = asyncio.create_task(self._drain_while_syncing())
        try:
            await gather_limited(ordered, send, 12, lambda: None)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _drain_while_syncing(self) -> None:
        """The worker's queue drainer, running alongside the phones as it would in production."""
        from services.reconcile.jobs import drain_queue

        while True:
            if not await drain_queue(self.pool):
                await asyncio.sleep(0.5)

    async def reconcile(self, description: str | None) -> None:
        """What the worker does: drain the reconciliation queue, then let the clock settle and miss visits
        (with a progress bar when described)."""
        from services.reconcile.jobs import drain_queue, reconcile_due

        task = self.progress.add_task(description or "", total=None, visible=description is not None)
        done = 0
        while True:
            drained = await drain_queue(self.pool)
            due = await reconcile_due(self.pool)
            done += drained + due
            self.progress.update(task, completed=done)
            # Due ones only: a visit held back after a failure (decision 129) is for `verify` to report.
            queued = await self.pool.fetchval(
                "SELECT count(*) FROM reconcile_queue WHERE queued_at <= clock_timestamp()"
            )
            if not drained and not due and not queued:
                break
            if not drained and not due:
                await asyncio.sleep(0.05)  # the API's own drainer holds the rest
        self.progress.update(task, total=done or 1, completed=done or 1)

    async def verify(self) -> None:
        """`carebank reconcile`'s check: every visit recomputed from scratch and compared with what is
        stored; any that differ (a change that reached the queue too late) are stored again."""
        from uuid import UUID

        from infra.db import acquire
        from services.reconcile.jobs import verify_tenant
        from services.reconcile.service import reconcile_visits

        task = self.progress.add_task("Checking every visit from scratch", total=None)
        found = await verify_tenant(self.pool, UUID(self.world.tenant_id))
        checked, differing = found.checked, found.differing
        if differing:
            async with acquire(self.pool) as conn, conn.transaction():
                await reconcile_visits(conn, UUID(self.world.tenant_id), differing, datetime.now(tz=UTC))
        self.tally.checked = checked
        self.tally.stale_fixed = len(differing)
        self.progress.update(task, total=checked, completed=checked)

    async def amend(self, fixes: list[phones.Fix]) -> list[phones.Fix]:
        """Forgotten check-outs: the provider proposes the time, a commissioner approves. One in four is
        only noticed after its week was invoiced (an adjustment on a later invoice); returns those."""
        last_week = self.start + timedelta(days=7 * (self.options.weeks - 1))
        late = [f for i, f in enumerate(fixes) if i % 4 == 3 and f.check_out_at.astimezone(ZONE).date() < last_week]
        now = [f for f in fixes if f not in late]
        task = self.progress.add_task("Amendments (forgotten check-outs)", total=len(now))
        await gather_limited(now, self._fix, 8, lambda: self.progress.advance(task))
        self.tally.amendments += len(now)
        await self.reconcile("Reconciling amended visits")
        return late

    async def _fix(self, fix: phones.Fix) -> None:
        world = self.world
        made = await self.api.post(
            f"/v1/visits/{fix.visit_id}/amendments",
            world.provider_headers[fix.provider],
            {
                "carer_id": world.carers[fix.provider][fix.carer],
                "check_out_at": fix.check_out_at.isoformat(),
                "reason_code": "forgot_check_out",
                "note": "carer forgot to check out; time from the daily log",
            },
        )
        if made["status"] == "pending":
            await self.api.post(f"/v1/amendments/{made['id']}/approve", world.commissioner, None, expect=(200,))

    async def invoice(self, weeks: list[date], late: list[phones.Fix]) -> None:
        """Each contract's weekly invoices in order; amendments made after a week was invoiced land as
        adjustment lines on the next one."""
        task = self.progress.add_task(
            f"Invoice runs ({len(weeks)} weeks)", total=len(weeks) * len(self.world.contracts)
        )
        for monday in weeks:
            await self.reconcile(None)  # late amendments of the week before, if any
            for contract in self.world.contracts:
                invoice = await self.api.post(
                    "/v1/invoice-runs",
                    self.world.commissioner,
                    {"contract_id": contract, "period_start": monday.isoformat()},
                )
                self.tally.invoices += 1
                self.tally.adjustment_lines += sum(1 for line in invoice["lines"] if line["kind"] == "adjustment")
                self.progress.advance(task)
            mine = [f for f in late if monday <= f.check_out_at.astimezone(ZONE).date() < monday + timedelta(days=7)]
            for fix in mine:
                await self._fix(fix)
            self.tally.late_amendments += len(mine)

    # ---- banking -------------------------------------------------------------------------------

    async def bank_available(self) -> str:
        """'' when the API has the bank endpoints, else why not."""
        schema = await self.api.get("/schema/openapi.json", {})
        paths = schema.get("paths", {})
        needed = ("/v1/bank/transfers", "/v1/bank/summary", "/v1/people/{person_id}/bank")
        if not all(any(p.startswith(n.split("{")[0]) for p in paths) for n in needed):
            self.console.print(f"[yellow]{BANK_UNAVAILABLE}[/]: redeployment, transfer and expiry skipped")
            return BANK_UNAVAILABLE
        return ""

    async def _banks(self, provider: int) -> list[tuple[int, int]]:
        """(available minutes, person index) of the provider's people, largest first."""
        world = self.world
        people = [i for i, p in enumerate(self.county.people) if p.provider == provider]

        async def one(index: int) -> tuple[int, int]:
            bank = await self.api.get(
                f"/v1/people/{world.people[index]}/bank", world.commissioner, provider_id=world.providers[provider]
            )
            return int(bank["available_min"]), index

        found = await gather_limited(people, one, 6, lambda: None)
        return sorted(found, key=lambda f: (-f[0], f[1]))

    def _outcome_providers(self) -> list[int]:
        return [i for i, spec in enumerate(self.county.providers) if spec.model == "outcome_based"]

    async def redeploy(self) -> None:
        """Banked time redeployed to the same person: a `funding: "bank"` visit on the last Saturday
        afternoon (an outing, say), made by a commissioner, and played by the person's morning carer."""
        saturday = self.county.end - timedelta(days=1)
        wanted = max(1, len(self.county.people) // 30)
        task = self.progress.add_task("Bank: redeployments", total=wanted * len(self._outcome_providers()))
        made: list[phones.PlannedVisit] = []
        assigned: dict[str, list[int]] = {}
        for provider in self._outcome_providers():
            chosen = 0
            for available, person in await self._banks(provider):
                if chosen == wanted or available < 30:
                    break
                visit = await self._bank_visit(provider, person, saturday, 60 if available >= 60 else 30)
                if visit is None:
                    continue
                chosen += 1
                minutes = int(visit["planned_min"])
                made.append(
                    phones.PlannedVisit(
                        visit["id"],
                        person,
                        datetime.fromisoformat(visit["planned_start"]),
                        minutes,
                        1,
                        (),
                        "bank",
                        provider,
                    )
                )
                weekday = saturday.isoweekday()
                assigned[visit["id"]] = [self.county.rota.get((person, weekday, "morning", 0), 0)]
                self.tally.redeploy_visits += 1
                self.tally.redeployed_min += minutes
                self.progress.advance(task)
        played = phones.play(self.county, made, self.options.seed + 1, assigned)
        await self.sync(played.syncs, "Bank: redeployed visits' events")
        await self.reconcile("Reconciling redeployed visits")

    async def _bank_visit(self, provider: int, person: int, day: date, minutes: int) -> dict[str, Any] | None:
        """A bank-funded visit, or None when the bank cannot cover it (some of what the person's bank shows
        now was earned after the visit's start, and so cannot pay for it)."""
        for length in (minutes, 30) if minutes > 30 else (minutes,):
            try:
                made: dict[str, Any] = await self.api.post(
                    "/v1/visits",
                    self.world.commissioner,
                    {
                        "person_id": self.world.people[person],
                        "contract_id": self.world.contracts[provider],
                        "planned_start": local(day, "14:00").isoformat(),
                        "planned_min": length,
                        "funding": "bank",
                    },
                )
                return made
            except DemoError as exc:
                if "insufficient_bank" not in str(exc):
                    raise
        return None

    async def transfer(self) -> None:
        """A review finds one person needs less time and another more: a provider asks to transfer banked
        minutes; a commissioner approves. Another is asked by one commissioner and approved by a second."""
        task = self.progress.add_task("Bank: transfers", total=2 * len(self._outcome_providers()))
        world = self.world
        for provider in self._outcome_providers():
            banks = await self._banks(provider)
            if len(banks) < 2 or banks[0][0] < 20:
                continue
            (available, giver), receiver = banks[0], banks[-1][1]
            requests = [
                (world.provider_headers[provider], world.commissioner, min(60, available // 2)),
                (world.commissioner, world.second_commissioner, min(30, available // 4)),
            ]
            for number, (asker, decider, minutes) in enumerate(requests, start=1):
                if minutes < 1:
                    continue
                try:
                    transfer = await self.api.post(
                        "/v1/bank/transfers",
                        asker,
                        {
                            "from_person_id": world.people[giver],
                            "to_person_id": world.people[receiver],
                            "minutes": minutes,
                            "review_ref": f"REV-{self.county.providers[provider].code}-{number:03d}",
                        },
                    )
                except DemoError as exc:
                    if "insufficient_bank" not in str(exc):
                        raise
                    continue
                await self.api.post(f"/v1/bank/transfers/{transfer['id']}/approve", decider, None, expect=(200,))
                self.tally.transfers += 1
                self.tally.transferred_min += minutes
                self.progress.advance(task)

    async def expire(self) -> None:
        """The worker's expiry job, in-process: lots past `expiry_weeks` go to `expired`."""
        from services.banking.ledger import expire_due

        task = self.progress.add_task("Bank: expiry", total=None)
        total = 0
        while True:
            async with self.pool.acquire() as conn:
                expired = await expire_due(conn, datetime.now(tz=UTC))
            total += expired
            self.progress.update(task, completed=total)
            if not expired:
                break
        self.tally.expired_lots = total
        self.progress.update(task, total=total or 1, completed=total or 1)

    # ---- results -------------------------------------------------------------------------------

    async def results(self) -> dict[str, Any]:
        """The reports, read back through the API, and what the demo counted."""
        api, world = self.api, self.world
        span = {"from": self.start.isoformat(), "to": self.county.end.isoformat()}
        delivery = await api.get("/v1/reports/delivery", world.commissioner, **span)
        outcomes = await api.get("/v1/reports/outcomes", world.commissioner, **span)
        bank: dict[str, Any] = {"available": not self.tally.bank}
        if not self.tally.bank:
            bank.update(await self.bank_figures())
        return {
            "tenant_id": world.tenant_id,
            "from": span["from"],
            "to": span["to"],
            "seed": self.options.seed,
            "people": len(self.county.people),
            "carers": sum(len(c) for c in self.county.carers),
            "providers": [
                {"id": pid, "code": spec.code, "model": spec.model}
                for pid, spec in zip(world.providers, self.county.providers, strict=True)
            ],
            "tally": self.tally.__dict__,
            "requests": sum(a.requests for a in self.apis),
            "delivery": delivery,
            "outcomes": outcomes,
            "bank": bank,
        }

    async def bank_figures(self) -> dict[str, Any]:
        """Totals by kind now, and each outcome-based provider's balance at the end of every day."""
        world, api = self.world, self.api
        summary = await api.get("/v1/bank/summary", world.commissioner)
        series: dict[str, list[tuple[str, int]]] = defaultdict(list)
        days = [self.start + timedelta(days=d) for d in range(7 * self.options.weeks + 1)]
        for provider in self._outcome_providers():
            code = self.county.providers[provider].code
            for day in days:
                as_of = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=ZONE)
                if as_of > datetime.now(tz=ZONE):
                    as_of = datetime.now(tz=ZONE)
                at = await api.get(
                    "/v1/bank/summary",
                    world.commissioner,
                    provider_id=world.providers[provider],
                    as_of=as_of.isoformat(),
                )
                series[code].append((day.isoformat(), balance_of(at)))
        return {"summary": summary, "balance_by_day": dict(series)}


def balance_of(summary: dict[str, Any]) -> int:
    """Minutes owed to people and the pool in a bank summary."""
    balances = summary.get("balances", {})
    if "total" in balances:
        return int(balances["total"])
    return int(sum(v for k, v in balances.items() if k in ("people", "persons", "person", "pool")))


def run_demo(settings: Settings, options: Options, console: Console, processes: int = 1) -> dict[str, Any]:
    """Start the API (one process, or more as behind a load balancer) on `settings`'
    servers, play the demo against it, stop the API; the results."""
    log_path = Path(settings.data_dir) / "demo-server.log"
    namespace = f"demo-{os.getpid()}-{free_port()}"
    servers = [Server(settings, log_path, namespace) for _ in range(processes)]
    try:
        for server in servers:
            server.wait_ready()
        demo = Demo(settings, options, console, [server.url for server in servers])
        result = asyncio.run(demo.run())
        result["api_processes"] = processes
        return result
    finally:
        for server in servers:
            server.stop()
