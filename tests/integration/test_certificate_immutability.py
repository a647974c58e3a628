"""Certificates are evidence: the database refuses UPDATE (but a one-time revocation), DELETE and
TRUNCATE, whoever asks (issue 3, point 4)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest

from tests.conftest import GAUGE, Api, LabAccount, Tenant


async def _certificate(tenant: Tenant, lab: LabAccount, admin: Api) -> uuid.UUID:
    gauge = await tenant.register(**GAUGE)
    response = await admin.post(
        f"/v1/instruments/{gauge['id']}/certificates",
        json={
            "kind": "verification_certificate",
            "number": f"IMM-{uuid.uuid4().hex[:8]}",
            "performed_on": "2026-06-10",
            "issued_on": "2026-06-10",
            "lab_id": lab.id,
        },
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["certificate"]["id"])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE certificates SET valid_until = valid_until + 365 WHERE id = $1",
        "UPDATE certificates SET number = number || 'X' WHERE id = $1",
        "UPDATE certificates SET content_sha256 = repeat('0', 64) WHERE id = $1",
        "DELETE FROM certificates WHERE id = $1",
    ],
)
async def test_raw_changes_to_a_certificate_are_refused(
    tenant: Tenant, lab: LabAccount, admin: Api, pool: asyncpg.Pool, statement: str
) -> None:
    certificate_id = await _certificate(tenant, lab, admin)
    async with pool.acquire() as conn:
        before = dict(await conn.fetchrow("SELECT * FROM certificates WHERE id = $1", certificate_id))
        with pytest.raises(asyncpg.RestrictViolationError, match="certificate"):
            await conn.execute(statement, certificate_id)
        after = dict(await conn.fetchrow("SELECT * FROM certificates WHERE id = $1", certificate_id))
    assert after == before


async def test_truncate_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(asyncpg.RestrictViolationError, match="TRUNCATE"):
            await conn.execute("TRUNCATE certificates CASCADE")


async def test_a_revocation_may_be_added_once_and_never_changed_or_removed(
    tenant: Tenant, lab: LabAccount, admin: Api, pool: asyncpg.Pool
) -> None:
    certificate_id = await _certificate(tenant, lab, admin)
    now = dt.datetime(2026, 6, 15, tzinfo=dt.UTC)
    revoke = """UPDATE certificates SET revoked_on = $2, revoked_reason = $3, revoked_at = $4 WHERE id = $1"""
    async with pool.acquire() as conn:
        await conn.execute(revoke, certificate_id, dt.date(2026, 6, 14), "spot check failed", now)
        with pytest.raises(asyncpg.RestrictViolationError, match="one-time revocation"):
            await conn.execute(revoke, certificate_id, dt.date(2026, 6, 11), "changed my mind", now)
        with pytest.raises(asyncpg.RestrictViolationError, match="one-time revocation"):
            await conn.execute(
                "UPDATE certificates SET revoked_on = NULL, revoked_reason = NULL, revoked_at = NULL WHERE id = $1",
                certificate_id,
            )
        row = await conn.fetchrow("SELECT revoked_on, revoked_reason FROM certificates WHERE id = $1", certificate_id)
    assert (row["revoked_on"], row["revoked_reason"]) == (dt.date(2026, 6, 14), "spot check failed")


async def test_a_revocation_cannot_smuggle_a_content_change(
    tenant: Tenant, lab: LabAccount, admin: Api, pool: asyncpg.Pool
) -> None:
    certificate_id = await _certificate(tenant, lab, admin)
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute(
                """UPDATE certificates SET revoked_on = performed_on, revoked_reason = 'x', revoked_at = now(),
                          valid_until = valid_until + 1 WHERE id = $1""",
                certificate_id,
            )
