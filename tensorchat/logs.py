"""One log format for every tensorchat process: text for people, JSON lines for collectors.

Structured lines (the access logs) pass their fields in `extra={"fields": {...}}`: the text
format appends them as `key=value`, the JSON format makes them keys of the line's object.
Field values can come from clients (a model name, a request id): the text format writes any
value that is not a plain token as a JSON string, so that a client cannot forge a line or a
field (no raw newline, quote or control character reaches the log); `quoted` does the
same for client text inside a message.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Literal

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

# Written as they are; anything else is JSON-quoted.
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Root logging at `level` ("debug", "INFO", ...) in the shared format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def log_fields(logger: logging.Logger, event: str, fields: Mapping[str, object]) -> None:
    """One structured INFO line: `event` is its message, `fields` its key/value pairs."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(event, extra={"fields": fields})


class TextFormatter(logging.Formatter):
    """The shared text format, with a record's fields appended as escaped `key=value`."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the fields, any exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _text_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def quoted(client_text: str) -> str:
    """`client_text` as a JSON string, for logging what a client sent.

    A newline, quote or control character in it is escaped (and anything non-ASCII, so no
    bidi override reorders the line), so that a client cannot forge a log line or a field.
    """
    return json.dumps(client_text)
