"""The migration runner: forward-only, checksummed, serialised, with a no-transaction escape."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from service import migrate
from service.cli import main
from tests.conftest import BASE_DSN, NOW


@pytest.fixture
async def scratch_dsn() -> AsyncIterator[str]:
    dsn = f"{BASE_DSN.rsplit('/', 1)[0]}/metreg_scratch_{uuid.uuid4().hex[:10]}"
    assert await migrate.create_database(dsn) is True
    assert await migrate.create_database(dsn) is False  # idempotent
    try:
        yield dsn
    finally:
        await migrate.drop_database(dsn)


def _write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql, encoding="utf-8")


async def test_the_real_schema_applies_once_and_then_is_up_to_date(scratch_dsn: str) -> None:
    applied = await migrate.migrate(scratch_dsn, NOW)
    assert [m.version for m in applied] == list(range(1, len(migrate.discover()) + 1))
    assert await migrate.migrate(scratch_dsn, NOW) == []
    assert await migrate.pending(scratch_dsn) == []
    conn = await asyncpg.connect(scratch_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM catalog_items") >= 19
    finally:
        await conn.close()


async def test_concurrent_runs_apply_each_migration_once(scratch_dsn: str) -> None:
    results = await asyncio.gather(*(migrate.migrate(scratch_dsn, NOW) for _ in range(3)))
    assert sorted(len(r) for r in results) == [0, 0, len(migrate.discover())]


async def test_an_edited_migration_is_refused(scratch_dsn: str, tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql", "CREATE TABLE t (a int);")
    await migrate.migrate(scratch_dsn, NOW, tmp_path)
    _write(tmp_path, "0001_first.sql", "CREATE TABLE t (a bigint);")
    with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
        await migrate.migrate(scratch_dsn, NOW, tmp_path)


async def test_a_failing_migration_leaves_nothing_behind(scratch_dsn: str, tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql", "CREATE TABLE t (a int);")
    _write(tmp_path, "0002_broken.sql", "CREATE TABLE u (a int); SELECT no_such_function();")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate.migrate(scratch_dsn, NOW, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('u')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 1
    finally:
        await conn.close()


async def test_no_transaction_migrations_can_build_indexes_concurrently(scratch_dsn: str, tmp_path: Path) -> None:
    _write(tmp_path, "0001_table.sql", "CREATE TABLE t (a int);")
    _write(tmp_path, "0002_index.sql", "-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY t_a ON t (a);")
    assert [m.transactional for m in migrate.discover(tmp_path)] == [True, False]
    assert len(await migrate.migrate(scratch_dsn, NOW, tmp_path)) == 2


@contextlib.asynccontextmanager
async def _long_transaction(dsn: str, statement: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session in a transaction that ran ``statement`` and holds its locks until the block ends."""
    conn = await asyncpg.connect(dsn)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(statement)
        try:
            yield conn
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


async def test_a_migration_waits_for_a_lock_only_so_long_and_leaves_nothing_behind(
    scratch_dsn: str, tmp_path: Path
) -> None:
    _write(tmp_path, "0001_keys.sql", "CREATE TABLE keys (a int); INSERT INTO keys VALUES (1);")
    await migrate.migrate(scratch_dsn, NOW, tmp_path)
    _write(tmp_path, "0002_audited.sql", "CREATE TABLE trail (a int); ALTER TABLE keys ADD COLUMN b int;")
    # A transaction that read the table and is still open: it holds ACCESS SHARE, which the
    # ALTER's ACCESS EXCLUSIVE must wait for.
    async with _long_transaction(scratch_dsn, "SELECT * FROM keys"):
        with pytest.raises(migrate.MigrationError) as refused:
            await migrate.migrate(scratch_dsn, NOW, tmp_path, lock_timeout=dt.timedelta(milliseconds=100))
        assert isinstance(refused.value.__cause__, asyncpg.LockNotAvailableError)
        message = str(refused.value)
        assert "0002_audited.sql waited more than 0.1 s (METREG_MIGRATE_LOCK_TIMEOUT)" in message
        assert "nothing of it is applied" in message
        assert "safe to run `metreg migrate` again" in message
        conn = await asyncpg.connect(scratch_dsn)
        try:
            assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 1
            assert await conn.fetchval("SELECT to_regclass('trail')") is None
            columns = await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'keys'::regclass AND attnum > 0"
            )
            assert [c["attname"] for c in columns] == ["a"]
        finally:
            await conn.close()
    assert [m.version for m in await migrate.migrate(scratch_dsn, NOW, tmp_path)] == [2]
    assert await migrate.pending(scratch_dsn, tmp_path) == []


async def _until(observer: asyncpg.Connection, condition: str, *args: object) -> None:
    """Poll ``condition`` (a query returning a boolean) until it holds. The observer is a session of
    its own, outside any transaction: a transaction sees pg_stat_activity as it first read it."""
    while not await observer.fetchval(condition, *args):  # noqa: ASYNC110  # polled
        await asyncio.sleep(0.01)


_BLOCKS_SOMEONE = "SELECT count(*) > 0 FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))"
_GATE = 0x67617465  # "gate"


