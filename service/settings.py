"""Configuration, read once from the environment into a frozen Struct.

Nothing else in metreg reads ``os.environ``: processes build a :class:`Settings` at start and pass it
down. Every variable is listed, with its default, in ``.env.example``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from service.migrate import LOCK_TIMEOUT

__all__ = ("ENVIRONMENT", "Settings")

# Settings field -> environment variable.
ENVIRONMENT: dict[str, str] = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "host": "METREG_HOST",
    "port": "METREG_PORT",
    "public_url": "METREG_PUBLIC_URL",
    "db_pool_min": "METREG_DB_POOL_MIN",
    "db_pool_max": "METREG_DB_POOL_MAX",
    "log_level": "METREG_LOG_LEVEL",
    "log_format": "METREG_LOG_FORMAT",
    "max_body_bytes": "METREG_MAX_BODY_BYTES",
    "max_import_bytes": "METREG_MAX_IMPORT_BYTES",
    "max_import_rows": "METREG_MAX_IMPORT_ROWS",
    "export_batch_rows": "METREG_EXPORT_BATCH_ROWS",
    "rate_limit": "METREG_RATE_LIMIT",
    "rate_burst": "METREG_RATE_BURST",
    "public_rate_limit": "METREG_PUBLIC_RATE_LIMIT",
    "public_rate_burst": "METREG_PUBLIC_RATE_BURST",
    "client_timeout_s": "METREG_CLIENT_TIMEOUT",
    "keep_alive_s": "METREG_KEEP_ALIVE",
    "forwarded_allow_ips": "METREG_FORWARDED_ALLOW_IPS",
    "allow_private_webhooks": "METREG_ALLOW_PRIVATE_WEBHOOKS",
    "smtp_url": "METREG_SMTP_URL",
    "mail_from": "METREG_MAIL_FROM",
    "queue_name": "METREG_QUEUE",
    "worker_jobs": "METREG_WORKER_JOBS",
    "send_timeout_s": "METREG_SEND_TIMEOUT",
    "dispatch_timeout_s": "METREG_DISPATCH_TIMEOUT",
    "retry_tries": "METREG_RETRY_TRIES",
    "retry_delay_s": "METREG_RETRY_DELAY",
    "idempotency_ttl_s": "METREG_IDEMPOTENCY_TTL",
    "idempotency_wait_s": "METREG_IDEMPOTENCY_WAIT",
    "migrate_lock_timeout_s": "METREG_MIGRATE_LOCK_TIMEOUT",
}


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Process configuration. Tests construct it directly."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/metreg"
    """PostgreSQL DSN: the only source of truth."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for the job queue (arq); checked by ``/readyz``."""
    host: str = "127.0.0.1"
    """Address ``metreg serve`` binds to."""
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    """Port ``metreg serve`` listens on."""
    public_url: Annotated[str, msgspec.Meta(max_length=500, pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$")] = ""
    """The address clients reach metreg at (``https://metreg.example.com``), on which calendar feed URLs
    are built; empty: the address each request was sent to."""
    db_pool_min: Annotated[int, msgspec.Meta(ge=0, le=100)] = 2
    """Connections each API process keeps open."""
    db_pool_max: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    """Most connections each API process opens."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the application and access logs."""
    log_format: Literal["json", "text"] = "json"
    """``json``: one object a line, for machines; ``text``: for a terminal."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=100 * 1024 * 1024)] = 1024 * 1024
    """Largest JSON request body accepted (larger: 413)."""
    max_import_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1024 * 1024 * 1024)] = 20 * 1024 * 1024
    """Largest ledger file an import accepts (larger: 413); an XLSX may unpack to at most 25 times this."""
    max_import_rows: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 200_000
    """Most data rows an import accepts (more: 413)."""
    export_batch_rows: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    """Instruments an export reads from the database at a time: what it holds in memory at most."""
    rate_limit: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] = 100.0
    """Requests a second each API key may make on average (0: no limit); beyond it, 429."""
    rate_burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 200
    """Requests a key may make at once before ``rate_limit`` applies (the bucket's size)."""
    public_rate_limit: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] = 5.0
    """Keyless requests a second from one client address (0: no limit): public certificate checks, and
    calendar feed reads (each with a bucket of its own)."""
    public_rate_burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 30
    """Keyless requests one client address may make at once (of each kind)."""
    client_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    """Longest wait for the next part of a request body; a client slower than that gets 408."""
    keep_alive_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    """How long an idle keep-alive connection stays open."""
    forwarded_allow_ips: str = ""
    """Proxies trusted to say who the client is (``X-Forwarded-For``), comma-separated, for the
    per-address limit behind a reverse proxy; empty: trust no header, use the peer address."""
    allow_private_webhooks: bool = False
    """Accept webhook URLs on loopback, link-local and private addresses, and plain http (tests and
    local use only: otherwise a webhook could make metreg probe the network it runs in)."""
    smtp_url: str = ""
    """Where e-mail notices go: ``smtp://[user:password@]host[:port]`` (STARTTLS when offered) or
    ``smtps://…`` (TLS from the start). Empty: no e-mail; deliveries to ``notify_emails`` fail and say so."""
    mail_from: str = "metreg <metreg@localhost>"
    """The From of notice e-mails."""
    queue_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "metreg:queue"
    """The arq queue the worker consumes (one per deployment sharing a Redis)."""
    worker_jobs: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20
    """Delivery jobs one worker process runs at once (each a batch of up to 100 notices)."""
    send_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    """How long one webhook call or SMTP session may take before it counts as a (retried) failure."""
    dispatch_timeout_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 300.0
    """After this a delivery job that has not finished is presumed lost (its worker died, or Redis
    lost the queue): its notice is dispatched again and its unfinished deliveries may be tried again."""
    retry_tries: Annotated[int, msgspec.Meta(ge=1, le=50)] = 15
    """Tries of a delivery (webhook or e-mail) that keeps failing transiently before it is ``failed``."""
    retry_delay_s: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 30.0
    """Seconds to wait after a delivery's first failed try; the wait doubles after each further one
    (at most 4 hours), with ±20 % jitter. The defaults spread 15 tries over about a day."""
    idempotency_ttl_s: Annotated[int, msgspec.Meta(ge=60, le=30 * 86400)] = 86400
    """How long the answer of a request sent with an ``Idempotency-Key`` is kept for its retries;
    after that the key is new again (the worker deletes expired answers)."""
    idempotency_wait_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    """How long a request waits for another one with the same ``Idempotency-Key`` to finish (then
    replays its answer); a request still running after that is a 409."""
    migrate_lock_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = LOCK_TIMEOUT.total_seconds()
    """How long ``metreg migrate`` waits for a lock a migration needs before it gives up, with nothing
    of that migration applied (a lock queued behind a long transaction would stall every request on
    the table meanwhile). Run it again once the transaction holding the lock has ended."""

    def __post_init__(self) -> None:
        # A delivery job is cut off after the dispatch timeout: a send must fit in it with room to
        # record its outcome, or a slow receiver would be called again and again, never recorded.
        if self.dispatch_timeout_s < 2 * self.send_timeout_s + 1:
            raise ValueError(
                f"METREG_DISPATCH_TIMEOUT ({self.dispatch_timeout_s:g} s) must be at least twice "
                f"METREG_SEND_TIMEOUT ({self.send_timeout_s:g} s) plus 1 s"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment).

        Raises:
            msgspec.ValidationError: a variable has a value of the wrong shape; the message names it.
        """
        source = os.environ if environ is None else environ
        found = {field: source[var] for field, var in ENVIRONMENT.items() if source.get(var, "") != ""}
        try:
            return msgspec.convert(found, cls, strict=False)
        except msgspec.ValidationError as exc:
            if "$." not in str(exc):  # about several variables (__post_init__): it names them itself
                raise
            field = str(exc).rpartition("$.")[2].rstrip("`")
            raise msgspec.ValidationError(f"{ENVIRONMENT.get(field, field)}: {exc}") from None
