"""Catalog rules: phone numbers in E.164, tag hygiene, contract consistency."""

from __future__ import annotations

import phonenumbers

from schemas.catalog import ContractCreate
from services.common.domain import RuleError


def normalise_phone(raw: str, default_region: str, field: str) -> str:
    """E.164 form of a phone number; numbers without a country code use the tenant's country."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise RuleError("invalid_phone", f"{raw!r} is not a phone number", field) from None
    if not phonenumbers.is_valid_number(number):
        raise RuleError("invalid_phone", f"{raw!r} is not a valid phone number", field)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_phones(raws: list[str], holiday_region: str, field: str = "phones") -> list[str]:
    """Each phone in E.164, without duplicates, in the order given."""
    country = holiday_region.partition("-")[0]
    seen: dict[str, None] = {}
    for index, raw in enumerate(raws):
        seen.setdefault(normalise_phone(raw, country, f"{field}[{index}]"), None)
    return list(seen)


def normalise_tags(raws: list[str], field: str = "tags") -> list[str]:
    """Tags trimmed and de-duplicated; a blank tag is refused."""
    seen: dict[str, None] = {}
    for index, raw in enumerate(raws):
        tag = raw.strip()
        if not tag:
            raise RuleError("blank_tag", "a tag may not be blank", f"{field}[{index}]")
        seen.setdefault(tag, None)
    return list(seen)


def check_contract(data: ContractCreate) -> None:
    """Rules that span fields: dates in order; a late alert must come before a missed one."""
    if data.valid_to is not None and data.valid_to < data.valid_from:
        raise RuleError("before_valid_from", "valid_to is before valid_from", "valid_to")
    rules = data.pay_rules
    if rules.late_after_min >= rules.missed_after_min:
        raise RuleError(
            "not_after_late",
            "missed_after_min must be greater than late_after_min",
            "pay_rules.missed_after_min",
        )
