"""How a service's routed client retries, ejects and rescues (`routing:` in the composer's
and the gateway's settings). The defaults are `modelyard.routed_client.RoutedClient`'s;
its module docstring says what each does.

    routing: {max_attempts: 2, eject_seconds: 5, rescue: true, multiplex: true}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from modelyard_server.telemetry.spans import untraced_calls


class RoutedClientOptions(TypedDict):
    """RoutedClient's keyword arguments of the same names (typed: mypy checks the call)."""

    max_attempts: int
    eject_s: float
    rescue: bool
    multiplex: Callable[[], bool] | None


class RoutingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(
        3,
        ge=1,
        description="Replicas one model call tries before it fails UNAVAILABLE (1: no retry). "
        "Only refusals (UNAVAILABLE) are retried, never past the call's deadline.",
    )
    eject_seconds: float = Field(
        2.0,
        ge=0,
        description="How long a replica that refused a call is passed over by later calls.",
    )
    rescue: bool = Field(
        True,
        description="Abandon an unanswered attempt on a replica that left the endpoint set or "
        "went silent, and send the call to another replica.",
    )
    multiplex: bool = Field(
        True,
        description="Send untraced Predict calls to a worker as messages of one PredictMany "
        "stream instead of one call each (cheaper; traced calls stay unary, so their spans "
        "are kept). Off: every call is unary.",
    )

    def client_options(self, tracer: trace.Tracer | None) -> RoutedClientOptions:
        """The RoutedClient keyword arguments these settings stand for, for a service
        tracing with `tracer` (None: off), whose traced calls stay unary."""
        return {
            "max_attempts": self.max_attempts,
            "eject_s": self.eject_seconds,
            "rescue": self.rescue,
            "multiplex": untraced_calls(tracer) if self.multiplex else None,
        }
