"""What the photographer sees."""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console
from rich.live import Live
from rich.text import Text

from findme.watcher.files import MB
from findme.watcher.ledger import Figures
from findme.watcher.manifest import Answer

STATUS_EVERY_S = 10.0  # plain-text progress line interval


class Display:
    """A live panel on a terminal; plain timestamped lines when stdout is not one."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal and not console.is_dumb_terminal
        self.figures = Figures()
        self.pending = 0
        self.sent_bytes = 0
        self._title = ""
        self._trouble: str | None = None
        self._trouble_shown_at = 0.0
        self._recent: deque[tuple[float, int]] = deque()
        self._first_send_at: float | None = None
        self._requests = 0
        self._busy_since = 0.0
        self._busy_s = 0.0  # time with at least one request in flight
        self._live: Live | None = None
        self._status_at = time.monotonic()  # the first status line comes after a while
        self._status_shown = ""
        self._warned: set[str] = set()

    def __enter__(self) -> Display:
        if self.live:
            self._live = Live(self._render(), console=self.console, auto_refresh=False)
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    def title(self, text: str) -> None:
        self._title = text
        if not self.live:  # the live panel shows it
            self.line(text, style="bold")

    def line(self, text: str, *, style: str = "") -> None:
        stamp = time.strftime("%H:%M:%S")
        if self.live:
            self.console.print(Text.assemble((stamp, "dim"), " ", (text, style)))
        else:
            self.console.print(Text(f"{stamp} {text}"))

    def warn_once(self, message: str, *, key: str | None = None) -> None:
        """A warning, shown the first time only (per key, or per message if no key is given)."""
        key = key or message
        if key not in self._warned:
            self._warned.add(key)
            self.line(message, style="yellow")

    def outcome(self, relative: str, answer: Answer, *, kind: str) -> None:
        """One file's fate; kind is sent, duplicate, rejected, already or rejected_earlier."""
        if answer.status == "rejected":
            why = answer.detail or answer.error or "no reason given"
            when = " earlier" if kind == "rejected_earlier" else ""
            self.line(
                f"✗ {relative} was rejected{when}: {why} It is not sent again unless it changes.",
                style="red",
            )
        elif kind == "sent":
            self.line(f"✓ {relative} sent (photo {answer.photo_id})", style="green")
        elif kind == "duplicate":
            self.line(f"= {relative} was already on the server (photo {answer.photo_id})")
        else:
            self.line(f"= {relative} has the same bytes as a photo already sent, not sent again")

    def request_started(self) -> None:
        now = time.monotonic()
        if self._first_send_at is None:
            self._first_send_at = now
        if not self._requests:
            self._busy_since = now
        self._requests += 1

    def request_ended(self, sent_bytes: int) -> None:
        """A request is over; sent_bytes is what it delivered (0 if it failed)."""
        now = time.monotonic()
        self._requests -= 1
        if not self._requests:
            self._busy_s += now - self._busy_since
        if sent_bytes:
            self.sent_bytes += sent_bytes
            self._recent.append((now, sent_bytes))

    def trouble(self, reason: str, retry_in_s: float) -> None:
        now = time.monotonic()
        if reason != self._trouble or now - self._trouble_shown_at >= 30:
            self.line(f"! {reason}; retrying in {retry_in_s:.1f} s", style="yellow")
            self._trouble_shown_at = now
        self._trouble = reason

    def recovered(self) -> None:
        if self._trouble is not None:
            self._trouble = None
            self.line("The server answers again; carrying on.", style="green")

    def rate_mb_s(self) -> float:
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > 5:
            self._recent.popleft()
        if not self._recent or self._first_send_at is None:
            return 0.0
        window = min(5.0, max(now - self._first_send_at, 0.5))
        return sum(size for _, size in self._recent) / window / MB

    def status(self) -> str:
        shown = self.figures
        return (
            f"seen {shown.seen} · sent {shown.sent} · duplicate {shown.duplicate} · "
            f"already sent {shown.already} · rejected {shown.rejected} · "
            f"pending {self.pending} · {self.rate_mb_s():.1f} MB/s"
        )

    def refresh(self, figures: Figures, *, pending: int) -> None:
        self.figures = figures
        self.pending = pending
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            return
        now = time.monotonic()
        status = self.status()
        changed = status.rsplit(" · ", 1)[0] != self._status_shown
        if changed and now - self._status_at >= STATUS_EVERY_S:
            self.line(status)
            self._status_at = now
            self._status_shown = status.rsplit(" · ", 1)[0]

    def summary(self) -> str:
        moved = ""
        if self.sent_bytes:
            busy_s = max(self._busy_s, 0.001)
            moved = (
                f" {human_bytes(self.sent_bytes)} in {busy_s:.1f} s of uploading "
                f"({self.sent_bytes / MB / busy_s:.1f} MB/s)."
            )
        shown = self.figures
        parts = [f"{shown.sent} sent"]
        parts += [f"{shown.duplicate} already on the server"] if shown.duplicate else []
        parts += [f"{shown.already} already sent"] if shown.already else []
        parts += [f"{shown.rejected} rejected"] if shown.rejected else []
        return f"{plural(shown.seen, 'file')} seen: {', '.join(parts)}." + moved

    def _render(self) -> Text:
        text = Text()
        text.append(self._title + "\n", style="bold")
        text.append(self.status())
        if self._trouble is not None:
            text.append(f"\n! {self._trouble}", style="yellow")
        return text


def human_bytes(size: int) -> str:
    return f"{size / MB:.1f} MB" if size >= MB else f"{max(size // 1024, 1)} KB"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