async def test_a_migration_rolled_back_out_of_a_deadlock_says_so_and_leaves_nothing_behind(
    scratch_dsn: str, tmp_path: Path
) -> None:
    """0021's lock upgrade against a request that read the table and then writes it: the migration
    takes SHARE ROW EXCLUSIVE (the request's read goes on), and while its scan goes on (here an
    advisory lock the test holds stands for it) the request's write waits for it; then the
    migration's ACCESS EXCLUSIVE waits for the request's read."""
    _write(tmp_path, "0001_keys.sql", "CREATE TABLE keys (a int); INSERT INTO keys VALUES (1);")
    await migrate.migrate(scratch_dsn, NOW, tmp_path)
    _write(
        tmp_path,
        "0002_upgraded.sql",
        f"""CREATE TABLE trail (a int);
            LOCK TABLE keys IN SHARE ROW EXCLUSIVE MODE;
            SELECT pg_advisory_xact_lock({_GATE});
            ALTER TABLE keys ADD COLUMN b int;""",
    )
    # The session that checks for the deadlock is the one rolled back: the migration's, which
    # closes the cycle, checks after 10 ms; the request's waits far longer than the test runs.
    observer = await asyncpg.connect(scratch_dsn)
    await observer.execute(f"ALTER DATABASE {scratch_dsn.rsplit('/', 1)[1]} SET deadlock_timeout = '10ms'")
    gate = await asyncpg.connect(scratch_dsn)
    try:
        await gate.execute(f"SELECT pg_advisory_lock({_GATE})")
        async with _long_transaction(scratch_dsn, "SELECT * FROM keys") as request:
            await request.execute("SET deadlock_timeout = '10min'")
            migration = asyncio.create_task(
                migrate.migrate(scratch_dsn, NOW, tmp_path, lock_timeout=dt.timedelta(minutes=10))
            )
            await _until(observer, _BLOCKS_SOMEONE, gate.get_server_pid())
            write = asyncio.create_task(request.execute("INSERT INTO keys VALUES (2)"))
            [migrating] = await observer.fetch(
                "SELECT pid FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))", gate.get_server_pid()
            )
            await _until(
                observer, "SELECT $1::int = ANY (pg_blocking_pids($2::int))", migrating["pid"], request.get_server_pid()
            )
            await gate.execute(f"SELECT pg_advisory_unlock({_GATE})")
            with pytest.raises(migrate.MigrationError) as refused:
                await migration
            assert await write == "INSERT 0 1"  # the request goes on
        assert isinstance(refused.value.__cause__, asyncpg.DeadlockDetectedError)
        message = str(refused.value)
        assert "0002_upgraded.sql was rolled back by PostgreSQL out of a deadlock with another transaction" in message
        assert "nothing of it is applied" in message
        assert "safe to run `metreg migrate` again at once" in message
        assert await observer.fetchval("SELECT max(version) FROM schema_migrations") == 1
        assert await observer.fetchval("SELECT to_regclass('trail')") is None
        columns = await observer.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'keys'::regclass AND attnum > 0"
        )
        assert [c["attname"] for c in columns] == ["a"]
    finally:
        await gate.close()
        await observer.close()
    assert [m.version for m in await migrate.migrate(scratch_dsn, NOW, tmp_path)] == [2]


async def test_a_second_deployer_waits_for_the_first_however_long(scratch_dsn: str, tmp_path: Path) -> None:
    """The limit is on the migrations' own locks, not on the advisory lock that queues deployers."""
    _write(tmp_path, "0001_t.sql", "CREATE TABLE t (a int);")
    async with _long_transaction(scratch_dsn, f"SELECT pg_advisory_xact_lock({migrate._LOCK_KEY})") as first:
        second = asyncio.create_task(
            migrate.migrate(scratch_dsn, NOW, tmp_path, lock_timeout=dt.timedelta(milliseconds=10))
        )
        observer = await asyncpg.connect(scratch_dsn)
        try:
            await _until(observer, _BLOCKS_SOMEONE, first.get_server_pid())
        finally:
            await observer.close()
        await asyncio.sleep(0.1)  # ten times its lock_timeout
        assert not second.done()
    assert [m.version for m in await second] == [1]


