"""`carebank demo --people 20 --weeks 1` as a real process, its figures checked against the reports API,
the invoices and the rows it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from infra.settings import Settings
from tests.support import Client, admin_headers, credential_headers

pytestmark = pytest.mark.e2e
LONDON = ZoneInfo("Europe/London")


async def test_a_small_demo_agrees_with_the_reports_and_the_invoices(
    settings: Settings, client: Client, db: asyncpg.Connection, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBANK_")}
    env.update(
        DATABASE_URL=settings.database_url or "",
        REDIS_URL=settings.redis_url or "",
        CAREBANK_JWT_SECRET=settings.jwt_secret or "",
        CAREBANK_DATA_DIR=str(tmp_path / "data"),
    )
    out, report = tmp_path / "demo.json", tmp_path / "demo-report.html"
    command = [sys.executable, "-m", "services.cli", "demo", "--people", "20", "--weeks", "1", "--seed", "7"]
    done = subprocess.run(
        [*command, "--json", str(out), "--report", str(report)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Saving" in done.stdout
    assert "Punctual" in done.stdout
    result = json.loads(out.read_text())
    tally = result["tally"]

    # The reports, asked afresh by another commissioner of the demo's tenant.
    admin = await admin_headers(client, db)
    commissioner = await credential_headers(client, admin, {"role": "commissioner", "tenant_id": result["tenant_id"]})
    span = {"from": result["from"], "to": result["to"]}
    delivery = (await client.get("/v1/reports/delivery", params=span, headers=commissioner)).json()
    assert delivery["totals"] == result["delivery"]["totals"]
    totals = delivery["totals"]

    tenant = result["tenant_id"]
    first, last = date.fromisoformat(result["from"]), date.fromisoformat(result["to"])
    starts = datetime.combine(first, time(), tzinfo=LONDON)
    ends = datetime.combine(date.fromordinal(last.toordinal() + 1), time(), tzinfo=LONDON)
    in_range = "tenant_id = $1 AND planned_start >= $2 AND planned_start < $3"
    # every visit the phones skipped is missed, every other one delivered; nothing is left open
    planned = await db.fetchval(f"SELECT count(*) FROM visits WHERE {in_range}", tenant, starts, ends)  # noqa: S608
    assert totals["visits_planned"] == planned > 100
    assert totals["visits_missed"] == tally["missed_by_phones"]
    assert totals["visits_delivered"] + totals["visits_missed"] == planned
    assert totals["visits_open"] == 0
    # every event the phones sent was accepted once; the retries came back as duplicates
    events = await db.fetchval("SELECT count(*) FROM visit_events WHERE tenant_id = $1", tenant)
    assert events == tally["events_sent"] - tally["duplicates"]
    assert tally["duplicates"] > 0
    amendments = await db.fetchval(
        "SELECT count(*) FROM amendments WHERE tenant_id = $1 AND status = 'approved'", tenant
    )
    assert amendments == tally["amendments"] + tally["late_amendments"]
    # the range is fully invoiced: paid cost is the sum of the matching invoice lines
    paid = await db.fetchval(
        """SELECT coalesce(sum(l.amount_pence), 0) FROM invoice_lines l JOIN visits v
               ON v.tenant_id = l.tenant_id AND v.id = l.visit_id
            WHERE l.tenant_id = $1 AND l.kind IN ('visit', 'adjustment')
              AND v.planned_start >= $2 AND v.planned_start < $3""",
        tenant,
        starts,
        ends,
    )
    assert totals["cost_paid_pence"] == paid > 0
    assert totals["not_invoiced_pence"] == 0
    assert totals["cost_planned_pence"] - totals["saving_pence"] <= totals["cost_paid_pence"]
    assert 0 < totals["punctuality"] < 1
    assert 0 < totals["verified_in_home_share"] < 1

    page = report.read_text()
    assert page.startswith("<!doctype html>")
    assert "<svg" in page
    assert "<script" not in page
    assert "src=" not in page
    assert "<link" not in page
