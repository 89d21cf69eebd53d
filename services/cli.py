"""The `carebank` command: serve, worker, migrate, credentials, token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from infra.db import MigrationError, connect, migrate_url
from infra.embedded import EmbeddedServers, servers_for
from infra.settings import ConfigError, Settings
from services.common.domain import RuleError


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from services.app import create_app

    with servers_for(settings) as resolved:
        _say(f"serving on http://{args.host}:{args.port}")
        uvicorn.run(create_app(resolved), host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from services.worker import run_worker

    with servers_for(settings) as resolved, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(resolved, once=args.once))
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    servers = EmbeddedServers(settings)
    try:
        resolved = servers.start(need_redis=False)
        applied = asyncio.run(migrate_url(_db(resolved)))
    finally:
        servers.close()
    print(json.dumps({"applied": applied}))
    return 0


def _credentials_create(args: argparse.Namespace, settings: Settings) -> int:
    from uuid import UUID

    from schemas.identity import CredentialCreate
    from services.identity.issue import issue_credential
    from services.identity.rules import Caller, SecretHasher, bind_credential

    def uuid_or_none(value: str | None) -> UUID | None:
        return UUID(value) if value else None

    request = CredentialCreate(
        role=args.role,
        tenant_id=uuid_or_none(args.tenant_id),
        provider_id=uuid_or_none(args.provider_id),
        carer_id=uuid_or_none(args.carer_id),
    )
    binding = bind_credential(Caller("admin", None, None), request)

    async def create(url: str) -> dict[str, object]:
        conn = await connect(url)
        try:
            secret = await issue_credential(
                conn, SecretHasher.for_profile(settings.argon2_profile), binding, created_by="cli"
            )
        finally:
            await conn.close()
        return {"client_id": secret.client_id, "client_secret": secret.client_secret}

    with servers_for(settings, need_redis=False) as resolved:
        secret = asyncio.run(create(_db(resolved)))
    print(json.dumps(secret))
    return 0


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from uuid import UUID
    from zoneinfo import ZoneInfo

    from infra.db import create_pool
    from services.planning.rules import local_instant
    from services.reconcile.jobs import verify_tenant

    async def run(url: str) -> tuple[int, list[UUID]]:
        pool = await create_pool(url, max_size=2)
        try:
            async with pool.acquire() as conn:
                zone = await conn.fetchval("SELECT zone FROM tenants WHERE tenant_id = $1", UUID(args.tenant))
            if zone is None:
                raise SystemExit(f"carebank: no tenant {args.tenant}")

            def bound(text: str | None, extra_days: int) -> datetime | None:
                day = date.fromisoformat(text) + timedelta(days=extra_days) if text else None
                return local_instant(day, "00:00", ZoneInfo(zone)) if day else None

            return await verify_tenant(pool, UUID(args.tenant), bound(args.date_from, 0), bound(args.date_to, 1))
        finally:
            await pool.close()

    with servers_for(settings, need_redis=False) as resolved:
        checked, differing = asyncio.run(run(_db(resolved)))
    print(json.dumps({"visits": checked, "differing": len(differing), "examples": [str(v) for v in differing[:10]]}))
    return 1 if differing else 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    response = httpx.post(
        f"{args.url.rstrip('/')}/v1/auth/token",
        json={"client_id": args.client_id, "client_secret": args.client_secret},
        timeout=10,
    )
    print(response.text)
    return 0 if response.status_code == 200 else 1


def _db(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carebank", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (embedded servers when no URLs are set)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run the background jobs")
    worker.add_argument("--once", action="store_true", help="run every job once and exit")
    worker.set_defaults(func=_worker)

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(func=_migrate)

    credentials = sub.add_parser("credentials", help="manage credentials")
    cred_sub = credentials.add_subparsers(dest="credentials_command", required=True)
    create = cred_sub.add_parser("create", help="create a credential and print it as JSON")
    create.add_argument("--role", required=True, choices=["admin", "commissioner", "provider", "carer"])
    create.add_argument("--tenant-id")
    create.add_argument("--provider-id")
    create.add_argument("--carer-id")
    create.set_defaults(func=_credentials_create)

    reconcile = sub.add_parser(
        "reconcile", help="recompute a tenant's visits from scratch and compare with the stored state"
    )
    reconcile.add_argument("--tenant", required=True)
    reconcile.add_argument("--from", dest="date_from", help="first local date of planned start")
    reconcile.add_argument("--to", dest="date_to", help="last local date of planned start")
    reconcile.set_defaults(func=_reconcile)

    token = sub.add_parser("token", help="exchange a credential for a bearer token")
    token.add_argument("--url", default="http://127.0.0.1:8000")
    token.add_argument("--client-id", required=True)
    token.add_argument("--client-secret", required=True)
    token.set_defaults(func=_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `carebank` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.func(args, settings))
    except (ConfigError, MigrationError) as exc:
        _say(f"carebank: {exc}")
        return 2
    except RuleError as exc:
        _say(f"carebank: {exc}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
