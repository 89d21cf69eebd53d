"""Wire contracts of the identity area: tenants, credentials and tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

Role = Literal["admin", "commissioner", "provider", "carer"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class TokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Exchange a credential for a short-lived JWT."""

    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    client_secret: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class TokenResponse(msgspec.Struct, frozen=True):
    """A bearer token and its lifetime in seconds."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int


class TenantCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A commissioner (council) and the settings that decide its days, bands and periods."""

    name: Name
    zone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "Europe/London"
    holiday_region: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,4})?$")] = "GB-ENG"
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] = "GBP"
    max_event_age_days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 45


class Tenant(msgspec.Struct, frozen=True):
    """A tenant as stored."""

    id: UUID
    name: str
    zone: str
    holiday_region: str
    currency: str
    max_event_age_days: int
    created_at: datetime


class CredentialCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A new credential; which of tenant, provider and carer are needed depends on the role."""

    role: Role
    tenant_id: UUID | None = None
    provider_id: UUID | None = None
    carer_id: UUID | None = None


class CredentialSecret(msgspec.Struct, frozen=True):
    """The only time the secret is shown: it is stored as an argon2id hash."""

    client_id: str
    client_secret: str
    role: Role
    tenant_id: UUID | None
    provider_id: UUID | None
    carer_id: UUID | None
