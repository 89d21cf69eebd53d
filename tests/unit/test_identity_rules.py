"""Identity rules without I/O: client ids, hashing, who may create which credential, tenants."""

from __future__ import annotations

from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.identity import CredentialCreate, TenantCreate
from services.common.domain import RuleError
from services.identity import rules

T1 = UUID("01936f3e-5a4b-7c8d-9e0f-112233445566")
T2 = UUID("01936f3e-5a4b-7c8d-9e0f-665544332211")
P1 = UUID("01936f3e-0000-7000-8000-000000000001")
P2 = UUID("01936f3e-0000-7000-8000-000000000002")
C1 = UUID("01936f3e-0000-7000-8000-0000000000c1")
ADMIN = rules.Caller("admin", None, None)
COMMISSIONER = rules.Caller("commissioner", T1, None)
PROVIDER = rules.Caller("provider", T1, P1)


@given(st.uuids() | st.none())
def test_client_ids_name_their_tenant(tenant: UUID | None) -> None:
    assert rules.parse_client_id(rules.new_client_id(tenant)) == (True, tenant)


@pytest.mark.parametrize("client_id", ["", "adm_", "cb_123", "cb_" + "g" * 32 + "_" + "0" * 16, "ADM_" + "0" * 24])
def test_foreign_client_ids_are_not_ours(client_id: str) -> None:
    assert rules.parse_client_id(client_id) == (False, None)


def test_secrets_hash_with_argon2id_and_verify() -> None:
    hasher = rules.SecretHasher.for_profile("RFC_9106_LOW_MEMORY")
    secret = rules.new_secret()
    stored = hasher.hash(secret)
    assert stored.startswith("$argon2id$")
    assert secret not in stored
    assert hasher.verify(stored, secret)
    assert not hasher.verify(stored, secret + "x")
    assert not hasher.verify(None, secret)
    assert not hasher.verify("not a hash", secret)


@pytest.mark.parametrize(
    ("caller", "wanted", "expected"),
    [
        (ADMIN, CredentialCreate(role="admin"), rules.Binding("admin", None, None, None)),
        (
            ADMIN,
            CredentialCreate(role="commissioner", tenant_id=T2),
            rules.Binding("commissioner", T2, None, None),
        ),
        (
            ADMIN,
            CredentialCreate(role="provider", tenant_id=T2, provider_id=P2),
            rules.Binding("provider", T2, P2, None),
        ),
        (COMMISSIONER, CredentialCreate(role="commissioner"), rules.Binding("commissioner", T1, None, None)),
        (
            COMMISSIONER,
            CredentialCreate(role="provider", provider_id=P2),
            rules.Binding("provider", T1, P2, None),
        ),
        (COMMISSIONER, CredentialCreate(role="carer", carer_id=C1), rules.Binding("carer", T1, None, C1)),
        (PROVIDER, CredentialCreate(role="carer", carer_id=C1), rules.Binding("carer", T1, P1, C1)),
        (
            PROVIDER,
            CredentialCreate(role="carer", carer_id=C1, tenant_id=T1, provider_id=P1),
            rules.Binding("carer", T1, P1, C1),
        ),
    ],
)
def test_allowed_bindings(caller: rules.Caller, wanted: CredentialCreate, expected: rules.Binding) -> None:
    assert rules.bind_credential(caller, wanted) == expected


@pytest.mark.parametrize(
    ("caller", "wanted", "status", "field"),
    [
        (COMMISSIONER, CredentialCreate(role="admin"), 403, None),
        (COMMISSIONER, CredentialCreate(role="commissioner", tenant_id=T2), 404, "tenant_id"),
        (PROVIDER, CredentialCreate(role="provider", provider_id=P1), 403, None),
        (PROVIDER, CredentialCreate(role="carer", carer_id=C1, provider_id=P2), 404, "provider_id"),
        (PROVIDER, CredentialCreate(role="carer", carer_id=C1, tenant_id=T2), 404, "tenant_id"),
        (rules.Caller("carer", T1, P1), CredentialCreate(role="carer", carer_id=C1), 403, None),
        (ADMIN, CredentialCreate(role="admin", tenant_id=T1), 422, "tenant_id"),
        (ADMIN, CredentialCreate(role="commissioner"), 422, "tenant_id"),
        (ADMIN, CredentialCreate(role="provider", tenant_id=T1), 422, "provider_id"),
        (ADMIN, CredentialCreate(role="carer", tenant_id=T1), 422, "carer_id"),
        (COMMISSIONER, CredentialCreate(role="provider", provider_id=P1, carer_id=C1), 422, "carer_id"),
        (COMMISSIONER, CredentialCreate(role="commissioner", provider_id=P1), 422, "provider_id"),
    ],
)
def test_refused_bindings(caller: rules.Caller, wanted: CredentialCreate, status: int, field: str | None) -> None:
    with pytest.raises(RuleError) as raised:
        rules.bind_credential(caller, wanted)
    assert raised.value.status == status
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("zone", "region", "field"),
    [
        ("Europe/Narnia", "GB-ENG", "zone"),
        ("Europe/London", "XX", "holiday_region"),
        ("UTC", "GB-ZZZ", "holiday_region"),
    ],
)
def test_tenant_zone_and_region_must_exist(zone: str, region: str, field: str) -> None:
    with pytest.raises(RuleError) as raised:
        rules.check_tenant(TenantCreate(name="x", zone=zone, holiday_region=region))
    assert raised.value.field == field


def test_default_holiday_region_knows_english_bank_holidays() -> None:
    calendar = rules.holiday_calendar("GB-ENG")
    assert "2026-12-28" in calendar  # Boxing Day 2026 falls on a Saturday: substitute Monday
    assert "2026-04-06" in calendar  # Easter Monday
    assert "2026-03-17" not in calendar  # St Patrick's Day is Northern Ireland's, not England's
