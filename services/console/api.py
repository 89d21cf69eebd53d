"""Console HTTP: server-rendered pages for commissioners and providers, and the forms they post.

Pages read and write only through this app's own JSON API, called in-process as the signed-in
user (services/console/client.py), so each page shows and does exactly what the API allows that
user. Sign-in puts the JWT in an HttpOnly, SameSite=Strict cookie; every form carries the CSRF
token (services/console/csrf.py).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, get_args
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo, available_timezones

import msgspec
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from litestar import Controller, Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException
from litestar.params import PathParameter, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.utils.scope.state import ScopeState

from schemas.banking import BankSummary, PersonBank, Posting, Transfer
from schemas.billing import Invoice, InvoiceSummary, Payment
from schemas.catalog import Carer, Person, Provider
from schemas.common import Page
from schemas.identity import Role, TokenResponse
from schemas.monitoring import Alert, LiveBoard
from schemas.planning import Visit
from schemas.reconcile import Amendment, ReasonCode, VisitExceptions
from schemas.reports import DeliveryReport, OutcomesReport
from services.common.auth import Principal, allow
from services.console import charts
from services.console.client import Api, ApiError
from services.console.csrf import AUTH_COOKIE

Req = Request[Any, Any, Any]

HERE = Path(__file__).parent
TZ_COOKIE = "carebank_tz"
DEFAULT_ZONE = "Europe/London"
REASONS: tuple[str, ...] = get_args(ReasonCode)
LIST_LIMIT = 200  # rows of a list that needs acting on, oldest first
RECENT = 20  # decided amendments shown, newest first
NOTICES = {
    "acknowledged": "Alert acknowledged.",
    "proposed": "Amendment proposed: it waits for a commissioner.",
    "auto-approved": "Amendment approved by itself: it does not raise pay.",
    "approved": "Amendment approved.",
    "rejected": "Amendment rejected.",
    "paid": "Payment recorded.",
    "transfer-approved": "Transfer approved.",
    "transfer-rejected": "Transfer rejected.",
    "requested": "Transfer requested: it waits for a commissioner.",
    "signed-out": "You are signed out.",
}
# Pages load only their own scripts, styles and stream, and are never framed (clickjacking).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
CONSOLE_ROLES: tuple[Role, ...] = ("commissioner", "provider")
_ZONES = frozenset(available_timezones())


# --- formatting, shared by every template ---------------------------------------------------


def _pounds(pence: int | None) -> str:
    if pence is None:
        return ""
    sign = "-" if pence < 0 else ""
    return f"{sign}£{abs(pence) / 100:,.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _short(value: UUID | str | None) -> str:
    return "" if value is None else str(value)[-8:]


@pass_context
def _local(context: Context, value: datetime | None, fmt: str = "%a %d %b %Y %H:%M") -> str:
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(context.get("tz", DEFAULT_ZONE))).strftime(fmt)


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja2 over templates/, autoescaped, strict about undefined names."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined)
    env.filters.update(pounds=_pounds, share=_share, short=_short, local=_local)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


# --- the request's user, zone and API ---------------------------------------------------------


def _principal(request: Req) -> Principal | None:
    user = request.scope.get("user")
    return user if isinstance(user, Principal) else None


def _caller(request: Req) -> Principal:
    user = _principal(request)
    assert user is not None  # the JWT middleware ran: console pages are not excluded from auth
    return user


def _token(request: Req) -> str | None:
    """The JWT the request authenticated with, as the JWT middleware read it (header first)."""
    header = request.headers.get("authorization", "").partition(" ")[-1]
    return header or request.cookies.get(AUTH_COOKIE, "").split(" ")[-1] or None


def _api(request: Req) -> Api:
    return Api(request, _token(request))


def _zone_name(request: Req) -> str:
    name = request.cookies.get(TZ_COOKIE, DEFAULT_ZONE)
    return name if name in _ZONES else DEFAULT_ZONE


def _zone(request: Req) -> ZoneInfo:
    return ZoneInfo(_zone_name(request))


def _nav(user: Principal | None) -> list[tuple[str, str]]:
    if user is None or user.role not in CONSOLE_ROLES:
        return []
    items = [
        ("/console/live", "Live board"),
        ("/console/exceptions", "Exceptions"),
        ("/console/invoices", "Invoices"),
        ("/console/bank", "Bank"),
    ]
    if user.role == "commissioner":
        items.append(("/console/reports", "Reports"))
    return items


def page(request: Req, name: str, title: str, status: int = 200, **context: Any) -> Template:
    """A page: the template with who is signed in, the navigation, the zone and the CSRF token."""
    user = _principal(request)
    notice = NOTICES.get(request.query_params.get("done", ""), "")
    return Template(
        template_name=name,
        context={
            "title": title,
            "user": user,
            "nav": _nav(user),
            "path": request.url.path,
            "tz": _zone_name(request),
            "csrf": ScopeState.from_scope(request.scope).csrf_token or "",
            "notice": notice,
            # Sent back by creating forms as the API's Idempotency-Key: a form posted twice creates once.
            "form_key": uuid4().hex,
            **context,
        },
        status_code=status,
        headers=PAGE_HEADERS,
    )


async def _form(request: Req) -> dict[str, str]:
    """The posted form (the CSRF middleware already read and checked it), one value per field."""
    form = await request.form()
    return {key: str(value) for key, value in form.items()}


def _back(path: str, done: str) -> Redirect:
    return Redirect(f"{path}?done={done}", status_code=303)


def _local_instant(value: str, zone: ZoneInfo, field: str) -> datetime | None:
    """A `datetime-local` field read in the user's zone."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=zone)
    except ValueError:
        raise ApiError(422, f"{field}: not a date and time") from None


