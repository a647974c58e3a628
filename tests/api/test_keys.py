"""API keys: roles, scopes, the secret shown once, revocation, and 401 for everything else."""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import Api, Tenant, fields_of, problem


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer mr_000000000000_wrongsecret",
        "Bearer mr_short_x",
    ],
)
async def test_missing_or_bad_keys_are_401(anonymous: Api, tenant: Tenant, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    body = problem(await anonymous.get(tenant.instruments_url, headers=headers), 401)
    assert "mr_0000" not in body["detail"]


async def test_a_right_prefix_with_a_wrong_secret_is_401(anonymous: Api, tenant: Tenant) -> None:
    prefix = tenant.api.key.split("_")[1]  # type: ignore[union-attr]
    forged = f"Bearer mr_{prefix}_{'A' * 43}"
    problem(await anonymous.get(tenant.instruments_url, headers={"Authorization": forged}), 401)


async def test_admin_creates_keys_for_every_role(admin: Api, tenant: Tenant, pool: asyncpg.Pool) -> None:
    lab = (
        await admin.post(
            "/v1/labs",
            json={"name": "上海市计量测试技术研究院", "accreditation_no": "CNAS L0001", "region_code": "310000"},
        )
    ).json()
    bodies = [
        {"role": "admin", "name": "ops"},
        {"role": "enterprise", "name": "ledger clerk", "enterprise_id": tenant.id},
        {"role": "lab", "name": "lab desk", "lab_id": lab["id"]},
        {"role": "regulator", "name": "浦东新区市场监管局", "region_code": "310115"},
    ]
    for body in bodies:
        response = await admin.post("/v1/api-keys", json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["key"].startswith(f"mr_{created['prefix']}_")
        assert created["role"] == body["role"]
        # Only a hash is stored: the secret appears nowhere in the row.
        async with pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", created["id"])
        secret = created["key"].split("_", 2)[2]
        assert all(secret not in str(value) for value in dict(row).values())
        # The new key works.
        probe = await Api(admin.client, created["key"]).get("/v1/catalog")
        assert probe.status_code == 200


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"role": "enterprise", "name": "x"}, ["enterprise_id"]),
        ({"role": "lab", "name": "x"}, ["lab_id"]),
        ({"role": "regulator", "name": "x"}, ["region_code"]),
        ({"role": "admin", "name": "x", "region_code": "31"}, ["region_code"]),
        (
            {"role": "enterprise", "name": "x", "enterprise_id": "6b0f7a5e-0000-4000-8000-000000000000"},
            ["enterprise_id"],
        ),
    ],
)
async def test_key_scope_must_fit_the_role(admin: Api, body: dict[str, str], fields: list[str]) -> None:
    assert fields_of(problem(await admin.post("/v1/api-keys", json=body), 422)) == fields


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "owner", "name": "x"}, "role"),
        ({"role": "regulator", "name": "x", "region_code": "3"}, "region_code"),
        ({"role": "admin"}, "name"),
        ({"role": "admin", "name": "x", "enterprise_id": "not-a-uuid"}, "enterprise_id"),
    ],
)
async def test_malformed_key_requests_are_400(admin: Api, body: dict[str, str], field: str) -> None:
    assert fields_of(problem(await admin.post("/v1/api-keys", json=body), 400)) == [field]


async def test_only_admins_create_or_revoke_keys(tenant: Tenant, admin: Api) -> None:
    problem(await tenant.api.post("/v1/api-keys", json={"role": "admin", "name": "escalate"}), 403)
    created = (await admin.post("/v1/api-keys", json={"role": "admin", "name": "spare"})).json()
    problem(await tenant.api.delete(f"/v1/api-keys/{created['id']}"), 403)


async def test_revoked_keys_stop_working_at_once(admin: Api, tenant: Tenant) -> None:
    created = (
        await admin.post("/v1/api-keys", json={"role": "enterprise", "name": "temp", "enterprise_id": tenant.id})
    ).json()
    member = Api(admin.client, created["key"])
    assert (await member.get(tenant.instruments_url)).status_code == 200
    assert (await admin.delete(f"/v1/api-keys/{created['id']}")).status_code == 204
    problem(await member.get(tenant.instruments_url), 401)
    # Revoking again is harmless; an unknown key id is a 404, a malformed one a 400.
    assert (await admin.delete(f"/v1/api-keys/{created['id']}")).status_code == 204
    problem(await admin.delete("/v1/api-keys/6b0f7a5e-0000-4000-8000-000000000000"), 404)
    assert fields_of(problem(await admin.delete("/v1/api-keys/42"), 400)) == ["key_id"]
