"""Which traces are recorded: a ratio of new traces, optionally following the caller.

A span that starts a trace with links (a batch span, linked to the requests it served) is
recorded exactly when one of the linked spans is. Left to the ratio, at 10% sampling most
sampled requests would link to a batch span that was dropped, and most recorded batch
spans would link to requests nobody can see.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


def sampler(ratio: float, *, parent_based: bool) -> Sampler:
    """`ratio` of the traces that start here, and, when `parent_based`, the caller's
    decision for the rest. A span with links and no parent follows its links instead
    (module docstring)."""
    root = _LinksOrRatio(ratio)
    return ParentBased(root) if parent_based else root


class _LinksOrRatio(Sampler):
    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if not links:
            return self._ratio.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        if any(link.context.trace_flags.sampled for link in links):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return SamplingResult(Decision.DROP, None, trace_state)

    def get_description(self) -> str:
        return f"SampledLinksOr{{{self._ratio.get_description()}}}"
