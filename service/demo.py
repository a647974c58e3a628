"""A demo enterprise with a realistic register, seeded once, and its keys.

The register is generated from a fixed seed relative to the enterprise's local today, through the
same rules the API applies, and lands instruments in every status. Keys are kept in a local file
(the database holds only hashes) so that ``make run`` can print them again on the next start.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from service import dates
from service.auth import Role, hash_secret, parse_key
from service.catalog.queries import select_catalog_rule
from service.catalog.rules import CatalogRule, LegalUse, Regime, effective_regime
from service.enterprises.queries import insert_enterprise
from service.enterprises.rules import credit_code_check_char
from service.enterprises.schemas import Enterprise, EnterpriseCreate
from service.history.queries import record_event
from service.history.schemas import EventKind
from service.instruments.queries import insert_instrument
from service.instruments.rules import DueSoonWindows, Lifecycle, Status, derive, status_of
from service.keys.queries import create_key
from service.keys.schemas import ApiKeyCreate
from service.labs.queries import insert_lab
from service.labs.schemas import LabCreate

__all__ = ("DemoKeys", "DemoResult", "seed_demo")

DEMO_NAME = "浦江示范制造有限公司 (metreg demo)"
DEMO_CREDIT_CODE = "91310115MA1K40000" + credit_code_check_char("91310115MA1K40000")
DEMO_REGION = "310115"
# The filing table's title block (fictitious, like the company).
DEMO_ADDRESS = "上海市浦东新区川沙路 5588 号"
DEMO_CONTACT_NAME = "陈静"
DEMO_CONTACT_PHONE = "021-5012 3456 转 8012"
DEMO_SIZE = 200
DEMO_LAB = "浦东计量检定所 (metreg demo)"
DEMO_LAB_ACCREDITATION = "(2026)国量标沪证字第000号"


@dataclass(frozen=True, slots=True)
class DemoResult:
    enterprise_id: uuid.UUID
    enterprise_name: str
    lab_id: uuid.UUID
    instruments: int
    created: bool
    keys: DemoKeys


@dataclass(frozen=True, slots=True)
class _Kind:
    catalog_code: str | None
    names: tuple[str, ...]
    models: tuple[str, ...]
    makers: tuple[str, ...]
    use: LegalUse
    places: tuple[str, ...]
    cycle_months: int | None = None
    weight: int = 1


_KINDS = (
    _Kind(
        "pressure_gauge",
        ("一般压力表", "耐震压力表", "电接点压力表"),
        ("Y-100", "YN-60", "YXC-100"),
        ("上海自动化仪表四厂", "红旗仪表有限公司"),
        LegalUse.SAFETY_PROTECTION,
        ("锅炉房 1# 锅炉汽包", "空压站储气罐", "氨制冷机房", "2# 反应釜"),
        weight=6,
    ),
    _Kind(
        "pressure_gauge",
        ("精密压力表",),
        ("YB-150",),
        ("西安仪表厂",),
        LegalUse.NONE,
        ("计量室", "工艺试验线"),
        cycle_months=12,
        weight=2,
    ),
    _Kind(
        "price_scale",
        ("电子计价秤",),
        ("ACS-15", "TCS-30"),
        ("上海友声衡器有限公司", "凯丰衡器"),
        LegalUse.TRADE_SETTLEMENT,
        ("员工食堂", "门市部"),
        weight=3,
    ),
    _Kind(
        "electronic_balance",
        ("电子天平",),
        ("FA2004", "JA5003"),
        ("上海精科天平",),
        LegalUse.TRADE_SETTLEMENT,
        ("原料仓库收货处",),
        weight=2,
    ),
    _Kind(
        "electronic_balance",
        ("分析天平",),
        ("ME204E",),
        ("梅特勒-托利多",),
        LegalUse.NONE,
        ("质检中心理化室",),
        cycle_months=12,
        weight=2,
    ),
    _Kind(
        "weights",
        ("F1 级砝码组",),
        ("1 mg–500 g",),
        ("上海衡器砝码厂",),
        LegalUse.TRADE_SETTLEMENT,
        ("原料仓库收货处",),
        weight=1,
    ),
    _Kind(
        "fuel_dispenser",
        ("燃油加油机",),
        ("CS46", "TH-2240"),
        ("正星科技", "托肯恒山"),
        LegalUse.TRADE_SETTLEMENT,
        ("厂区自备加油站",),
        weight=2,
    ),
    _Kind("sphygmomanometer", ("台式血压计",), ("XJ11D",), ("鱼跃医疗",), LegalUse.MEDICAL, ("厂医务室",), weight=1),
    _Kind(
        "bp_monitor_automated", ("电子血压计",), ("HEM-7136",), ("欧姆龙",), LegalUse.MEDICAL, ("厂医务室",), weight=1
    ),
    _Kind(
        "clinical_thermometer_glass",
        ("玻璃体温计",),
        ("三角型",),
        ("天津红光",),
        LegalUse.MEDICAL,
        ("厂医务室",),
        weight=2,
    ),
    _Kind(
        "water_meter_dn25",
        ("冷水水表 DN20",),
        ("LXS-20E",),
        ("宁波水表股份",),
        LegalUse.TRADE_SETTLEMENT,
        ("职工宿舍 A 栋", "职工宿舍 B 栋"),
        weight=3,
    ),
    _Kind(
        "water_meter_dn50",
        ("冷水水表 DN40",),
        ("LXS-40E",),
        ("宁波水表股份",),
        LegalUse.TRADE_SETTLEMENT,
        ("食堂",),
        weight=1,
    ),
    _Kind(
        "water_meter_large",
        ("水平螺翼式水表 DN100",),
        ("LXLC-100",),
        ("三川智慧",),
        LegalUse.TRADE_SETTLEMENT,
        ("厂区总进水口",),
        weight=1,
    ),
    _Kind(
        "electricity_meter_household",
        ("单相电能表",),
        ("DDZY666",),
        ("正泰仪表",),
        LegalUse.TRADE_SETTLEMENT,
        ("职工宿舍 A 栋", "职工宿舍 B 栋"),
        weight=2,
    ),
    _Kind(
        "gas_meter_household",
        ("膜式燃气表 G2.5",),
        ("G2.5",),
        ("成都秦川",),
        LegalUse.TRADE_SETTLEMENT,
        ("职工宿舍 A 栋",),
        weight=1,
    ),
    _Kind(
        "combustible_gas_detector",
        ("可燃气体检测报警器",),
        ("GT-2000",),
        ("汉威科技",),
        LegalUse.SAFETY_PROTECTION,
        ("涂装车间", "燃气锅炉房"),
        weight=3,
    ),
    _Kind(
        "co_detector",
        ("一氧化碳检测报警器",),
        ("ES2000T",),
        ("深圳特安",),
        LegalUse.SAFETY_PROTECTION,
        ("热处理车间",),
        weight=1,
    ),
    _Kind(
        "sound_level_meter",
        ("声级计",),
        ("AWA5688",),
        ("杭州爱华",),
        LegalUse.ENVIRONMENTAL_MONITORING,
        ("环保科",),
        weight=1,
    ),
    _Kind(
        None, ("数字多用表",), ("17B+",), ("福禄克",), LegalUse.NONE, ("设备科", "电仪车间"), cycle_months=12, weight=2
    ),
    _Kind(
        None,
        ("游标卡尺",),
        ("0–150 mm",),
        ("哈量集团",),
        LegalUse.NONE,
        ("机加车间", "质检中心"),
        cycle_months=12,
        weight=3,
    ),
    _Kind(None, ("温湿度计",), ("TH101B",), ("华盛昌",), LegalUse.NONE, ("成品仓库",), cycle_months=24, weight=1),
)

_TARGETS = (
    (Status.VALID, 52),
    (Status.DUE_SOON, 12),
    (Status.OVERDUE, 10),
    (Status.UNVERIFIED, 4),
    (Status.FAILED, 5),
    (Status.SEALED, 6),
    (Status.PENDING_VERIFICATION, 4),
    (Status.SCRAPPED, 4),
    (Status.REPLACED, 3),
)
_TIMED = {Status.VALID, Status.DUE_SOON, Status.OVERDUE}


def _pick_date(
    rng: random.Random, kind: _Kind, rule: CatalogRule | None, want: Status, today: dt.date, enterprise: Enterprise
) -> dt.date | None:
    """A last verification date that gives ``want`` today (None for unverified)."""
    if want is Status.UNVERIFIED:
        return None
    regime = effective_regime(rule, kind.use)
    windows = DueSoonWindows.from_reminders(enterprise.reminder_days, enterprise.rotation_reminder_days)
    cycle = kind.cycle_months or (rule.default_cycle_months if rule else None) or 12
    span = cycle * 31 + 120
    for _ in range(500):
        verified = today - dt.timedelta(days=rng.randrange(0, span))
        if want not in _TIMED:
            return verified
        expires = regime is not Regime.INITIAL_ONLY_SCRAP_ON_FAILURE
        got = status_of(
            lifecycle=Lifecycle.IN_SERVICE,
            regime=regime,
            last_verified_on=verified,
            valid_until=dates.valid_until(verified, cycle, enterprise.period_rule) if expires else None,
            today=today,
            windows=windows,
        )
        if got is want:
            return verified
    return today - dt.timedelta(days=1)


def _plan(today: dt.date, rules: dict[str, CatalogRule], enterprise: Enterprise) -> list[dict[str, Any]]:
    rng = random.Random(20_260_101)
    statuses = [s for s, share in _TARGETS for _ in range(share * DEMO_SIZE // 100)]
    statuses += [Status.VALID] * (DEMO_SIZE - len(statuses))
    kinds = [k for k in _KINDS for _ in range(k.weight)]
    planned = []
    for n, want in enumerate(statuses, start=1):
        kind = rng.choice(kinds)
        if want in (Status.DUE_SOON, Status.OVERDUE) and kind.catalog_code == "clinical_thermometer_glass":
            kind = _KINDS[0]  # thermometers never expire; give the slot to a gauge
        rule = rules.get(kind.catalog_code or "")
        verified = _pick_date(rng, kind, rule, want, today, enterprise)
        lifecycle = Lifecycle.IN_SERVICE if want in _TIMED or want is Status.UNVERIFIED else Lifecycle(want.value)
        planned.append(
            {
                "catalog_code": kind.catalog_code,
                "name": rng.choice(kind.names),
                "model": rng.choice(kind.models),
                "manufacturer": rng.choice(kind.makers),
                "serial_no": f"{today.year - rng.randrange(0, 8)}{rng.randrange(10_000, 99_999)}-{n:03d}",
                "management_no": f"JL-{n:04d}",
                "location": rng.choice(kind.places),
                "department": kind.places[0].split(" ")[0],
                "legal_use": kind.use,
                "cycle_months": kind.cycle_months,
                "lifecycle": lifecycle,
                "last_verified_on": verified,
                "valid_until": None,
            }
        )
    return planned


async def _seed_register(db: asyncpg.Connection, enterprise: Enterprise, now: dt.datetime) -> int:
    today = dates.local_today(now, enterprise.timezone)
    codes = {k.catalog_code for k in _KINDS if k.catalog_code}
    rules = {code: rule for code in codes if (rule := await select_catalog_rule(db, code))}
    planned = _plan(today, rules, enterprise)
    for values in planned:
        rule = rules.get(values["catalog_code"] or "")
        derived = derive(
            item=rule,
            legal_use=values["legal_use"],
            cycle_months=values["cycle_months"],
            last_verified_on=values["last_verified_on"],
            printed_valid_until=None,
            rule=enterprise.period_rule,
            today=today,
        )
        row = await insert_instrument(db, enterprise.id, {**values, **msgspec.structs.asdict(derived)}, now)
        await record_event(
            db, instrument_id=row.id, kind=EventKind.REGISTERED, actor=None, now=now, to_lifecycle=row.lifecycle
        )
    return len(planned)


class DemoKeys(msgspec.Struct, kw_only=True):
    """The demo's keys, as kept in the local keys file."""

    admin_key: str
    enterprise_key: str
    lab_key: str | None = None


