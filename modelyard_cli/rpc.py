"""One blocking gRPC call from a command: the status and message on failure, exit code 1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import typer
from rich.console import Console

errors = Console(stderr=True)


def call_service(
    target: str, stub_class: Callable[[grpc.Channel], Any], call: Callable[[Any], Any]
) -> Any:
    with grpc.insecure_channel(target) as channel:
        try:
            return call(stub_class(channel))
        except grpc.RpcError as error:
            errors.print(f"[red]{error.code().name}[/red]: {error.details()} ({target})")
            raise typer.Exit(1) from None
