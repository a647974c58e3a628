"""The ledger's columns (计量器具台账, domain.md §4.1): headers in Chinese and English, and their aliases.

One table serves both directions. Export writes ``zh`` or ``en`` as the header; import matches a
file's header against the field name, both labels and the aliases, after :func:`header_key` has
folded away what spreadsheets add to headers (full-width forms, spaces inside "出 厂 编 号", line
breaks, a required-field star, case).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import msgspec

from service.catalog.rules import LegalUse
from service.instruments.rules import Lifecycle, Status, Traceability

__all__ = (
    "COLUMNS",
    "COMPUTED",
    "LEGAL_USE_ZH",
    "LIFECYCLE_ZH",
    "NOT_STORED",
    "ROW_NUMBER",
    "STATUS_ZH",
    "TRACEABILITY_ZH",
    "Column",
    "header_key",
    "match_header",
)


class Column(msgspec.Struct, frozen=True, kw_only=True):
    """One ledger column: the instrument field it holds and what it is called."""

    field: str
    zh: str
    en: str
    aliases: tuple[str, ...] = ()


#: The columns an import reads, in ledger order (domain.md §4.1). Export writes these and the
#: computed ones below.
COLUMNS: Final = (
    Column(
        field="management_no",
        zh="管理编号",
        en="Management No.",
        aliases=("用能单位管理编号", "内部编号", "资产编号", "设备编号", "统一编号", "asset no", "internal no"),
    ),
    Column(
        field="name",
        zh="计量器具名称",
        en="Instrument name",
        aliases=("器具名称", "名称", "设备名称", "仪器名称", "instrument"),
    ),
    Column(
        field="catalog_code",
        zh="强检目录项",
        en="Catalogue item",
        aliases=("目录编码", "目录项", "强检目录", "catalog", "catalogue", "catalog item"),
    ),
    Column(
        field="model",
        zh="型号规格",
        en="Model / specification",
        aliases=("规格型号", "型号", "规格", "model", "specification"),
    ),
    Column(
        field="accuracy_class", zh="准确度等级", en="Accuracy class", aliases=("准确度", "精度等级", "等级", "accuracy")
    ),
    Column(field="mpe", zh="最大允许误差", en="MPE", aliases=("允许误差", "maximum permissible error")),
    Column(field="measuring_range", zh="测量范围", en="Measuring range", aliases=("量程", "range")),
    Column(
        field="manufacturer",
        zh="生产厂家",
        en="Manufacturer",
        aliases=("制造单位", "制造厂", "生产厂商", "厂家", "生产单位", "maker"),
    ),
    Column(
        field="serial_no", zh="出厂编号", en="Serial No.", aliases=("序列号", "器具编号", "serial", "serial number")
    ),
    Column(
        field="location",
        zh="安装使用地点",
        en="Location",
        aliases=("安装使用地点及用途", "使用地点", "安装地点", "安装位置", "location and purpose"),
    ),
    Column(
        field="department", zh="使用部门", en="Department", aliases=("使用部门/责任人", "部门", "使用单位", "custodian")
    ),
    Column(
        field="legal_use",
        zh="强检用途",
        en="Legal use",
        aliases=("强检类别", "用途类别", "是否强检/强检用途", "compulsory use"),
    ),
    Column(
        field="cycle_months",
        zh="检定周期(月)",
        en="Cycle (months)",
        aliases=("检定周期", "检定周期/校准间隔", "校准间隔", "校准周期", "周期", "cycle", "interval"),
    ),
    Column(
        field="last_verified_on",
        zh="上次检定日期",
        en="Last verified on",
        aliases=("检定日期", "最近检定日期", "上次检定/校准日期", "校准日期", "last verification date"),
    ),
    Column(
        field="valid_until",
        zh="有效期至",
        en="Valid until",
        aliases=("下次检定日期", "有效期", "检定有效期至", "有效日期", "next due", "due date"),
    ),
    Column(field="lifecycle", zh="使用状态", en="Lifecycle", aliases=("状态", "器具状态", "lifecycle status")),
)

#: Columns metreg computes: export writes them, import reads past them without a word.
COMPUTED: Final = (
    Column(field="compulsory", zh="是否强检", en="Compulsory", aliases=("强检",)),
    Column(field="traceability", zh="溯源方式", en="Traceability", aliases=("检定/校准",)),
    Column(field="current_certificate_number", zh="证书编号", en="Certificate No.", aliases=("certificate",)),
    Column(field="status", zh="检定状态", en="Status", aliases=()),
    Column(field="days_until_due", zh="剩余天数", en="Days until due", aliases=()),
)

#: Ledger columns metreg has no place for: import reports them so that nobody thinks they were kept.
NOT_STORED: Final = {
    "管理类别": "management grade (A/B/C) is not stored",
    "abc分类": "management grade (A/B/C) is not stored",
    "检定机构": "the verifying institution comes with each recorded result, not from the ledger",
    "备注": "remarks are not stored",
    "remarks": "remarks are not stored",
    "责任人": "the custodian is not stored; put them in the department column",
    "购置日期": "the purchase date is not stored",
}

#: The row-number column (序号): read past.
ROW_NUMBER: Final = ("序号", "no", "no.", "#", "row")

LEGAL_USE_ZH: Final = {
    LegalUse.TRADE_SETTLEMENT: "贸易结算",
    LegalUse.SAFETY_PROTECTION: "安全防护",
    LegalUse.MEDICAL: "医疗卫生",
    LegalUse.ENVIRONMENTAL_MONITORING: "环境监测",
    LegalUse.NONE: "非强检",
}
LIFECYCLE_ZH: Final = {
    Lifecycle.IN_SERVICE: "在用",
    Lifecycle.SEALED: "封存",
    Lifecycle.FAILED: "禁用",
    Lifecycle.SCRAPPED: "报废",
    Lifecycle.REPLACED: "已更换",
    Lifecycle.PENDING_VERIFICATION: "待检",
}
STATUS_ZH: Final = {
    Status.VALID: "有效",
    Status.DUE_SOON: "即将到期",
    Status.OVERDUE: "超期",
    Status.FAILED: "禁用",
    Status.SEALED: "封存",
    Status.SCRAPPED: "报废",
    Status.REPLACED: "已更换",
    Status.PENDING_VERIFICATION: "待检",
    Status.UNVERIFIED: "未检定",
}
TRACEABILITY_ZH: Final = {Traceability.VERIFICATION: "检定", Traceability.CALIBRATION: "校准"}

_PARENTHESISED = re.compile(r"\([^)]*\)")
_SEPARATORS = re.compile(r"[\s_.\-*:：·]+")


def header_key(text: str) -> str:
    """``text`` folded for matching: NFKC (full-width to half-width), no spaces, stars or case.

    >>> header_key(" 出 厂\\n编号 ") == header_key("*出厂编号") == header_key("出厂编号")
    True
    >>> header_key("Serial No.") == header_key("serial_no")
    True
    """
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", text)).casefold()


def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    for column in (*COLUMNS, *COMPUTED):
        for label in (column.field, column.zh, column.en, *column.aliases):
            index.setdefault(header_key(label), column.field)
    return index


_INDEX: Final = _index()
_NOT_STORED: Final = {header_key(k): v for k, v in NOT_STORED.items()}
_ROW_NUMBER: Final = frozenset(header_key(k) for k in ROW_NUMBER)
_COMPUTED_FIELDS: Final = frozenset(c.field for c in COMPUTED)


def match_header(text: str) -> tuple[str | None, str | None]:
    """What the header ``text`` names: ``(field, None)`` for an imported column, ``(None, note)`` otherwise.

    A unit in parentheses ("检定周期（月）") is tried without it when the whole does not match. The
    note is None for columns read past silently (序号 and what metreg computes itself), and says why
    for everything else.
    """
    key = header_key(text)
    if not key or key in _ROW_NUMBER:
        return None, None
    field = _INDEX.get(key) or _INDEX.get(_PARENTHESISED.sub("", key))
    if field in _COMPUTED_FIELDS:
        return None, None
    if field is not None:
        return field, None
    note = _NOT_STORED.get(key) or _NOT_STORED.get(_PARENTHESISED.sub("", key))
    return None, note or "unknown column: not imported"