def _int(value: str, field: str) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(422, f"{field}: not a whole number") from None


def _pence(value: str, field: str) -> int:
    try:
        return int((Decimal(value.replace("£", "").replace(",", "").strip()) * 100).to_integral_value())
    except InvalidOperation:
        raise ApiError(422, f"{field}: not an amount of money") from None


def _date(value: str | None, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(422, "not a date (YYYY-MM-DD)") from None


class Directory(msgspec.Struct):
    """Names for ids, as far as the caller's role may read them (providers may not list people)."""

    people: dict[UUID, str] = msgspec.field(default_factory=dict)
    providers: dict[UUID, str] = msgspec.field(default_factory=dict)
    carers: dict[UUID, str] = msgspec.field(default_factory=dict)


async def _directory(api: Api, user: Principal, *, carers: bool = False) -> Directory:
    found = Directory()
    if user.role == "commissioner":
        people = await api.every("/v1/people", Person)
        found.people = {p.id: f"{p.reference} ({p.display_name})" for p in people}
        providers = await api.every("/v1/providers", Provider)
        found.providers = {p.id: p.code for p in providers}
    elif user.provider_id is not None:
        found.providers = {user.provider_id: "your agency"}
    if carers:
        found.carers = {c.id: c.name for c in await api.every("/v1/carers", Carer)}
    return found


# --- errors: pages, not JSON ------------------------------------------------------------------


def _to_sign_in() -> Redirect:
    return Redirect("/console/sign-in", status_code=303)


def _error_page(request: Req, status: int, detail: str) -> Response[Any]:
    if status == 401:
        return _to_sign_in()
    titles = {403: "Not allowed", 404: "Not found", 409: "Already done", 422: "That did not work"}
    return page(request, "error.html", titles.get(status, "Something went wrong"), status=status, detail=detail)


def on_api_error(request: Req, exc: ApiError) -> Response[Any]:
    """What the API refused, on a page with the API's own words."""
    return _error_page(request, exc.status, exc.detail)


def on_http_error(request: Req, exc: HTTPException) -> Response[Any]:
    """Litestar's own refusals (no or expired cookie, a role guard, a failed CSRF check)."""
    return _error_page(request, exc.status_code, str(exc.detail))


# --- pages ------------------------------------------------------------------------------------


class SessionController(Controller):
    """Signing in and out."""

    @get("/sign-in", exclude_from_auth=True)
    async def sign_in_page(self, request: Req) -> Template:
        """The sign-in form."""
        return page(request, "sign_in.html", "Sign in", error="")

    @post("/sign-in", exclude_from_auth=True)
    async def sign_in(self, request: Req) -> Response[Any]:
        """Exchange the credential for a token (through the API's token endpoint) and keep it in a cookie."""
        form = await _form(request)
        try:
            issued = await Api(request, None).post(
                "/v1/auth/token",
                TokenResponse,
                {"client_id": form.get("client_id", "").strip(), "client_secret": form.get("client_secret", "")},
            )
        except ApiError as exc:
            message = "Unknown client id or wrong secret." if exc.status in (400, 401, 422) else exc.detail
            return page(request, "sign_in.html", "Sign in", status=exc.status, error=message)
        secure = request.app.state.settings.env == "production"
        zone = form.get("tz", "")
        cookies = [
            Cookie(
                key=AUTH_COOKIE,
                value=issued.access_token,
                max_age=issued.expires_in,
                path="/",
                httponly=True,
                samesite="strict",
                secure=secure,
            ),
            Cookie(
                key=TZ_COOKIE,
                value=zone if zone in _ZONES else DEFAULT_ZONE,
                path="/console",
                httponly=True,
                samesite="strict",
                secure=secure,
            ),
        ]
        return Redirect("/console", status_code=303, cookies=cookies)

    @post("/sign-out", exclude_from_auth=True)
    async def sign_out(self, request: Req) -> Redirect:
        """Forget the token cookie."""
        secure = request.app.state.settings.env == "production"
        gone = Cookie(key=AUTH_COOKIE, value="", max_age=0, path="/", httponly=True, samesite="strict", secure=secure)
        return Redirect("/console/sign-in?done=signed-out", status_code=303, cookies=[gone])

    @get("/")
    async def home(self, request: Req) -> Response[Any]:
        """The live board for the console's roles; a note for the others."""
        if _caller(request).role in CONSOLE_ROLES:
            return Redirect("/console/live", status_code=303)
        return page(request, "home.html", "carebank")


class LivePages(Controller):
    """Who is on site now and the open alerts, live."""

    guards = [allow(*CONSOLE_ROLES)]

    @get("/live")
    async def live(self, request: Req) -> Template:
        """The live board: on site now, open alerts (more arrive over the stream)."""
        api = _api(request)
        user = _caller(request)
        board = await api.get("/v1/live", LiveBoard)
        alerts = await api.get("/v1/alerts", Page[Alert], status="open", limit=LIST_LIMIT)
        names = await _directory(api, user, carers=False)
        # For alerts that arrive over the stream, so they carry the same names as the rows drawn here.
        labels = {str(k): v for k, v in {**names.people, **names.providers}.items()}
        return page(
            request,
            "live.html",
            "Live board",
            board=board,
            alerts=alerts.items,
            more=alerts.next_cursor is not None,
            names=names,
            labels=labels,
        )

    @post("/alerts/{alert_id:uuid}/ack")
    async def acknowledge(self, request: Req, alert_id: Annotated[UUID, PathParameter()]) -> Redirect:
        """Acknowledge an alert."""
        await _api(request).post(f"/v1/alerts/{alert_id}/ack", Alert)
        return _back("/console/live", "acknowledged")


class ExceptionPages(Controller):
    """Open exceptions, amendments proposed and decided."""

    guards = [allow(*CONSOLE_ROLES)]

    @get("/exceptions")
    async def exceptions(self, request: Req) -> Template:
        """Visits with open exceptions; pending and recent amendments."""
        api = _api(request)
        user = _caller(request)
        open_ = await api.get("/v1/exceptions", Page[VisitExceptions], limit=LIST_LIMIT)
        pending = await api.get("/v1/amendments", Page[Amendment], status="pending", limit=LIST_LIMIT)
        decided = [a for a in await api.every("/v1/amendments", Amendment) if a.status != "pending"]
        names = await _directory(api, user, carers=True)
        return page(
            request,
            "exceptions.html",
            "Exceptions and amendments",
            open=open_.items,
            more_open=open_.next_cursor is not None,
            pending=pending.items,
            more_pending=pending.next_cursor is not None,
            decided=decided[::-1][:RECENT],
            names=names,
        )

    @get("/visits/{visit_id:uuid}/amend")
    async def amend_form(self, request: Req, visit_id: Annotated[UUID, PathParameter()]) -> Template:
        """A visit and the form to propose a correction of it."""
        api = _api(request)
        visit = await api.get(f"/v1/visits/{visit_id}", Visit)
        names = await _directory(api, _caller(request))
        # Only the visit's agency's carers can be named on it.
        names.carers = {c.id: c.name for c in await api.every("/v1/carers", Carer, provider_id=visit.provider_id)}
        return page(request, "amend.html", "Propose an amendment", visit=visit, names=names, reasons=REASONS)

    @post("/visits/{visit_id:uuid}/amendments")
    async def propose(self, request: Req, visit_id: Annotated[UUID, PathParameter()]) -> Redirect:
        """Propose the amendment (the API decides whether it approves itself)."""
        form = await _form(request)
        zone = _zone(request)
        body: dict[str, Any] = {
            "carer_id": form.get("carer_id", ""),
            "reason_code": form.get("reason_code", ""),
            "check_in_at": _local_instant(form.get("check_in_at", ""), zone, "check in"),
            "check_out_at": _local_instant(form.get("check_out_at", ""), zone, "check out"),
            "extension_min": _int(form.get("extension_min", ""), "extension"),
            "note": form.get("note", "").strip() or None,
        }
        made = await _api(request).post(
            f"/v1/visits/{visit_id}/amendments",
            Amendment,
            {k: v for k, v in body.items() if v is not None},
            key=form.get("_key"),
        )
        return _back("/console/exceptions", "proposed" if made.status == "pending" else "auto-approved")

    @post("/amendments/{amendment_id:uuid}/approve", guards=[allow("commissioner")])
    async def approve(self, request: Req, amendment_id: Annotated[UUID, PathParameter()]) -> Redirect:
        """Approve an amendment."""
        await _api(request).post(f"/v1/amendments/{amendment_id}/approve", Amendment)
        return _back("/console/exceptions", "approved")

    @post("/amendments/{amendment_id:uuid}/reject", guards=[allow("commissioner")])
    async def reject(self, request: Req, amendment_id: Annotated[UUID, PathParameter()]) -> Redirect:
        """Reject an amendment."""
        await _api(request).post(f"/v1/amendments/{amendment_id}/reject", Amendment)
        return _back("/console/exceptions", "rejected")


class InvoicePages(Controller):
    """Invoices: the list, one invoice, its CSV, a payment."""

    guards = [allow(*CONSOLE_ROLES)]

    @get("/invoices")
    async def invoices(self, request: Req) -> Template:
        """Invoices, newest last."""
        api = _api(request)
        listed = await api.every("/v1/invoices", InvoiceSummary)
        names = await _directory(api, _caller(request))
        return page(request, "invoices.html", "Invoices", invoices=listed[::-1], names=names)

    @get("/invoices/{invoice_id:uuid}")
    async def invoice(self, request: Req, invoice_id: Annotated[UUID, PathParameter()]) -> Template:
        """One invoice with its lines."""
        api = _api(request)
        found = await api.get(f"/v1/invoices/{invoice_id}", Invoice)
        names = await _directory(api, _caller(request), carers=True)
        today = datetime.now(tz=_zone(request)).date()
        return page(request, "invoice.html", f"Invoice {found.number}", invoice=found, names=names, today=today)

    @get("/invoices/{invoice_id:uuid}/csv")
    async def invoice_csv(self, request: Req, invoice_id: Annotated[UUID, PathParameter()]) -> Response[bytes]:
        """The invoice's lines as the API's CSV, as a download."""
        answer = await _api(request).call("GET", f"/v1/invoices/{invoice_id}", accept="text/csv")
        return Response(
            answer.content,
            media_type="text/csv",
            headers={"Content-Disposition": answer.headers.get("content-disposition", "attachment")},
        )

    @post("/invoices/{invoice_id:uuid}/payments", guards=[allow("commissioner")])
    async def pay(self, request: Req, invoice_id: Annotated[UUID, PathParameter()]) -> Redirect:
        """Record a payment against the invoice."""
        form = await _form(request)
        body = {
            "paid_on": form.get("paid_on", ""),
            "amount_pence": _pence(form.get("amount", ""), "amount"),
            "reference": form.get("reference", "").strip(),
        }
        await _api(request).post(f"/v1/invoices/{invoice_id}/payments", Payment, body, key=form.get("_key"))
        return _back(f"/console/invoices/{invoice_id}", "paid")


class BankPages(Controller):
    """The bank: the summary, a person's bank as of a date, and transfers."""

    guards = [allow(*CONSOLE_ROLES)]

    @get("/bank")
    async def bank(
        self,
        request: Req,
        person_id: Annotated[UUID | None, QueryParameter()] = None,
        as_of: Annotated[str | None, QueryParameter()] = None,
    ) -> Template:
        """Summary with lots expiring within 28 days; a chosen person's balance, lots and history."""
        api = _api(request)
        user = _caller(request)
        zone = _zone(request)
        today = datetime.now(tz=zone).date()
        day = _date(as_of, today)
        # The end of the chosen day, or now for today: balances as they stood then.
        instant = None if day >= today else datetime.combine(day + timedelta(days=1), time(), zone)
        when = {"as_of": instant.isoformat() if instant else None}
        summary = await api.get("/v1/bank/summary", BankSummary, **when)
        names = await _directory(api, user)
        people = dict(names.people)
        if user.role == "provider":
            # Providers may not list people: their people with a bank are the ones in their ledger.
            postings = await api.every("/v1/bank/postings", Posting)
            people = {p.person_id: _short(p.person_id) for p in postings if p.person_id is not None}
        person: PersonBank | None = None
        history: list[Posting] = []
        if person_id is not None:
            person = await api.get(f"/v1/people/{person_id}/bank", PersonBank, **when)
            history = await api.every(
                "/v1/bank/postings", Posting, person_id=person_id, to=instant.isoformat() if instant else None
            )
            history = history[::-1][:LIST_LIMIT]
            people.setdefault(person_id, _short(person_id))
        return page(
            request,
            "bank.html",
            "Bank",
            summary=summary,
            people=people,
            person=person,
            history=history,
            person_id=person_id,
            as_of=day,
            names=names,
        )

    @post("/bank/transfers")
    async def request_transfer(self, request: Req) -> Redirect:
        """Ask to move a person's banked minutes to another (held until a commissioner decides)."""
        form = await _form(request)
        body = {
            "from_person_id": form.get("from_person_id", ""),
            "to_person_id": form.get("to_person_id", ""),
            "minutes": _int(form.get("minutes", ""), "minutes"),
            "review_ref": form.get("review_ref", "").strip(),
            "provider_id": form.get("provider_id") or None,
        }
        given = {k: v for k, v in body.items() if v is not None}
        made = await _api(request).post("/v1/bank/transfers", Transfer, given, key=form.get("_key"))
        return _back(f"/console/bank/transfers/{made.id}", "requested")

    @get("/bank/transfer")
    async def find_transfer(self, transfer_id: Annotated[UUID, QueryParameter(name="id")]) -> Redirect:
        """Open a transfer by its id."""
        return Redirect(f"/console/bank/transfers/{transfer_id}", status_code=303)

    @get("/bank/transfers/{transfer_id:uuid}")
    async def transfer(self, request: Req, transfer_id: Annotated[UUID, PathParameter()]) -> Template:
        """A transfer, and its decision (a commissioner decides one still pending)."""
        api = _api(request)
        found = await api.get(f"/v1/bank/transfers/{transfer_id}", Transfer)
        names = await _directory(api, _caller(request))
        return page(request, "transfer.html", "Transfer", transfer=found, names=names)

    @post("/bank/transfers/{transfer_id:uuid}/{decision:str}", guards=[allow("commissioner")])
    async def decide_transfer(
        self,
        request: Req,
        transfer_id: Annotated[UUID, PathParameter()],
        decision: Annotated[str, PathParameter()],
    ) -> Redirect:
        """Approve or reject a transfer."""
        if decision not in ("approve", "reject"):
            raise ApiError(404, "no such decision")
        await _api(request).post(f"/v1/bank/transfers/{transfer_id}/{decision}", Transfer)
        return _back(f"/console/bank/transfers/{transfer_id}", f"transfer-{decision}d")


class ReportPages(Controller):
    """The commissioner's delivery and outcomes reports, as charts and tables."""

    guards = [allow("commissioner")]

    @get("/reports")
    async def reports(
        self,
        request: Req,
        date_from: Annotated[str | None, QueryParameter(name="from")] = None,
        date_to: Annotated[str | None, QueryParameter(name="to")] = None,
    ) -> Template:
        """Planned vs delivered vs paid per provider and week; punctuality; outcomes by ASCOT domain."""
        today = datetime.now(tz=_zone(request)).date()
        start = _date(date_from, today - timedelta(days=today.weekday() + 7 * 7))
        end = _date(date_to, today)
        api = _api(request)
        window = {"from": start.isoformat(), "to": end.isoformat()}
        delivery = await api.get("/v1/reports/delivery", DeliveryReport, **window)
        outcomes = await api.get("/v1/reports/outcomes", OutcomesReport, **window)
        return page(
            request,
            "reports.html",
            "Reports",
            delivery=delivery,
            outcomes=outcomes,
            date_from=start,
            date_to=end,
            codes={
                **{r.provider_id: r.provider_code for r in delivery.rows},
                **{r.provider_id: r.provider_code for r in outcomes.rows},
            },
            delivery_charts=_delivery_charts(delivery),
            punctuality_chart=_punctuality_chart(delivery),
            outcomes_chart=_outcomes_chart(outcomes),
        )


def _delivery_charts(report: DeliveryReport) -> list[tuple[str, Any]]:
    """One chart per provider: planned, delivered and paid minutes for each week."""
    by_provider: dict[str, list[Any]] = {}
    for row in report.rows:
        by_provider.setdefault(row.provider_code, []).append(row)
    made = []
    for index, (code, rows) in enumerate(sorted(by_provider.items())):
        rows.sort(key=lambda r: r.week_start)
        weeks = [r.week_start.strftime("%d %b") for r in rows]
        series = [
            charts.Series("planned", [float(r.figures.planned_min) for r in rows]),
            charts.Series("delivered", [float(r.figures.delivered_min) for r in rows]),
            charts.Series("paid", [float(r.figures.paid_min) for r in rows]),
        ]
        title = f"{code}: minutes planned, delivered and paid by week"
        made.append((code, charts.grouped_bars(f"delivery-{index}", title, weeks, series, unit=" min")))
    return made


def _punctuality_chart(report: DeliveryReport) -> Any:
    """Share of checked-in visits that started on time, per provider and week."""
    weeks = sorted({r.week_start for r in report.rows})
    codes = sorted({r.provider_code for r in report.rows})
    figure = {(r.provider_code, r.week_start): r.figures.punctuality for r in report.rows}
    series = [
        charts.Series(code, [None if figure.get((code, w)) is None else 100 * figure[(code, w)] for w in weeks])  # type: ignore[operator]
        for code in codes
    ]
    labels = [w.strftime("%d %b") for w in weeks]
    return charts.grouped_bars("punctuality", "Punctuality by provider and week", labels, series, "%", 100.0)


def _outcomes_chart(report: OutcomesReport) -> Any:
    """Outcomes by ASCOT domain over the range: met, not met, refused, not recorded."""
    rows = [
        (
            d.domain,
            [("met", d.met), ("not met", d.not_met), ("refused", d.refused), ("not recorded", d.not_recorded)],
        )
        for d in report.totals
    ]
    return charts.stacked_rows("outcomes", "Outcomes by ASCOT domain", rows)


def console_router() -> Router:
    """Every console page under /console, its static files, and HTML error pages."""
    static = create_static_files_router(
        path="/console/static",
        directories=[HERE / "static"],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
        name="console_static",
    )
    pages = Router(
        path="/console",
        route_handlers=[SessionController, LivePages, ExceptionPages, InvoicePages, BankPages, ReportPages],
        include_in_schema=False,
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_error,
            ProblemDetailsException: on_http_error,
        },
    )
    return Router(path="/", route_handlers=[static, pages], include_in_schema=False)
