"""`modelyard composer`: run a composer replica.

    modelyard composer --etcd 127.0.0.1:2379 --controlplane 127.0.0.1:50050

A module of its own, as each service command is: the stack starts the service as this
command's process, which then imports nothing of the graph commands (`modelyard_cli.graph`).
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
    EtcdEndpoints,
    Host,
    PortFile,
    Verbose,
    from_config,
)


def composer(
    config: Annotated[
        Path | None, typer.Option(help="Composer config (YAML); the options below win.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="gRPC port; 0 picks a free one.", show_default=from_config(50070)),
    ] = None,
    host: Host = None,
    etcd: EtcdEndpoints = None,
    controlplane: ControlPlanes = None,
    port_file: PortFile = None,
    verbose: Verbose = False,
) -> None:
    """Run a composer replica: stores graphs (in etcd) and runs them.

    Example:

        modelyard composer --etcd 127.0.0.1:2379 --controlplane 127.0.0.1:50050
    """
    from composer.server import run
    from composer.settings import ComposerSettings
    from modelyard_cli.main import service_logging, setup_logging
    from modelyard_cli.preflight import check_etcd, check_ports
    from modelyard_server.settings_file import SETTINGS_ERRORS, build_settings, settings_problem

    setup_logging(verbose)
    overrides = {"port": port, "host": host, "port_file": port_file, "controlplanes": controlplane}
    try:
        settings = build_settings(ComposerSettings, config, overrides, etcd)
    except SETTINGS_ERRORS as error:
        fail(f"invalid composer settings: {settings_problem(error, ComposerSettings)}")
    service_logging(settings.logging, verbose)
    check_ports(settings.host, settings.port, metrics_port=settings.metrics_port)
    check_etcd(settings.etcd)
    raise typer.Exit(asyncio.run(run(settings)))


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=SERVICES_PANEL)(composer)
