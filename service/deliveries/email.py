"""Notice e-mails: written in Chinese and English, sent over SMTP (aiosmtplib) one try at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

import aiosmtplib
import msgspec

from service.deliveries.attempt import Attempted
from service.deliveries.payload import NoticeEvent
from service.deliveries.rules import Outcome, outcome_of_smtp
from service.instruments.rules import Status
from service.notices.rules import NoticeKind

__all__ = ("Mailer", "SmtpConfig", "digest_message", "notice_message")

# What each notice says, in Chinese and in English.
_HEADLINES: dict[NoticeKind, tuple[str, str]] = {
    NoticeKind.DUE_SOON: ("检定有效期即将届满，请及时申请检定", "verification is due soon: have it verified in time"),
    NoticeKind.ROTATION_DUE: ("使用期限即将届满，须到期更换", "its service life ends soon: replace it in time"),
    NoticeKind.OVERDUE: (
        "已超过检定有效期，须立即停止使用并申请检定",
        "overdue: stop using it and have it verified",
    ),
    NoticeKind.ESCALATION: (
        "逾期未检定，已通报辖区市场监督管理部门",
        "overdue and not verified: reported to the market-supervision bureau of the region",
    ),
    NoticeKind.RESULT_RECORDED: ("检定/校准结果已录入", "a verification or calibration result was recorded"),
    NoticeKind.VERIFICATION_FAILED: (
        "检定不合格，须停止使用，修理后重新检定或报废",
        "failed verification: stop using it; repair and re-verify, or scrap it",
    ),
}


_STATUS_ZH: dict[Status, str] = {
    Status.VALID: "有效",
    Status.DUE_SOON: "即将到期",
    Status.OVERDUE: "已超期",
    Status.FAILED: "检定不合格",
    Status.SEALED: "封存",
    Status.SCRAPPED: "已报废",
    Status.REPLACED: "已更换",
    Status.PENDING_VERIFICATION: "待检定",
    Status.UNVERIFIED: "未检定",
}


class SmtpConfig(msgspec.Struct, frozen=True, kw_only=True):
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """``smtp://[user:password@]host[:port]`` (STARTTLS when offered) or ``smtps://…`` (TLS).

        Raises:
            ValueError: not such a URL.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("METREG_SMTP_URL must look like smtp://host:port or smtps://user:password@host")
        tls = parts.scheme == "smtps"
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0 and parts.netloc.rpartition(":")[2] not in ("", parts.hostname):
            raise ValueError("METREG_SMTP_URL has an invalid port")
        return cls(
            hostname=parts.hostname,
            port=port or (465 if tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=tls,
        )


def _days(event: NoticeEvent) -> tuple[str, str]:
    days = event.instrument.days_until_due
    if days is None:
        return "", ""
    if days >= 0:
        return f"（剩余 {days} 天）", f" ({days} day{'' if days == 1 else 's'} left)"
    return f"（已逾期 {-days} 天）", f" ({-days} day{'' if days == -1 else 's'} overdue)"


def _identity(event: NoticeEvent) -> tuple[str, str]:
    i = event.instrument
    zh = [f"出厂编号 {i.serial_no}"] + ([f"管理编号 {i.management_no}"] if i.management_no else [])
    en = [f"serial no. {i.serial_no}"] + ([f"management no. {i.management_no}"] if i.management_no else [])
    return "，".join(zh), ", ".join(en)


def _paragraphs(event: NoticeEvent) -> tuple[str, str]:
    i = event.instrument
    zh_head, en_head = _HEADLINES[event.kind]
    zh_days, en_days = _days(event)
    zh_id, en_id = _identity(event)
    valid = str(i.valid_until) if i.valid_until else "—"
    zh = (
        f"计量器具「{i.name}」（{zh_id}）{zh_head}。\n  有效期至：{valid}{zh_days}\n  当前状态：{_STATUS_ZH[i.status]}"
        + (f"\n  存放地点：{i.location}" if i.location else "")
    )
    en = (
        f'Measuring instrument "{i.name}" ({en_id}): {en_head}.\n'
        f"  Valid until: {valid}{en_days}\n"
        f"  Status: {i.status} ({i.status_reason})" + (f"\n  Location: {i.location}" if i.location else "")
    )
    return zh, en


def _message(sender: str, to: str, subject: str, text: str, reference: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = " ".join(subject.split())  # a line break in a name must not break the header
    message["Message-ID"] = make_msgid(idstring=reference, domain="metreg")
    message["X-Metreg-Notice"] = reference
    message.set_content(text, charset="utf-8")
    return message


def notice_message(event: NoticeEvent, *, sender: str, to: str) -> EmailMessage:
    """One notice as an e-mail: Chinese first, then English."""
    zh_head, en_head = _HEADLINES[event.kind]
    zh, en = _paragraphs(event)
    subject = f"【计量器具】{event.instrument.name}：{zh_head.split('，')[0]} / {en_head.split(':')[0].capitalize()}"
    text = (
        f"{event.enterprise.name}：\n\n{zh}\n\n通知编号：{event.notice_id}\n\n"
        f"----\n\n{event.enterprise.name}:\n\n{en}\n\nNotice: {event.notice_id}\n"
    )
    return _message(sender, to, subject, text, str(event.notice_id))


def digest_message(events: Sequence[NoticeEvent], *, sender: str, to: str, reference: str) -> EmailMessage:
    """A day's notices of one enterprise as one e-mail."""
    name = events[0].enterprise.name
    blocks = [_paragraphs(e) for e in events]
    zh = "\n\n".join(f"{n}. {zh}" for n, (zh, _) in enumerate(blocks, 1))
    en = "\n\n".join(f"{n}. {en}" for n, (_, en) in enumerate(blocks, 1))
    subject = f"【计量器具】今日提醒 {len(events)} 条 / {len(events)} instrument notices today"
    text = (
        f"{name}：\n\n今日共有 {len(events)} 条计量器具提醒：\n\n{zh}\n\n"
        f"----\n\n{name}:\n\n{len(events)} instrument notices today:\n\n{en}\n"
    )
    return _message(sender, to, subject, text, reference)


class Mailer:
    """Sends one message per call and classifies what the server said; never raises for SMTP."""

    def __init__(self, config: SmtpConfig | None, *, sender: str, timeout_s: float) -> None:
        self.config = config
        self.sender = sender
        self.timeout_s = timeout_s

    async def send(self, message: EmailMessage) -> Attempted:
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        if self.config is None:
            return Attempted(
                outcome=Outcome.FAILED, duration_ms=0, error="e-mail is not configured on this server (METREG_SMTP_URL)"
            )
        c = self.config
        try:
            async with asyncio.timeout(self.timeout_s):  # the whole session, not each reply
                await aiosmtplib.send(
                    message,
                    hostname=c.hostname,
                    port=c.port,
                    username=c.username,
                    password=c.password,
                    use_tls=c.use_tls,
                    timeout=self.timeout_s,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            code = max(r.code for r in exc.recipients)
            return Attempted(outcome=outcome_of_smtp(code), duration_ms=took(), status_code=code, error=str(exc))
        except aiosmtplib.SMTPResponseException as exc:
            return Attempted(
                outcome=outcome_of_smtp(exc.code), duration_ms=took(), status_code=exc.code, error=exc.message
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Attempted(outcome=Outcome.RETRY, duration_ms=took(), error=f"{type(exc).__name__}: {exc}")
        return Attempted(outcome=Outcome.DELIVERED, duration_ms=took(), status_code=250)
