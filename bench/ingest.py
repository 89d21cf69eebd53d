"""Ingest benchmark: batch events/s, single-event req/s with latency, and a raw COPY baseline.

Starts `carebank serve` against a fresh database (dropped again at the end), seeds one tenant
through the API, drives the server over loopback from this process and prints figures. Server,
PostgreSQL and this load generator share the machine's cores. It never asserts: the targets are
reported as met or missed, and the exit code is non-zero only when the benchmark itself broke.

    .venv/bin/python bench/ingest.py           # batch 60 s, single 30 s, COPY bounded by 60 s
    .venv/bin/python bench/ingest.py --quick   # 10 s each: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import msgspec
from reconcile import EVENT_COLUMNS

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BATCH_PATH = "/v1/visit-events/batch"
SINGLE_PATH = "/v1/visit-events"
RATES = {"day": 2430, "evening": 2700, "night": 3000, "weekend": 2900, "bank_holiday": 4860}
SLOTS = ("07:30", "12:00", "17:00", "21:00")
PLAN_DAYS_BACK = 30
# Stands in for each event id in a pre-encoded body; same length as a UUID's text.
PLACEHOLDER = "ffffffff-eeee-4ddd-8ccc-bbbbbbbbbbbb"
# Pre-encoded events per carer / client (memory bound); each cycles through its own.
MAX_BATCH_EVENTS_PER_CARER = 20_000
MAX_SINGLE_EVENTS_PER_CLIENT = 400
TARGET_BATCH_EVENTS_S = 20_000
TARGET_SINGLE_REQ_S = 1_500
TARGET_SINGLE_P99_MS = 100.0
COPY_COLUMNS = EVENT_COLUMNS  # every column of visit_events, in table order
JsonObject = dict[str, Any]


class BenchError(RuntimeError):
    """The benchmark could not run (setup failed); figures would mean nothing."""


def say(message: str = "") -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Figures


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Cpu:
    """CPU used during a phase, as % of one core (machine: % of one core summed over all cores)."""

    client: float
    server: float
    postgres: float
    machine: float
    cores: int

    def line(self) -> str:
        return (
            f"cpu (100% = one core, {self.cores} cores): load generator {self.client:.0f}%, "
            f"server {self.server:.0f}%, postgres {self.postgres:.0f}%, whole machine {self.machine:.0f}%"
        )


@dataclass(frozen=True)
class _CpuSample:
    wall: float
    client: float
    server: float
    postgres: dict[str, float]
    machine_busy: float
    machine_total: float


class CpuMeter:
    """Reads /proc before and after a phase: this process, the server process, postgres, the machine."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.tick = float(os.sysconf("SC_CLK_TCK"))
        self.cores = os.cpu_count() or 1
        self._start: _CpuSample | None = None

    @staticmethod
    def _proc_ticks(pid: int | str) -> float:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = raw[raw.rfind(")") + 2 :].split()
        return float(fields[11]) + float(fields[12])  # utime + stime

    def _tree_ticks(self, pid: int) -> float:
        """The server and its worker processes (`serve --workers`), if any."""
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        return self._proc_ticks(pid) + sum(self._proc_ticks(child) for child in children)

    def _postgres_ticks(self) -> dict[str, float]:
        """Per postgres process; one that exits during a phase takes its share with it."""
        ticks: dict[str, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "postgres":
                ticks[entry] = self._proc_ticks(entry)
        return ticks

    @staticmethod
    def _machine_ticks() -> tuple[float, float]:
        # user nice system idle iowait irq softirq steal (guest time is already inside user)
        parts = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        idle = parts[3] + parts[4]
        return sum(parts) - idle, sum(parts)

    def _sample(self) -> _CpuSample:
        busy, total = self._machine_ticks()
        return _CpuSample(
            wall=time.perf_counter(),
            client=time.process_time(),
            server=self._tree_ticks(self.server_pid),
            postgres=self._postgres_ticks(),
            machine_busy=busy,
            machine_total=total,
        )

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> Cpu:
        start = self._start
        assert start is not None
        end = self._sample()
        wall = max(end.wall - start.wall, 1e-9)
        postgres = sum(max(0.0, ticks - start.postgres.get(pid, 0.0)) for pid, ticks in end.postgres.items())
        return Cpu(
            client=100 * (end.client - start.client) / wall,
            server=100 * (end.server - start.server) / self.tick / wall,
            postgres=100 * postgres / self.tick / wall,
            machine=100
            * self.cores
            * (end.machine_busy - start.machine_busy)
            / max(end.machine_total - start.machine_total, 1e-9),
            cores=self.cores,
        )


@dataclass
class BatchFigures:
    seconds: float
    clients: int
    batch_size: int
    batches: int = 0
    accepted: int = 0
    not_accepted: int = 0
    failed_requests: int = 0
    accepted_total: int = 0  # including warm-up and answers after the window, for the row check
    latencies: list[float] = field(default_factory=list)
    sample_problem: str = ""
    cpu: Cpu | None = None

    @property
    def events_s(self) -> float:
        return self.accepted / self.seconds

    @property
    def batches_s(self) -> float:
        return self.batches / self.seconds


@dataclass
class SingleFigures:
    seconds: float
    clients: int
    client_kind: str
    requests: int = 0
    accepted: int = 0
    non_2xx: int = 0
    errors: int = 0
    accepted_total: int = 0
    latencies: list[float] = field(default_factory=list)
    sample_problem: str = ""
    cpu: Cpu | None = None

    @property
    def req_s(self) -> float:
        return self.requests / self.seconds


@dataclass
class CopyFigures:
    target_rows: int
    connections: int
    chunk: int
    rows: int = 0
    elapsed: float = 0.0
    cpu: Cpu | None = None

    @property
    def rows_s(self) -> float:
        return self.rows / self.elapsed if self.elapsed > 0 else 0.0


def latency_text(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    return f"p50 {percentile(ordered, 50) * 1000:.1f} ms, p99 {percentile(ordered, 99) * 1000:.1f} ms"


# ---------------------------------------------------------------------------------------------
# The world the events are about


@dataclass(frozen=True)
class CarerRef:
    id: str
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class VisitRef:
    id: str
    person_id: str
    planned_start: datetime
    home: tuple[float, float]


@dataclass
class World:
    """`rounds[i]` are the past visits of carer i's people (people are dealt out to carers)."""

    tenant_id: str
    provider_id: str
    carers: list[CarerRef]
    visits: list[VisitRef]
    rounds: list[list[VisitRef]]


class _VisitItem(msgspec.Struct):
    id: str
    person_id: str
    planned_start: datetime


class _VisitPage(msgspec.Struct):
    items: list[_VisitItem]
    next_cursor: str | None


class _Result(msgspec.Struct):
    status: str
    errors: list[JsonObject] = []


class _BatchAnswer(msgspec.Struct):
    results: list[_Result]


_PAGE = msgspec.json.Decoder(_VisitPage)
_BATCH_ANSWER = msgspec.json.Decoder(_BatchAnswer)


class Api:
    """Setup calls (not timed)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def call(self, method: str, path: str, token: str | None, body: JsonObject | None = None) -> JsonObject:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.client.request(method, path, json=body, headers=headers)
        if response.status_code not in (200, 201):
            raise BenchError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        result: JsonObject = response.json()
        return result

    async def token(self, client_id: str, client_secret: str) -> str:
        answer = await self.call(
            "POST", "/v1/auth/token", None, {"client_id": client_id, "client_secret": client_secret}
        )
        return str(answer["access_token"])

    async def credential(self, token: str, body: JsonObject) -> tuple[str, str]:
        made = await self.call("POST", "/v1/credentials", token, body)
        return str(made["client_id"]), str(made["client_secret"])


async def seed(api: Api, admin: tuple[str, str], carers: int, people: int) -> World:
    """A tenant, one provider with a contract, carers with credentials, people with daily plans."""
    admin_token = await api.token(*admin)
    tenant = await api.call("POST", "/v1/tenants", admin_token, {"name": "Bench"})
    commissioner = await api.token(
        *await api.credential(admin_token, {"role": "commissioner", "tenant_id": tenant["id"]})
    )
    provider = await api.call("POST", "/v1/providers", commissioner, {"code": "BENCH", "name": "Bench Care"})
    provider_token = await api.token(
        *await api.credential(commissioner, {"role": "provider", "provider_id": provider["id"]})
    )
    contract = await api.call(
        "POST",
        "/v1/contracts",
        commissioner,
        {
            "provider_id": provider["id"],
            "model": "time_and_task",
            "period": "week",
            "rates": RATES,
            "valid_from": "2026-01-01",
        },
    )
    gate = asyncio.Semaphore(8)

    async def make_carer(index: int) -> CarerRef:
        async with gate:
            carer = await api.call("POST", "/v1/carers", provider_token, {"name": f"Carer {index:03d}"})
            client_id, secret = await api.credential(provider_token, {"role": "carer", "carer_id": carer["id"]})
            return CarerRef(str(carer["id"]), client_id, secret)

    valid_from = (datetime.now(tz=UTC).date() - timedelta(days=PLAN_DAYS_BACK)).isoformat()
    homes: dict[str, tuple[float, float]] = {}
    person_index: dict[str, int] = {}

    async def make_person(index: int) -> None:
        async with gate:
            home = (53.70 + index * 0.001, -2.75 + index * 0.001)
            person = await api.call(
                "POST",
                "/v1/people",
                commissioner,
                {
                    "reference": f"B-{index:04d}",
                    "display_name": f"Person {index}",
                    "location": {"lat": home[0], "lon": home[1]},
                },
            )
            homes[str(person["id"])] = home
            person_index[str(person["id"])] = index
            await api.call(
                "POST",
                "/v1/care-plans",
                commissioner,
                {
                    "person_id": person["id"],
                    "contract_id": contract["id"],
                    "weekly_min": 30 * len(SLOTS) * 7,
                    "outcomes": [],
                    "schedule": [
                        {"weekday": day, "start": start, "minutes": 30} for day in range(1, 8) for start in SLOTS
                    ],
                    "valid_from": valid_from,
                },
            )

    carer_refs = await asyncio.gather(*(make_carer(i) for i in range(carers)))
    await asyncio.gather(*(make_person(i) for i in range(people)))
    # Visits that have happened: old enough that a check-out 40 min after the start is in the past.
    now = datetime.now(tz=UTC)
    latest, earliest = now - timedelta(minutes=90), now - timedelta(days=PLAN_DAYS_BACK - 1)
    visits: list[VisitRef] = []
    cursor: str | None = None
    while True:
        params = f"provider_id={provider['id']}&from={valid_from}&to={date.today().isoformat()}&limit=500"
        params += f"&cursor={cursor}" if cursor else ""
        response = await api.client.get(f"/v1/visits?{params}", headers={"Authorization": f"Bearer {commissioner}"})
        if response.status_code != 200:
            raise BenchError(f"GET /v1/visits: {response.status_code} {response.text[:500]}")
        page = _PAGE.decode(response.content)
        visits.extend(
            VisitRef(v.id, v.person_id, v.planned_start, homes[v.person_id])
            for v in page.items
            if earliest <= v.planned_start <= latest
        )
        cursor = page.next_cursor
        if cursor is None:
            break
    if not visits:
        raise BenchError("seeding made no past visits to post events about")
    rounds: list[list[VisitRef]] = [[] for _ in carer_refs]
    for visit in visits:
        rounds[person_index[visit.person_id] % len(rounds)].append(visit)
    for number, round_ in enumerate(rounds):
        random.Random(number).shuffle(round_)
    if not all(rounds):
        raise BenchError("some carer has no visits: seed at least as many people as carers")
    return World(str(tenant["id"]), str(provider["id"]), list(carer_refs), visits, rounds)


async def carer_tokens(api: Api, world: World) -> list[str]:
    """Fresh tokens (they last 15 minutes), one per carer, in carer order."""
    return list(await asyncio.gather(*(api.token(c.client_id, c.client_secret) for c in world.carers)))


# ---------------------------------------------------------------------------------------------
# Events, pre-encoded so the timed loops only splice in fresh event ids


@dataclass(frozen=True)
class EventSpec:
    """Everything about an event but its id: what the phone posts and what the row stores."""

    carer_id: str
    visit: VisitRef
    kind: str
    occurred_at: datetime
    lat: float
    lon: float
    accuracy_m: float
    device_id: str

    def wire(self, event_id: str) -> JsonObject:
        return {
            "event_id": event_id,
            "visit_id": self.visit.id,
            "kind": self.kind,
            "occurred_at": self.occurred_at.isoformat(),
            "method": "gps",
            "location": {"lat": self.lat, "lon": self.lon, "accuracy_m": self.accuracy_m},
            "device_id": self.device_id,
        }

    def row_tail(self, tenant_id: uuid.UUID, provider_id: uuid.UUID) -> tuple[Any, ...]:
        """The COPY row without its first two columns (tenant_id, event_id)."""
        visit_id = uuid.UUID(self.visit.id)
        return (
            uuid.UUID(self.carer_id),
            provider_id,
            uuid.UUID(self.visit.person_id),
            visit_id,
            visit_id,
            self.kind,
            self.occurred_at,
            "gps",
            self.lat,
            self.lon,
            self.accuracy_m,
            None,
            None,
            self.device_id,
            "[]",
            None,
            True,
            secrets.token_hex(32),
        )


def make_events(rng: random.Random, carer: CarerRef, visits: Sequence[VisitRef], count: int) -> list[EventSpec]:
    """A check-in and a check-out on each visit in turn (cycling), near its planned start and the home.

    Few events a visit, as in life: reconciliation reads all of a visit's events, so piling
    hundreds onto a few visits would measure something no phone does."""
    events: list[EventSpec] = []
    turn = 0
    while len(events) < count:
        visit = visits[turn % len(visits)]
        turn += 1
        for kind, offset in (("check_in", rng.uniform(-5, 10)), ("check_out", rng.uniform(25, 40))):
            events.append(
                EventSpec(
                    carer_id=carer.id,
                    visit=visit,
                    kind=kind,
                    occurred_at=visit.planned_start + timedelta(minutes=offset),
                    lat=round(visit.home[0] + rng.uniform(-0.0002, 0.0002), 6),
                    lon=round(visit.home[1] + rng.uniform(-0.0002, 0.0002), 6),
                    accuracy_m=round(rng.uniform(5, 30), 1),
                    device_id=f"bench-{carer.id[-8:]}",
                )
            )
    return events[:count]


class Template:
    """A pre-encoded body with a slot per event id; `render` fills them with new uuid4s."""

    def __init__(self, body: bytes) -> None:
        self.parts = body.split(PLACEHOLDER.encode())
        self.slots = len(self.parts) - 1
        self.length = len(body)

    @classmethod
    def batch(cls, events: Sequence[EventSpec]) -> Template:
        return cls(msgspec.json.encode({"events": [e.wire(PLACEHOLDER) for e in events]}))

    @classmethod
    def single(cls, event: EventSpec) -> Template:
        return cls(msgspec.json.encode(event.wire(PLACEHOLDER)))

    def render(self) -> bytes:
        """The body with a new random (version 4) UUID in each slot: 500 `uuid.uuid4()` cost the
        shared CPU ~3.5 us an event, one `os.urandom` for all of them ~0.5."""
        randoms = os.urandom(16 * self.slots).hex()
        pieces = [self.parts[0]]
        for index, part in enumerate(self.parts[1:]):
            h = randoms[32 * index : 32 * index + 32]
            pieces.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:]}".encode())
            pieces.append(part)
        return b"".join(pieces)


# ---------------------------------------------------------------------------------------------
# A lean HTTP/1.1 keep-alive client for the single-event phase (httpx costs the shared CPU more)


class RawHttp:
    """One keep-alive connection; requests are pre-built bytes; answers are (status, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, payload: bytes) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        reader, writer = self.reader, self.writer
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length: int | None = None
        chunked = close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            body = await self._read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()
            close = True
        if close:
            await self.close()
        return status, body

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def request_head(port: int, path: str, token: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


# ---------------------------------------------------------------------------------------------
# Phases


@dataclass(frozen=True)
class Window:
    """Requests count when they complete in [start, end); nothing starts after end."""

    start: float
    end: float

    @classmethod
    def after(cls, warmup: float, seconds: float) -> Window:
        start = time.perf_counter() + warmup
        return cls(start, start + seconds)


async def bounded(label: str, coroutines: list[Awaitable[None]], limit_s: float) -> None:
    """Run the workers; past the limit they are cancelled, so a stuck server cannot hang us."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    done, pending = await asyncio.wait(tasks, timeout=limit_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        say(f"  {label}: {len(pending)} worker(s) still busy after {limit_s:.0f} s were cancelled")
    for task in done:
        if task.exception() is not None:
            raise BenchError(f"{label} worker failed: {task.exception()!r}")


async def batch_phase(
    port: int, world: World, tokens: list[str], args: argparse.Namespace, meter: CpuMeter
) -> tuple[BatchFigures, list[list[EventSpec]]]:
    figures = BatchFigures(seconds=args.batch_seconds, clients=args.batch_clients, batch_size=args.batch_size)
    rng = random.Random(1)
    specs: list[list[list[EventSpec]]] = []
    templates: list[list[Template]] = []
    size = args.batch_size
    # Each body is one carer's phone uploading a backlog of its own round; a client takes turns
    # among its carers, so all rounds (and so all visits) get events.
    for carer, round_ in zip(world.carers, world.rounds, strict=True):
        count = min(2 * len(round_), MAX_BATCH_EVENTS_PER_CARER)
        events = make_events(rng, carer, round_, math.ceil(count / size) * size)
        mine = [events[i : i + size] for i in range(0, len(events), size)]
        specs.append(mine)
        templates.append([Template.batch(chunk) for chunk in mine])
    headers = [{"Authorization": f"Bearer {token}", "Content-Type": "application/json"} for token in tokens]

    def record(status: int, body: bytes, started: float, finished: float, window: Window) -> None:
        counted = window.start <= finished < window.end
        if status != 200:
            figures.failed_requests += counted
            figures.sample_problem = figures.sample_problem or f"{status} {body[:300]!r}"
            return
        results = _BATCH_ANSWER.decode(body).results
        accepted = sum(1 for r in results if r.status == "accepted")
        figures.accepted_total += accepted
        if not figures.sample_problem:
            refused = next((r for r in results if r.status != "accepted"), None)
            if refused is not None:
                figures.sample_problem = f"{refused.status} {refused.errors}"
        if counted:
            figures.batches += 1
            figures.accepted += accepted
            figures.not_accepted += len(results) - accepted
            figures.latencies.append(finished - started)

    def bodies(worker: int) -> Iterator[tuple[int, Template]]:
        """(carer, body template) in turn: a client takes turns among its carers, each through its round."""
        carers = list(range(worker % len(world.carers), len(world.carers), args.batch_clients))
        for turn in itertools.count():
            carer = carers[turn % len(carers)]
            mine = templates[carer]
            yield carer, mine[(turn // len(carers)) % len(mine)]

    async def raw_client(worker: int, window: Window) -> None:
        http = RawHttp(port)
        try:
            for carer, template in bodies(worker):
                if time.perf_counter() >= window.end:
                    break
                payload = request_head(port, BATCH_PATH, tokens[carer], template.length) + template.render()
                started = time.perf_counter()
                status, body = await http.request(payload)
                record(status, body, started, time.perf_counter(), window)
        finally:
            await http.close()

    async def httpx_client(worker: int, window: Window) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", http1=True, limits=limits, timeout=60) as http:
            for carer, template in bodies(worker):
                if time.perf_counter() >= window.end:
                    break
                body = template.render()
                started = time.perf_counter()
                response = await http.post(BATCH_PATH, content=body, headers=headers[carer])
                record(response.status_code, response.content, started, time.perf_counter(), window)

    window = Window.after(args.warmup, args.batch_seconds)
    meter.start()
    await bounded(
        "batch",
        [(raw_client if args.batch_client == "raw" else httpx_client)(i, window) for i in range(args.batch_clients)],
        args.warmup + args.batch_seconds + 90,
    )
    figures.cpu = meter.stop()
    return figures, [events for mine in specs for events in mine]


async def single_phase(
    port: int, world: World, tokens: list[str], args: argparse.Namespace, meter: CpuMeter
) -> SingleFigures:
    figures = SingleFigures(seconds=args.single_seconds, clients=args.single_clients, client_kind=args.single_client)
    rng = random.Random(2)
    templates: list[list[Template]] = []
    for worker in range(args.single_clients):
        number = worker % len(world.carers)
        round_ = world.rounds[number]
        start = (worker // len(world.carers)) * MAX_SINGLE_EVENTS_PER_CLIENT // 2 % len(round_)
        visits = round_[start:] + round_[:start]  # clients sharing a carer start at different visits
        events = make_events(rng, world.carers[number], visits, min(2 * len(visits), MAX_SINGLE_EVENTS_PER_CLIENT))
        templates.append([Template.single(e) for e in events])

    def record(status: int, body: bytes, started: float, finished: float, window: Window) -> None:
        ok = 200 <= status < 300
        figures.accepted_total += status == 201
        if not ok and not figures.sample_problem:
            figures.sample_problem = f"{status} {body[:300]!r}"
        if window.start <= finished < window.end:
            figures.requests += 1
            figures.accepted += status == 201
            figures.non_2xx += not ok
            figures.latencies.append(finished - started)

    async def raw_client(worker: int, window: Window) -> None:
        token = tokens[worker % len(tokens)]
        mine = templates[worker]
        heads = [request_head(port, SINGLE_PATH, token, t.length) for t in mine]
        http = RawHttp(port)
        turn = 0
        try:
            while time.perf_counter() < window.end:
                index = turn % len(mine)
                turn += 1
                payload = heads[index] + mine[index].render()
                started = time.perf_counter()
                try:
                    status, body = await http.request(payload)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    figures.errors += 1
                    figures.sample_problem = figures.sample_problem or f"transport: {exc!r}"
                    await http.close()
                    continue
                record(status, body, started, time.perf_counter(), window)
        finally:
            await http.close()

    async def httpx_client(worker: int, window: Window) -> None:
        headers = {"Authorization": f"Bearer {tokens[worker % len(tokens)]}", "Content-Type": "application/json"}
        mine = templates[worker]
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits, timeout=30) as http:
            turn = 0
            while time.perf_counter() < window.end:
                body = mine[turn % len(mine)].render()
                turn += 1
                started = time.perf_counter()
                try:
                    response = await http.post(SINGLE_PATH, content=body, headers=headers)
                except httpx.TransportError as exc:
                    figures.errors += 1
                    figures.sample_problem = figures.sample_problem or f"transport: {exc!r}"
                    continue
                record(response.status_code, response.content, started, time.perf_counter(), window)

    run: Callable[[int, Window], Awaitable[None]] = raw_client if args.single_client == "raw" else httpx_client
    window = Window.after(args.warmup, args.single_seconds)
    meter.start()
    await bounded(
        "single",
        [run(i, window) for i in range(args.single_clients)],
        args.warmup + args.single_seconds + 60,
    )
    figures.cpu = meter.stop()
    return figures


async def copy_phase(
    database_url: str,
    world: World,
    specs: list[list[EventSpec]],
    target: int,
    args: argparse.Namespace,
    meter: CpuMeter,
) -> CopyFigures:
    """The same rows the batch phase stored, COPYed straight in: 500 a transaction, as many connections."""
    figures = CopyFigures(target_rows=target, connections=args.batch_clients, chunk=args.batch_size)
    tenant_id, provider_id = uuid.UUID(world.tenant_id), uuid.UUID(world.provider_id)
    tails = [[event.row_tail(tenant_id, provider_id) for event in events] for events in specs]
    claimed = 0
    # Connected before the clock starts (and closed after it stops, so their backends' CPU is seen).
    conns = [await asyncpg.connect(database_url) for _ in range(args.batch_clients)]

    async def worker(index: int, deadline: float) -> None:
        nonlocal claimed
        conn, turn = conns[index], index
        while claimed < target and time.perf_counter() < deadline:
            chunk = tails[turn % len(tails)][: min(args.batch_size, target - claimed)]
            claimed += len(chunk)
            turn += 1
            records = [(tenant_id, uuid.uuid4(), *tail) for tail in chunk]
            async with conn.transaction():
                await conn.copy_records_to_table("visit_events", records=records, columns=COPY_COLUMNS)
            figures.rows += len(records)

    try:
        meter.start()
        started = time.perf_counter()
        deadline = started + args.copy_seconds
        await bounded("copy", [worker(i, deadline) for i in range(len(conns))], args.copy_seconds + 60)
        figures.elapsed = time.perf_counter() - started
        figures.cpu = meter.stop()
    finally:
        for conn in conns:
            await conn.close()
    return figures


async def settle(database_url: str, limit_s: float) -> str:
    """Wait (bounded) for the server's reconciliation queue to drain, so one phase's leftovers do
    not slow the next; says how big it was and how long it took."""
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("SELECT to_regclass('reconcile_queue')") is None:
            return "reconcile queue: none in this schema"
        started = time.perf_counter()
        waiting = first = int(await conn.fetchval("SELECT count(DISTINCT visit_id) FROM reconcile_queue"))
        while waiting and time.perf_counter() - started < limit_s:
            await asyncio.sleep(0.5)
            waiting = int(await conn.fetchval("SELECT count(DISTINCT visit_id) FROM reconcile_queue"))
    finally:
        await conn.close()
    took = time.perf_counter() - started
    if waiting:
        return f"reconcile queue: {first:,} visits waiting at the end; still {waiting:,} after {took:.0f} s (gave up)"
    return f"reconcile queue: {first:,} visits waiting at the end; drained {took:.1f} s later (not timed)"


# ---------------------------------------------------------------------------------------------
# Database and server


def database_urls(admin_url: str, name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise BenchError(f"--bench-db must be a plain lower-case identifier, not {name!r}")
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def recreate_database(admin_url: str, name: str, *, create: bool) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_env(database_url: str, redis_url: str, data_dir: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CAREBANK_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CAREBANK_ENV="development",
        CAREBANK_DATA_DIR=data_dir,
        CAREBANK_JWT_SECRET=secrets.token_urlsafe(48),
        CAREBANK_ARGON2_PROFILE="CHEAPEST",
        CAREBANK_AUTH_RATE_LIMIT_PER_MINUTE="100000",
        CAREBANK_LOG_LEVEL="WARNING",
        CAREBANK_REDIS_NAMESPACE=f"carebank-bench-{secrets.token_hex(4)}",
    )
    # Passed through so a run can compare the API reconciling in the background or not.
    if "CAREBANK_RECONCILE_IN_API" in os.environ:
        env["CAREBANK_RECONCILE_IN_API"] = os.environ["CAREBANK_RECONCILE_IN_API"]
    return env


class Server:
    """`python -m services.cli serve` as a child process, stopped with SIGINT (then SIGKILL)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path, workers: int = 1) -> None:
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("wb")
        command = ["serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *command],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, limit_s: float = 90) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://{HOST}:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise BenchError(f"server not ready after {limit_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


def admin_credential(env: dict[str, str]) -> tuple[str, str]:
    made = subprocess.run(
        [sys.executable, "-m", "services.cli", "credentials", "create", "--role", "admin"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if made.returncode != 0:
        raise BenchError(f"credentials create failed: {made.stderr[-2000:]}")
    created = msgspec.json.decode(made.stdout.strip().splitlines()[-1])
    return str(created["client_id"]), str(created["client_secret"])


# ---------------------------------------------------------------------------------------------
# The run


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


async def run(server: Server, database_url: str, admin: tuple[str, str], args: argparse.Namespace) -> int:
    meter = CpuMeter(server.process.pid)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=60) as client:
        api = Api(client)
        conn = await asyncpg.connect(database_url)
        try:
            settings = {
                name: await conn.fetchval(f"SHOW {name}") for name in ("synchronous_commit", "fsync", "server_version")
            }
        finally:
            await conn.close()
        say(
            f"machine: {os.cpu_count()} cores, loopback {HOST}; python {sys.version.split()[0]}; "
            f"postgres {settings['server_version']} (synchronous_commit={settings['synchronous_commit']}, "
            f"fsync={settings['fsync']}); server pid {server.process.pid} on port {server.port}, "
            f"{args.server_workers} server process(es)"
        )
        started = time.perf_counter()
        world = await seed(api, admin, args.carers, args.people)
        say(
            f"seeded in {time.perf_counter() - started:.1f} s: {len(world.carers)} carers, {args.people} people, "
            f"{len(world.visits)} past visits (last {PLAN_DAYS_BACK} days); each carer's round: "
            f"{args.people // len(world.carers)} people, {len(world.visits) // len(world.carers)} visits"
        )

        say(
            f"\n[1/3] batch: {args.batch_clients} clients ({args.batch_client}, keep-alive) "
            f"x {args.batch_size} events, "
            f"{args.warmup:.0f} s warm-up + {args.batch_seconds:.0f} s"
        )
        batch, specs = await batch_phase(server.port, world, await carer_tokens(api, world), args, meter)
        assert batch.cpu is not None
        say(
            f"  {batch.accepted:,} events accepted in {batch.batches:,} batches -> {batch.events_s:,.0f} events/s, "
            f"{batch.batches_s:.1f} batches/s; batch latency {latency_text(batch.latencies)}; "
            f"not accepted {batch.not_accepted}, failed requests {batch.failed_requests}"
        )
        say(f"  {batch.cpu.line()}")
        if batch.sample_problem:
            say(f"  first problem: {batch.sample_problem}")
        say(f"  {await settle(database_url, args.settle_seconds)}")

        say(
            f"\n[2/3] single: {args.single_clients} clients ({args.single_client}, keep-alive), "
            f"{args.warmup:.0f} s warm-up + {args.single_seconds:.0f} s"
        )
        single = await single_phase(server.port, world, await carer_tokens(api, world), args, meter)
        assert single.cpu is not None
        say(
            f"  {single.requests:,} requests -> {single.req_s:,.0f} req/s; latency {latency_text(single.latencies)}; "
            f"non-2xx {single.non_2xx}, transport errors {single.errors}"
        )
        say(f"  {single.cpu.line()}")
        if single.sample_problem:
            say(f"  first problem: {single.sample_problem}")
        say(f"  {await settle(database_url, args.settle_seconds)}")

    target = batch.accepted or 100_000
    say(
        f"\n[3/3] raw COPY: {target:,} rows (as many as the batch phase accepted), {args.batch_clients} connections, "
        f"{args.batch_size} rows a transaction, at most {args.copy_seconds:.0f} s"
    )
    copied = await copy_phase(database_url, world, specs, target, args, meter)
    assert copied.cpu is not None
    share = 100 * batch.events_s / copied.rows_s if copied.rows_s else 0.0
    say(f"  {copied.rows:,} rows in {copied.elapsed:.1f} s -> {copied.rows_s:,.0f} rows/s")
    say(f"  {copied.cpu.line()}")
    say(f"  our batch rate is {share:.1f}% of raw COPY")

    conn = await asyncpg.connect(database_url)
    try:
        stored = int(await conn.fetchval("SELECT count(*) FROM visit_events"))
    finally:
        await conn.close()
    answered = batch.accepted_total + single.accepted_total + copied.rows

    ordered_single = sorted(single.latencies)
    p99_single = percentile(ordered_single, 99) * 1000
    say("\n==================== carebank ingest benchmark ====================")
    say(
        f"batch   {batch.events_s:>10,.0f} events/s  ({batch.batches_s:.1f} batches/s of {args.batch_size}, "
        f"{args.batch_clients} clients, {args.batch_seconds:.0f} s; latency {latency_text(batch.latencies)})"
    )
    say(
        f"single  {single.req_s:>10,.0f} req/s     ({args.single_clients} clients, {args.single_seconds:.0f} s; "
        f"latency {latency_text(single.latencies)}; non-2xx {single.non_2xx}, errors {single.errors})"
    )
    say(
        f"COPY    {copied.rows_s:>10,.0f} rows/s    ({copied.rows:,} rows, {args.batch_clients} connections, "
        f"{args.batch_size} rows/txn)"
    )
    say(f"share   our batch rate is {share:.1f}% of raw COPY")
    say(
        f"rows    {stored:,} in visit_events; {answered:,} answered accepted or copied"
        f"{'' if stored == answered else '  <-- MISMATCH'}"
    )
    say(
        f"target  batch >= {TARGET_BATCH_EVENTS_S:,} events/s durable: "
        f"{verdict(batch.events_s >= TARGET_BATCH_EVENTS_S)}"
    )
    single_met = single.req_s >= TARGET_SINGLE_REQ_S and p99_single <= TARGET_SINGLE_P99_MS and single.non_2xx == 0
    say(
        f"target  single >= {TARGET_SINGLE_REQ_S:,} req/s with p99 <= {TARGET_SINGLE_P99_MS:.0f} ms: "
        f"{verdict(single_met)}"
    )
    say("===================================================================")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a URL with rights to create and drop the bench database",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--bench-db", default="carebank_bench", help="dropped and recreated, dropped again at the end")
    parser.add_argument("--quick", action="store_true", help="10 s per phase, 1 s warm-up: a smoke run")
    parser.add_argument("--batch-seconds", type=float, default=60)
    parser.add_argument("--single-seconds", type=float, default=30)
    parser.add_argument("--copy-seconds", type=float, default=60, help="upper bound on the COPY phase")
    parser.add_argument(
        "--settle-seconds", type=float, default=60, help="longest wait for the reconcile queue between phases"
    )
    parser.add_argument("--warmup", type=float, default=3, help="seconds before each timed window, not counted")
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--single-clients", type=int, default=50)
    parser.add_argument(
        "--single-client",
        choices=["raw", "httpx"],
        default="raw",
        help="raw: a minimal pre-encoded HTTP/1.1 client (default, lighter on the shared CPU)",
    )
    parser.add_argument(
        "--batch-client",
        choices=["raw", "httpx"],
        default="raw",
        help="raw: the single phase's minimal HTTP/1.1 client (default; lighter on the shared CPU than httpx)",
    )
    parser.add_argument(
        "--server-workers", type=int, default=1, help="`carebank serve --workers`: server processes sharing the port"
    )
    parser.add_argument("--carers", type=int, default=20)
    parser.add_argument("--people", type=int, default=500, help=f"each with {len(SLOTS)} visits a day")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_seconds = args.single_seconds = args.copy_seconds = 10.0
        args.warmup = 1.0
        args.settle_seconds = 15.0
    if not 1 <= args.batch_size <= 500:
        parser.error("--batch-size must be 1 to 500")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench_url = database_urls(args.database_url, args.bench_db)
    for url in (args.database_url, args.redis_url):
        host = urlsplit(url).hostname
        if host not in (HOST, "localhost"):
            raise SystemExit(f"benchmark traffic stays on loopback; {url!r} is not on {HOST}")
    server: Server | None = None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="carebank-bench-") as scratch:
        try:
            asyncio.run(recreate_database(args.database_url, args.bench_db, create=True))
            env = server_env(bench_url, args.redis_url, str(Path(scratch) / "data"))
            server = Server(env, free_port(), Path(scratch) / "server.log", args.server_workers)
            server.wait_ready()
            return asyncio.run(run(server, bench_url, admin_credential(env), args))
        except BenchError as exc:
            say(f"benchmark failed: {exc}")
            return 1
        finally:
            if server is not None:
                code = server.stop()
                tail = server.log_tail(10)
                say(f"\nserver stopped (exit {code}) after {time.perf_counter() - started:.0f} s total")
                if tail.strip():
                    say(f"last server log lines:\n{tail}")
            asyncio.run(recreate_database(args.database_url, args.bench_db, create=False))


if __name__ == "__main__":
    raise SystemExit(main())
