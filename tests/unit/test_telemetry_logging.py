"""Structured logs: one line per event, the span's ids on it, text or JSON."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Literal

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from modelyard_server.logging_setup import LogSettings, log_handler, setup_logging


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    yield provider.get_tracer("test")
    provider.shutdown()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.telemetry.logging")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    logger.handlers.clear()
    logger.propagate = True


def lines_of(logger: logging.Logger, log_format: Literal["text", "json"]) -> io.StringIO:
    stream = io.StringIO()
    logger.addHandler(log_handler(log_format, stream))
    return stream


def ids(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def test_a_json_event_in_a_span_carries_its_ids_and_extra_fields(
    tracer: trace.Tracer, logger: logging.Logger
) -> None:
    stream = lines_of(logger, "json")

    with tracer.start_as_current_span("call") as span:
        logger.info("loaded %s", "gpt2", extra={"model": "gpt2", "seconds": 1.5})
    logger.warning("outside")

    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["trace_id"], inside["span_id"]) == ids(span)
    assert inside["message"] == "loaded gpt2"
    assert (inside["level"], inside["logger"]) == ("INFO", "tests.telemetry.logging")
    assert (inside["model"], inside["seconds"]) == ("gpt2", 1.5)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", inside["time"])
    assert "trace_id" not in outside and "span_id" not in outside


def test_a_traceback_stays_on_its_events_line(logger: logging.Logger) -> None:
    text, as_json = lines_of(logger, "text"), lines_of(logger, "json")

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")

    (text_line,) = text.getvalue().splitlines()
    (json_line,) = as_json.getvalue().splitlines()
    assert "failed Traceback (most recent call last):\\n" in text_line
    assert text_line.endswith("RuntimeError: boom")
    assert json.loads(json_line)["exception"].endswith("RuntimeError: boom")


def test_a_text_event_in_a_span_ends_with_its_ids(
    tracer: trace.Tracer, logger: logging.Logger
) -> None:
    stream = lines_of(logger, "text")

    with tracer.start_as_current_span("call") as span:
        logger.info("served")
    logger.info("a client's name\nINFO forged: line")

    served, quoted = stream.getvalue().splitlines()
    trace_id, span_id = ids(span)
    assert served.endswith(
        f" INFO tests.telemetry.logging: served trace_id={trace_id} span_id={span_id}"
    )
    assert quoted.endswith("a client's name\\nINFO forged: line")


def test_setup_logging_replaces_the_root_handlers_at_the_chosen_level() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        setup_logging(LogSettings(format="json", level="WARNING"), stream)
        logging.getLogger("tests.telemetry.root").info("too detailed")
        logging.getLogger("tests.telemetry.root").warning("kept")
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["kept"]
