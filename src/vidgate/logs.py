"""Logging of every vidgate process: plain lines by default, one JSON object per line with
``LOG_FORMAT=json`` (for log shippers). Domain code passes ids as ``extra=`` fields
(``session_id``, ``video_id``, ``event``, ``error_code``), which JSON lines carry as keys."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from vidgate.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
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
