"""Structured logs: one line per event, with the trace and span ids of the span it
happened in, as text for people or JSON for a log pipeline (`LogSettings.format`).

    2026-12-01T10:00:00.123Z INFO composer.engine: node failed trace_id=4bf9… span_id=00f0…
    {"time": "2026-12-01T10:00:00.123Z", "level": "INFO", "logger": "composer.engine",
     "message": "node failed", "trace_id": "4bf9…", "span_id": "00f0…"}

Ids appear only inside a sampled span, in the 32/16 hex digits Jaeger searches by. A
traceback stays on its event's line (newlines written as \\n in text, a field in JSON), and so
does a message that quotes a client's input with a newline in it: no line can be forged.
In JSON, fields given with `extra={...}` are fields of the event.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

# what every LogRecord has: anything else on a record came from `extra=`
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_IDS = ("trace_id", "span_id")


class LogSettings(BaseModel):
    """How a service logs (nested in each service's settings as `logging`)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["text", "json"] = Field("text", description="text for people, json for tools.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def setup_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Sends the process's logs to `stream` (stderr) in the chosen format, replacing any
    handler the root logger had."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(log_handler(settings.format, stream or sys.stderr))
    root.setLevel(settings.level)


def log_handler(log_format: Literal["text", "json"], stream: TextIO) -> logging.Handler:
    """A handler writing one line per event, with trace context, to `stream`."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(_TraceContext())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler


class _TraceContext(logging.Filter):
    """Gives each record the ids of the span current where it was logged (a handler's
    filters run in the logging call, so the span is still current)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid and context.trace_flags.sampled:
            setattr(record, "trace_id", trace.format_trace_id(context.trace_id))  # noqa: B010
            setattr(record, "span_id", trace.format_span_id(context.span_id))  # noqa: B010
        return True


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(_UtcFormatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        for name in _IDS:
            if hasattr(record, name):
                line += f" {name}={getattr(record, name)}"
        if record.exc_info:
            line += " " + self.formatException(record.exc_info)
        if record.stack_info:
            line += " " + self.formatStack(record.stack_info)
        return _one_line(line)


class JsonFormatter(_UtcFormatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS:
                event.setdefault(name, value)  # the ids, and fields from `extra=`
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, default=str)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")
