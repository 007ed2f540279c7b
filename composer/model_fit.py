"""Whether a graph fits the models it calls, as far as their signatures tell (validation
asks): the fields a model node outputs, which graph input kinds can feed a model input,
and a did-you-mean for a misspelt name.

    node 'x': input 'text' references 's.lable', but node 's' (model 'sentiment') has no
    output 'lable' (did you mean 'label'?)
"""

from __future__ import annotations

import difflib
from collections.abc import Collection

from modelyard.v1 import graph_pb2 as g
from modelyard.v1.predict_pb2 import GetModelMetadataResponse

#: Kinds a value of another kind is accepted as: an int is a float, and a list of numbers
#: becomes a tensor (of the input's dtype) on the worker.
_ACCEPTED_AS = {("int", "float"), ("list", "tensor")}


def can_feed(given: str, wanted: str) -> bool:
    """Whether a value of kind `given` may go to an input of kind `wanted`."""
    return "any" in (given, wanted) or given == wanted or (given, wanted) in _ACCEPTED_AS


def a_kind(kind: str) -> str:
    """ "an integer", "a string", "any value": a kind as a message names it."""
    return {"any": "any value", "int": "an integer", "map": "a map", "bytes": "bytes"}.get(
        kind, f"a {kind}"
    )


def outputs_of(node: g.Node, described: GetModelMetadataResponse | None) -> tuple[str, ...]:
    """The fields model node `node` outputs: its model's declared outputs. () when they are
    not known: no description, a model that declares none, or a stream consumer (its own
    outputs are `results` and `segments`, while a reference to its upstream reads the
    upstream's chunks)."""
    if described is None or node.model.stream != g.STREAM_MODE_UNSPECIFIED:
        return ()
    return tuple(spec.name for spec in described.outputs)


def did_you_mean(name: str, known: Collection[str]) -> str:
    """ " (did you mean 'label'?)" for the closest of `known`, or ""."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