async def _key_is_live(db: asyncpg.Connection, key: str) -> bool:
    parsed = parse_key(key)
    if parsed is None:
        return False
    stored = await db.fetchval("SELECT secret_sha256 FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL", parsed[0])
    return bool(stored == hash_secret(parsed[1]))


async def _demo_keys(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, lab_id: uuid.UUID, now: dt.datetime, kept: DemoKeys | None
) -> DemoKeys:
    if kept and all([await _key_is_live(db, k) for k in (kept.admin_key, kept.enterprise_key, kept.lab_key or "")]):
        return kept
    admin = await create_key(db, ApiKeyCreate(role=Role.ADMIN, name="demo admin"), now)
    member = await create_key(
        db, ApiKeyCreate(role=Role.ENTERPRISE, name="demo enterprise", enterprise_id=enterprise_id), now
    )
    lab = await create_key(db, ApiKeyCreate(role=Role.LAB, name="demo lab", lab_id=lab_id), now)
    return DemoKeys(admin_key=admin.key, enterprise_key=member.key, lab_key=lab.key)


async def _demo_lab(db: asyncpg.Connection, now: dt.datetime) -> uuid.UUID:
    """The demo's verification lab, authorised for every catalogue code (created once)."""
    found: uuid.UUID | None = await db.fetchval(
        "SELECT id FROM labs WHERE name = $1 AND accreditation_no = $2", DEMO_LAB, DEMO_LAB_ACCREDITATION
    )
    if found is not None:
        return found
    codes = [r["code"] for r in await db.fetch("SELECT code FROM catalog_items ORDER BY code")]
    lab = await insert_lab(
        db, LabCreate(name=DEMO_LAB, accreditation_no=DEMO_LAB_ACCREDITATION, region_code=DEMO_REGION, scope=codes), now
    )
    return lab.id


