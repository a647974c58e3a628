"""What a generated register is made of: trades, the instruments each keeps, and where they are.

Data only. Each trade keeps the catalogue items that fit it (design.md §4's seed catalogue), in the
uses that make them compulsory and, for some, in a use that does not (kept by calibration on the
enterprise's own cycle), plus instruments outside the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.catalog.rules import LegalUse

__all__ = ("REGIONS", "TRADES", "Kind", "Region", "Trade")

_T = LegalUse.TRADE_SETTLEMENT
_S = LegalUse.SAFETY_PROTECTION
_M = LegalUse.MEDICAL
_E = LegalUse.ENVIRONMENTAL_MONITORING
_N = LegalUse.NONE


# Compared by identity: kinds are keys of the generator's lookups, and hashing every field of a
# kind for each row would cost more than drawing the row.
@dataclass(frozen=True, slots=True, eq=False)
class Kind:
    """One kind of instrument a trade keeps.

    ``cycle_months`` is the instrument's own cycle: required outside compulsory verification (the
    enterprise chooses its calibration interval), None for the catalogue default.
    """

    catalog_code: str | None
    use: LegalUse
    names: tuple[str, ...]
    models: tuple[str, ...]
    makers: tuple[str, ...]
    measuring_range: str
    accuracy_class: str
    weight: int
    cycle_months: int | None = None


@dataclass(frozen=True, slots=True)
class Trade:
    """A kind of enterprise: how it is named, its departments and places, the instruments it keeps."""

    code: str
    names: tuple[str, ...]
    """Name patterns; ``{city}`` and ``{n}`` are filled in."""
    departments: tuple[str, ...]
    places: tuple[str, ...]
    kinds: tuple[Kind, ...]
    weight: int
    """How common the trade is among enterprises."""
    size: int
    """Relative size of its register (a hospital keeps more instruments than a gas station)."""
    prefix: str
    """Management number prefix."""


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    """The 6-digit administrative code (regulators read by its prefix: 31, 3101, 310115)."""
    city: str
    district: str
    """How an address in it begins (province, city, district)."""
    area_code: str
    """The telephone area code of its landlines."""
    roads: tuple[str, ...]
    """Roads an enterprise there may stand on."""


REGIONS = (
    Region("310115", "上海浦东", "上海市浦东新区", "021", ("川沙路", "康桥路", "金科路", "张江路")),
    Region("310104", "上海徐汇", "上海市徐汇区", "021", ("漕宝路", "宜山路", "田林路", "钦州北路")),
    Region("110105", "北京朝阳", "北京市朝阳区", "010", ("酒仙桥路", "来广营西路", "望京东路", "东三环中路")),
    Region("110108", "北京海淀", "北京市海淀区", "010", ("永丰路", "上地信息路", "中关村大街", "建材城中路")),
    Region("440305", "深圳南山", "广东省深圳市南山区", "0755", ("科技南路", "南海大道", "留仙大道", "高新中一道")),
    Region("440106", "广州天河", "广东省广州市天河区", "020", ("科韵路", "天河北路", "中山大道西", "黄埔大道西")),
    Region("330106", "杭州西湖", "浙江省杭州市西湖区", "0571", ("文三路", "西园路", "三墩路", "天目山路")),
    Region("320505", "苏州高新", "江苏省苏州市虎丘区", "0512", ("长江路", "狮山路", "滨河路", "金山路")),
    Region("510107", "成都武侯", "四川省成都市武侯区", "028", ("武侯大道", "科华北路", "武科西一路", "龙井中街")),
    Region("420106", "武汉武昌", "湖北省武汉市武昌区", "027", ("中北路", "武珞路", "徐东大街", "和平大道")),
    Region("370202", "青岛市南", "山东省青岛市市南区", "0532", ("山东路", "香港中路", "东海西路", "延安三路")),
    Region("500112", "重庆渝北", "重庆市渝北区", "023", ("新南路", "金开大道", "龙山大道", "空港大道")),
    Region("610113", "西安雁塔", "陕西省西安市雁塔区", "029", ("科技路", "高新路", "丈八东路", "雁塔北路")),
    Region("210202", "大连中山", "辽宁省大连市中山区", "0411", ("人民路", "中山路", "解放路", "港湾街")),
)

_GAUGE = Kind(
    "pressure_gauge",
    _S,
    ("一般压力表", "耐震压力表", "电接点压力表"),
    ("Y-100", "YN-60", "YXC-100"),
    ("上海自动化仪表四厂", "红旗仪表有限公司", "布莱迪仪器"),
    "0–1.6 MPa",
    "1.6 级",
    6,
)
_PRECISION_GAUGE = Kind(
    "pressure_gauge", _N, ("精密压力表",), ("YB-150",), ("西安仪表厂",), "0–2.5 MPa", "0.4 级", 1, cycle_months=12
)
_GAS_DETECTOR = Kind(
    "combustible_gas_detector",
    _S,
    ("可燃气体检测报警器",),
    ("GT-2000", "ES2000"),
    ("汉威科技", "深圳特安"),
    "0–100 %LEL",
    "±5 %FS",
    3,
)
_CO_DETECTOR = Kind(
    "co_detector", _S, ("一氧化碳检测报警器",), ("ES2000T",), ("深圳特安",), "0–1000 μmol/mol", "±5 %FS", 1
)
_PRICE_SCALE = Kind(
    "price_scale",
    _T,
    ("电子计价秤",),
    ("ACS-15", "TCS-30", "ACS-6"),
    ("上海友声衡器有限公司", "凯丰衡器", "大华电子秤"),
    "0–15 kg",
    "Ⅲ级",
    8,
)
_BALANCE = Kind("electronic_balance", _T, ("电子天平",), ("FA2004", "JA5003"), ("上海精科天平",), "0–500 g", "Ⅱ级", 2)
_LAB_BALANCE = Kind(
    "electronic_balance",
    _N,
    ("分析天平",),
    ("ME204E", "BSA224S"),
    ("梅特勒-托利多", "赛多利斯"),
    "0–220 g",
    "Ⅰ级",
    3,
    cycle_months=12,
)
_WEIGHTS = Kind("weights", _T, ("M1 级砝码组",), ("1 g–5 kg",), ("上海衡器砝码厂",), "1 g–5 kg", "M1 级", 1)
_LAB_WEIGHTS = Kind(
    "weights", _N, ("F1 级砝码组",), ("1 mg–500 g",), ("上海衡器砝码厂",), "1 mg–500 g", "F1 级", 1, cycle_months=12
)
_DISPENSER = Kind(
    "fuel_dispenser",
    _T,
    ("燃油加油机",),
    ("CS46", "TH-2240"),
    ("正星科技", "托肯恒山"),
    "5–50 L/min",
    "0.3 级",
    8,
)
_SPHYGMO = Kind(
    "sphygmomanometer", _M, ("台式血压计", "弹簧式血压计"), ("XJ11D",), ("鱼跃医疗",), "0–300 mmHg", "±3 mmHg", 4
)
_BP_MONITOR = Kind(
    "bp_monitor_automated",
    _M,
    ("电子血压计",),
    ("HEM-7136", "U80EH"),
    ("欧姆龙", "鱼跃医疗"),
    "0–299 mmHg",
    "±3 mmHg",
    4,
)
_THERMOMETER = Kind(
    "clinical_thermometer_glass", _M, ("玻璃体温计",), ("三角型", "棒式"), ("天津红光",), "35–42 ℃", "±0.15 ℃", 4
)
_WATER_25 = Kind(
    "water_meter_dn25",
    _T,
    ("冷水水表 DN20", "冷水水表 DN15"),
    ("LXS-20E", "LXS-15E"),
    ("宁波水表股份",),
    "DN20",
    "2 级",
    6,
)
_WATER_50 = Kind("water_meter_dn50", _T, ("冷水水表 DN40",), ("LXS-40E",), ("宁波水表股份",), "DN40", "2 级", 2)
_WATER_LARGE = Kind(
    "water_meter_large", _T, ("水平螺翼式水表 DN100",), ("LXLC-100",), ("三川智慧",), "DN100", "2 级", 2
)
_ELECTRICITY = Kind(
    "electricity_meter_household",
    _T,
    ("单相电能表",),
    ("DDZY666", "DDS1352"),
    ("正泰仪表", "威胜集团"),
    "5(60) A",
    "2 级",
    5,
)
_GAS_METER = Kind(
    "gas_meter_household",
    _T,
    ("膜式燃气表 G2.5",),
    ("G2.5", "G4"),
    ("成都秦川", "浙江苍南仪表"),
    "0.025–4 m³/h",
    "1.5 级",
    4,
)
_ALCOHOL = Kind(
    "breath_alcohol_analyser",
    _S,
    ("呼出气体酒精检测仪",),
    ("AT8000",),
    ("深圳安维森",),
    "0–2.000 mg/L",
    "±0.030 mg/L",
    2,
)
_TAXIMETER = Kind(
    "taximeter", _T, ("出租汽车计价器",), ("JJQ-3", "SJB-II"), ("北京聚利", "上海大众计价器厂"), "0–999.9 km", "±1 %", 8
)
_SOUND = Kind("sound_level_meter", _E, ("声级计",), ("AWA5688", "AWA6228+"), ("杭州爱华",), "28–133 dB(A)", "2 级", 1)
_MULTIMETER = Kind(None, _N, ("数字多用表",), ("17B+", "87V"), ("福禄克",), "0–1000 V", "0.5 %", 2, cycle_months=12)
_CALIPER = Kind(None, _N, ("游标卡尺",), ("0–150 mm",), ("哈量集团",), "0–150 mm", "0.02 mm", 2, cycle_months=12)
_HYGROMETER = Kind(None, _N, ("温湿度计",), ("TH101B",), ("华盛昌",), "-20–60 ℃", "±0.5 ℃", 1, cycle_months=24)
_PIPETTE = Kind(None, _N, ("移液器",), ("Research plus",), ("艾本德",), "100–1000 μL", "±0.6 %", 2, cycle_months=12)

TRADES = (
    Trade(
        "gas_station",
        ("中国石化{city}第{n}加油站", "中国石油{city}{n}号加油站", "{city}振华加油站{n}号站"),
        ("加油区", "便利店", "油罐区"),
        ("1 号加油岛", "2 号加油岛", "3 号加油岛", "罐区", "便利店收银台"),
        (_DISPENSER, _GAS_DETECTOR, _GAUGE, _PRICE_SCALE),
        weight=5,
        size=1,
        prefix="JY",
    ),
    Trade(
        "hospital",
        ("{city}第{n}人民医院", "{city}中医医院{n}分院", "{city}妇幼保健院{n}院区"),
        ("心内科", "急诊科", "检验科", "设备科", "供氧站"),
        ("门诊楼 2 层", "住院部 5 层", "急诊抢救室", "检验科生化室", "供氧站"),
        (_SPHYGMO, _BP_MONITOR, _THERMOMETER, _GAUGE, _LAB_BALANCE, _PIPETTE, _HYGROMETER),
        weight=2,
        size=4,
        prefix="YY",
    ),
    Trade(
        "market",
        ("{city}{n}号农贸市场", "{city}联华超市第{n}分店", "{city}永辉超市{n}店"),
        ("生鲜区", "熟食区", "管理办公室"),
        ("水产摊位", "蔬菜摊位", "肉类摊位", "公平秤", "熟食柜台"),
        (_PRICE_SCALE, _BALANCE, _WEIGHTS, _WATER_LARGE),
        weight=5,
        size=2,
        prefix="SC",
    ),
    Trade(
        "utility",
        ("{city}自来水公司第{n}营业所", "{city}热力公司{n}号换热站", "{city}水务集团{n}分公司"),
        ("营业所", "泵站", "换热站", "计量中心"),
        ("小区 A 区", "小区 B 区", "加压泵站", "换热站一次网", "计量中心"),
        (_WATER_25, _WATER_50, _WATER_LARGE, _GAUGE, _PRECISION_GAUGE),
        weight=2,
        size=6,
        prefix="SW",
    ),
    Trade(
        "chemical_plant",
        ("{city}化工有限公司{n}厂", "{city}精细化工第{n}分厂", "{city}新材料科技{n}号基地"),
        ("生产部", "设备部", "安环部", "质检中心"),
        ("1# 反应釜", "储罐区", "空压站", "锅炉房", "质检中心理化室", "厂界东侧"),
        (_GAUGE, _PRECISION_GAUGE, _GAS_DETECTOR, _CO_DETECTOR, _SOUND, _LAB_BALANCE, _MULTIMETER, _CALIPER),
        weight=2,
        size=5,
        prefix="HG",
    ),
    Trade(
        "lab",
        ("{city}检测技术有限公司{n}号实验室", "{city}环境监测站第{n}分站"),
        ("理化室", "环境室", "样品室"),
        ("理化室", "天平室", "环境监测车", "样品室"),
        (_LAB_BALANCE, _LAB_WEIGHTS, _SOUND, _PIPETTE, _HYGROMETER, _CALIPER),
        weight=1,
        size=2,
        prefix="SY",
    ),
    Trade(
        "logistics",
        ("{city}顺达物流{n}号仓", "{city}安捷运输公司第{n}车队", "{city}强生出租汽车{n}分公司"),
        ("车队", "安全科", "仓储部"),
        ("车队调度室", "出车检查点", "1 号仓库", "营运车辆"),
        (_TAXIMETER, _ALCOHOL, _WEIGHTS, _BALANCE, _GAUGE),
        weight=2,
        size=3,
        prefix="WL",
    ),
    Trade(
        "property",
        ("{city}物业管理有限公司{n}号小区", "{city}城投公寓第{n}期"),
        ("工程部", "客服中心"),
        ("1 号楼", "2 号楼", "3 号楼", "地下车库", "物业用房"),
        (_WATER_25, _ELECTRICITY, _GAS_METER, _GAS_DETECTOR),
        weight=2,
        size=3,
        prefix="WY",
    ),
)
