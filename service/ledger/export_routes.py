"""Exports over HTTP: the ledger as CSV or XLSX, and the filing table of compulsory instruments.

A CSV is streamed while it is read: Litestar commits and releases the request's connection before
the response is sent, so the stream reads on a connection of its own, in a read-only transaction
that is made the caller's again (:func:`service.auth.act_as`) for row-level security to hold. An
XLSX cannot be sent before it is whole (a zip ends with its directory): it is written, within
the request's own transaction, to an anonymous temporary file, which is then streamed out.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Annotated, Any, Final
from urllib.parse import quote

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from service import dates
from service.auth import Principal, act_as, request_context
from service.db import FairPool
from service.deps import ClockDep, Db, PrincipalDep, SettingsDep
from service.enterprises.access import readable_enterprise
from service.errors import NotAcceptableError, UnavailableError
from service.files import file_chunks
from service.ledger.exporting import LedgerExport, ledger_csv, ledger_xlsx
from service.ledger.filing import FILING_TITLE, filing_xlsx
from service.ledger.writing import CSV_MEDIA_TYPE, XLSX_MEDIA_TYPE, ExportFormat, Lang
from service.negotiation import preferred_media_type, vary_on
from service.policy import Actor, access
from service.problems import problem_responses

__all__ = ("LedgerExportController", "attachment", "negotiate")

_CSV_TYPE: Final = "text/csv"
_OFFERED: Final = {_CSV_TYPE: ExportFormat.CSV, XLSX_MEDIA_TYPE: ExportFormat.XLSX}
_FILE_NAME: Final = {Lang.ZH: "计量器具台账", Lang.EN: "instrument-ledger"}


def negotiate(
    request: Request[Any, Any, Any], asked: ExportFormat | None, offered: tuple[ExportFormat, ...]
) -> ExportFormat:
    """The format to send: ``?format=`` when given, else the one of ``offered`` the ``Accept``
    header weighs highest (the first on a tie; no header takes anything), and then the answer,
    whatever it is, carries ``Vary: Accept``.

    Raises:
        NotAcceptableError: ``Accept`` takes none of ``offered`` (names none, or weighs them ``q=0``).
    """
    if asked is not None:
        return asked
    # From here the answer, a file of one type or a 406, depends on Accept: caches must know.
    vary_on(request.scope["state"], "Accept")
    # Several Accept lines are one list (RFC 9110 §5.3).
    accept = ", ".join(request.headers.getall("accept", []))
    if not accept.strip():
        return offered[0]
    types = sorted((t for t, f in _OFFERED.items() if f in offered), key=lambda t: offered.index(_OFFERED[t]))
    best = preferred_media_type(accept, types)
    if best is None:
        if len(types) == 1:
            raise NotAcceptableError(f"this operation writes {types[0]}; the Accept header does not take it")
        raise NotAcceptableError(
            f"this operation writes {' or '.join(types)}; the Accept header takes neither "
            "(send one of them, */*, or ?format=)"
        )
    return _OFFERED[best]


def attachment(name: str, fallback: str) -> str:
    """A Content-Disposition naming the file: ``name`` (UTF-8, RFC 6266) and ``fallback`` (ASCII)."""
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


#: Seconds a CSV export's transaction may wait on a client that stops reading: the connection and
#: the snapshot it holds go back to the pool (the file is cut short) rather than stay held.
_STALLED_CLIENT_S: Final = 30


def _refuse_when_busy(state: State, pool_max: int) -> None:
    """Refuse a CSV export while as many run in this process as half its pool: slow downloads hold
    a connection each, and must leave the rest of the API its connections. (The stream counts
    itself once it starts: a stream that never starts then holds nothing.)

    Raises:
        UnavailableError: 503, retry in a moment.
    """
    running = state.get("csv_exports", 0)
    if running >= max(1, pool_max // 2):
        raise UnavailableError(f"{running} ledger downloads are running on this server: retry in a moment")


async def _csv_stream(
    state: State, principal: Principal, context: tuple[str, str], now: dt.datetime, export: LedgerExport
) -> AsyncIterator[bytes]:
    state.csv_exports = state.get("csv_exports", 0) + 1
    try:
        pool: FairPool = state.db_pool
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{_STALLED_CLIENT_S}s'")
            await act_as(conn, principal, request_id=context[0], action=context[1], now=now)
            async for chunk in ledger_csv(conn, export):
                yield chunk
    finally:
        state.csv_exports -= 1


@dataclass
class _LedgerOperation(Operation):
    """The 200 answer is a file, CSV or XLSX: documented as both, which Litestar cannot say by itself."""

    def __post_init__(self) -> None:
        self.responses = dict(self.responses or {})
        self.responses["200"] = OpenAPIResponse(
            description="The ledger as a file (`Content-Disposition: attachment`): CSV in UTF-8 with a BOM, or XLSX.",
            content={
                "text/csv": OpenAPIMediaType(schema=Schema(type="string")),  # type: ignore[arg-type]
                XLSX_MEDIA_TYPE: OpenAPIMediaType(schema=Schema(type="string", format="binary")),  # type: ignore[arg-type]
            },
        )


@dataclass
class _FilingOperation(Operation):
    def __post_init__(self) -> None:
        self.responses = dict(self.responses or {})
        self.responses["200"] = OpenAPIResponse(
            description="The filing table as an XLSX file (`Content-Disposition: attachment`).",
            content={XLSX_MEDIA_TYPE: OpenAPIMediaType(schema=Schema(type="string", format="binary"))},  # type: ignore[arg-type]
        )


class LedgerExportController(Controller):
    path = "/enterprises/{enterprise_id:str}"
    tags = ["Import and export"]

    @get(
        "/ledger",
        operation_id="ExportLedger",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR),
        summary="Export the ledger (台账) as CSV or XLSX",
        description="The enterprise, an admin, or a regulator of its region. Every instrument of the register, "
        "in ledger order (by management number, then as registered), with the columns an import reads "
        "(README: Exporting the ledger), so that the file imports back unchanged, followed by those metreg "
        "computes (compulsory, traceability, certificate number, status and days until due as of the "
        "enterprise's local today). The cycle is the one in force (the instrument's own, else the "
        "catalogue's default) and the valid-until the one the register holds. `format` (csv or xlsx) wins "
        "over `Accept`, whose weights count: of text/csv and the XLSX type (named, or through text/*, "
        "application/* or */*) the one it weighs higher, CSV on a tie; `q=0` refuses a type, and an Accept that "
        "takes neither is a 406; an answer Accept chose carries `Vary: Accept`. Without either, CSV, in UTF-8 "
        "with a BOM so that "
        "Excel opens it, streamed as it is read. In CSV a text that a spreadsheet would run as a formula "
        "(starting with = + - @ or a tab, after any apostrophes of its own) gets a leading `'`, which the "
        "import takes off again. Headers and labels are Chinese unless `lang=en`. "
        "An error once the CSV has started can only cut it short: a CSV ends with a line break.",
        operation_class=_LedgerOperation,
        responses=problem_responses(400, 401, 404, 406),
    )
    async def export_ledger(
        self,
        request: Request[Any, Any, Any],
        state: State,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        settings: SettingsDep,
        enterprise_id: FromPath[uuid.UUID],
        format: Annotated[
            ExportFormat | None,
            QueryParameter(description="`csv` or `xlsx`; wins over the Accept header."),
        ] = None,
        lang: Annotated[
            Lang, QueryParameter(description="`zh` (default): Chinese headers and labels; `en`: English.")
        ] = Lang.ZH,
    ) -> Stream:
        enterprise = await readable_enterprise(db, principal, enterprise_id)
        chosen = negotiate(request, format, (ExportFormat.CSV, ExportFormat.XLSX))
        now = clock.now()
        today = dates.local_today(now, enterprise.timezone)
        name = f"{_FILE_NAME[lang]}-{today.isoformat()}.{chosen.value}"
        headers = {"Content-Disposition": attachment(name, f"instrument-ledger-{today.isoformat()}.{chosen.value}")}
        export = LedgerExport(enterprise=enterprise, today=today, lang=lang, batch_rows=settings.export_batch_rows)
        if chosen is ExportFormat.CSV:
            _refuse_when_busy(state, settings.db_pool_max)
            stream = _csv_stream(state, principal, request_context(request), now, export)
            return Stream(stream, media_type=CSV_MEDIA_TYPE, headers=headers)
        file = await _written(lambda f: ledger_xlsx(db, export, f))
        return Stream(file_chunks(file), media_type=XLSX_MEDIA_TYPE, headers=headers)

    @get(
        "/filing",
        operation_id="ExportFiling",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR),
        summary="Export the filing table of compulsory instruments (强制检定计量器具备案表) as XLSX",
        description="The enterprise, an admin, or a regulator of its region. A title block with the "
        "enterprise's name, unified social credit code, `address`, `contact_name` and `contact_phone` (any of "
        "the last three the enterprise has not set is left blank to fill in by hand, as is the seal), then "
        "one row per instrument under legal control that is still kept (scrapped and replaced ones are left "
        "out): name, catalogue item, model, accuracy class, range, serial number, quantity, compulsory use, "
        "location, manufacturer and the cycle in force; the verifying institution is left for the "
        "institution side. An `Accept` that does not take XLSX is a 406; the answer carries `Vary: Accept`.",
        operation_class=_FilingOperation,
        responses=problem_responses(400, 401, 404, 406),
    )
    async def export_filing(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        settings: SettingsDep,
        enterprise_id: FromPath[uuid.UUID],
    ) -> Stream:
        enterprise = await readable_enterprise(db, principal, enterprise_id)
        negotiate(request, None, (ExportFormat.XLSX,))
        today = dates.local_today(clock.now(), enterprise.timezone)
        export = LedgerExport(enterprise=enterprise, today=today, batch_rows=settings.export_batch_rows)
        file = await _written(lambda f: filing_xlsx(db, export, f))
        headers = {"Content-Disposition": attachment(f"{FILING_TITLE}-{today}.xlsx", f"filing-{today}.xlsx")}
        return Stream(file_chunks(file), media_type=XLSX_MEDIA_TYPE, headers=headers)


async def _written(write: Callable[[IO[bytes]], Awaitable[int]]) -> IO[bytes]:
    """An anonymous temporary file (gone when closed) that ``write`` has filled."""
    file = tempfile.TemporaryFile()  # noqa: SIM115  # closed by the stream that sends it
    try:
        await write(file)
    except BaseException:
        file.close()
        raise
    return file