def test_gaps_and_stray_names_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", "SELECT 1;")
    _write(tmp_path, "0003_c.sql", "SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="0002 is missing"):
        migrate.discover(tmp_path)
    (tmp_path / "0003_c.sql").unlink()
    _write(tmp_path, "2_b.sql", "SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="NNNN_description"):
        migrate.discover(tmp_path)


# ---------------------------------------------------------------------------------------------
# schema/0020_references_fixed.sql on a database that already holds a register

_REFERENCES_FIXED = "references_fixed"
_E1, _E2, _OLD, _NEW, _THEIRS, _CERT = (uuid.UUID(int=n) for n in range(1, 7))


async def _migrated_up_to_before(dsn: str, name: str, folder: Path) -> None:
    """Apply the real migrations that come before the one named ``name``, as an older release did."""
    [target] = [m for m in migrate.discover() if m.name == name]
    for m in migrate.discover():
        if m.version < target.version:
            _write(folder, f"{m.version:04d}_{m.name}.sql", m.sql)
    await migrate.migrate(dsn, NOW, folder)


async def _refused_with_nothing_applied(conn: asyncpg.Connection, dsn: str, constraint: str) -> None:
    """`migrate` stops at the foreign key ``constraint`` and records no migration of its run."""
    before = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match=constraint):
        await migrate.migrate(dsn, NOW)
    assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == before


async def _register(conn: asyncpg.Connection, *, successor_of: uuid.UUID | None) -> None:
    """Two enterprises; in the first a replaced instrument, its successor and the successor's
    certificate, linked as the app links them; the second's instrument replaces ``successor_of``
    (none if None)."""
    for enterprise, credit_code in ((_E1, "91530102MA6K00000A"), (_E2, "91620102MA6K00000B")):
        await conn.execute(
            "INSERT INTO enterprises (id, name, credit_code, region_code) VALUES ($1, '企业', $2, '530102')",
            enterprise,
            credit_code,
        )
    insert = """INSERT INTO instruments (id, enterprise_id, name, serial_no, regime, replaces)
                VALUES ($1, $2, 'x', $3, 'not_controlled', $4)"""
    await conn.execute(insert, _OLD, _E1, "S-OLD", None)
    await conn.execute(insert, _NEW, _E1, "S-NEW", _OLD)
    await conn.execute(insert, _THEIRS, _E2, "S-THEIRS", successor_of)
    await conn.execute("UPDATE instruments SET replaced_by = $1, lifecycle = 'replaced' WHERE id = $2", _NEW, _OLD)
    await conn.execute(
        """INSERT INTO certificates (id, instrument_id, enterprise_id, issuer_region, kind, number, outcome,
                                    performed_on, issued_on, legal_effect, effect_note, content_sha256,
                                    recorded_by_role, recorded_at)
           VALUES ($1, $2, $3, '53', 'inspection_record', 'N-1', 'pass', '2026-01-01', '2026-01-01', 'governs', 'x',
                   repeat('0', 64), 'regulator', $4)""",
        _CERT,
        _NEW,
        _E1,
        NOW,
    )
    await conn.execute("UPDATE instruments SET current_certificate_id = $1 WHERE id = $2", _CERT, _NEW)


async def test_a_populated_register_takes_the_owners_references(scratch_dsn: str, tmp_path: Path) -> None:
    await _migrated_up_to_before(scratch_dsn, _REFERENCES_FIXED, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        applied = await migrate.migrate(scratch_dsn, NOW)
        assert _REFERENCES_FIXED in [m.name for m in applied]
        linked = await conn.fetchrow("SELECT replaced_by, current_certificate_id FROM instruments WHERE id = $1", _OLD)
        assert tuple(linked) == (_NEW, None)
    finally:
        await conn.close()


async def test_a_cross_tenant_link_stops_the_migration_with_nothing_applied(scratch_dsn: str, tmp_path: Path) -> None:
    await _migrated_up_to_before(scratch_dsn, _REFERENCES_FIXED, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=_OLD)  # the second enterprise's instrument replaces the first's
        await _refused_with_nothing_applied(conn, scratch_dsn, "instruments_replaces_fkey")
        assert await conn.fetchval("SELECT to_regclass('certificates_id_instrument')") is None
    finally:
        await conn.close()


async def test_metreg_migrate_gives_up_behind_a_long_transaction_and_then_succeeds(
    scratch_dsn: str, tmp_path: Path
) -> None:
    """As an operator meets it: a report reading the register holds instruments, which 0020 alters."""
    await _migrated_up_to_before(scratch_dsn, _REFERENCES_FIXED, tmp_path)
    env = {"DATABASE_URL": scratch_dsn, "METREG_MIGRATE_LOCK_TIMEOUT": "0.1"}
    [target] = [m for m in migrate.discover() if m.name == _REFERENCES_FIXED]
    async with _long_transaction(scratch_dsn, "SELECT count(*) FROM instruments"):
        refused = await asyncio.to_thread(CliRunner().invoke, main, ["migrate"], env=env)
        assert refused.exit_code == 1, refused.output
        assert f"{target.version:04d}_{_REFERENCES_FIXED}.sql waited more than 0.1 s" in refused.output
        assert "safe to run `metreg migrate` again" in refused.output
        assert await migrate.pending(scratch_dsn) == [m for m in migrate.discover() if m.version >= target.version]
    done = await asyncio.to_thread(CliRunner().invoke, main, ["migrate"], env=env)
    assert done.exit_code == 0, done.output
    assert f"applied {target.version:04d}_{_REFERENCES_FIXED}" in done.output
    assert await migrate.pending(scratch_dsn) == []


# ---------------------------------------------------------------------------------------------
# schema/0021_notice_certificates_fixed.sql on a database that already holds a register

_NOTICE_CERTIFICATES_FIXED = "notice_certificates_fixed"
_RESULT_NOTICE = """
    INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step, certificate_id,
                         due_on, next_attempt_at, created_at, updated_at)
    VALUES ($1, $2, 'result_recorded', 'enterprise', '530102', '2026-01-01', 0, $3, '2026-01-01', $4, $4, $4)"""
_PLANNED_NOTICE = """
    INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on,
                         next_attempt_at, created_at, updated_at)
    VALUES ($1, $2, 'due_soon', 'enterprise', '530102', '2026-12-31', 30, '2026-12-01', $3, $3, $3)"""
_KEYS_TO_CERTIFICATES = """
    SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
    WHERE conrelid = 'notices'::regclass AND confrelid = 'certificates'::regclass"""


async def test_a_populated_register_takes_the_notices_certificate_key(scratch_dsn: str, tmp_path: Path) -> None:
    """The notices an older release wrote: the certificate's result notice and planned ones."""
    await _migrated_up_to_before(scratch_dsn, _NOTICE_CERTIFICATES_FIXED, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        await conn.execute(_RESULT_NOTICE, _E1, _NEW, _CERT, NOW)
        await conn.execute(_PLANNED_NOTICE, _E1, _NEW, NOW)
        await conn.execute(_PLANNED_NOTICE, _E2, _THEIRS, NOW)
        applied = await migrate.migrate(scratch_dsn, NOW)
        assert _NOTICE_CERTIFICATES_FIXED in [m.name for m in applied]
        keys = await conn.fetch(_KEYS_TO_CERTIFICATES)
        assert [(k["conname"], k["def"]) for k in keys] == [
            (
                "notices_certificate_fkey",
                "FOREIGN KEY (certificate_id, instrument_id) REFERENCES certificates(id, instrument_id)",
            )
        ]
        assert await conn.fetchval("SELECT count(*) FROM notices") == 3
    finally:
        await conn.close()


async def test_a_notice_naming_another_instruments_certificate_stops_the_migration_with_nothing_applied(
    scratch_dsn: str, tmp_path: Path
) -> None:
    await _migrated_up_to_before(scratch_dsn, _NOTICE_CERTIFICATES_FIXED, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        await conn.execute(_RESULT_NOTICE, _E2, _THEIRS, _CERT, NOW)  # the second enterprise's, the first's certificate
        await _refused_with_nothing_applied(conn, scratch_dsn, "notices_certificate_fkey")
        keys = await conn.fetch(_KEYS_TO_CERTIFICATES)
        assert [k["conname"] for k in keys] == ["notices_certificate_id_fkey"]
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# schema/0023_item_and_event_certificates_fixed.sql on a database that already holds a register

_ITEM_AND_EVENT_CERTIFICATES_FIXED = "item_and_event_certificates_fixed"
_LAB, _REQUEST, _THEIR_REQUEST = (uuid.UUID(int=n) for n in range(7, 10))
_REQUEST_OF = """
    INSERT INTO verification_requests (id, enterprise_id, lab_id, status, accepted_on, due_by, created_at, updated_at)
    VALUES ($1, $2, $3, 'accepted', '2025-12-20', '2026-01-10', $4, $4)"""
_ITEM = "INSERT INTO request_items (request_id, instrument_id, position, certificate_id) VALUES ($1, $2, $3, $4)"
_DONE = "UPDATE request_items SET certificate_id = $1 WHERE request_id = $2 AND instrument_id = $3"
_EVENT = """
    INSERT INTO instrument_events (instrument_id, kind, effective_on, certificate_id, occurred_at)
    VALUES ($1, $2, '2026-01-01', $3, $4)"""
_KEYS_OF_ITEMS_AND_EVENTS = """
    SELECT conrelid::regclass::text AS tab, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
    WHERE conrelid IN ('request_items'::regclass, 'instrument_events'::regclass)
      AND confrelid = 'certificates'::regclass
    ORDER BY 1"""


async def _requests(conn: asyncpg.Connection) -> None:
    """A lab, and a request of each enterprise to it: the first's for its successor, done with that
    one's certificate as attach_result writes it, and for the replaced one, still waiting; the
    second's for its own instrument, waiting."""
    await conn.execute(
        "INSERT INTO labs (id, name, accreditation_no, region_code) VALUES ($1, '实验室', 'L-1', '530102')", _LAB
    )
    await conn.execute(_REQUEST_OF, _REQUEST, _E1, _LAB, NOW)
    await conn.execute(_REQUEST_OF, _THEIR_REQUEST, _E2, _LAB, NOW)
    await conn.execute(_ITEM, _REQUEST, _NEW, 1, _CERT)
    await conn.execute(_ITEM, _REQUEST, _OLD, 2, None)
    await conn.execute(_ITEM, _THEIR_REQUEST, _THEIRS, 1, None)


async def test_a_populated_register_takes_the_item_and_event_certificate_keys(scratch_dsn: str, tmp_path: Path) -> None:
    """The rows an older release wrote: items waiting and done, the result's and a revocation's
    events naming the certificate, and events naming none."""
    await _migrated_up_to_before(scratch_dsn, _ITEM_AND_EVENT_CERTIFICATES_FIXED, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        await _requests(conn)
        await conn.execute(_EVENT, _NEW, "result_recorded", _CERT, NOW)
        await conn.execute(_EVENT, _NEW, "certificate_revoked", _CERT, NOW)
        for instrument in (_OLD, _NEW, _THEIRS):
            await conn.execute(_EVENT, instrument, "registered", None, NOW)
        applied = await migrate.migrate(scratch_dsn, NOW)
        assert _ITEM_AND_EVENT_CERTIFICATES_FIXED in [m.name for m in applied]
        keys = await conn.fetch(_KEYS_OF_ITEMS_AND_EVENTS)
        assert [tuple(k) for k in keys] == [
            (
                "instrument_events",
                "instrument_events_certificate_fkey",
                "FOREIGN KEY (certificate_id, instrument_id) REFERENCES certificates(id, instrument_id)",
            ),
            (
                "request_items",
                "request_items_certificate_fkey",
                "FOREIGN KEY (certificate_id, instrument_id) REFERENCES certificates(id, instrument_id)",
            ),
        ]
        assert await conn.fetchval("SELECT count(*) FROM request_items") == 3
        assert await conn.fetchval("SELECT count(*) FROM instrument_events") == 5
    finally:
        await conn.close()


# Each a row that names a certificate of another instrument: the second enterprise's, or the first
# enterprise's replaced instrument naming its successor's.
_MISPOINTED_ROWS = {
    "their item": (_DONE, (_CERT, _THEIR_REQUEST, _THEIRS), "request_items_certificate_fkey"),
    "a neighbour's item": (_DONE, (_CERT, _REQUEST, _OLD), "request_items_certificate_fkey"),
    "their event": (_EVENT, (_THEIRS, "result_recorded", _CERT, NOW), "instrument_events_certificate_fkey"),
    "a neighbour's event": (_EVENT, (_OLD, "certificate_revoked", _CERT, NOW), "instrument_events_certificate_fkey"),
}


@pytest.mark.parametrize("row", list(_MISPOINTED_ROWS))
async def test_an_item_or_event_naming_another_instruments_certificate_stops_the_migration_with_nothing_applied(
    row: str, scratch_dsn: str, tmp_path: Path
) -> None:
    await _migrated_up_to_before(scratch_dsn, _ITEM_AND_EVENT_CERTIFICATES_FIXED, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        await _requests(conn)
        sql, args, constraint = _MISPOINTED_ROWS[row]
        await conn.execute(sql, *args)
        await _refused_with_nothing_applied(conn, scratch_dsn, constraint)
        keys = await conn.fetch(_KEYS_OF_ITEMS_AND_EVENTS)
        assert [k["conname"] for k in keys] == [
            "instrument_events_certificate_id_fkey",
            "request_items_certificate_id_fkey",
        ]
    finally:
        await conn.close()


# schema/0024_webhook_url_per_owner.sql and 0025_delivery_per_webhook.sql on a database in use

_DELIVERY_PER_WEBHOOK = "delivery_per_webhook"
_WEBHOOK_URL_PER_OWNER = "webhook_url_per_owner"
_HOOK = "https://hooks.example.com/metreg"
_WEBHOOK = """INSERT INTO webhooks (enterprise_id, region_code, url, secret, created_at, active)
              VALUES ($1, $2, $3, repeat('s', 32), $4, $5) RETURNING id"""
_DELIVERY = """INSERT INTO deliveries (notice_id, channel, webhook_id, target, next_attempt_at, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $5, $5)"""


async def test_the_deliveries_an_older_release_made_take_the_key_per_webhook(scratch_dsn: str, tmp_path: Path) -> None:
    """Rows as create_targets_of wrote them (one per URL, one per address) stay; then a second
    webhook at the same URL gets a delivery of its own, the same webhook twice does not, nor does a
    webhook delivery that names no webhook."""
    await _migrated_up_to_before(scratch_dsn, _DELIVERY_PER_WEBHOOK, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        notice = await conn.fetchval(f"{_PLANNED_NOTICE} RETURNING id", _E1, _NEW, NOW)
        first = await conn.fetchval(_WEBHOOK, _E1, None, _HOOK, NOW, True)
        second = await conn.fetchval(_WEBHOOK, None, "53", _HOOK, NOW, True)
        await conn.execute(_DELIVERY, notice, "webhook", first, _HOOK, NOW)
        await conn.execute(_DELIVERY, notice, "email", None, "ops@example.com", NOW)
        with pytest.raises(asyncpg.UniqueViolationError, match="deliveries_target"):
            await conn.execute(_DELIVERY, notice, "webhook", second, _HOOK, NOW)

        applied = await migrate.migrate(scratch_dsn, NOW)
        assert _DELIVERY_PER_WEBHOOK in [m.name for m in applied]
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == 2
        await conn.execute(_DELIVERY, notice, "webhook", second, _HOOK, NOW)
        with pytest.raises(asyncpg.UniqueViolationError, match="deliveries_webhook"):
            await conn.execute(_DELIVERY, notice, "webhook", first, _HOOK, NOW)
        with pytest.raises(asyncpg.UniqueViolationError, match="deliveries_email"):
            await conn.execute(_DELIVERY, notice, "email", None, "ops@example.com", NOW)
        with pytest.raises(asyncpg.CheckViolationError, match="deliveries_webhook_named"):
            await conn.execute(_DELIVERY, notice, "webhook", None, _HOOK, NOW)
        with pytest.raises(asyncpg.CheckViolationError, match="deliveries_webhook_named"):
            await conn.execute(_DELIVERY, notice, "email", first, "qa@example.com", NOW)
    finally:
        await conn.close()


async def test_duplicate_webhooks_stop_the_migration_naming_them_until_their_owner_deletes_one(
    scratch_dsn: str, tmp_path: Path
) -> None:
    """An older release accepted a second webhook of one owner at one URL. Which to keep is the
    owner's to say (its secret, its events), so `metreg migrate` refuses, naming each owner, URL and
    webhook, with nothing of 0024 applied; once the extra one is deleted it applies. Other owners at
    that URL, and deleted webhooks, are no duplicates."""
    await _migrated_up_to_before(scratch_dsn, _WEBHOOK_URL_PER_OWNER, tmp_path)
    env = {"DATABASE_URL": scratch_dsn}
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        older = await conn.fetchval(_WEBHOOK, _E1, None, _HOOK, NOW, True)
        newer = await conn.fetchval(_WEBHOOK, _E1, None, _HOOK, NOW + dt.timedelta(seconds=1), True)
        gone = await conn.fetchval(_WEBHOOK, _E1, None, _HOOK, NOW, False)
        others = [
            await conn.fetchval(_WEBHOOK, _E2, None, _HOOK, NOW, True),
            await conn.fetchval(_WEBHOOK, None, "53", _HOOK, NOW, True),
            await conn.fetchval(_WEBHOOK, None, "5301", _HOOK, NOW, True),
        ]
        before = await conn.fetchval("SELECT max(version) FROM schema_migrations")

        refused = await asyncio.to_thread(CliRunner().invoke, main, ["migrate"], env=env)
        assert refused.exit_code == 1, refused.output
        assert (
            "an owner may have one active webhook per URL from now on; owners and URLs with more: 1." in refused.output
        )
        assert f"enterprise {_E1} at {_HOOK}: webhooks {older}, {newer} (oldest first)" in refused.output
        assert "DELETE /v1/webhooks/{id}" in refused.output
        assert not {str(gone), *map(str, others)} & set(refused.output.replace(",", " ").split())
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == before
        assert await conn.fetchval("SELECT to_regclass('webhooks_owner_url')") is None
        # Nor is one delivery per webhook (0025) applied ahead of it: meanwhile the duplicates
        # share one delivery per notice, as before, rather than the receiver getting one for each.
        assert await conn.fetchval("SELECT to_regclass('deliveries_webhook')") is None
        notice = await conn.fetchval(f"{_PLANNED_NOTICE} RETURNING id", _E1, _NEW, NOW)
        await conn.execute(_DELIVERY, notice, "webhook", older, _HOOK, NOW)
        with pytest.raises(asyncpg.UniqueViolationError, match="deliveries_target"):
            await conn.execute(_DELIVERY, notice, "webhook", newer, _HOOK, NOW)
        with pytest.raises(asyncpg.UniqueViolationError, match="owners and URLs with more: 1"):
            await migrate.migrate(scratch_dsn, NOW)

        await conn.execute("UPDATE webhooks SET active = false, deleted_at = $2 WHERE id = $1", newer, NOW)
        done = await asyncio.to_thread(CliRunner().invoke, main, ["migrate"], env=env)
        assert done.exit_code == 0, done.output
        assert f"_{_WEBHOOK_URL_PER_OWNER}" in done.output
        assert await conn.fetchval("SELECT to_regclass('webhooks_owner_url')") == "webhooks_owner_url"
        active = await conn.fetchval("SELECT count(*) FROM webhooks WHERE active")
        assert active == 4  # the kept one and the other owners'
    finally:
        await conn.close()


async def test_many_duplicate_webhooks_are_counted_and_the_first_twenty_named(scratch_dsn: str, tmp_path: Path) -> None:
    await _migrated_up_to_before(scratch_dsn, _WEBHOOK_URL_PER_OWNER, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        regions = [f"{n}" for n in range(10, 32)]  # 22 regulators, each with two webhooks at one URL
        for region in regions:
            for _ in range(2):
                await conn.fetchval(_WEBHOOK, None, region, _HOOK, NOW, True)
        with pytest.raises(asyncpg.UniqueViolationError) as refused:
            await migrate.migrate(scratch_dsn, NOW)
        lines = str(refused.value).splitlines()
        assert "owners and URLs with more: 22." in lines[0]
        assert [line.split(" at ")[0] for line in lines[1:-1]] == [f"  region {r}" for r in regions[:20]]
        assert lines[-1] == "  and 2 more"
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# schema/0026_remaining_references_fixed.sql on a database that already holds a register

_REMAINING_REFERENCES_FIXED = "remaining_references_fixed"
_ANSWER, _CORRECTION, _THEIR_ANSWER = (uuid.UUID(int=n) for n in range(10, 13))
# A lab's document as record_result writes it: instrument, enterprise, lab, the request it answers
# and the document it corrects (either may be NULL).
_DOCUMENT = """
    INSERT INTO certificates (id, instrument_id, enterprise_id, lab_id, request_id, supersedes, correction_reason, kind,
                              number, outcome, performed_on, issued_on, legal_effect, effect_note, content_sha256,
                              recorded_by_role, recorded_at)
    VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6::uuid IS NOT NULL THEN 'typo' END, 'verification_certificate',
            CAST($1::uuid AS text), 'pass', '2026-01-02', '2026-01-02', 'governs', 'x', repeat('0', 64), 'lab', $7)"""
_RELATED_EVENT = """
    INSERT INTO instrument_events (instrument_id, kind, related_instrument_id, occurred_at) VALUES ($1, $2, $3, $4)"""
_KEYS_OF_THE_THREE = """
    SELECT conrelid::regclass::text AS tab, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
    WHERE conrelid IN ('request_items'::regclass, 'instrument_events'::regclass, 'certificates'::regclass)
      AND contype IN ('f', 'c') AND (contype = 'f' OR conname LIKE 'instrument_events_related%')
    ORDER BY 1, 2"""

_ITEMS_ENTERPRISE_NOT_NULL = """
    SELECT attnotnull FROM pg_attribute WHERE attrelid = 'request_items'::regclass AND attname = 'enterprise_id'"""


async def _results(conn: asyncpg.Connection) -> None:
    """What an older release wrote for the registers of _register and _requests: the lab's result
    for the first enterprise's successor answering its request, and its correction; the second's
    result answering its own request; the replacement's two events naming each other's instrument,
    as registration and the replace operation write them."""
    await conn.execute(_DOCUMENT, _ANSWER, _NEW, _E1, _LAB, _REQUEST, None, NOW)
    await conn.execute(_DOCUMENT, _CORRECTION, _NEW, _E1, _LAB, None, _ANSWER, NOW)
    await conn.execute(_DOCUMENT, _THEIR_ANSWER, _THEIRS, _E2, _LAB, _THEIR_REQUEST, None, NOW)
    await conn.execute(_RELATED_EVENT, _NEW, "registered", _OLD, NOW)
    await conn.execute(_RELATED_EVENT, _OLD, "replaced", _NEW, NOW)
    await conn.execute(_RELATED_EVENT, _THEIRS, "registered", None, NOW)


async def test_a_populated_register_takes_the_remaining_keys(scratch_dsn: str, tmp_path: Path) -> None:
    """Each item gets its request's enterprise and each event naming a related instrument its own
    instrument's, without a row of audit trail (the table is rewritten, no trigger runs); the
    composite keys replace the plain ones."""
    await _migrated_up_to_before(scratch_dsn, _REMAINING_REFERENCES_FIXED, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        await _requests(conn)
        await _results(conn)
        audited = await conn.fetchval("SELECT count(*) FROM audit_log")
        applied = await migrate.migrate(scratch_dsn, NOW)
        assert _REMAINING_REFERENCES_FIXED in [m.name for m in applied]
        items = await conn.fetch("SELECT request_id, instrument_id, enterprise_id FROM request_items")
        assert {tuple(i) for i in items} == {
            (_REQUEST, _NEW, _E1),
            (_REQUEST, _OLD, _E1),
            (_THEIR_REQUEST, _THEIRS, _E2),
        }
        assert await conn.fetchval(_ITEMS_ENTERPRISE_NOT_NULL)
        events = await conn.fetch(
            "SELECT instrument_id, related_instrument_id, related_enterprise_id FROM instrument_events"
        )
        assert {tuple(e) for e in events} == {(_NEW, _OLD, _E1), (_OLD, _NEW, _E1), (_THEIRS, None, None)}
        assert await conn.fetchval("SELECT count(*) FROM certificates") == 4
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == audited
        assert await conn.fetchval("SELECT to_regproc('request_enterprise')") is None
        keys = await conn.fetch(_KEYS_OF_THE_THREE)
        assert [tuple(k) for k in keys] == [
            # And 0029's, which the same rows meet: the correction is of its own lab's document.
            (
                "certificates",
                "certificates_corrected_lab_fkey",
                "FOREIGN KEY (supersedes, lab_id) REFERENCES certificates(id, lab_id)",
            ),
            (
                "certificates",
                "certificates_corrected_region_fkey",
                "FOREIGN KEY (supersedes, issuer_region) REFERENCES certificates(id, issuer_region)",
            ),
            (
                "certificates",
                "certificates_instrument_fkey",
                "FOREIGN KEY (instrument_id, enterprise_id) REFERENCES instruments(id, enterprise_id)",
            ),
            ("certificates", "certificates_lab_id_fkey", "FOREIGN KEY (lab_id) REFERENCES labs(id)"),
            (
                "certificates",
                "certificates_request_fkey",
                "FOREIGN KEY (request_id, instrument_id) REFERENCES request_items(request_id, instrument_id)",
            ),
            (
                "certificates",
                "certificates_superseded_fkey",
                "FOREIGN KEY (supersedes, instrument_id) REFERENCES certificates(id, instrument_id)",
            ),
            (
                "instrument_events",
                "instrument_events_certificate_fkey",
                "FOREIGN KEY (certificate_id, instrument_id) REFERENCES certificates(id, instrument_id)",
            ),
            (
                "instrument_events",
                "instrument_events_instrument_id_fkey",
                "FOREIGN KEY (instrument_id) REFERENCES instruments(id)",
            ),
            (
                "instrument_events",
                "instrument_events_related_enterprise",
                "CHECK (((related_instrument_id IS NULL) = (related_enterprise_id IS NULL)))",
            ),
            (
                "instrument_events",
                "instrument_events_related_fkey",
                "FOREIGN KEY (related_instrument_id, related_enterprise_id) REFERENCES instruments(id, enterprise_id)",
            ),
            (
                "instrument_events",
                "instrument_events_related_owner_fkey",
                "FOREIGN KEY (instrument_id, related_enterprise_id) REFERENCES instruments(id, enterprise_id)",
            ),
            (
                "request_items",
                "request_items_certificate_fkey",
                "FOREIGN KEY (certificate_id, instrument_id) REFERENCES certificates(id, instrument_id)",
            ),
            (
                "request_items",
                "request_items_instrument_fkey",
                "FOREIGN KEY (instrument_id, enterprise_id) REFERENCES instruments(id, enterprise_id)",
            ),
            (
                "request_items",
                "request_items_request_fkey",
                "FOREIGN KEY (request_id, enterprise_id) REFERENCES verification_requests(id, enterprise_id)",
            ),
        ]
    finally:
        await conn.close()


# Each a row that names another enterprise's row, or a document of another instrument.
_MISPOINTED_REFERENCES = {
    "an item of their instrument in our request": (
        _ITEM,
        (_REQUEST, _THEIRS, 3, None),
        "request_items_instrument_fkey",
    ),
    "an event naming their instrument": (
        _RELATED_EVENT,
        (_NEW, "registered", _THEIRS, NOW),
        "instrument_events_related_fkey",
    ),
    "our certificate of their instrument": (
        _DOCUMENT,
        (uuid.uuid4(), _THEIRS, _E1, _LAB, None, None, NOW),
        "certificates_instrument_fkey",
    ),
    "a certificate answering another enterprise's request": (
        _DOCUMENT,
        (uuid.uuid4(), _THEIRS, _E2, _LAB, _REQUEST, None, NOW),
        "certificates_request_fkey",
    ),
    "a correction of their certificate": (
        _DOCUMENT,
        (uuid.uuid4(), _NEW, _E1, _LAB, None, _THEIR_ANSWER, NOW),
        "certificates_superseded_fkey",
    ),
    "a correction of a neighbour's certificate": (
        _DOCUMENT,
        (uuid.uuid4(), _OLD, _E1, _LAB, None, _CERT, NOW),
        "certificates_superseded_fkey",
    ),
}


@pytest.mark.parametrize("row", list(_MISPOINTED_REFERENCES))
async def test_a_row_naming_another_enterprises_row_stops_the_migration_with_nothing_applied(
    row: str, scratch_dsn: str, tmp_path: Path
) -> None:
    await _migrated_up_to_before(scratch_dsn, _REMAINING_REFERENCES_FIXED, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        await _requests(conn)
        await _results(conn)
        sql, args, constraint = _MISPOINTED_REFERENCES[row]
        await conn.execute(sql, *args)
        keys_before = await conn.fetch(_KEYS_OF_THE_THREE)
        await _refused_with_nothing_applied(conn, scratch_dsn, constraint)
        assert await conn.fetch(_KEYS_OF_THE_THREE) == keys_before
        assert await conn.fetchval(_ITEMS_ENTERPRISE_NOT_NULL) is None  # no such column
        assert await conn.fetchval("SELECT to_regclass('verification_requests_id_enterprise')") is None
        assert await conn.fetchval("SELECT to_regproc('request_enterprise')") is None
    finally:
        await conn.close()


_REQUESTERS_AND_CORRECTORS = "requesters_and_correctors"
_OTHER_LAB, _OTHER_LABS_CORRECTION = uuid.UUID(int=13), uuid.UUID(int=14)


@pytest.mark.parametrize("corrector", ["the issuing lab", "another lab"])
async def test_a_correction_of_another_issuers_document_stops_the_migration_naming_it(
    corrector: str, scratch_dsn: str, tmp_path: Path
) -> None:
    """The API let only a document's issuer correct it; a correction written otherwise (SQL as the
    tables' owner) stops schema/0029 at its key, with nothing of it applied."""
    await _migrated_up_to_before(scratch_dsn, _REMAINING_REFERENCES_FIXED, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await _register(conn, successor_of=None)
        await _requests(conn)
        await _results(conn)
        await _migrated_up_to_before(scratch_dsn, _REQUESTERS_AND_CORRECTORS, tmp_path)
        await conn.execute(
            "INSERT INTO labs (id, name, accreditation_no, region_code) VALUES ($1, '实验室二', 'L-2', '530102')",
            _OTHER_LAB,
        )
        lab = _LAB if corrector == "the issuing lab" else _OTHER_LAB
        await conn.execute(_DOCUMENT, _OTHER_LABS_CORRECTION, _THEIRS, _E2, lab, None, _THEIR_ANSWER, NOW)
        if corrector == "the issuing lab":
            assert [m.name for m in await migrate.migrate(scratch_dsn, NOW)] == [_REQUESTERS_AND_CORRECTORS]
            return
        await _refused_with_nothing_applied(conn, scratch_dsn, "certificates_corrected_lab_fkey")
        assert await conn.fetchval("SELECT to_regclass('certificates_id_lab')") is None
        policies = "SELECT count(*) FROM pg_policies WHERE policyname = 'requester'"
        assert await conn.fetchval(policies) == 0
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# schema/0027_list_filters.sql on a database that already holds an audit trail

_LIST_FILTERS = "list_filters"


async def test_a_populated_trail_takes_the_clock_of_its_rows(scratch_dsn: str, tmp_path: Path) -> None:
    """The trail an older release wrote, its `at` out of seq order where a transaction that began
    earlier committed later: the clock starts from the latest `at` and the longest lag, and moves
    on with each row appended after. Its `high` is the latest `at` rounded up to the next minute,
    and the lag is counted from it: at least the trail's and at most a minute more."""
    await _migrated_up_to_before(scratch_dsn, _LIST_FILTERS, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        async with conn.transaction():  # written by the old audit_record, in one transaction
            await conn.execute("SELECT set_config('metreg.now', $1, true)", (NOW - dt.timedelta(hours=3)).isoformat())
            await _register(conn, successor_of=None)
        for at in (NOW, NOW - dt.timedelta(minutes=20), NOW + dt.timedelta(minutes=1)):
            async with conn.transaction():
                await conn.execute("SELECT set_config('metreg.now', $1, true)", at.isoformat())
                await conn.execute("UPDATE enterprises SET name = $1 WHERE id = $2", f"企业 {at:%H%M}", _E1)
        assert _LIST_FILTERS in [m.name for m in await migrate.migrate(scratch_dsn, NOW)]
        clock = await conn.fetchrow("SELECT high, lag FROM audit_clock")
        assert clock is not None
        # Latest `at` NOW + 1 minute, longest lag 20 minutes (NOW - 20 minutes after NOW).
        assert (clock["high"], clock["lag"]) == (NOW + dt.timedelta(minutes=2), dt.timedelta(minutes=21))
        async with conn.transaction():
            await conn.execute("SELECT set_config('metreg.now', $1, true)", (NOW - dt.timedelta(hours=1)).isoformat())
            await conn.execute("UPDATE enterprises SET name = 'later' WHERE id = $1", _E1)
        clock = await conn.fetchrow("SELECT high, lag FROM audit_clock")
        assert clock is not None
        # The lag is now 1 hour 1 minute behind the latest `at`.
        assert (clock["high"], clock["lag"]) == (NOW + dt.timedelta(minutes=2), dt.timedelta(hours=1, minutes=2))
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# schema/0028_signers_and_successors.sql on a database that already holds a register and keys

_SIGNERS_AND_SUCCESSORS = "signers_and_successors"
_KEY = """
    INSERT INTO api_keys (id, prefix, secret_sha256, role, name, enterprise_id, lab_id, region_code, created_at,
                          rotated_to)
    VALUES ($1::uuid, substr(md5($1::uuid::text), 1, 12), sha256(convert_to($1::uuid::text, 'UTF8')), $2, 'k', $3, $4,
            $5, $6, $7)"""
# Rotated as rotate_key rotates: E1's first key to its second, which is rotated to its third.
_E1_KEY, _E1_SECOND, _E1_THIRD, _E2_KEY, _LAB_KEY, _REGULATOR_KEY, _ADMIN_KEY = (
    uuid.UUID(int=n) for n in range(20, 27)
)
_SIGNER_POLICIES = """
    SELECT tablename::text, policyname::text, permissive, cmd FROM pg_policies
    WHERE policyname IN ('issuer', 'revoker', 'result_giver', 'result_keeper', 'result_writer') ORDER BY 1, 2"""
_KEYS_OF_API_KEYS = """
    SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
    WHERE conrelid = 'api_keys'::regclass AND contype = 'f' ORDER BY 1"""


async def _keys(conn: asyncpg.Connection) -> None:
    """Keys of every role over the register of _register and _requests, inserted newest last."""
    at = [NOW + dt.timedelta(seconds=n) for n in range(7)]
    await conn.execute(_KEY, _E1_THIRD, "enterprise", _E1, None, None, at[0], None)
    await conn.execute(_KEY, _E1_SECOND, "enterprise", _E1, None, None, at[1], _E1_THIRD)
    await conn.execute(_KEY, _E1_KEY, "enterprise", _E1, None, None, at[2], _E1_SECOND)
    await conn.execute(_KEY, _E2_KEY, "enterprise", _E2, None, None, at[3], None)
    await conn.execute(_KEY, _LAB_KEY, "lab", None, _LAB, None, at[4], None)
    await conn.execute(_KEY, _REGULATOR_KEY, "regulator", None, None, "53", at[5], None)
    await conn.execute(_KEY, _ADMIN_KEY, "admin", None, None, None, at[6], None)


async def _populated_before_the_signers(dsn: str, folder: Path) -> asyncpg.Connection:
    """The register of the migration tests above as an older release wrote it (items, results and
    events before 0026, which then applies), and keys of every role."""
    await _migrated_up_to_before(dsn, _REMAINING_REFERENCES_FIXED, folder)
    conn = await asyncpg.connect(dsn)
    await _register(conn, successor_of=None)
    await _requests(conn)
    await _results(conn)
    await _migrated_up_to_before(dsn, _SIGNERS_AND_SUCCESSORS, folder)
    await _keys(conn)
    return conn


async def test_a_populated_register_and_its_keys_take_the_signers_and_successors(
    scratch_dsn: str, tmp_path: Path
) -> None:
    """A rotation chain of one scope stays linked under the new keys, which replace the plain one;
    the policies come in beside the old ones and the API loses UPDATE on the history; no row of the
    register, its keys or its audit trail changes."""
    conn = await _populated_before_the_signers(scratch_dsn, tmp_path)
    try:
        counts = """SELECT (SELECT count(*) FROM certificates), (SELECT count(*) FROM request_items),
                           (SELECT count(*) FROM instrument_events), (SELECT count(*) FROM audit_log)"""
        before = tuple(await conn.fetchrow(counts))
        keys = "SELECT * FROM api_keys ORDER BY id"
        keys_before = [dict(k) for k in await conn.fetch(keys)]
        assert [m.name for m in await migrate.migrate(scratch_dsn, NOW)][:1] == [_SIGNERS_AND_SUCCESSORS]
        assert tuple(await conn.fetchrow(counts)) == before
        assert [dict(k) for k in await conn.fetch(keys)] == keys_before
        assert [tuple(k) for k in await conn.fetch(_KEYS_OF_API_KEYS)] == [
            ("api_keys_enterprise_id_fkey", "FOREIGN KEY (enterprise_id) REFERENCES enterprises(id)"),
            ("api_keys_lab_id_fkey", "FOREIGN KEY (lab_id) REFERENCES labs(id)"),
            (
                "api_keys_successor_enterprise_fkey",
                "FOREIGN KEY (rotated_to, enterprise_id) REFERENCES api_keys(id, enterprise_id)",
            ),
            ("api_keys_successor_lab_fkey", "FOREIGN KEY (rotated_to, lab_id) REFERENCES api_keys(id, lab_id)"),
            (
                "api_keys_successor_region_fkey",
                "FOREIGN KEY (rotated_to, region_code) REFERENCES api_keys(id, region_code)",
            ),
            ("api_keys_successor_role_fkey", "FOREIGN KEY (rotated_to, role) REFERENCES api_keys(id, role)"),
        ]
        assert [tuple(p) for p in await conn.fetch(_SIGNER_POLICIES)] == [
            ("certificates", "issuer", "RESTRICTIVE", "INSERT"),
            ("certificates", "revoker", "RESTRICTIVE", "UPDATE"),
            ("instrument_events", "result_writer", "RESTRICTIVE", "INSERT"),
            ("request_items", "result_giver", "RESTRICTIVE", "INSERT"),
            ("request_items", "result_keeper", "RESTRICTIVE", "UPDATE"),
        ]
        privileges = "SELECT has_table_privilege('metreg_api', 'instrument_events', $1)"
        assert (await conn.fetchval(privileges, "INSERT"), await conn.fetchval(privileges, "UPDATE")) == (True, False)

        successor = "UPDATE api_keys SET rotated_to = $1 WHERE id = $2"
        for key, other in [(_E1_THIRD, _E2_KEY), (_ADMIN_KEY, _LAB_KEY), (_REGULATOR_KEY, _ADMIN_KEY)]:
            with pytest.raises(asyncpg.ForeignKeyViolationError, match="api_keys_successor_"):
                await conn.execute(successor, other, key)
        await conn.execute(successor, _E1_KEY, _E1_THIRD)  # the same role and scope
    finally:
        await conn.close()


async def test_a_key_rotated_into_another_scope_stops_the_migration_naming_it_until_cleared(
    scratch_dsn: str, tmp_path: Path
) -> None:
    """What an enterprise key could do until now: point a key of its own at another tenant's (and
    a lab's at an admin's). The migration names each link and applies nothing; cleared, it applies."""
    conn = await _populated_before_the_signers(scratch_dsn, tmp_path)
    try:
        await conn.execute("UPDATE api_keys SET rotated_to = $1 WHERE id = $2", _E2_KEY, _E1_THIRD)
        await conn.execute("UPDATE api_keys SET rotated_to = $1 WHERE id = $2", _ADMIN_KEY, _LAB_KEY)
        version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
        keys_before = await conn.fetch(_KEYS_OF_API_KEYS)
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await migrate.migrate(scratch_dsn, NOW)
        lines = str(refused.value).splitlines()
        assert lines[0].startswith("keys rotated to a key of another role or scope: 2.")
        assert "UPDATE api_keys SET rotated_to = NULL" in lines[0]
        assert lines[1:] == [
            f"  key {_E1_THIRD} (enterprise {_E1}) -> key {_E2_KEY} (enterprise {_E2})",
            f"  key {_LAB_KEY} (lab {_LAB}) -> key {_ADMIN_KEY} (admin)",
        ]
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == version
        assert await conn.fetch(_SIGNER_POLICIES) == []
        assert await conn.fetchval("SELECT has_table_privilege('metreg_api', 'instrument_events', 'UPDATE')")
        assert await conn.fetch(_KEYS_OF_API_KEYS) == keys_before

        await conn.execute("UPDATE api_keys SET rotated_to = NULL WHERE id = ANY($1::uuid[])", [_E1_THIRD, _LAB_KEY])
        assert [m.name for m in await migrate.migrate(scratch_dsn, NOW)][:1] == [_SIGNERS_AND_SUCCESSORS]
    finally:
        await conn.close()
