"""Service settings, read once from the environment into a frozen msgspec struct."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec

Environment = Literal["development", "test", "production"]
Argon2Profile = Literal["RFC_9106_LOW_MEMORY", "RFC_9106_HIGH_MEMORY", "CHEAPEST"]


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service; the message says what to set."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service reads from its environment.

    `database_url` / `redis_url` left empty mean "start the embedded servers under `data_dir`",
    which only the CLI does; `create_app` needs both filled in.
    """

    env: Environment = "development"
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: str = ".carebank"
    jwt_secret: str | None = None
    token_ttl_s: int = 900
    auth_rate_limit_per_minute: int = 30
    max_body_bytes: int = 2 * 1024 * 1024
    db_pool_min: int = 1
    db_pool_max: int = 10
    redis_namespace: str = "carebank"
    log_level: str = "INFO"
    argon2_profile: Argon2Profile = "RFC_9106_LOW_MEMORY"
    invoice_after_days: int = 2
    reconcile_in_api: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read `CAREBANK_*`, `DATABASE_URL` and `REDIS_URL`; production refuses silent defaults."""
        env = os.environ if environ is None else environ
        raw_env = env.get("CAREBANK_ENV", "development")
        if raw_env not in ("development", "test", "production"):
            raise ConfigError(f"CAREBANK_ENV must be development, test or production, not {raw_env!r}")
        settings = cls(
            env=raw_env,  # type: ignore[arg-type]
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            data_dir=str(Path(env.get("CAREBANK_DATA_DIR", ".carebank")).resolve()),
            jwt_secret=env.get("CAREBANK_JWT_SECRET") or None,
            token_ttl_s=_int(env, "CAREBANK_TOKEN_TTL_S", 900),
            auth_rate_limit_per_minute=_int(env, "CAREBANK_AUTH_RATE_LIMIT_PER_MINUTE", 30),
            max_body_bytes=_int(env, "CAREBANK_MAX_BODY_BYTES", 2 * 1024 * 1024),
            db_pool_max=_int(env, "CAREBANK_DB_POOL_MAX", 10),
            redis_namespace=env.get("CAREBANK_REDIS_NAMESPACE", "carebank"),
            log_level=env.get("CAREBANK_LOG_LEVEL", "INFO").upper(),
            invoice_after_days=_int(env, "CAREBANK_INVOICE_AFTER_DAYS", 2),
            reconcile_in_api=env.get("CAREBANK_RECONCILE_IN_API", "1").lower() not in ("0", "false", "no"),
            argon2_profile=_choice(env, "CAREBANK_ARGON2_PROFILE", "RFC_9106_LOW_MEMORY", Argon2Profile),
        )
        settings.check_production()
        return settings

    def check_production(self) -> None:
        """In production every secret and server must be given explicitly."""
        if self.env != "production":
            return
        missing = [
            name
            for name, value in (
                ("DATABASE_URL", self.database_url),
                ("REDIS_URL", self.redis_url),
                ("CAREBANK_JWT_SECRET", self.jwt_secret),
            )
            if not value
        ]
        if missing:
            raise ConfigError("CAREBANK_ENV=production needs " + ", ".join(missing) + " set; refusing to start")
        if self.argon2_profile == "CHEAPEST":
            raise ConfigError("CAREBANK_ARGON2_PROFILE=CHEAPEST is for tests, never production")
        assert self.jwt_secret is not None
        if len(self.jwt_secret) < 32:
            raise ConfigError("CAREBANK_JWT_SECRET must be at least 32 characters in production")


def _int(env: os._Environ[str] | dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None


def _choice(env: os._Environ[str] | dict[str, str], name: str, default: str, allowed: object) -> Any:
    raw = env.get(name) or default
    choices = get_args(allowed)
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw
