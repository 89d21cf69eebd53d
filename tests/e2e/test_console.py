"""The console in a real browser: Debian's headless Chromium driven by Playwright against a real
server on a free port. Data is seeded through the API; then each role signs in and sees its own rows
and only them, a live alert arrives while the board is open and is acknowledged, a provider proposes
an amendment that the commissioner approves, a transfer is requested and approved, an invoice is
opened, downloaded as CSV and marked paid. Every page is saved as a screenshot under
test-artifacts/console/."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import uvicorn

from infra.redis import create_redis
from infra.settings import Settings
from services.app import create_app
from services.monitoring import jobs
from services.monitoring.live import AlertPublisher
from tests.e2e.test_serve import free_port
from tests.integration.test_banking import Bank, local, make_bank
from tests.support import Client, create, reconciled

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
ZONE = "Europe/London"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from Debian's package (browser downloads do not work here)."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: `apt-get install -y chromium` (.ci/run does it when it can)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - a dev install has it
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    """The whole app served by uvicorn on 127.0.0.1 in this test's loop, against the test database."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)


def events(visit_id: str, check_in: datetime, minutes: float | None, *, planned: bool = False) -> list[dict[str, Any]]:
    """A carer's check-in (and check-out after `minutes`, unless None), entered by hand; on a visit of
    the plan the outcome is met."""
    made: list[dict[str, Any]] = [
        {
            "event_id": str(uuid4()),
            "visit_id": visit_id,
            "kind": "check_in",
            "occurred_at": check_in.isoformat(),
            "method": "manual",
            "device_id": "e2e",
        }
    ]
    if minutes is not None:
        made.append({**made[0], "event_id": str(uuid4()), "kind": "check_out"})
        made[1]["occurred_at"] = (check_in + timedelta(minutes=minutes)).isoformat()
        if planned:
            made[1]["outcomes"] = [{"outcome_id": "wash", "status": "met"}]
    return made


@dataclass
class Seeded:
    bank: Bank
    commissioner: dict[str, str]
    providers: list[dict[str, str]]
    forgot_visit: str
    forgot_check_in: datetime
    alert_visit: str
    alert_start: datetime


async def seed(client: Client, pool: asyncpg.Pool, db: asyncpg.Connection) -> Seeded:
    """Provider 0 of tenant A: banked minutes for two people, a visit with a forgotten check-out and a
    fully attended one in a settled week, a carer on site now, and a visit about to be late."""
    bank = await make_bank(client, db, expiry_weeks=6)  # lots run out within 28 days of today
    tw, monday = bank.tw, bank.monday
    carer = tw.carer_headers[0]

    async def send(batch: list[dict[str, Any]]) -> None:
        response = await client.post("/v1/visit-events/batch", json={"events": batch}, headers=carer)
        assert {r["status"] for r in response.json()["results"]} == {"accepted"}, response.text

    async def one_off(person: str, start: datetime) -> str:
        body = {"person_id": person, "contract_id": tw.contracts[0], "planned_start": start.isoformat()}
        return str((await create(client, tw.commissioner, "/v1/visits", {**body, "planned_min": 30}))["id"])

    await send(events(await bank.visit_on(0, monday), local(monday, "08:00"), 20, planned=True))  # A banks 25
    await send(events(await bank.visit_on(1, monday), local(monday, "10:00"), 30, planned=True))  # B banks 15
    wednesday, thursday = monday + timedelta(days=2), monday + timedelta(days=3)
    forgot_check_in = local(wednesday, "14:00")
    forgot = await one_off(tw.person_id, forgot_check_in)
    await send(events(forgot, forgot_check_in, None))
    attended = await one_off(tw.person_id, local(thursday, "09:00"))
    await send(events(attended, local(thursday, "09:00"), 30))
    now = datetime.now(tz=UTC)
    on_site = await one_off(bank.people[1], now - timedelta(minutes=10))
    await send(events(on_site, now - timedelta(minutes=5), None))
    alert_start = now + timedelta(minutes=1)
    alert_visit = await one_off(tw.person_id, alert_start)
    await reconciled(pool)

    async def credential(body: dict[str, Any]) -> dict[str, str]:
        made = await create(client, tw.commissioner, "/v1/credentials", {"tenant_id": tw.tenant_id, **body})
        return {"client_id": made["client_id"], "client_secret": made["client_secret"]}

    return Seeded(
        bank=bank,
        commissioner=await credential({"role": "commissioner"}),
        providers=[await credential({"role": "provider", "provider_id": p}) for p in tw.providers],
        forgot_visit=forgot,
        forgot_check_in=forgot_check_in,
        alert_visit=alert_visit,
        alert_start=alert_start,
    )


