"""What every drill stands on: throwaway servers, ``metreg`` processes, a register, API load.

The drills never touch the machine's own PostgreSQL or Redis (other people's work runs on them):
:class:`Stack` starts a PostgreSQL cluster (``initdb`` in a temporary folder, trust auth, fsync
left on, since surviving a crash is what one drill checks) and a ``redis-server`` without any
persistence, both on free loopback ports, and removes them on the way out, on Ctrl-C and on
failure too. ``metreg serve`` and ``metreg worker`` run as subprocesses with an explicit
environment, each in a session of its own so that only the drill decides when they stop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from drills.receiver import Received
from drills.report import DrillResult, Tally
from service.enterprises.rules import credit_code_check_char

__all__ = (
    "METREG",
    "Load",
    "Postgres",
    "Redis",
    "Stack",
    "Tenant",
    "background",
    "free_port",
    "metreg_env",
    "new_tenant",
    "run_metreg",
    "wait_until",
)

METREG = Path(sys.executable).with_name("metreg")
ROOT = Path(__file__).resolve().parents[1]
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
# A compulsory pressure gauge (6 months at most): verified 190 days ago, it is overdue by about a week.
GAUGE = {"catalog_code": "pressure_gauge", "legal_use": "safety_protection", "name": "一般压力表"}
_OVERDUE_BY = dt.timedelta(days=190)


class DrillError(RuntimeError):
    """The drill could not be staged (a server did not start, a request to arrange rows failed)."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_until(what: str, check: Any, *, within: float, every: float = 0.1) -> None:
    """Poll ``await check()`` until it is true; :class:`DrillError` naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise DrillError(f"{what}: not within {within:g} s")
        await asyncio.sleep(every)


# ---------------------------------------------------------------------------------------------
# Servers


def _pg_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: ``pg_config --bindir``, else the newest Debian layout."""
    found = shutil.which("pg_config")
    if found:
        bindir = Path(subprocess.run([found, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not candidates:
        raise DrillError("no PostgreSQL server binaries (initdb) found: install postgresql")
    return candidates[-1].parent


class Postgres:
    """A PostgreSQL cluster of the drill's own in ``root``; ``crash()`` stops it the hard way."""

    def __init__(self, root: Path) -> None:
        self.bindir = _pg_bindir()
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = free_port()
        # initdb and postgres refuse to run as root: as root (a container), run them as postgres.
        self._as: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._root = root

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DrillError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")

    def init(self) -> None:
        if self._as:
            shutil.chown(self._root, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c max_connections=100"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: backends told to end (clients see admin shutdown); ``immediate``: a crash,
        recovered from the write-ahead log at the next start."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


class Redis:
    """A ``redis-server`` without persistence: ``shutdown()`` loses every key, as a crash would."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._root = root
        self._process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DrillError("redis-server not found: install redis")
        with (self._root / "redis.log").open("ab") as sink:
            self._process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                cwd=self._root,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )

    async def start(self) -> None:
        await asyncio.to_thread(self._spawn)
        await wait_until("redis-server to answer", self.answers, within=10, every=0.05)

    async def answers(self) -> bool:
        client = aioredis.from_url(self.url, socket_connect_timeout=0.5)  # type: ignore[no-untyped-call]
        try:
            return bool(await client.ping())
        except (OSError, aioredis.RedisError):
            return False
        finally:
            await client.aclose()

    async def shutdown(self) -> None:
        """SHUTDOWN NOSAVE: the queue and every other key are gone."""
        client = aioredis.from_url(self.url)  # type: ignore[no-untyped-call]
        with contextlib.suppress(aioredis.ConnectionError):
            await client.shutdown(nosave=True)
        await client.aclose()
        if self._process is not None:
            await asyncio.to_thread(self._process.wait, 10)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)


@dataclass
class Stack:
    """The throwaway PostgreSQL and Redis of one ``python -m drills`` run."""

    root: Path
    postgres: Postgres
    redis: Redis
    keep: bool = False

    @classmethod
    @contextlib.asynccontextmanager
    async def up(cls, *, keep: bool = False) -> AsyncIterator[Stack]:
        # Readable by all: as root, PostgreSQL runs as postgres and keeps its socket here.
        root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="metreg-drills-"))
        await asyncio.to_thread(root.chmod, 0o755)
        stack = cls(root=root, postgres=Postgres(root), redis=Redis(root), keep=keep)
        try:
            await asyncio.to_thread(stack.postgres.init)
            await stack.redis.start()
            yield stack
        finally:
            stack.redis.kill()
            if stack.postgres.running():
                with contextlib.suppress(DrillError):
                    stack.postgres.stop("immediate")
            if keep:
                print(f"servers' files and logs kept in {root}", file=sys.stderr)
            else:
                shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# metreg processes


def metreg_env(database_url: str, redis_url: str, queue: str, **metreg: str) -> dict[str, str]:
    """The environment of a ``metreg`` process: ours without any METREG_* variable, plus ``metreg``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METREG_")}
    env |= {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "METREG_QUEUE": queue,
        "METREG_ALLOW_PRIVATE_WEBHOOKS": "true",
        "METREG_LOG_LEVEL": "WARNING",
    }
    return env | metreg


async def run_metreg(*args: str, env: dict[str, str], within: float = 60) -> tuple[int, str, str]:
    """Run ``metreg args`` to its end: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        str(METREG),
        *args,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@contextlib.contextmanager
def background(args: Sequence[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``metreg args`` in the background, its output appended to ``log``; killed on the way out."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(METREG), *args],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# A register to drill on


def new_credit_code(rng: random.Random) -> str:
    charset = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    first17 = "91" + "330106" + "".join(rng.choice(charset) for _ in range(9))
    return first17 + credit_code_check_char(first17)


@dataclass
class Tenant:
    """An enterprise with its key, its overdue gauges and (once planned) one notice per gauge."""

    enterprise_id: str
    key: str
    instrument_ids: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def _created(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 201:
        raise DrillError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    body: dict[str, Any] = response.json()
    return body


async def new_tenant(api: httpx.AsyncClient, admin_key: str, *, gauges: int, webhook_url: str | None) -> Tenant:
    """An enterprise (region 330106) with ``gauges`` overdue pressure gauges and a webhook."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    rng = random.Random()  # a unique credit code, nothing secret
    body = {"name": "演练企业", "credit_code": new_credit_code(rng), "region_code": "330106"}
    enterprise = await _created(await api.post("/v1/enterprises", json=body, headers=admin))
    key = await _created(
        await api.post(
            "/v1/api-keys",
            json={"role": "enterprise", "name": "drills", "enterprise_id": enterprise["id"]},
            headers=admin,
        )
    )
    tenant = Tenant(enterprise_id=enterprise["id"], key=key["key"])
    verified = dt.datetime.now(dt.UTC).astimezone(SHANGHAI).date() - _OVERDUE_BY
    for _ in range(gauges):
        gauge = GAUGE | {"serial_no": uuid.uuid4().hex[:12], "last_verified_on": str(verified)}
        created = await _created(
            await api.post(f"/v1/enterprises/{tenant.enterprise_id}/instruments", json=gauge, headers=tenant.headers)
        )
        tenant.instrument_ids.append(created["id"])
    if webhook_url is not None:
        await _created(await api.post("/v1/webhooks", json={"url": webhook_url}, headers=tenant.headers))
    return tenant


# ---------------------------------------------------------------------------------------------
# API load


@dataclass
class Load:
    """Clients that read (and optionally register) instruments in a loop, counting every answer.

    A 503 must be problem+json with a ``Retry-After``: any that is not is counted in ``bad_503``.
    ``no_answer`` counts requests that got no HTTP answer at all (refused, reset, or none within
    ``timeout_s``). Writes the API acknowledged (201) are kept in ``acknowledged`` so a drill can
    check that they survived.
    """

    base_url: str
    tenant: Tenant
    readers: int = 4
    writers: int = 0
    timeout_s: float = 10.0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    bad_503: int = 0
    no_answer: int = 0
    acknowledged: list[str] = field(default_factory=list)
    last_503_at: float | None = None
    """``time.monotonic()`` of the latest 503."""
    slowest_s: float = 0.0
    """The longest wait for an answer."""

    @property
    def answers_5xx(self) -> int:
        """Server errors other than 503 (a 503 is the designed answer while a dependency is down)."""
        return sum(n for status, n in self.statuses.items() if status >= 500 and status != 503)

    def _count(self, response: httpx.Response, sent: float) -> None:
        self.slowest_s = max(self.slowest_s, time.monotonic() - sent)
        self.statuses[response.status_code] += 1
        if response.status_code == 503:
            self.last_503_at = time.monotonic()
        if response.status_code == 503 and (
            "retry-after" not in response.headers
            or not response.headers.get("content-type", "").startswith("application/problem+json")
        ):
            self.bad_503 += 1

    async def _reader(self, client: httpx.AsyncClient, rng: random.Random, stop: asyncio.Event) -> None:
        listing = f"/v1/enterprises/{self.tenant.enterprise_id}/instruments?limit=20"
        while not stop.is_set():
            url = listing if rng.random() < 0.2 else f"/v1/instruments/{rng.choice(self.tenant.instrument_ids)}"
            sent = time.monotonic()
            try:
                self._count(await client.get(url, headers=self.tenant.headers), sent)
            except httpx.TransportError:
                self.no_answer += 1
                await asyncio.sleep(0.05)

    async def _writer(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        path = f"/v1/enterprises/{self.tenant.enterprise_id}/instruments"
        today = dt.datetime.now(dt.UTC).astimezone(SHANGHAI).date()
        while not stop.is_set():
            serial = uuid.uuid4().hex[:12]
            gauge = GAUGE | {"serial_no": serial, "last_verified_on": str(today - dt.timedelta(days=10))}
            sent = time.monotonic()
            try:
                response = await client.post(path, json=gauge, headers=self.tenant.headers)
            except httpx.TransportError:
                self.no_answer += 1
                await asyncio.sleep(0.05)
                continue
            self._count(response, sent)
            if response.status_code == 201:
                self.acknowledged.append(response.json()["id"])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=self.readers + self.writers)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, limits=limits) as client:
            rng = random.Random()  # which instrument to read: nothing secret
            tasks = [asyncio.create_task(self._reader(client, rng, stop)) for _ in range(self.readers)]
            tasks += [asyncio.create_task(self._writer(client, stop)) for _ in range(self.writers)]
            try:
                yield self
            finally:
                stop.set()
                await asyncio.gather(*tasks)


async def fetch_notices(dsn: str, enterprise_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The notices of these enterprises: status, and how many tries their deliveries recorded."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            """SELECT n.id::text AS id, n.enterprise_id::text AS enterprise_id, n.status,
                      (SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
                       WHERE d.notice_id = n.id)::int AS tries
               FROM notices n
               WHERE n.enterprise_id = ANY ($1::uuid[])""",
            list(enterprise_ids),
        )
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# One drill's scene


@dataclass
class Scene:
    """A drill's own database (migrated), queue, admin key and running ``metreg serve``."""

    stack: Stack
    name: str
    dsn: str
    env: dict[str, str]
    api_url: str
    admin_key: str
    api: subprocess.Popen[bytes]

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, stack: Stack, name: str, **settings: str) -> AsyncIterator[Scene]:
        """``settings``: METREG_* variables of both processes (the drill's short time-outs)."""
        dsn = stack.postgres.dsn(f"drill_{name}")
        port = free_port()
        # Limits stay on (the Redis drill exercises them) but high enough for the load.
        env = metreg_env(
            dsn,
            stack.redis.url,
            f"drills:{name}",
            METREG_PORT=str(port),
            METREG_RATE_LIMIT="100000",
            METREG_RATE_BURST="100000",
            **settings,
        )
        for args in (("migrate", "--create-database"), ("create-key", "--role", "admin", "--name", "drills")):
            code, out, err = await run_metreg(*args, env=env)
            if code != 0:
                raise DrillError(f"metreg {args[0]}: {err.strip()}")
        with background(["serve"], env, stack.root / f"{name}-api.log") as api:
            scene = cls(
                stack=stack,
                name=name,
                dsn=dsn,
                env=env,
                api_url=f"http://127.0.0.1:{port}",
                admin_key=out.strip(),
                api=api,
            )
            await wait_until("metreg serve to answer /healthz", scene.api_answers, within=30)
            yield scene

    async def api_answers(self) -> bool:
        if self.api.poll() is not None:
            raise DrillError(f"metreg serve exited with {self.api.returncode}; see {self.log('api')}")
        try:
            async with httpx.AsyncClient(base_url=self.api_url, timeout=2) as client:
                return (await client.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    def log(self, process: str) -> Path:
        return self.stack.root / f"{self.name}-{process}.log"

    def worker(self) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        """A long-running ``metreg worker`` (a second call: its successor, in the same log)."""
        return background(["worker"], self.env, self.log("worker"))

    async def plan(self) -> None:
        code, _, err = await run_metreg("plan", env=self.env)
        if code != 0:
            raise DrillError(f"metreg plan: {err.strip()}")

    async def notices(self, *tenants: Tenant) -> list[asyncpg.Record]:
        return await fetch_notices(self.dsn, [t.enterprise_id for t in tenants])

    async def settled(self, *tenants: Tenant) -> bool:
        """Every notice of ``tenants`` delivered, failed or cancelled."""
        return all(n["status"] in ("delivered", "failed", "cancelled") for n in await self.notices(*tenants))


def answer_after(seconds: float) -> Callable[[int, Received], int]:
    """A receiver's answer: 200 after ``seconds``, so that calls are in flight when a fault strikes."""

    def answer(number: int, request: Received) -> int:
        time.sleep(seconds)
        return 200

    return answer


def alive(worker: subprocess.Popen[bytes]) -> None:
    """Raises when ``worker`` has exited: a drill waits on a worker that is still running.

    Raises:
        RuntimeError: with its exit code.
    """
    if worker.poll() is not None:
        raise RuntimeError(f"the worker exited with {worker.returncode}")


def drill_result(
    name: str, tally: Tally, load: Load, checks: dict[str, bool], started: float, notes: list[str]
) -> DrillResult:
    """A drill's result: its tally, the API's answers under ``load``, and its verdict on ``checks``."""
    return DrillResult(
        drill=name,
        tally=tally,
        answers_5xx=load.answers_5xx,
        answers_503=load.statuses[503],
        answers_total=sum(load.statuses.values()),
        passed=all(checks.values()),
        seconds=time.monotonic() - started,
        checks=checks,
        notes=notes,
    )
