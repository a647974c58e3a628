"""The metreg command, as an operator runs it."""

from __future__ import annotations

import json

import asyncpg
from click.testing import CliRunner

from service.auth import hash_secret, parse_key
from service.cli import main


def test_create_key_prints_only_the_key_and_stores_only_its_hash(database_url: str) -> None:
    result = CliRunner().invoke(
        main,
        ["create-key", "--role", "regulator", "--name", "浦东", "--region", "310115"],
        env={"DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    parsed = parse_key(key)
    assert parsed is not None

    async def stored() -> bytes:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT secret_sha256 FROM api_keys WHERE prefix = $1", parsed[0])  # type: ignore[no-any-return]
        finally:
            await conn.close()

    import asyncio

    assert asyncio.run(stored()) == hash_secret(parsed[1])


def test_create_key_explains_a_bad_scope(database_url: str) -> None:
    result = CliRunner().invoke(
        main, ["create-key", "--role", "enterprise", "--name", "x"], env={"DATABASE_URL": database_url}
    )
    assert result.exit_code != 0
    assert "enterprise_id" in result.output


def test_migrate_is_idempotent_and_check_reports_nothing_pending(database_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["migrate", "--create-database"], env={"DATABASE_URL": database_url})
    assert first.exit_code == 0, first.output
    assert "up to date" in first.output
    check = runner.invoke(main, ["migrate", "--check"], env={"DATABASE_URL": database_url})
    assert check.exit_code == 0


def test_an_unreachable_database_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["migrate"], env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"})
    assert result.exit_code == 1
    assert "Error" in result.output


def test_openapi_prints_the_document() -> None:
    result = CliRunner().invoke(main, ["openapi"])
    assert result.exit_code == 0, result.output
    assert "/v1/instruments/{instrument_id}" in json.loads(result.stdout)["paths"]


def test_help_explains_every_command_with_an_example() -> None:
    for command in ["migrate", "serve", "create-key", "demo", "openapi", "import", "export"]:
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "Example: metreg" in result.output, command