class Shots:
    """Numbered full-page screenshots, one per page visited."""

    def __init__(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob("*.png"):
            old.unlink()
        self.taken = 0

    async def __call__(self, page: Page, name: str) -> None:
        self.taken += 1
        await page.screenshot(path=str(ARTIFACTS / f"{self.taken:02d}-{name}.png"), full_page=True)


async def signed_in(browser: Browser, base_url: str, credential: dict[str, str]) -> tuple[BrowserContext, Page]:
    """A fresh browser profile (its own cookies), signed in through the form with the keyboard."""
    context = await browser.new_context(
        base_url=base_url, timezone_id=ZONE, viewport={"width": 1200, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(10_000)
    page = await context.new_page()
    await page.goto("/console/sign-in")
    await page.get_by_label("Client id").fill(credential["client_id"])
    await page.keyboard.press("Tab")
    await page.keyboard.type(credential["client_secret"])
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/console/live")
    return context, page


async def nav(page: Page, name: str) -> None:
    """Follow a link of the console's navigation."""
    async with page.expect_navigation():
        await page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()


async def unlabelled(page: Page) -> list[str]:
    """Form controls with no label a screen reader would read."""
    found: list[str] = await page.evaluate(
        "[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        ".filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.name || e.id)"
    )
    return found


async def text_of(page: Page, selector: str = "main") -> str:
    return await page.locator(selector).inner_text()


async def test_the_console_in_chromium(
    browser: Browser,
    base_url: str,
    client: Client,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    settings: Settings,
) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout  # the browser fixture made sure it imports

    shots = Shots()
    seeded = await seed(client, pool, db)
    tw = seeded.bank.tw
    person_a, person_b = seeded.bank.people

    # -- anonymous: the sign-in page; a wrong secret stays on it --------------------------------------
    context = await browser.new_context(base_url=base_url, timezone_id=ZONE)
    page = await context.new_page()
    await page.goto("/console/live")
    assert page.url.endswith("/console/sign-in")
    await shots(page, "sign-in")
    assert await unlabelled(page) == []
    await page.get_by_label("Client id").fill(seeded.commissioner["client_id"])
    await page.get_by_label("Secret").fill("not the secret")
    await page.get_by_role("button", name="Sign in").click()
    assert "Unknown client id or wrong secret" in await text_of(page)
    await context.close()

    # -- provider 0: its carer on site, a forgotten check-out amended, a transfer requested -----------
    context, page = await signed_in(browser, base_url, seeded.providers[0])
    board = await text_of(page, "#on-site")
    assert "Carer 0" in board
    assert "Reports" not in await text_of(page, "nav")
    await shots(page, "live-provider")
    await nav(page, "Exceptions")
    await page.locator(f'a[href="/console/visits/{seeded.forgot_visit}/amend"]').click()
    await shots(page, "amend-form")
    assert await unlabelled(page) == []
    await page.get_by_label("Reason").select_option("forgot_check_out")
    check_out = (seeded.forgot_check_in + timedelta(minutes=30)).astimezone(ZoneInfo(ZONE))
    await page.get_by_label("Check out at").fill(check_out.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_role("button", name="Propose").click()
    assert "Amendment proposed: it waits for a commissioner." in await text_of(page, ".notice")
    pending = page.locator("#pending-amendments tbody tr")
    assert await pending.count() == 1
    assert "waiting for the commissioner" in await pending.inner_text()
    await shots(page, "exceptions-provider")
    await nav(page, "Bank")
    await page.get_by_label("Person", exact=True).select_option(person_a)
    await page.get_by_role("button", name="Show").click()
    assert "25 min" in await text_of(page, "#person-bank")
    await page.get_by_label("From").select_option(person_a)
    await page.get_by_label("To").select_option(person_b)
    await page.get_by_label("Minutes").fill("10")
    await page.get_by_label("Review reference").fill("REV-7")
    await page.get_by_role("button", name="Request transfer").click()
    assert await text_of(page, "#transfer-status") == "pending"
    transfer_id = page.url.split("/transfers/")[1].split("?")[0]
    await shots(page, "transfer-requested")
    await context.close()

    # -- the commissioner: a live alert acknowledged, the amendment and the transfer approved ---------
    context, page = await signed_in(browser, base_url, seeded.commissioner)
    board = await text_of(page, "#on-site")
    assert "Carer 0" in board
    assert "P-B" in board
    await page.wait_for_selector("table[data-connected=yes]", state="attached")
    redis = create_redis(settings.redis_url or "")
    try:
        raised, _ = await jobs.evaluate_alerts(pool, seeded.alert_start + timedelta(minutes=15))
        assert [(a.kind, str(a.visit_id)) for _, a in raised] == [("late", seeded.alert_visit)]
        [(_, alert)] = raised
        row = page.locator(f'tr[data-alert-id="{alert.id}"]')
        publisher = AlertPublisher(redis, settings.redis_namespace)
        for _ in range(20):  # the stream may still be subscribing: publishing again is harmless
            await publisher.publish(raised)
            try:
                await row.wait_for(timeout=500)
                break
            except PlaywrightTimeout:
                continue
        arrived = await row.inner_text()
        assert "late" in arrived.lower()
        assert "P-A" in arrived  # named like the rows drawn by the server
        assert "New alert: late" in await text_of(page, "#live-status")
    finally:
        await redis.aclose()
    await shots(page, "live-alert-arrived")
    await row.get_by_role("button", name="Acknowledge").click()
    assert "Alert acknowledged." in await text_of(page, ".notice")
    assert await page.locator(f'tr[data-alert-id="{alert.id}"]').count() == 0
    shown = await client.get("/v1/alerts", params={"status": "acknowledged"}, headers=tw.commissioner)
    assert [a["id"] for a in shown.json()["items"]] == [str(alert.id)]
    await shots(page, "live-commissioner")

    await nav(page, "Exceptions")
    await page.locator("#pending-amendments").get_by_role("button", name="Approve").click()
    assert "Amendment approved." in await text_of(page, ".notice")
    assert "approved" in await text_of(page, "#decided-amendments")
    visit = (await client.get(f"/v1/visits/{seeded.forgot_visit}", headers=tw.commissioner)).json()
    assert visit["actual"]["payable_min"] == 30
    await shots(page, "exceptions-commissioner")

    await nav(page, "Bank")
    await page.get_by_label("Open a transfer by id").fill(transfer_id)
    await page.get_by_role("button", name="Open").click()
    await page.get_by_role("button", name="Approve transfer").click()
    assert await text_of(page, "#transfer-status") == "approved"
    await shots(page, "transfer-approved")
    await page.get_by_role("link", name="The giver's bank").click()
    assert "15 min" in await text_of(page, "#person-bank")  # 25 banked, 10 given
    assert "P-A" in await text_of(page, "#person-h")
    await shots(page, "bank-person")
    await page.get_by_label("As of", exact=True).fill((seeded.bank.monday - timedelta(days=1)).isoformat())
    await page.get_by_role("button", name="Show").click()
    assert "0 min" in await text_of(page, "#person-bank")  # nothing banked before that week
    assert await page.locator("#expiring tbody tr").count() >= 1
    await shots(page, "bank-as-of")

    run = await client.post(
        "/v1/invoice-runs",
        json={"contract_id": tw.contracts[0], "period_start": seeded.bank.monday.isoformat()},
        headers=tw.commissioner,
    )
    assert run.status_code == 201, run.text
    invoice = run.json()
    await nav(page, "Invoices")
    await shots(page, "invoices")
    await page.get_by_role("link", name=invoice["number"]).click()
    async with page.expect_download() as downloading:
        await page.get_by_role("link", name="Download CSV").click()
    download = await downloading.value
    saved = ARTIFACTS / download.suggested_filename
    await download.save_as(str(saved))
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert {r["invoice_number"] for r in rows} == {invoice["number"]}
    assert sorted(r["visit_id"] for r in rows) == sorted(str(line["visit_id"]) for line in invoice["lines"])
    assert seeded.forgot_visit in {r["visit_id"] for r in rows}  # the amended visit is billed
    await page.get_by_label("Reference").fill("BACS 0042")
    await page.get_by_role("button", name="Mark paid").click()
    assert "Payment recorded." in await text_of(page, ".notice")
    assert await text_of(page, "#invoice-status") == "paid"
    await shots(page, "invoice-paid")

    await nav(page, "Reports")
    assert await page.locator("svg.chart").count() >= 3
    assert "P0" in await text_of(page, "#delivery")
    assert await page.locator("#outcomes tbody tr").count() >= 1
    if await page.locator("#bank-figures").count():  # the reports carry the bank once banking fills it
        assert "P0" in await text_of(page, "#bank-figures")
    await shots(page, "reports")

    await page.set_viewport_size({"width": 375, "height": 800})
    for name in ("Bank", "Invoices", "Exceptions", "Reports", "Live board"):
        await nav(page, name)
        width = await page.evaluate("document.documentElement.scrollWidth")
        wide = await page.evaluate(
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 376)"
            ".map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right))"
            ".slice(0, 12)"
        )
        assert width <= 375, f"{name} scrolls sideways on a phone ({width}px): {wide}"  # tables scroll in their own box
    await shots(page, "live-phone")
    await context.close()

    # -- provider 1: none of provider 0's rows anywhere ------------------------------------------------
    context, page = await signed_in(browser, base_url, seeded.providers[1])
    assert await page.locator("#on-site").count() == 0
    assert "Nobody is checked in now." in await text_of(page)
    assert await page.locator("#alerts tbody tr").count() == 0
    await shots(page, "live-other-provider")
    await nav(page, "Invoices")
    assert "No invoices yet." in await text_of(page)
    await nav(page, "Exceptions")
    assert seeded.forgot_visit not in await page.content()
    assert "None waiting." in await text_of(page)
    await nav(page, "Bank")
    assert await page.locator("#person_id option").count() == 1  # "(the summary only)"
    await page.goto(f"/console/invoices/{invoice['id']}")
    assert "no such invoice" in await text_of(page)
    await shots(page, "not-found-other-provider")
    await page.goto("/console/reports")
    assert "Not allowed" in await text_of(page, "h1")
    await context.close()

    # -- provider 0 again: its invoice, paid --------------------------------------------------------
    context, page = await signed_in(browser, base_url, seeded.providers[0])
    await nav(page, "Invoices")
    assert invoice["number"] in await text_of(page, "#invoices")
    assert "paid" in await text_of(page, "#invoices")
    await shots(page, "invoices-provider")
    await context.close()
    assert shots.taken >= 15
