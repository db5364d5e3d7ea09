"""Logging set up once, by the entrypoint: one line per event, its fields as key=value."""

from __future__ import annotations

import logging
import sys

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# uvicorn repeats its message with terminal colour codes: not a field worth a log line.
_SKIPPED = _STANDARD | {"color_message"}


class FieldsFormatter(logging.Formatter):
    """`2026-11-25T07:40:01 INFO findme.access GET /healthz 200 0.4 ms route=/healthz ...`"""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {
            key: value
            for key, value in vars(record).items()
            if key not in _SKIPPED and value is not None
        }
        if fields:
            line += " " + " ".join(f"{key}={_quote(value)}" for key, value in fields.items())
        return line


def _quote(value: object) -> str:
    text = str(value)
    return f'"{text}"' if " " in text or not text else text


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
