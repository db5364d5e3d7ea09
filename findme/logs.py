"""Logging set up once, by the entrypoint: one line per event, its fields as key=value."""

from __future__ import annotations

import logging
import re
import sys

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# uvicorn repeats its message with terminal colour codes: not a field worth a log line.
_SKIPPED = _STANDARD | {"color_message"}

# Request paths, file names and headers reach the log. A raw CR or LF there would forge a log
# line, an ESC would drive the terminal reading it: every control character (C0, DEL, C1) and
# the Unicode line separators are written as escapes instead.
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_CONTROL = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_NEEDS_QUOTES = re.compile('[ "=]')
_ESCAPES = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in _CONTROL
}


class FieldsFormatter(logging.Formatter):
    """`2026-11-25T07:40:01 INFO findme.access GET /healthz 200 0.4 ms route=/healthz ...`

    The first line of a record never holds a raw control character; a traceback follows on
    lines indented by two spaces, so no line of it can pass for the start of a record.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = escape(self.formatMessage(record))
        fields = {
            key: value
            for key, value in vars(record).items()
            if key not in _SKIPPED and value is not None
        }
        if fields:
            line += " " + " ".join(
                f"{escape(key)}={_quote(value)}" for key, value in fields.items()
            )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for block in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)):
            if block:
                line += "".join(f"\n  {escape(part)}" for part in block.split("\n"))
        return line


def escape(text: str) -> str:
    """The text with every control character written as an escape (`\\n`, `\\x1b`)."""
    # Every character escaped is unprintable: most lines are printable, checked at C speed.
    return text if text.isprintable() else text.translate(_ESCAPES)


def _quote(value: object) -> str:
    text = str(value)
    escaped = escape(text)
    if text and escaped == text and _NEEDS_QUOTES.search(text) is None:
        return text
    return '"' + escaped.replace('"', '\\"') + '"'


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        FieldsFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Our access log replaces uvicorn's, with the route template and timing in every line.
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic announces each of its plugins as it loads them: noise in every command's output.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
