"""create_app(): the areas' controllers composed with auth, errors, limits, metrics and logs."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
from litestar import Litestar, Router
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.exceptions import HTTPException
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.security.jwt import JWTCookieAuth, Token

from infra.db import create_pool
from infra.logging import configure_logging
from infra.redis import FailOpenRedisStore, create_redis
from infra.settings import ConfigError, Settings
from services.banking.api import BankController, PersonBankController
from services.billing.api import InvoiceController
from services.catalog.api import (
    CarerController,
    ContractController,
    PersonController,
    ProviderController,
)
from services.common.auth import Principal, RememberedToken, principal_from_token
from services.common.deps import DEPENDENCIES
from services.common.domain import RuleError
from services.common.errors import (
    http_exception_handler,
    internal_error_handler,
    rule_error_handler,
    text_error_handler,
)
from services.common.idempotency import idempotency_middleware
from services.common.middleware import request_id_middleware
from services.console.api import console_router, template_config
from services.console.csrf import AUTH_COOKIE, CookieCSRFMiddleware, csrf_config
from services.health import HealthController
from services.identity.api import AuthController, CredentialController, TenantController
from services.identity.rules import SecretHasher
from services.ingest.api import IngestController
from services.ingest.committer import GroupCommitter
from services.monitoring.api import AlertController, LiveController
from services.planning.api import CarePlanController, MyVisitsController, VisitController
from services.reconcile.api import AmendmentController, ExceptionController
from services.reconcile.jobs import QueueDrainer
from services.reports.api import ReportController

PUBLIC_PATHS = ["^/healthz$", "^/readyz$", "^/metrics", "^/schema"]
__all__ = ["AUTH_COOKIE", "create_app"]


def create_app(settings: Settings) -> Litestar:
    """The HTTP application; its lifespan owns the PostgreSQL pool and the Redis client."""
    if not settings.database_url or not settings.redis_url or not settings.jwt_secret:
        raise ConfigError("create_app needs database_url, redis_url and jwt_secret resolved")
    configure_logging(settings.log_level)
    database_url = settings.database_url
    redis = create_redis(settings.redis_url)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        app.state.pool = await create_pool(database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
        app.state.committer = GroupCommitter(app.state.pool)
        app.state.committer.start()
        drainer = QueueDrainer(app.state.pool)
        if settings.reconcile_in_api:
            drainer.start()
        try:
            yield
        finally:
            await drainer.stop()
            await app.state.committer.stop()
            await app.state.pool.close()
            await redis.aclose()

    jwt_auth = JWTCookieAuth[Principal, Token](
        retrieve_user_handler=principal_from_token,
        token_cls=RememberedToken,
        token_secret=settings.jwt_secret,
        default_token_expiration=timedelta(seconds=settings.token_ttl_s),
        exclude=PUBLIC_PATHS,
        key=AUTH_COOKIE,
        samesite="strict",
        secure=settings.env == "production",
    )
    rate_limit = RateLimitConfig(rate_limit=("minute", settings.auth_rate_limit_per_minute), store="rate_limit")
    auth_router = Router(path="/", route_handlers=[AuthController], middleware=[rate_limit.middleware])
    prometheus = PrometheusConfig(app_name="carebank", prefix="carebank", group_path=True)

    app = Litestar(
        route_handlers=[
            HealthController,
            PrometheusController,
            auth_router,
            TenantController,
            CredentialController,
            ProviderController,
            CarerController,
            PersonController,
            ContractController,
            CarePlanController,
            VisitController,
            MyVisitsController,
            IngestController,
            AmendmentController,
            ExceptionController,
            InvoiceController,
            PersonBankController,
            BankController,
            AlertController,
            LiveController,
            ReportController,
            console_router(),
        ],
        dependencies=DEPENDENCIES,
        lifespan=[lifespan],
        # CSRF before idempotency, so a forged request never gets as far as a stored answer.
        middleware=[
            prometheus.middleware,
            DefineMiddleware(
                CookieCSRFMiddleware, config=csrf_config(settings.jwt_secret, secure=settings.env == "production")
            ),
            idempotency_middleware,
        ],
        template_config=template_config(),
        on_app_init=[jwt_auth.on_app_init],
        plugins=[
            ProblemDetailsPlugin(ProblemDetailsConfig(enable_for_all_http_exceptions=False)),
            ChannelsPlugin(backend=RedisChannelsPubSubBackend(redis=redis), arbitrary_channels_allowed=True),
        ],
        exception_handlers={
            HTTPException: http_exception_handler,
            RuleError: rule_error_handler,
            asyncpg.CharacterNotInRepertoireError: text_error_handler,
            asyncpg.UntranslatableCharacterError: text_error_handler,
            Exception: internal_error_handler,
        },
        stores={"rate_limit": FailOpenRedisStore(redis, namespace=f"{{{settings.redis_namespace}}}:ratelimit")},
        openapi_config=OpenAPIConfig(
            title="carebank",
            version="1",
            description="Electronic home-care monitoring and outcome banking.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
        ),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
        # Our structlog setup owns the root logger; Litestar's default would re-format it.
        logging_config=None,
    )
    # Outermost, so 401s, 404s for unknown paths and errors get an id and an access line too.
    app.asgi_handler = request_id_middleware(app.asgi_handler)
    app.state.settings = settings
    app.state.redis = redis
    app.state.jwt_auth = jwt_auth
    app.state.hasher = SecretHasher.for_profile(settings.argon2_profile)
    return app
