"""How metrics and spans name an HTTP request: its method and the route template it matched
(`/v1/models/{model}`), never its raw path. A client chooses its path and method, so
either, taken as is, would let it grow the number of series and put its strings (a model's
name, anything at all after /v1/) into labels and span names; these names are a fixed set.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import Scope

#: The route of a request that matched none (404): one name for every such path.
UNMATCHED = "<unmatched>"
#: A method that is not HTTP's own (as OpenTelemetry names it).
OTHER_METHOD = "_OTHER"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def method_label(scope: Scope) -> str:
    method: str = scope["method"]
    return method if method in _METHODS else OTHER_METHOD


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route the router chose for the request; for one answered before
    routing (a missing API key's 401), the route it would have matched; else UNMATCHED."""
    route = scope.get("route")
    if route is None:
        route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else UNMATCHED
