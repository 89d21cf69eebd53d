"""Identity rules: client ids, secret hashing, who may create which credential, tenant settings."""

from __future__ import annotations

import re
import secrets
import zoneinfo
from dataclasses import dataclass
from uuid import UUID

import holidays
from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

from schemas.identity import CredentialCreate, Role, TenantCreate
from services.common.domain import RuleError

_TENANT_CLIENT_ID = re.compile(r"^cb_([0-9a-f]{32})_[0-9a-f]{16}$")
_ADMIN_CLIENT_ID = re.compile(r"^adm_[0-9a-f]{24}$")


def new_client_id(tenant_id: UUID | None) -> str:
    """A client id that names its tenant, so a token request finds the row without a scan."""
    if tenant_id is None:
        return "adm_" + secrets.token_hex(12)
    return f"cb_{tenant_id.hex}_{secrets.token_hex(8)}"


def parse_client_id(client_id: str) -> tuple[bool, UUID | None]:
    """(is well-formed, tenant): admin ids have no tenant; malformed ones are not ours."""
    if _ADMIN_CLIENT_ID.match(client_id):
        return True, None
    match = _TENANT_CLIENT_ID.match(client_id)
    if match:
        return True, UUID(hex=match.group(1))
    return False, None


def new_secret() -> str:
    """A client secret with 256 bits of randomness."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SecretHasher:
    """argon2id hashing of client secrets with one of argon2-cffi's named parameter profiles."""

    hasher: PasswordHasher
    dummy_hash: str  # verified against for unknown client ids, so both failures cost the same

    @classmethod
    def for_profile(cls, name: str) -> SecretHasher:
        """`RFC_9106_LOW_MEMORY` (the default), `RFC_9106_HIGH_MEMORY`, or `CHEAPEST` (tests only)."""
        hasher = PasswordHasher.from_parameters(getattr(profiles, name))
        return cls(hasher, hasher.hash("no such credential"))

    def hash(self, secret: str) -> str:
        """The hash to store."""
        return self.hasher.hash(secret)

    def verify(self, secret_hash: str | None, secret: str) -> bool:
        """Whether `secret` matches; an unknown credential (None) still pays for one verification."""
        try:
            return self.hasher.verify(secret_hash or self.dummy_hash, secret) and secret_hash is not None
        except (VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True)
class Caller:
    """The parts of the caller's credential that decide what it may create."""

    role: Role
    tenant_id: UUID | None
    provider_id: UUID | None


@dataclass(frozen=True)
class Binding:
    """What a new credential is bound to, after the caller's reach is applied."""

    role: Role
    tenant_id: UUID | None
    provider_id: UUID | None
    carer_id: UUID | None


def bind_credential(caller: Caller, request: CredentialCreate) -> Binding:
    """Apply DOMAIN.md's table: admin any; commissioner its tenant, not admin; provider its carers.

    A tenant or provider outside the caller's reach answers 404, like one that does not exist.
    Whether the named provider or carer exists (and the carer's provider) is the store's check.
    """
    tenant_id = request.tenant_id
    provider_id = request.provider_id
    if caller.role == "commissioner":
        if request.role == "admin":
            raise RuleError("forbidden", "a commissioner may not create admin credentials", status=403)
        if tenant_id is not None and tenant_id != caller.tenant_id:
            raise RuleError("not_found", "no such tenant", "tenant_id", status=404)
        tenant_id = caller.tenant_id
    elif caller.role == "provider":
        if request.role != "carer":
            raise RuleError("forbidden", "a provider may only create credentials for its carers", status=403)
        if tenant_id is not None and tenant_id != caller.tenant_id:
            raise RuleError("not_found", "no such tenant", "tenant_id", status=404)
        if provider_id is not None and provider_id != caller.provider_id:
            raise RuleError("not_found", "no such provider", "provider_id", status=404)
        tenant_id, provider_id = caller.tenant_id, caller.provider_id
    elif caller.role != "admin":
        raise RuleError("forbidden", "your role may not create credentials", status=403)

    if request.role == "admin":
        for name, value in (
            ("tenant_id", tenant_id),
            ("provider_id", provider_id),
            ("carer_id", request.carer_id),
        ):
            if value is not None:
                raise RuleError("not_allowed", "an admin credential is bound to nothing", name)
        return Binding("admin", None, None, None)
    if tenant_id is None:
        raise RuleError("required", f"a {request.role} credential needs tenant_id", "tenant_id")
    if request.role == "commissioner":
        for name, value in (("provider_id", provider_id), ("carer_id", request.carer_id)):
            if value is not None:
                raise RuleError("not_allowed", "a commissioner credential is bound to its tenant only", name)
        return Binding("commissioner", tenant_id, None, None)
    if request.role == "provider":
        if provider_id is None:
            raise RuleError("required", "a provider credential needs provider_id", "provider_id")
        if request.carer_id is not None:
            raise RuleError("not_allowed", "a provider credential is not bound to a carer", "carer_id")
        return Binding("provider", tenant_id, provider_id, None)
    if request.carer_id is None:
        raise RuleError("required", "a carer credential needs carer_id", "carer_id")
    return Binding("carer", tenant_id, provider_id, request.carer_id)


def check_tenant(request: TenantCreate) -> None:
    """The zone must be an IANA zone and the holiday region one the `holidays` library knows."""
    try:
        zoneinfo.ZoneInfo(request.zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise RuleError("unknown_zone", f"{request.zone!r} is not an IANA time zone", "zone") from None
    holiday_calendar(request.holiday_region)


def holiday_calendar(region: str) -> holidays.HolidayBase:
    """`GB-ENG` → holidays.country_holidays("GB", subdiv="ENG"); unknown regions are a RuleError."""
    country, _, subdiv = region.partition("-")
    try:
        return holidays.country_holidays(country, subdiv=subdiv or None)
    except NotImplementedError:
        raise RuleError(
            "unknown_holiday_region", f"{region!r} is not a holiday region we know", "holiday_region"
        ) from None
