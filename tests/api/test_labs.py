"""Labs: admins register them; a lab reads itself; scope entries are catalogue codes."""

from __future__ import annotations

import asyncpg

from service.auth import Role
from tests.conftest import Api, Tenant, fields_of, mint, problem

LAB = {"name": "上海市计量测试技术研究院", "accreditation_no": "CNAS L0001", "region_code": "310000"}


async def test_admin_registers_a_lab_with_its_scope(admin: Api) -> None:
    response = await admin.post("/v1/labs", json=LAB | {"scope": ["pressure_gauge", "price_scale", "pressure_gauge"]})
    assert response.status_code == 201, response.text
    assert response.json()["scope"] == ["pressure_gauge", "price_scale"]


async def test_scope_entries_must_be_catalogue_codes(admin: Api) -> None:
    body = problem(await admin.post("/v1/labs", json=LAB | {"scope": ["pressure_gauge", "flux_capacitor"]}), 422)
    assert fields_of(body) == ["scope[1]"]


async def test_lab_input_errors(admin: Api) -> None:
    assert fields_of(problem(await admin.post("/v1/labs", json=LAB | {"region_code": "31"}), 400)) == ["region_code"]
    assert fields_of(problem(await admin.post("/v1/labs", json={"name": "x"}), 400)) == ["accreditation_no"]
    assert fields_of(problem(await admin.post("/v1/labs", json=LAB | {"name": "  "}), 400)) == ["name"]


async def test_who_reads_a_lab(admin: Api, tenant: Tenant, pool: asyncpg.Pool) -> None:
    lab = (await admin.post("/v1/labs", json=LAB)).json()
    other = (await admin.post("/v1/labs", json=LAB | {"name": "另一家"})).json()
    own = Api(admin.client, await mint(pool, Role.LAB, lab_id=lab["id"]))
    url = f"/v1/labs/{lab['id']}"
    assert (await admin.get(url)).status_code == 200
    assert (await own.get(url)).json()["accreditation_no"] == "CNAS L0001"
    problem(await own.get(f"/v1/labs/{other['id']}"), 404)
    problem(await tenant.api.get(url), 404)
    problem(await own.post("/v1/labs", json=LAB), 403)
