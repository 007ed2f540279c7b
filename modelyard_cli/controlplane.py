"""`modelyard controlplane`: run a control-plane replica.

    modelyard controlplane --etcd 127.0.0.1:2379 --port 50050

A module of its own, as each service command is: the stack starts the service as this
command's process, which then imports nothing of the commands that talk to a control plane
(`modelyard_cli.cluster`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from modelyard_cli.mistakes import fail
from modelyard_cli.options import (
    SERVICES_PANEL,
    EtcdEndpoints,
    Host,
    PortFile,
    Verbose,
    from_config,
)


def controlplane(
    config: Annotated[
        Path | None, typer.Option(help="Control-plane config (YAML); the options below win.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="gRPC port; 0 picks a free one.", show_default=from_config(50050)),
    ] = None,
    host: Host = None,
    etcd: EtcdEndpoints = None,
    port_file: PortFile = None,
    verbose: Verbose = False,
) -> None:
    """Run a control-plane replica (several may run; one leads, elected in etcd).

    Example:

        modelyard controlplane --etcd 127.0.0.1:2379 --port 50050
    """
    from controlplane.server import run
    from controlplane.settings import ControlPlaneSettings
    from modelyard_cli.main import service_logging, setup_logging
    from modelyard_cli.preflight import check_etcd, check_ports
    from modelyard_server.settings_file import SETTINGS_ERRORS, build_settings, settings_problem

    setup_logging(verbose)
    overrides = {"port": port, "host": host, "port_file": port_file}
    try:
        settings = build_settings(ControlPlaneSettings, config, overrides, etcd)
    except SETTINGS_ERRORS as error:
        fail(f"invalid control-plane settings: {settings_problem(error, ControlPlaneSettings)}")
    service_logging(settings.logging, verbose)
    check_ports(settings.host, settings.port, metrics_port=settings.metrics_port)
    check_etcd(settings.etcd)
    raise typer.Exit(asyncio.run(run(settings)))


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=SERVICES_PANEL)(controlplane)