async def seed_demo(db: asyncpg.Connection, now: dt.datetime, kept: DemoKeys | None) -> DemoResult:
    """Seed the demo enterprise, its register and a lab unless present; make sure their keys work.

    ``kept`` are the keys of an earlier run; they are reused while they still work, else new ones
    are minted (the database keeps only hashes, so lost keys cannot be shown again).
    """
    existing = await db.fetchrow("SELECT id, name FROM enterprises WHERE credit_code = $1", DEMO_CREDIT_CODE)
    created = existing is None
    if existing is None:
        enterprise = await insert_enterprise(
            db,
            EnterpriseCreate(
                name=DEMO_NAME,
                credit_code=DEMO_CREDIT_CODE,
                region_code=DEMO_REGION,
                address=DEMO_ADDRESS,
                contact_name=DEMO_CONTACT_NAME,
                contact_phone=DEMO_CONTACT_PHONE,
            ),
            now,
        )
        enterprise_id, name = enterprise.id, enterprise.name
        await _seed_register(db, enterprise, now)
    else:
        enterprise_id, name = existing["id"], existing["name"]
    count = await db.fetchval("SELECT count(*) FROM instruments WHERE enterprise_id = $1", enterprise_id)
    lab_id = await _demo_lab(db, now)
    keys = await _demo_keys(db, enterprise_id, lab_id, now, kept)
    return DemoResult(
        enterprise_id=enterprise_id,
        enterprise_name=name,
        lab_id=lab_id,
        instruments=count,
        created=created,
        keys=keys,
    )
