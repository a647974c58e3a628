"""Loading a generated register: what lands in the database, what the API reads back, and re-runs.

The register is loaded into a database of its own: other tests count what a tenant or the whole
platform has, and a thousand generated rows beside theirs would only make them slower.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from service.app import create_app
from service.audit.chain import verify
from service.auth import Role, hash_secret, parse_key
from service.cli import main
from service.clock import FixedClock
from service.db import init_connection
from service.demo_register import DemoRegisterError, LoadResult, enterprise_plan, load_register, plan_register
from service.demo_register.queries import select_catalog_rules
from service.errors import DuplicateError
from service.instruments.rules import Status
from tests.conftest import NOW, Api, app_settings, fresh_database, mint, running

SEED = 20260615


@pytest.fixture(scope="session", name="dsn")
async def _dsn() -> AsyncIterator[str]:
    async with fresh_database("metreg_demo_register") as dsn:
        yield dsn


def _connector(dsn: str, **settings: str) -> Any:
    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn, server_settings={"metreg.action": "metreg demo", **settings})
        await init_connection(conn)
        return conn

    return connect


async def _load(dsn: str, seed: int = SEED, instruments: int = 300, enterprises: int = 3) -> LoadResult:
    return await load_register(
        _connector(dsn), instruments=instruments, enterprises=enterprises, seed=seed, jobs=2, now=NOW
    )


@pytest.fixture(scope="session", name="loaded")
async def _loaded(dsn: str) -> LoadResult:
    return await _load(dsn)


@pytest.fixture(scope="session", name="db")
async def _db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        yield conn
    finally:
        await conn.close()


async def _generated(db: asyncpg.Connection, seed: int = SEED) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT id, enterprise_id, rows, created, file_name FROM instrument_imports
           WHERE format = 'generated' AND file_name LIKE $1 ORDER BY file_name""",
        f"% --seed {seed}: %",
    )


async def test_the_database_holds_what_was_generated(loaded: LoadResult, db: asyncpg.Connection) -> None:
    assert (loaded.enterprises, loaded.skipped, loaded.instruments) == (3, 0, 300)
    assert sum(loaded.statuses.values()) == 300
    imports = await _generated(db)
    specs = plan_register(300, 3, SEED)
    assert [(r["rows"], r["created"]) for r in imports] == [(s.size, s.size) for s in specs]
    for record in imports:
        count = await db.fetchval("SELECT count(*) FROM instruments WHERE enterprise_id = $1", record["enterprise_id"])
        assert count == record["rows"]
    assert loaded.sample_id == imports[0]["enterprise_id"]
    regions = await db.fetch(
        "SELECT region_code, address, contact_name, contact_phone FROM enterprises WHERE id = ANY($1::uuid[])",
        [r["enterprise_id"] for r in imports],
    )
    assert sorted(r["region_code"] for r in regions) == sorted(s.region.code for s in specs)
    # Each with the address and contact its filing table prints.
    assert all(r["address"] and r["contact_name"] and r["contact_phone"] for r in regions)


async def test_each_enterprise_is_audited_as_itself_and_one_import(loaded: LoadResult, db: asyncpg.Connection) -> None:
    for record in await _generated(db):
        entries = await db.fetch(
            "SELECT entity, entity_id, action, actor_role FROM audit_log WHERE enterprise_id = $1",
            record["enterprise_id"],
        )
        assert sorted((e["entity"], e["entity_id"]) for e in entries) == [
            ("enterprises", str(record["enterprise_id"])),
            ("instrument_imports", str(record["id"])),
        ]
        assert {(e["action"], e["actor_role"]) for e in entries} == {("metreg demo", "system")}
    checked, broken = await verify(db)
    assert broken is None
    assert checked > 0


async def test_histories_name_the_import_and_replacements_link_both_ways(
    loaded: LoadResult, db: asyncpg.Connection
) -> None:
    for record in await _generated(db):
        events = await db.fetch(
            """SELECT e.kind, e.detail, e.related_instrument_id, i.lifecycle, i.replaces, i.replaced_by
               FROM instrument_events e JOIN instruments i ON i.id = e.instrument_id
               WHERE i.enterprise_id = $1""",
            record["enterprise_id"],
        )
        kinds = collections.Counter(e["kind"] for e in events)
        replaced = sum(1 for e in events if e["kind"] == "registered" and e["lifecycle"] == "replaced")
        assert replaced > 0
        assert kinds == {"registered": record["rows"], "replaced": replaced}
        assert {e["detail"]["import_id"] for e in events} == {str(record["id"])}
        for e in events:
            if e["kind"] == "replaced":
                assert e["related_instrument_id"] == e["replaced_by"]
            elif e["replaces"] is not None:
                assert e["related_instrument_id"] == e["replaces"]


