"""Sending email over SMTP, or to the log when no mail server is configured.

Each message opens its own connection: FindMe sends few emails (password resets), and mail
servers close idle connections after a few minutes, so a connection held for the process's
lifetime would mostly be a dead one to notice and reopen. A handshake per message costs
nothing at this rate and never pins one of the server's connection slots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from findme.settings import Settings

logger = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    # What must never reach a production log (a one-time link): withheld there.
    secret: str = ""
    # More headers, as (name, value): List-Unsubscribe on new-photo emails.
    headers: tuple[tuple[str, str], ...] = ()


class Mailer:
    """Sends `Mail`s as the settings say; opened once per process by `open_services`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @property
    def configured(self) -> bool:
        return bool(self._settings.smtp_host)

    async def send(self, mail: Mail) -> None:
        """Deliver one message; without a mail server, write it to the log instead.

        In development the logged message keeps its link, so a reset can be tried without a
        mail server; in production the link is withheld, since logs are read by more people
        than the account's owner.
        """
        if not self.configured:
            text = mail.text
            if mail.secret and not self._settings.development:
                text = text.replace(mail.secret, "[link withheld: email is not configured]")
            logger.warning(
                "email is not configured (FINDME_SMTP_HOST); not sent to %s: %s\n%s",
                mail.to,
                mail.subject,
                text,
                extra={"action": "mail_not_sent"},
            )
            return
        await aiosmtplib.send(
            self._message(mail),
            hostname=self._settings.smtp_host,
            port=self._settings.smtp_port,
            username=self._settings.smtp_user or None,
            password=str(self._settings.smtp_password) or None,
            start_tls=self._settings.smtp_starttls,
            timeout=SEND_TIMEOUT_S,
        )
        logger.info("email sent to %s: %s", mail.to, mail.subject, extra={"action": "mail_sent"})

    async def send_quietly(self, mail: Mail) -> None:
        """Send after the answer has gone: a failure is logged (never with the link), since
        nobody is waiting to be told."""
        try:
            await self.send(mail)
        except (aiosmtplib.SMTPException, OSError) as error:
            logger.error(
                "email to %s could not be sent: %s: %s",
                mail.to,
                mail.subject,
                type(error).__name__,
                extra={"action": "mail_failed"},
            )

    def _message(self, mail: Mail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._settings.mail_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        for name, value in mail.headers:
            message[name] = value
        message.set_content(mail.text)
        return message
