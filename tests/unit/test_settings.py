"""Settings from the environment; production refuses silent defaults."""

from __future__ import annotations

import pytest

from infra.settings import ConfigError, Settings

FULL = {
    "DATABASE_URL": "postgresql://db/carebank",
    "REDIS_URL": "redis://r:6379/0",
    "CAREBANK_JWT_SECRET": "s" * 40,
}


def test_development_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.env == "development"
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.token_ttl_s == 900
    assert settings.data_dir.endswith(".carebank")


def test_production_with_everything_set_starts() -> None:
    settings = Settings.from_env({**FULL, "CAREBANK_ENV": "production"})
    assert settings.jwt_secret == "s" * 40


@pytest.mark.parametrize("missing", sorted(FULL))
def test_production_names_what_is_missing(missing: str) -> None:
    env = {k: v for k, v in FULL.items() if k != missing} | {"CAREBANK_ENV": "production"}
    with pytest.raises(ConfigError, match=missing):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**FULL, "CAREBANK_ENV": "production", "CAREBANK_JWT_SECRET": "short"}, "at least 32"),
        ({**FULL, "CAREBANK_ENV": "production", "CAREBANK_ARGON2_PROFILE": "CHEAPEST"}, "CHEAPEST"),
        ({"CAREBANK_ENV": "staging"}, "CAREBANK_ENV"),
        ({"CAREBANK_TOKEN_TTL_S": "soon"}, "CAREBANK_TOKEN_TTL_S"),
        ({"CAREBANK_ARGON2_PROFILE": "FAST"}, "CAREBANK_ARGON2_PROFILE"),
    ],
)
def test_bad_settings_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
