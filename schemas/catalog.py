"""Wire contracts of the catalog: providers, carers, people (service users) and contracts."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Pence = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
Minutes = Annotated[int, msgspec.Meta(ge=0, le=24 * 60)]


class ProviderCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A home-care agency; `code` prefixes its invoice numbers."""

    code: Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{2,12}$")]
    name: Name


class Provider(msgspec.Struct, frozen=True):
    """A provider as stored."""

    id: UUID
    code: str
    name: str
    created_at: datetime


class CarerCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A care worker; a provider may leave out `provider_id` (it is its own)."""

    name: Name
    provider_id: UUID | None = None


class Carer(msgspec.Struct, frozen=True):
    """A carer as stored."""

    id: UUID
    provider_id: UUID
    name: str
    active: bool
    created_at: datetime


class Location(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A point in WGS 84 degrees."""

    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]


GeofenceM = Annotated[int, msgspec.Meta(gt=0, le=5000)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
PhoneText = Annotated[str, msgspec.Meta(min_length=3, max_length=32)]


class PersonCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A service user: the council's reference, a display name, and how a visit is verified."""

    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    display_name: Name
    location: Location
    geofence_m: GeofenceM = 100
    tags: Annotated[list[Tag], msgspec.Meta(max_length=50)] = []
    phones: Annotated[list[PhoneText], msgspec.Meta(max_length=20)] = []


class PersonPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fields to change on a person; the rest stay as they are."""

    display_name: Name | msgspec.UnsetType = msgspec.UNSET
    location: Location | msgspec.UnsetType = msgspec.UNSET
    geofence_m: GeofenceM | msgspec.UnsetType = msgspec.UNSET
    tags: Annotated[list[Tag], msgspec.Meta(max_length=50)] | msgspec.UnsetType = msgspec.UNSET
    phones: Annotated[list[PhoneText], msgspec.Meta(max_length=20)] | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET


class Person(msgspec.Struct, frozen=True):
    """A person as stored; phones are E.164."""

    id: UUID
    reference: str
    display_name: str
    location: Location
    geofence_m: int
    tags: list[str]
    phones: list[str]
    active: bool
    created_at: datetime


class Rates(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Pence per hour for each band."""

    day: Pence
    evening: Pence
    night: Pence
    weekend: Pence
    bank_holiday: Pence


class PayRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How delivered minutes become payable minutes; defaults are DOMAIN.md's."""

    grace_min: Minutes = 5
    rounding_unit_min: Annotated[int, msgspec.Meta(ge=1, le=60)] = 1
    rounding_mode: Literal["nearest", "up", "down"] = "nearest"
    minimum_min: Minutes = 0
    cap_at_planned: bool = True
    late_after_min: Minutes = 15
    missed_after_min: Annotated[int, msgspec.Meta(ge=1, le=24 * 60)] = 60
    settle_h: Annotated[int, msgspec.Meta(ge=0, le=24 * 31)] = 24
    cancellation_notice_h: Annotated[int, msgspec.Meta(ge=0, le=24 * 31)] = 24
    short_notice_pay_pct: Annotated[int, msgspec.Meta(ge=0, le=100)] = 100
    min_bankable_min: Minutes = 5
    auto_approve_min: Minutes = 0


class Banking(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How banked minutes are capped and expire."""

    expiry_weeks: Annotated[int, msgspec.Meta(ge=1, le=520)] = 12
    cap_min: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1200
    expiry_action: Literal["credit_note", "forfeit"] = "credit_note"


ContractModel = Literal["time_and_task", "outcome_based"]
InvoicePeriod = Literal["week", "month"]


class ContractCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A contract between the tenant and one provider."""

    provider_id: UUID
    model: ContractModel
    period: InvoicePeriod
    rates: Rates
    valid_from: date
    pay_rules: PayRules = PayRules()
    banking: Banking = Banking()
    valid_to: date | None = None


class Contract(msgspec.Struct, frozen=True):
    """A contract as stored, with every rule filled in."""

    id: UUID
    provider_id: UUID
    model: ContractModel
    period: InvoicePeriod
    rates: Rates
    pay_rules: PayRules
    banking: Banking
    valid_from: date
    valid_to: date | None
    created_at: datetime
