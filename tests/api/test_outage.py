"""The API while PostgreSQL is away: 503 problem+json with Retry-After, and back without a restart.

Never by restarting the shared server: an app whose DSN names a port nobody listens on, and an
app on a database of its own whose sessions are ended under it with ``pg_terminate_backend``
(what a server restart or failover does to a pool). ``make drills`` restarts a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import traceback
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.auth import Role
from service.clock import SystemClock
from service.keys.queries import create_key
from service.keys.schemas import ApiKeyCreate
from service.problems import RETRY_UNAVAILABLE_S
from tests.conftest import app_settings, fresh_database, new_credit_code, problem, running


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def assert_unavailable(response: httpx.Response) -> None:
    body = problem(response, 503)
    assert body["type"] == "urn:metreg:problem:unavailable"
    assert body["detail"] == "the database is not reachable; try again shortly"
    assert response.headers["retry-after"] == str(RETRY_UNAVAILABLE_S)


async def test_a_database_nobody_listens_for_is_503_with_retry_after_and_readyz_says_so() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{closed_port()}/metreg"
    app = create_app(app_settings(dsn, db_pool_min=0), clock=SystemClock())
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://metreg.test") as client:
            headers = {"Authorization": "Bearer mr_abcdefgh_" + "s" * 32}
            assert_unavailable(await client.get("/v1/catalog", headers=headers))
            assert_unavailable(await client.post("/v1/enterprises", json={"name": "x"}, headers=headers))
            ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {"postgresql": "unavailable: ConnectionRefusedError", "redis": "ok"},
    }


@pytest.fixture(scope="module")
async def outage_dsn() -> AsyncIterator[str]:
    # A database of its own: terminating the sessions of the API there touches no other test.
    async with fresh_database("metreg_outage", dt.datetime.now(dt.UTC)) as dsn:
        yield dsn


async def terminate_api_sessions(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        ended: int = await conn.fetchval(
            """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = 'metreg-api'"""
        )
        return ended
    finally:
        await conn.close()


@pytest.mark.parametrize("pause", [0.0, 0.2], ids=["at-once", "after-the-news"])
async def test_sessions_ended_under_the_pool_answer_200_or_503_never_500_and_the_api_recovers(
    outage_dsn: str, pause: float
) -> None:
    """Requests right after the server ended every pooled session (before or after the pool heard
    of it) answer 200 or 503 problem+json, never 500; the next request is served by a new session."""
    conn = await asyncpg.connect(outage_dsn)
    try:
        key = (await create_key(conn, ApiKeyCreate(role=Role.ADMIN, name="outage"), dt.datetime.now(dt.UTC))).key
    finally:
        await conn.close()
    app = create_app(app_settings(outage_dsn, db_pool_min=4, db_pool_max=4), clock=SystemClock())
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://metreg.test") as client:
            headers = {"Authorization": f"Bearer {key}"}
            warm = await asyncio.gather(*(client.get("/v1/catalog", headers=headers) for _ in range(4)))
            assert [r.status_code for r in warm] == [200] * 4
            assert await terminate_api_sessions(outage_dsn) >= 1
            await asyncio.sleep(pause)
            during = await asyncio.gather(*(client.get("/v1/catalog", headers=headers) for _ in range(8)))
            after = await client.get("/v1/catalog", headers=headers)
            ready = await client.get("/readyz")
    for response in during:
        if response.status_code != 200:
            assert_unavailable(response)
    assert after.status_code == 200, after.text
    assert ready.status_code == 200, ready.text


# A fault of the server's own making, in the outage database only: a deferred trigger ends the
# session at the COMMIT of a kept refusal, an immediate one while the refusal is being written.
# The function runs as its owner (a superuser): the API's session logged in as one, and only a
# superuser may end it.
_END_SESSION = """
CREATE FUNCTION drill_end_session() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pg_terminate_backend(pg_backend_pid());
    PERFORM pg_sleep(60);  -- not reached: the session ends at its next check for interrupts
    RETURN NULL;
