"""Imports over HTTP: send a ledger file, get a report; the history of imports."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.spec import OpenAPIMediaType, RequestBody, Schema
from litestar.params import FromPath, QueryParameter

from service.deps import ClockDep, Db, PrincipalDep, SettingsDep
from service.enterprises.access import readable_enterprise, writable_enterprise
from service.errors import NotFoundError, PayloadTooLargeError, UnsupportedMediaError
from service.idempotency import READ_BODY, IdempotentOperation
from service.ledger.pipeline import import_ledger, read_ledger
from service.ledger.queries import select_import, select_imports
from service.ledger.schemas import ImportRecord, ImportReport
from service.pagination import Cursor, Limit, Page
from service.policy import Actor, access
from service.problems import problem_responses
from service.settings import Settings
from service.types import NO_NUL

__all__ = ("ImportController", "LedgerImportController")

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass
class _LedgerFileBody(IdempotentOperation):
    """The import's body is the file itself, which Litestar reads only when the handler asks."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = RequestBody(
            required=True,
            description="The ledger file itself (not a form): CSV in UTF-8 (with or without BOM), UTF-16 with "
            "BOM or GB18030, or XLSX (the first worksheet). The format is read from the content, so any "
            "Content-Type is taken (text/csv, the XLSX type, application/octet-stream) except multipart forms.",
            # One media type: the content decides, so text/csv and the XLSX type are as good as this.
            content={
                "application/octet-stream": OpenAPIMediaType(
                    schema=Schema(type="string", format="binary")  # type: ignore[arg-type]
                )
            },
        )


async def ledger_file(request: Request[Any, Any, Any]) -> bytes:
    """The import's body, the ledger file, read once under ``METREG_MAX_IMPORT_BYTES``: a second call
    (the handler's, after the Idempotency-Key's fingerprint took it) returns the same bytes."""
    state = request.scope["state"]
    if (read := state.get("ledger_file")) is None:
        settings: Settings = request.app.state.settings
        read = state["ledger_file"] = await _read_body(request, settings.max_import_bytes)
    data: bytes = read
    return data


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (whatever Content-Length claims)."""
    too_large = PayloadTooLargeError(
        f"the file is larger than the {limit} bytes an import accepts (METREG_MAX_IMPORT_BYTES)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        raise UnsupportedMediaError(
            "send the file itself as the body, not as a form: curl --data-binary @ledger.xlsx "
            f"-H 'Content-Type: {XLSX}' (or text/csv)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class LedgerImportController(Controller):
    path = "/enterprises/{enterprise_id:str}"
    tags = ["Import and export"]

    @post(
        "/instruments/import",
        operation_id="ImportInstruments",
        opt=access(Actor.ADMIN, Actor.OWNER) | {READ_BODY: ledger_file},
        summary="Import a ledger (台账) from CSV or XLSX",
        description="The enterprise or an admin. Headers in Chinese or English are matched to the ledger "
        "columns (README: Importing a ledger); unknown columns are reported in `columns`, not fatal. Each row "
        "is checked by the rules of single registration and matched to the register by management number, "
        "else by manufacturer, model and serial: it creates, updates or leaves an instrument unchanged. "
        "`dry_run=true` answers 200 with the report (every problem by row and column) and writes nothing; "
        "a real run is all or nothing: 201 with the counts and the import's id, or 422 with `rows` listing "
        "the problems and nothing written. Limits: `METREG_MAX_IMPORT_BYTES` and `METREG_MAX_IMPORT_ROWS` "
        "(413); a file that is neither CSV nor XLSX is a 415.",
        request_max_body_size=None,  # read by the handler, under METREG_MAX_IMPORT_BYTES
        operation_class=_LedgerFileBody,
        responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 422),
        status_code=201,
    )
    async def import_instruments(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        settings: SettingsDep,
        enterprise_id: FromPath[uuid.UUID],
        dry_run: Annotated[bool, QueryParameter(description="Check and report only; nothing is written.")] = False,
        file_name: Annotated[
            str | None,
            QueryParameter(max_length=255, pattern=NO_NUL, description="The file's name, kept in the history."),
        ] = None,
    ) -> Response[ImportReport]:
        enterprise = await writable_enterprise(db, principal, enterprise_id, lock="update")
        data = await ledger_file(request)
        table = read_ledger(data, max_bytes=settings.max_import_bytes, max_rows=settings.max_import_rows)
        report = await import_ledger(
            db,
            enterprise,
            table,
            file_name=file_name,
            file_sha256=hashlib.sha256(data).digest(),
            dry_run=dry_run,
            actor=principal,
            request_id=request.scope.get("state", {}).get("request_id"),
            now=clock.now(),
        )
        if dry_run:
            return Response(report, status_code=200)
        return Response(report, status_code=201, headers={"Location": f"/v1/imports/{report.import_id}"})

    @get(
        "/imports",
        operation_id="ListImports",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR),
        summary="List an enterprise's imports",
        description="Newest first, keyset-paged: each file (by SHA-256), who imported it, when, and the counts. "
        "An enterprise loaded by `metreg demo --instruments` has one import of format `generated`.",
        responses=problem_responses(400, 401, 404),
    )
    async def list_imports(
        self,
        db: Db,
        principal: PrincipalDep,
        enterprise_id: FromPath[uuid.UUID],
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[ImportRecord]:
        enterprise = await readable_enterprise(db, principal, enterprise_id)
        items, next_cursor = await select_imports(db, enterprise.id, limit=limit, cursor=cursor)
        return Page(items=items, next_cursor=next_cursor)


class ImportController(Controller):
    path = "/imports"
    tags = ["Import and export"]

    @get(
        "/{import_id:str}",
        operation_id="GetImport",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR),
        summary="Read an import",
        description="The enterprise, an admin, or a regulator of its region. Each instrument the import created "
        "or changed names it in its history (`detail.import_id`).",
        responses=problem_responses(400, 401, 404),
    )
    async def get_import(self, db: Db, principal: PrincipalDep, import_id: FromPath[uuid.UUID]) -> ImportRecord:
        found = await select_import(db, import_id)
        if found is None:
            raise NotFoundError("no such import")
        await readable_enterprise(db, principal, found.enterprise_id)
        return found
