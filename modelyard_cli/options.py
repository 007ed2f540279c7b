"""What every `modelyard` command shares: the --verbose option, the help's panels, and the
options every service command takes alike (--host, --etcd, --controlplane, --port-file).

`--verbose` is read in two places: by the command (debug logs) and by the root group when
a command fails (`modelyard_cli.mistakes`: the traceback instead of one line). Its callback
leaves the choice in the click context's `meta`, which every nested context shares, so the
group still knows it after the command's own context has closed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer._click import Context  # typer vendors click

VERBOSE = "modelyard.verbose"

#: Panels of the top-level help, the main job first.
STACK_PANEL = "The local stack (the main job)"
SERVICES_PANEL = "Services (one process each)"
TOOLS_PANEL = "Inspect and operate"
PANELS = (STACK_PANEL, SERVICES_PANEL, TOOLS_PANEL)


def _remember_verbose(ctx: typer.Context, verbose: bool) -> bool:
    if verbose:
        ctx.meta[VERBOSE] = True
    return verbose


Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        callback=_remember_verbose,
        help="Debug logs, and an error's traceback instead of one line.",
    ),
]


def is_verbose(ctx: Context) -> bool:
    return bool(ctx.meta.get(VERBOSE))


def from_config(default: object) -> str:
    """The default shown for an option that overrides a settings file's value."""
    return f"{default}, or the config's"


# The service commands' shared options. A service's settings file gives these too; an
# option given on the command line wins, hence the "or the config's" defaults.
Host = Annotated[
    str | None,
    typer.Option(help="Address to listen on.", show_default=from_config("127.0.0.1")),
]
EtcdEndpoints = Annotated[
    list[str] | None,
    typer.Option(
        help="etcd endpoint host:port (repeat for several).",
        show_default=from_config("127.0.0.1:2379"),
    ),
]
ControlPlanes = Annotated[
    list[str] | None,
    typer.Option(
        help="Control-plane address (repeat for several).",
        show_default=from_config("127.0.0.1:50050"),
    ),
]
PortFile = Annotated[Path | None, typer.Option(help="Write the bound port here once serving.")]