END $$"""
_ENDS_SESSION = {
    "at-commit": "CREATE CONSTRAINT TRIGGER drill_end_session AFTER UPDATE ON idempotency_keys "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.status >= 400) EXECUTE FUNCTION drill_end_session()",
    "writing-the-answer": "CREATE TRIGGER drill_end_session AFTER UPDATE ON idempotency_keys "
    "FOR EACH ROW WHEN (NEW.status >= 400) EXECUTE FUNCTION drill_end_session()",
}


@contextlib.asynccontextmanager
async def session_ended_when_a_refusal_is_kept(dsn: str, when: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(_END_SESSION)
            await conn.execute(_ENDS_SESSION[when])
        yield
    finally:
        await conn.execute("DROP FUNCTION IF EXISTS drill_end_session() CASCADE")
        await conn.close()


@pytest.mark.parametrize("when", list(_ENDS_SESSION))
async def test_a_refusal_kept_for_an_idempotency_key_that_cannot_be_committed_is_503_and_the_key_stays_free(
    outage_dsn: str, when: str
) -> None:
    """The session ends while a refused write's answer is kept for its Idempotency-Key
    (``service.idempotency.keep_refusal``): the client hears that the database was away (503), as
    anywhere else, and nothing was kept: the retry runs the request again."""
    conn = await asyncpg.connect(outage_dsn)
    try:
        key = (await create_key(conn, ApiKeyCreate(role=Role.ADMIN, name="refusal"), dt.datetime.now(dt.UTC))).key
    finally:
        await conn.close()
    app = create_app(app_settings(outage_dsn, db_pool_min=1, db_pool_max=2), clock=SystemClock())
    idempotency_key = f"outage-{uuid.uuid4()}"
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
    # A refusal of the handler's own: no such enterprise.
    url = f"/v1/enterprises/{uuid.uuid4()}"
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        async with session_ended_when_a_refusal_is_kept(outage_dsn, when):
            lost = await client.patch(url, json={"name": "x"}, headers=headers)
        assert_unavailable(lost)
        first = await client.patch(url, json={"name": "x"}, headers=headers)
        again = await client.patch(url, json={"name": "x"}, headers=headers)
    assert (first.status_code, first.headers.get("idempotent-replayed")) == (404, None), first.text
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (404, "true"), again.text
    assert again.content == first.content


# ---------------------------------------------------------------------------------------------
# What the teardown of a failed request raises (service.problems, the ExceptionGroup handler)


async def _admin_key(dsn: str, name: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return (await create_key(conn, ApiKeyCreate(role=Role.ADMIN, name=name), dt.datetime.now(dt.UTC))).key
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _captured(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """caplog, on the root logger again once create_app has replaced its handlers."""
    root = logging.getLogger()
    level = root.level
    root.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(caplog.handler)
        root.setLevel(level)


async def test_a_bug_whose_rollback_meets_a_lost_session_is_503_and_the_bug_is_logged(
    outage_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler fails with a bug; the server has ended its session meanwhile, so the ROLLBACK
    fails too and Litestar's group holds only that. The answer is the outage's; the log keeps the bug."""
    from service.enterprises import routes

    async def fails_once_its_session_is_gone(db: asyncpg.Connection, *args: Any) -> Any:
        pid = db.get_server_pid()
        other = await asyncpg.connect(outage_dsn)
        try:
            assert await other.fetchval("SELECT pg_terminate_backend($1)", pid)
            while await other.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):  # noqa: ASYNC110  # polled
                await asyncio.sleep(0.01)
        finally:
            await other.close()
        raise RuntimeError("the handler's own bug")

    monkeypatch.setattr(routes, "insert_enterprise", fails_once_its_session_is_gone)
    key = await _admin_key(outage_dsn, "bug")
    app = create_app(app_settings(outage_dsn, db_pool_min=1, db_pool_max=2), clock=SystemClock())
    body = {"name": "某企业", "credit_code": new_credit_code(), "region_code": "310115"}
    async with (
        _captured(caplog),
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.post("/v1/enterprises", json=body, headers={"Authorization": f"Bearer {key}"})
    assert_unavailable(response)
    # (asyncio may log asyncpg's lost connection too: "Future exception was never retrieved".)
    [bug] = [r for r in caplog.records if r.name == "metreg.errors" and r.levelno == logging.ERROR]
    assert bug.exc_info is not None
    assert isinstance(bug.exc_info[1], RuntimeError)
    assert str(bug.exc_info[1]) == "the handler's own bug"
    assert "fails_once_its_session_is_gone" in "".join(traceback.format_tb(bug.exc_info[2]))


_SERIALIZATION_FAILURE_AT_COMMIT = """
CREATE FUNCTION drill_serialization_failure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not serialize access due to concurrent update' USING ERRCODE = 'serialization_failure';
END $$;
CREATE CONSTRAINT TRIGGER drill_serialization_failure AFTER UPDATE ON idempotency_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.status >= 400) EXECUTE FUNCTION drill_serialization_failure();
"""


async def test_a_serialization_failure_at_the_commit_of_a_kept_refusal_is_the_409_that_says_retry(
    outage_dsn: str,
) -> None:
    """The one failure of the teardown is answered as alone (409, retry), not as a 500; nothing was
    kept, so the retry runs the request again."""
    key = await _admin_key(outage_dsn, "serialization")
    app = create_app(app_settings(outage_dsn, db_pool_min=1, db_pool_max=2), clock=SystemClock())
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": f"serialization-{uuid.uuid4()}"}
    url = f"/v1/enterprises/{uuid.uuid4()}"  # a refusal of the handler's own: no such enterprise
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        conn = await asyncpg.connect(outage_dsn)
        try:
            await conn.execute(_SERIALIZATION_FAILURE_AT_COMMIT)
            try:
                failed = await client.patch(url, json={"name": "x"}, headers=headers)
            finally:
                await conn.execute("DROP FUNCTION drill_serialization_failure() CASCADE")
        finally:
            await conn.close()
        first = await client.patch(url, json={"name": "x"}, headers=headers)
        again = await client.patch(url, json={"name": "x"}, headers=headers)
    body = problem(failed, 409)
    assert body["type"] == "urn:metreg:problem:conflict"
    assert body["detail"] == "a concurrent change got in the way; nothing was written, retry"
    assert (first.status_code, first.headers.get("idempotent-replayed")) == (404, None), first.text
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (404, "true"), again.text