async def test_the_api_derives_the_status_the_generator_meant(
    loaded: LoadResult, dsn: str, db: asyncpg.Connection
) -> None:
    rules = await select_catalog_rules(db)
    app = create_app(app_settings(dsn), clock=FixedClock(NOW))
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=init_connection)
    assert pool is not None
    try:
        async with (
            running(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
        ):
            for spec, record in zip(plan_register(300, 3, SEED), await _generated(db), strict=True):
                plan = enterprise_plan(spec, rules, NOW.date())
                meant = dict(zip(plan.management_nos, plan.statuses, strict=True))
                member = Api(client, await mint(pool, Role.ENTERPRISE, enterprise_id=record["enterprise_id"]))
                got = await _statuses(member, record["enterprise_id"])
                assert got == meant
                assert set(got.values()) == set(Status)
                imported = (await member.get(f"/v1/imports/{record['id']}")).json()
                assert (imported["format"], imported["created"]) == ("generated", spec.size)
            regulator = Api(
                client, await mint(pool, Role.REGULATOR, region_code=plan_register(300, 3, SEED)[0].region.code)
            )
            page = await regulator.get(f"/v1/enterprises/{loaded.sample_id}/instruments", params={"limit": 1})
            assert page.status_code == 200
    finally:
        await pool.close()


async def _statuses(api: Api, enterprise_id: uuid.UUID) -> dict[str, Status]:
    found: dict[str, Status] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        response = await api.get(f"/v1/enterprises/{enterprise_id}/instruments", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found |= {item["management_no"]: Status(item["status"]) for item in page["items"]}
        cursor = page["next_cursor"]
        if not cursor:
            return found


async def test_running_the_same_command_again_loads_nothing_new(
    loaded: LoadResult, dsn: str, db: asyncpg.Connection
) -> None:
    before = await db.fetchval("SELECT count(*) FROM instruments")
    again = await _load(dsn)
    assert (again.enterprises, again.skipped, again.instruments) == (0, 3, 0)
    assert again.sample_id == loaded.sample_id
    assert await db.fetchval("SELECT count(*) FROM instruments") == before


async def test_an_interrupted_load_keeps_whole_enterprises_and_the_next_run_completes_it(
    loaded: LoadResult, dsn: str, db: asyncpg.Connection
) -> None:
    seed = SEED + 1
    last = plan_register(40, 4, seed)[-1]
    # An enterprise already holding the last one's credit code stops the load there.
    taken = enterprise_plan(last, await select_catalog_rules(db), NOW.date()).credit_code
    blocker = await db.fetchval(
        "INSERT INTO enterprises (name, credit_code, region_code) VALUES ('占用', $1, '310115') RETURNING id", taken
    )
    with pytest.raises(DuplicateError, match="credit_code"):
        await load_register(_connector(dsn), instruments=40, enterprises=4, seed=seed, jobs=1, now=NOW)
    assert [r["rows"] for r in await _generated(db, seed)] == [s.size for s in plan_register(40, 4, seed)[:3]]
    assert await db.fetchval("SELECT count(*) FROM enterprises WHERE credit_code = $1", taken) == 1
    await db.execute("DELETE FROM enterprises WHERE id = $1", blocker)
    resumed = await load_register(_connector(dsn), instruments=40, enterprises=4, seed=seed, jobs=2, now=NOW)
    assert (resumed.enterprises, resumed.skipped, resumed.instruments) == (1, 3, last.size)
    assert len(await _generated(db, seed)) == 4
    other = await _load(dsn, seed=SEED + 2, instruments=20, enterprises=2)
    assert (other.enterprises, other.skipped) == (2, 0)


async def test_a_login_held_by_row_level_security_is_refused(dsn: str) -> None:
    with pytest.raises(DemoRegisterError, match="row-level security"):
        await load_register(_connector(dsn, role="metreg_api"), instruments=10, enterprises=1, seed=1, jobs=1, now=NOW)


async def test_unusable_sizes_are_refused_naming_the_options(dsn: str) -> None:
    with pytest.raises(DemoRegisterError, match="--instruments 3 --enterprises 5"):
        await load_register(_connector(dsn), instruments=3, enterprises=5, seed=1, jobs=1, now=NOW)
    with pytest.raises(DemoRegisterError, match="--jobs"):
        await load_register(_connector(dsn), instruments=3, enterprises=1, seed=1, jobs=0, now=NOW)


def test_the_command_loads_prints_the_summary_and_working_keys(dsn: str) -> None:
    args = ["demo", "--instruments", "30", "--enterprises", "3", "--seed", "77", "--jobs", "1"]
    result = CliRunner().invoke(main, args, env={"DATABASE_URL": dsn})
    assert result.exit_code == 0, result.output
    assert "3 enterprises, 30 instruments loaded" in result.output
    assert "by status: valid" in result.output
    keys = [line.split()[-1] for line in result.output.splitlines() if "key" in line and "mr_" in line]
    assert len(keys) == 3
    hashes = asyncio.run(_stored_hashes(dsn, [parse_key(k) for k in keys]))
    assert hashes == [hash_secret(p[1]) for p in (parse_key(k) for k in keys) if p]
    again = CliRunner().invoke(main, args, env={"DATABASE_URL": dsn})
    assert again.exit_code == 0, again.output
    assert "0 enterprises, 0 instruments loaded (3 loaded before, left as they were)" in again.output


async def _stored_hashes(dsn: str, parsed: list[tuple[str, str] | None]) -> list[bytes]:
    conn = await asyncpg.connect(dsn)
    try:
        return [await conn.fetchval("SELECT secret_sha256 FROM api_keys WHERE prefix = $1", p[0]) for p in parsed if p]
    finally:
        await conn.close()


def test_options_of_the_generated_register_need_instruments(dsn: str) -> None:
    result = CliRunner().invoke(main, ["demo", "--seed", "3"], env={"DATABASE_URL": dsn})
    assert result.exit_code == 2
    assert "--seed goes with --instruments" in result.output
    result = CliRunner().invoke(main, ["demo", "--instruments", "2", "--enterprises", "3"], env={"DATABASE_URL": dsn})
    assert result.exit_code == 2
    assert "--enterprises" in result.output
