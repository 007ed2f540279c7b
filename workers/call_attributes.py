"""What a worker records on the span of each Predict and PredictStream call (the server span
the tracing interceptor made): the model and device, and for generation the time to the
first streamed chunk and the tokens read and written.

Token counts are the model's own: the `usage` an llm/v1 task returns (OpenAI's
`prompt_tokens`, `completion_tokens`). A model that reports no usage gets no counts; the
worker does not guess them from text.

All of it is a no-op when the span is not recording (tracing off, or the trace not sampled).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span

from modelyard_server.telemetry.spans import set_attributes


def record_call(span: Span, *, model: str, device: str) -> None:
    set_attributes(span, model=model, device=device or None)


def record_usage(span: Span, outputs: Mapping[str, Any]) -> None:
    """The tokens `outputs` say the model read and wrote, if it says."""
    usage = outputs.get("usage")
    if not isinstance(usage, Mapping) or not span.is_recording():
        return
    set_attributes(
        span,
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
    )


def record_first_chunk(span: Span, seconds: float) -> None:
    set_attributes(span, time_to_first_token_seconds=seconds)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
