"""What a registered API takes and gives, as a model's signature says it.

A call's prompt is its string input `prompt`, else `text`, else its only string input (so
graph nodes written for a text model call a registration unchanged); its `temperature`
parameter fills {MODEL_TEMPERATURE}; other parameters are not sent (a template has no place
for them). The answer is one output, `text`, a string. `describe` says so as
GetModelMetadata would, for tools such as graph validation (a registration has no worker
to ask).
"""

from __future__ import annotations

from collections.abc import Mapping

from modelyard.errors import InvalidArgument, Reason
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import value_pb2

PROMPT_INPUTS = ("prompt", "text")
TEMPERATURE = "temperature"
OUTPUT = "text"
#: The task a registration's metadata reports.
TASK = "http-api"


def prompt_of(inputs: Mapping[str, value_pb2.Value]) -> str:
    """The prompt of a call with these inputs; InvalidArgument when there is none."""
    for name in PROMPT_INPUTS:
        if name in inputs and inputs[name].WhichOneof("kind") == "string_value":
            return inputs[name].string_value
    strings = [v.string_value for v in inputs.values() if v.WhichOneof("kind") == "string_value"]
    if len(strings) == 1:
        return strings[0]
    raise InvalidArgument(
        "a registered API takes one string input, the prompt: inputs.prompt or inputs.text",
        reason=Reason.INPUT_MISSING,
        field="inputs.prompt",
    )


def temperature_of(parameters: Mapping[str, value_pb2.Value], default: float) -> float:
    """The call's temperature; InvalidArgument when it is not a number."""
    value = parameters.get(TEMPERATURE)
    if value is None:
        return default
    kind = value.WhichOneof("kind")
    if kind == "float_value":
        return value.float_value
    if kind == "int_value":
        return float(value.int_value)
    raise InvalidArgument(
        "temperature must be a number",
        reason=Reason.PARAMETER_INVALID,
        field=f"parameters.{TEMPERATURE}",
    )


def describe(model: str) -> pb.GetModelMetadataResponse:
    """The metadata of `model` when registered APIs serve it."""
    string = value_pb2.VALUE_KIND_STRING
    return pb.GetModelMetadataResponse(
        model=model,
        task=TASK,
        state=pb.MODEL_STATE_READY,
        inputs=[
            pb.FieldSpec(name="prompt", kind=string, description="The prompt ({USER_PROMPT})."),
            pb.FieldSpec(name="text", kind=string, description="The prompt, when no `prompt`."),
        ],
        outputs=[pb.FieldSpec(name=OUTPUT, kind=string, description="The API's answer.")],
        parameters=[
            pb.FieldSpec(
                name=TEMPERATURE,
                kind=value_pb2.VALUE_KIND_FLOAT,
                description="Sampling temperature ({MODEL_TEMPERATURE}); the calling "
                "service's http_api.default_temperature when unset.",
            )
        ],
    )
