"""The SMTP sender behind the notification outbox: `smtp://user:password@host:port` (STARTTLS when the server
offers it) or `smtps://...` (TLS from the start). Blocking smtplib, run in a thread by the caller."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Message:
    recipient: str
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    tls: bool  # smtps: TLS from the first byte
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"not an smtp:// or smtps:// URL: {url.split('@')[-1]!r}")
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 25),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def send_all(
    config: SmtpConfig, sender: str, messages: list[tuple[str, Message]], timeout: float = 30.0
) -> dict[str, str | None]:
    """Send each (id, message) over one connection; returns id -> None when sent, or the error's text.

    Raises (OSError, smtplib.SMTPException is one) only while nothing was sent: connecting, greeting, logging in.
    Once sending began, every message has its own result, so a connection lost half way, or a server that
    answers the goodbye badly, never has the messages it took sent again."""
    results: dict[str, str | None] = {}
    context = ssl.create_default_context()
    smtp: smtplib.SMTP = (
        smtplib.SMTP_SSL(config.host, config.port, timeout=timeout, context=context)
        if config.tls
        else smtplib.SMTP(config.host, config.port, timeout=timeout)
    )
    try:
        smtp.ehlo()
        if not config.tls and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        if config.username:
            smtp.login(config.username, config.password or "")
        for message_id, message in messages:
            email = EmailMessage()
            email["From"] = sender
            email["To"] = message.recipient
            email["Subject"] = message.subject
            email["Message-ID"] = f"<{message_id}@marketplace>"
            email.set_content(message.body)
            try:
                smtp.send_message(email)
                results[message_id] = None
            except OSError as exc:  # a refused recipient, or the connection lost: the others still get a result
                results[message_id] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            smtp.quit()
        except OSError:
            smtp.close()
    return results
