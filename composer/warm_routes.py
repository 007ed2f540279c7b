"""The routes of the deployed graphs' models, opened before the composer says SERVING.

A composer sizes its admission limit from the endpoint sets of the models it routes to
(`composer.admission_limit`), and a route opens on a model's first call. A composer that
started with graphs already deployed would therefore admit only the limit's floor (2 runs)
until its first runs had opened the routes, and refuse the rest of a first burst. Opening
the routes first gives the limit its sets before any run arrives. The wait is bounded: a
model nobody serves, or a control plane that does not answer, delays SERVING by at most
WARM_TIMEOUT_S, never forever (runs then open the routes as before).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from modelyard.routed_client import RoutedClient
from modelyard.v1 import graph_pb2

log = logging.getLogger(__name__)

#: The longest the composer waits for the first endpoint sets before it serves anyway.
WARM_TIMEOUT_S = 2.0


def model_calls(graph: graph_pb2.Graph) -> set[tuple[str, str]]:
    """(model, selector) of every model call in `graph`: model, map and switch nodes."""
    calls: list[graph_pb2.ModelCall] = []
    for node in graph.nodes:
        kind = node.WhichOneof("kind")
        if kind == "model":
            calls.append(node.model)
        elif kind == "map":
            calls.append(node.map.call)
        elif kind == "switch":
            calls.extend(case.call for case in node.switch.cases)
            if node.switch.HasField("default"):
                calls.append(node.switch.default)
    return {(call.model, call.selector) for call in calls if call.model}


async def warm_routes(
    client: RoutedClient, graphs: Iterable[graph_pb2.Graph], *, timeout: float = WARM_TIMEOUT_S
) -> None:
    """Opens a route for every model call of `graphs` and waits (at most `timeout` seconds)
    until each has replicas."""
    wanted = set().union(*(model_calls(graph) for graph in graphs))
    found = await asyncio.gather(
        *(
            client.wait_for_endpoints(model, timeout=timeout, selector=selector or None)
            for model, selector in sorted(wanted)
        ),
        return_exceptions=True,
    )
    for (model, selector), result in zip(sorted(wanted), found, strict=True):
        if isinstance(result, BaseException):  # serving must not depend on one route
            where = f"{model!r}" + (f" ({selector})" if selector else "")
            log.warning("could not open the route of %s before serving: %s", where, result)
