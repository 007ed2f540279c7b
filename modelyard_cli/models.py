"""`modelyard models`: third-party inference APIs registered under a model name, balanced
with the workers serving that name.

    modelyard models register answers --url https://api.example.com/v1/answer \\
        --body '{"prompt": {USER_PROMPT}}' --response-path 'data.items[].attributes.answer' \\
        --header 'Authorization: Bearer ${EXAMPLE_API_KEY}'
    modelyard models list [--model answers] [--json]
    modelyard models offline | online | remove <registration-id>

They talk to a control plane at --controlplane (as `modelyard workers` does); register,
offline, online and remove need an admin token (MODELYARD_TOKEN) when the cluster has one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from modelyard_cli.cluster import ControlPlaneOption
from modelyard_cli.mistakes import fail
from modelyard_cli.options import TOOLS_PANEL, Verbose
from modelyard_cli.state import default_address

if TYPE_CHECKING:
    from modelyard.v1 import controlplane_pb2

console = Console()
models_app = typer.Typer(
    no_args_is_help=True,
    help="Register third-party inference APIs under a model name; list, take offline, "
    "bring online and remove them.\n\n"
    "Example: modelyard models list --model answers",
)

RegistrationId = Annotated[
    str, typer.Argument(help="A registration's id (`modelyard models list` shows them).")
]


@models_app.command("register")
def models_register(
    model: Annotated[str, typer.Argument(help="The model name to serve the API under.")],
    url: Annotated[
        str, typer.Option(help="The URL to POST to (http or https); may hold {MODEL_NAME}.")
    ],
    response_path: Annotated[
        str,
        typer.Option(help="JMESPath to the answer in the JSON reply, e.g. choices[0].text."),
    ],
    body: Annotated[
        str | None,
        typer.Option(
            help="The JSON request body, with {USER_PROMPT} (required), {MODEL_TEMPERATURE} "
            "and {MODEL_NAME} standing for JSON values (no quotes around them)."
        ),
    ] = None,
    body_file: Annotated[
        Path | None, typer.Option(help="Read the body template from this file instead.")
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            help="'Name: value', repeatable. Credentials only as ${NAME}, read from the "
            "calling services' environment: 'Authorization: Bearer ${API_KEY}'."
        ),
    ] = None,
    owner: Annotated[str, typer.Option(help="Who registers it (free text).")] = "",
    timeout: Annotated[float, typer.Option(help="Seconds one call may take (at most 300).")] = 30.0,
    health_url: Annotated[
        str,
        typer.Option(
            help="GET this for active health checks (2xx: healthy).", show_default="a TCP connect"
        ),
    ] = "",
    controlplane: ControlPlaneOption = None,
    verbose: Verbose = False,
) -> None:
    """Register a third-party API under a model name, balanced with the model's workers.

    Each registration is health-checked (--health-url, else a TCP connect) and serves
    while it passes. Single quotes keep the shell from expanding ${NAME} and the braces.

    Example:

        modelyard models register answers --url https://api.example.com/v1/answer
            --body '{"prompt": {USER_PROMPT}, "temperature": {MODEL_TEMPERATURE}}'
            --response-path 'data.items[].attributes.answer'
            --header 'Authorization: Bearer ${EXAMPLE_API_KEY}' --owner team-a
    """
    from modelyard.times import duration
    from modelyard.v1 import controlplane_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)
    if body is None:
        if body_file is None:
            fail("give the request body template with --body or --body-file")
        body = body_file.read_text()  # a missing file is one line (the mistakes table)
    elif body_file is not None:
        fail("give --body or --body-file, not both")
    if timeout <= 0:
        fail(f"--timeout must be more than 0 seconds, not {timeout:g}")
    request = pb.RegisterModelRequest(
        model=model,
        owner=owner,
        http_api=pb.HttpApi(
            url_template=url,
            body_template=body,
            headers=_headers(header or []),
            response_path=response_path,
            timeout=duration(timeout),
            health_url=health_url,
        ),
    )
    reply = _call(controlplane, lambda stub: stub.RegisterModel(request, timeout=30))
    registration = reply.registration
    console.print(
        Text(
            f"registered {registration.registration_id} as model {registration.model}; it "
            "serves once its health check passes (`modelyard models list`)"
        )
    )


@models_app.command("list")
def models_list(
    model: Annotated[str, typer.Option(help="Only registrations of this model.")] = "",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the registrations as JSON.")
    ] = False,
    controlplane: ControlPlaneOption = None,
    verbose: Verbose = False,
) -> None:
    """List registered APIs: id, model, URL, owner, online and health.

    Header values are never shown, only ${NAME} references.

    Example:

        modelyard models list --model answers
    """
    from google.protobuf.json_format import MessageToDict

    from modelyard.v1 import controlplane_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)
    request = pb.ListRegistrationsRequest(model=model)
    reply = _call(controlplane, lambda stub: stub.ListRegistrations(request, timeout=10))
    if as_json:
        listed = [
            MessageToDict(
                r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for r in reply.registrations
        ]
        typer.echo(json.dumps(listed, indent=2))
        return
    table = Table(title="registered APIs")
    for column in ("registration", "model"):
        table.add_column(column, no_wrap=True)
    for column in ("url", "owner", "state"):
        table.add_column(column, overflow="fold")
    for registration in reply.registrations:
        table.add_row(
            Text(registration.registration_id),
            Text(registration.model),
            Text(registration.http_api.url_template),
            Text(registration.owner),
            _state(registration),
        )
    console.print(table)


@models_app.command("offline")
def models_offline(
    registration_id: RegistrationId,
    controlplane: ControlPlaneOption = None,
    verbose: Verbose = False,
) -> None:
    """Take a registration out of every endpoint set; it stays stored.

    Example:

        modelyard models offline api-3f9c2a1b
    """
    _set_online(registration_id, False, controlplane, verbose)


@models_app.command("online")
def models_online(
    registration_id: RegistrationId,
    controlplane: ControlPlaneOption = None,
    verbose: Verbose = False,
) -> None:
    """Bring a registration taken offline back (it serves while its health check passes).

    Example:

        modelyard models online api-3f9c2a1b
    """
    _set_online(registration_id, True, controlplane, verbose)


@models_app.command("remove")
def models_remove(
    registration_id: RegistrationId,
    controlplane: ControlPlaneOption = None,
    verbose: Verbose = False,
) -> None:
    """Delete a registration.

    Example:

        modelyard models remove api-3f9c2a1b
    """
    from modelyard.v1 import controlplane_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)
    request = pb.RemoveRegistrationRequest(registration_id=registration_id)
    _call(controlplane, lambda stub: stub.RemoveRegistration(request, timeout=30))
    console.print(Text(f"removed {registration_id}"))


def _set_online(
    registration_id: str, online: bool, controlplane: str | None, verbose: bool
) -> None:
    from modelyard.v1 import controlplane_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)
    request = pb.SetRegistrationOnlineRequest(registration_id=registration_id, online=online)
    _call(controlplane, lambda stub: stub.SetRegistrationOnline(request, timeout=30))
    console.print(Text(f"{registration_id} is {'online' if online else 'offline'}"))


def _state(registration: controlplane_pb2.Registration) -> Text:
    state = Text("online", "green") if registration.online else Text("offline", "yellow")
    state.append("\n")
    state.append(*(("healthy", "green") if registration.healthy else ("unhealthy", "red")))
    return state


def _headers(given: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in given:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            # not quoted back: the value may be a secret typed by mistake
            fail("each --header looks like 'Name: value' (a colon after the name)")
        headers[name.strip()] = value.strip()
    return headers


def _call(address: str | None, call: Callable[[Any], Any]) -> Any:
    from modelyard.v1 import controlplane_pb2_grpc
    from modelyard_cli.rpc import call_service

    return call_service(
        address or default_address("controlplane"),
        controlplane_pb2_grpc.ControlPlaneStub,
        call,
        what="the control plane",
        option="--controlplane",
    )


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models", rich_help_panel=TOOLS_PANEL)
