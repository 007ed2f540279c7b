"""`modelyard gateway`: the OpenAI-compatible HTTP front of a modelyard cluster.

modelyard gateway --controlplane 127.0.0.1:50050 --composer 127.0.0.1:50070 --port 8000
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from modelyard_cli.mistakes import fail
from modelyard_cli.options import (
    SERVICES_PANEL,
    ControlPlanes,
    Host,
    PortFile,
    Verbose,
    from_config,
)


def gateway(
    config: Annotated[
        Path | None, typer.Option(help="Gateway config (YAML); the options below win.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="HTTP port; 0 picks a free one.", show_default=from_config(8000)),
    ] = None,
    host: Host = None,
    controlplane: ControlPlanes = None,
    composer: Annotated[
        str | None,
        typer.Option(
            help="Composer whose text-output graphs are models too ('' for none).",
            show_default=from_config("127.0.0.1:50070"),
        ),
    ] = None,
    port_file: PortFile = None,
    verbose: Verbose = False,
) -> None:
    """Serve the OpenAI API (chat, completions, embeddings, models) over HTTP.

    Point any OpenAI client at http://HOST:PORT/v1: the llm/v1 models the workers serve,
    and the deployed graphs with a text output, are its models.

    Example:

        modelyard gateway --controlplane 127.0.0.1:50050 --port 8000
    """
    from gateway.server import run
    from gateway.settings import GatewaySettings
    from modelyard_cli.main import service_logging, setup_logging
    from modelyard_cli.preflight import check_ports
    from modelyard_server.settings_file import SETTINGS_ERRORS, build_settings, settings_problem

    setup_logging(verbose)
    overrides = {
        "port": port,
        "host": host,
        "port_file": port_file,
        "controlplanes": controlplane,
        "composer": composer,
    }
    try:
        settings = build_settings(GatewaySettings, config, overrides)
    except SETTINGS_ERRORS as error:
        fail(f"invalid gateway settings: {settings_problem(error, GatewaySettings)}")
    service_logging(settings.logging, verbose)
    check_ports(settings.host, settings.port, metrics_port=settings.metrics_port)
    raise typer.Exit(asyncio.run(run(settings)))


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=SERVICES_PANEL)(gateway)
