"""Logging of every vidgate process: plain lines by default, one JSON object per line with
``LOG_FORMAT=json`` (for log shippers). Domain code passes ids as ``extra=`` fields
(``session_id``, ``video_id``, ``event``, ``error_code``), which JSON lines carry as keys."""

from __future__ import annotations

import logging
import re

from pythonjsonlogger.json import JsonFormatter

from vidgate.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StaticFields(logging.Filter):
    """Adds the same fields to every record of this process (a worker's name), unless the
    record brings its own."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_logging(settings: Settings, fields: dict[str, str] | None = None) -> None:
    """Log to stderr in LOG_FORMAT; ``fields`` go on every line (JSON keys)."""
    handler = logging.StreamHandler()
    if fields:
        handler.addFilter(StaticFields(fields))
    if settings.server.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.server.log_level.upper())


_SECRET_QUERY = re.compile(r"(api_key=)[^&\s\"']+", re.IGNORECASE)


class RedactApiKeys(logging.Filter):
    """Browsers cannot set headers on a WebSocket, so keys arrive as ``?api_key=``; uvicorn logs
    request lines with their query strings. Keys never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "api_key=" in message.lower():
            record.msg = _SECRET_QUERY.sub(r"\1***", message)
            record.args = ()
        return True


def redact_server_logs() -> None:
    """Install the key filter on uvicorn's loggers (after uvicorn configured them)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactApiKeys) for f in logger.filters):
            logger.addFilter(RedactApiKeys())
