"""Notice e-mails in Chinese and English, and the SMTP URL (service/deliveries/email.py)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import uuid
from email.message import EmailMessage

import msgspec
import pytest

from service.deliveries.email import SmtpConfig, digest_message, notice_message
from service.deliveries.payload import EnterpriseSummary, InstrumentSummary, NoticeEvent
from service.instruments.rules import Lifecycle, RequiredAction, Status
from service.notices.rules import Audience, NoticeKind

SENDER = "Metreg <noreply@metreg.example>"
TO = "metrology@acme.example"
NOTICE_ID = uuid.UUID("8d1c2a5e-0b7f-4c1e-9a43-2f6b5d7e9c01")
ENTERPRISE = EnterpriseSummary(
    id=uuid.UUID("11111111-2222-4333-8444-555555555555"),
    name="上海精工机械有限公司",
    credit_code="91310000MA1FL0XX1X",
    region_code="310115",
)


def instrument(**changes: object) -> InstrumentSummary:
    base = InstrumentSummary(
        id=uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"),
        name="压力表",
        model="Y-100",
        serial_no="SN-2024-0042",
        management_no=None,
        catalog_code="pressure_gauge",
        location=None,
        lifecycle=Lifecycle.IN_SERVICE,
        status=Status.DUE_SOON,
        status_reason="due soon: valid until 2026-06-30, 15 days left",
        valid_until=dt.date(2026, 6, 30),
        days_until_due=15,
        required_action=RequiredAction.VERIFY,
        current_certificate_number="JD-2025-0001",
    )
    return msgspec.structs.replace(base, **changes)


def event(
    kind: NoticeKind = NoticeKind.DUE_SOON, *, notice_id: uuid.UUID = NOTICE_ID, **changes: object
) -> NoticeEvent:
    return NoticeEvent(
        notice_id=notice_id,
        kind=kind,
        audience=Audience.ENTERPRISE,
        due_on=dt.date(2026, 6, 15),
        cycle=dt.date(2026, 6, 30),
        step=0,
        certificate_id=None,
        created_at=dt.datetime(2026, 6, 15, 0, 0, tzinfo=dt.UTC),
        enterprise=ENTERPRISE,
        instrument=instrument(**changes),
    )


def body(message: EmailMessage) -> str:
    content = message.get_content()
    assert isinstance(content, str)
    return content


def has_chinese(text: str) -> bool:
    return re.search(r"[\u4e00-\u9fff]", text) is not None


def has_english(text: str) -> bool:
    return re.search(r"[A-Za-z]{4,}", text) is not None


def line(text: str, prefix: str) -> str:
    """The one line of ``text`` that starts with ``prefix`` (after its indentation)."""
    found = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


# --- SmtpConfig.from_url -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "smtp://mail.example.com",
            SmtpConfig(hostname="mail.example.com", port=25, username=None, password=None, use_tls=False),
            id="smtp-default-port-25",
        ),
        pytest.param(
            "smtp://mail.example.com:2525",
            SmtpConfig(hostname="mail.example.com", port=2525, username=None, password=None, use_tls=False),
            id="smtp-explicit-port",
        ),
        pytest.param(
            "smtps://user:p%40ss@mail.example.com",
            SmtpConfig(hostname="mail.example.com", port=465, username="user", password="p@ss", use_tls=True),
            id="smtps-default-port-465-password-unquoted",
        ),
        pytest.param(
            "smtps://user%40acme.example:s%3Ae%2Fc@mail.example.com:4650",
            SmtpConfig(
                hostname="mail.example.com", port=4650, username="user@acme.example", password="s:e/c", use_tls=True
            ),
            id="smtps-explicit-port-username-unquoted",
        ),
        pytest.param(
            "smtp://relay:secret@127.0.0.1:587",
            SmtpConfig(hostname="127.0.0.1", port=587, username="relay", password="secret", use_tls=False),
            id="smtp-with-credentials-starttls",
        ),
    ],
)
def test_smtp_config_from_url(url: str, expected: SmtpConfig) -> None:
    assert SmtpConfig.from_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://x", id="wrong-scheme-http"),
        pytest.param("smtp://", id="smtp-without-host"),
        pytest.param("smtps://", id="smtps-without-host"),
        pytest.param("smtp://user:pw@", id="credentials-without-host"),
        pytest.param("mail.example.com:25", id="no-scheme"),
        pytest.param("", id="empty"),
    ],
)
def test_smtp_config_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="METREG_SMTP_URL"):
        SmtpConfig.from_url(url)


# --- notice_message ----------------------------------------------------------------------------------

# For each kind: what the subject says in each language, and a phrase of each language's headline.
SUBJECTS = {
    NoticeKind.DUE_SOON: (
        "检定有效期即将届满",
        "Verification is due soon",
        "请及时申请检定",
        "have it verified in time",
    ),
    NoticeKind.ROTATION_DUE: ("使用期限即将届满", "Its service life ends soon", "须到期更换", "replace it in time"),
    NoticeKind.OVERDUE: ("已超过检定有效期", "Overdue", "须立即停止使用并申请检定", "stop using it"),
    NoticeKind.ESCALATION: (
        "逾期未检定",
        "Overdue and not verified",
        "已通报辖区市场监督管理部门",
        "reported to the market-supervision bureau",
    ),
    NoticeKind.RESULT_RECORDED: (
        "检定/校准结果已录入",
        "A verification or calibration result was recorded",
        "检定/校准结果已录入",
        "a verification or calibration result was recorded",
    ),
    NoticeKind.VERIFICATION_FAILED: (
        "检定不合格",
        "Failed verification",
        "修理后重新检定或报废",
        "repair and re-verify",
    ),
}


def test_every_kind_has_a_subject_row() -> None:
    assert set(SUBJECTS) == set(NoticeKind)


@pytest.mark.parametrize("kind", list(NoticeKind), ids=str)
def test_notice_message_for_every_kind(kind: NoticeKind) -> None:
    zh_subject, en_subject, zh_phrase, en_phrase = SUBJECTS[kind]
    message = notice_message(event(kind), sender=SENDER, to=TO)

    subject = message["Subject"]
    assert subject == f"【计量器具】压力表：{zh_subject} / {en_subject}"
    assert has_chinese(subject)
    assert has_english(subject)

    text = body(message)
    assert has_chinese(text)
    assert has_english(text)
    for expected in (
        zh_phrase,
        en_phrase,
        "计量器具「压力表」",
        'Measuring instrument "压力表"',
        "出厂编号 SN-2024-0042",
        "serial no. SN-2024-0042",
        "有效期至：2026-06-30",
        "Valid until: 2026-06-30",
        f"通知编号：{NOTICE_ID}",
        f"Notice: {NOTICE_ID}",
        "上海精工机械有限公司：",
        "上海精工机械有限公司:",
        "Status: due_soon (due soon: valid until 2026-06-30, 15 days left)",
    ):
        assert expected in text, expected
    # Chinese first, then English.
    assert text.index("计量器具「") < text.index("----") < text.index("Measuring instrument")

    assert message["To"] == TO
    assert message["From"] == SENDER
    assert message["X-Metreg-Notice"] == str(NOTICE_ID)
    assert str(NOTICE_ID) in message["Message-ID"]
    assert message["Message-ID"].endswith("@metreg>")


def test_notice_message_is_utf8_plain_text_that_survives_the_wire() -> None:
    message = notice_message(event(NoticeKind.OVERDUE, days_until_due=-3), sender=SENDER, to=TO)
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.decode("utf-8") == body(message)

    raw = message.as_bytes()
    raw.decode("ascii")  # headers and body are transfer-encoded for 7-bit transport
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == message["Subject"]
    assert parsed["X-Metreg-Notice"] == str(NOTICE_ID)
    assert body(parsed) == body(message)
    assert "已逾期 3 天" in body(parsed)


@pytest.mark.parametrize(
    ("kind", "days", "zh", "en"),
    [
        pytest.param(NoticeKind.OVERDUE, -3, "（已逾期 3 天）", " (3 days overdue)", id="overdue-counts-days-past"),
        pytest.param(NoticeKind.ESCALATION, -45, "（已逾期 45 天）", " (45 days overdue)", id="escalation-overdue"),
        pytest.param(NoticeKind.DUE_SOON, 15, "（剩余 15 天）", " (15 days left)", id="due-soon-counts-days-left"),
        pytest.param(NoticeKind.ROTATION_DUE, 30, "（剩余 30 天）", " (30 days left)", id="rotation-days-left"),
        pytest.param(NoticeKind.DUE_SOON, 0, "（剩余 0 天）", " (0 days left)", id="due-today-is-zero-left"),
    ],
)
def test_notice_message_days(kind: NoticeKind, days: int, zh: str, en: str) -> None:
    text = body(notice_message(event(kind, days_until_due=days), sender=SENDER, to=TO))
    assert line(text, "有效期至：") == f"有效期至：2026-06-30{zh}"
    assert line(text, "Valid until:") == f"Valid until: 2026-06-30{en}"


def test_notice_message_without_expiry() -> None:
    text = body(
        notice_message(
            event(
                NoticeKind.RESULT_RECORDED,
                valid_until=None,
                days_until_due=None,
                status=Status.VALID,
                status_reason="in service with its initial verification; it does not expire",
            ),
            sender=SENDER,
            to=TO,
        )
    )
    assert line(text, "有效期至：") == "有效期至：—"
    assert line(text, "Valid until:") == "Valid until: —"


def test_notice_message_optional_fields_absent_when_unset() -> None:
    text = body(notice_message(event(management_no=None, location=None), sender=SENDER, to=TO))
    assert "管理编号" not in text
    assert "management no." not in text
    assert "存放地点" not in text
    assert "Location:" not in text
    assert "（出厂编号 SN-2024-0042）" in text
    assert "(serial no. SN-2024-0042)" in text


def test_notice_message_optional_fields_present_when_set() -> None:
    text = body(notice_message(event(management_no="GL-007", location="二号车间 B 线"), sender=SENDER, to=TO))
    assert "（出厂编号 SN-2024-0042，管理编号 GL-007）" in text
    assert "(serial no. SN-2024-0042, management no. GL-007)" in text
    assert "存放地点：二号车间 B 线" in text
    assert "Location: 二号车间 B 线" in text


def test_notice_message_management_no_without_location() -> None:
    text = body(notice_message(event(management_no="GL-007"), sender=SENDER, to=TO))
    assert "管理编号 GL-007" in text
    assert "management no. GL-007" in text
    assert "存放地点" not in text
    assert "Location:" not in text


def test_notice_message_gets_a_fresh_message_id_each_time() -> None:
    first = notice_message(event(), sender=SENDER, to=TO)
    second = notice_message(event(), sender=SENDER, to=TO)
    assert first["Message-ID"] != second["Message-ID"]
    assert first["X-Metreg-Notice"] == second["X-Metreg-Notice"]


# --- digest_message ----------------------------------------------------------------------------------

DIGEST_EVENTS = [
    event(
        NoticeKind.OVERDUE,
        notice_id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        name="压力表",
        serial_no="SN-A",
        days_until_due=-2,
        status=Status.OVERDUE,
    ),
    event(
        NoticeKind.DUE_SOON,
        notice_id=uuid.UUID("00000000-0000-4000-8000-000000000002"),
        name="电子天平",
        serial_no="SN-B",
        days_until_due=10,
        management_no="GL-2",
    ),
    event(
        NoticeKind.VERIFICATION_FAILED,
        notice_id=uuid.UUID("00000000-0000-4000-8000-000000000003"),
        name="出租汽车计价器",
        serial_no="SN-C",
        location="车队",
        status=Status.FAILED,
    ),
]


def test_digest_message_lists_every_event_numbered_in_both_languages() -> None:
    message = digest_message(DIGEST_EVENTS, sender=SENDER, to=TO, reference="digest-42")

    assert message["Subject"] == "【计量器具】今日提醒 3 条 / 3 instrument notices today"
    assert message["To"] == TO
    assert message["From"] == SENDER
    assert message["X-Metreg-Notice"] == "digest-42"
    assert message.get_content_charset() == "utf-8"

    text = body(message)
    assert text.startswith("上海精工机械有限公司：\n\n今日共有 3 条计量器具提醒：\n\n")
    assert "上海精工机械有限公司:\n\n3 instrument notices today:\n\n" in text
    zh, en = text.split("\n----\n")
    for n, name in enumerate(["压力表", "电子天平", "出租汽车计价器"], 1):
        assert f"\n{n}. 计量器具「{name}」" in zh
        assert f'\n{n}. Measuring instrument "{name}"' in en
    assert "\n4. " not in text
    # In the order given, in each language.
    assert (
        zh.index("1. 计量器具「压力表」")
        < zh.index("2. 计量器具「电子天平」")
        < zh.index("3. 计量器具「出租汽车计价器」")
    )
    assert en.index('1. Measuring instrument "压力表"') < en.index('2. Measuring instrument "电子天平"')
    assert en.index('2. Measuring instrument "电子天平"') < en.index('3. Measuring instrument "出租汽车计价器"')
    # Each block says its own facts.
    for expected in ("已逾期 2 天", "剩余 10 天", "管理编号 GL-2", "存放地点：车队", "检定不合格"):
        assert expected in zh, expected
    for expected in ("2 days overdue", "10 days left", "management no. GL-2", "Location: 车队", "failed verification"):
        assert expected in en, expected
    assert has_chinese(zh)
    assert has_english(en)


def test_digest_message_of_one_event() -> None:
    message = digest_message(DIGEST_EVENTS[:1], sender=SENDER, to=TO, reference="digest-1")
    assert message["Subject"] == "【计量器具】今日提醒 1 条 / 1 instrument notices today"
    text = body(message)
    assert "1. 计量器具「压力表」" in text
    assert "2. " not in text


def test_digest_message_survives_the_wire() -> None:
    message = digest_message(DIGEST_EVENTS, sender=SENDER, to=TO, reference="digest-42")
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == message["Subject"]
    assert body(parsed) == body(message)


def test_notice_message_with_a_line_break_in_the_instrument_name() -> None:
    message = notice_message(event(name="压力表\n二号"), sender=SENDER, to=TO)
    assert "\n" not in message["Subject"]
    assert "\r" not in message["Subject"]
    assert "二号" in message["Subject"]


@pytest.mark.parametrize("url", ["smtp://host:abc", "smtp://host:0", "smtps://user@host:99999"])
def test_an_smtp_url_with_a_bad_port_is_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(ValueError, match="METREG_SMTP_URL"):
        SmtpConfig.from_url(url)


def test_one_day_is_singular_and_the_chinese_status_is_chinese() -> None:
    soon = body(notice_message(event(days_until_due=1, status=Status.DUE_SOON), sender=SENDER, to=TO))
    assert "(1 day left)" in soon
    assert "当前状态：即将到期" in soon
    late = body(
        notice_message(event(NoticeKind.OVERDUE, days_until_due=-1, status=Status.OVERDUE), sender=SENDER, to=TO)
    )
    assert "(1 day overdue)" in late
    assert "当前状态：已超期" in late
