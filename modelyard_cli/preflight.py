"""What a service command checks before it starts the service, so that the usual mistakes
are one line and exit 2: its port is taken (gRPC would log a bind error, or, since it sets
SO_REUSEPORT, share the port with another modelyard server), or etcd is not where the
settings say (the service would retry for ever, printing a warning a second).
"""

from __future__ import annotations

import asyncio

import aetcd
import grpc.aio

from modelyard_cli.mistakes import fail
from modelyard_server.etcd import EtcdClient, EtcdSettings
from modelyard_server.ports import port_in_use


def check_ports(host: str, port: int, *, metrics_port: int = -1) -> None:
    """Exits 2 when the gRPC port (or the metrics port, when on) is taken."""
    for what, number, setting in (
        ("port", port, "--port"),
        ("metrics port", metrics_port, "metrics_port in the config"),
    ):
        if number > 0 and port_in_use(host, number):
            fail(
                f"{what} {number} is already in use on {host or 'every address'}: stop what "
                f"listens there, or pick another with {setting} (0 picks a free one)"
            )


def check_etcd(settings: EtcdSettings) -> None:
    """Exits 2 when etcd does not answer within the settings' request timeout."""
    problem = asyncio.run(etcd_problem(settings))
    if problem is not None:
        fail(problem)


async def etcd_problem(settings: EtcdSettings) -> str | None:
    """Why etcd cannot be used with `settings`, or None once it answers. Tries again until
    the request timeout has passed, so an etcd still starting is waited for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.timeout
    where = ", ".join(settings.endpoints)
    while True:
        client = EtcdClient(settings)
        try:
            await client.connect()
            await asyncio.wait_for(client.status(), max(deadline - loop.time(), 0.1))
            return None
        except ValueError as error:  # endpoints that cannot form one target
            return f"etcd endpoints {where}: {error}"
        except (aetcd.ClientError, grpc.aio.AioRpcError, OSError, TimeoutError) as error:
            reason = _reason(error)
        finally:
            await client.close()
        if loop.time() >= deadline:
            return (
                f"cannot reach etcd at {where} within {settings.timeout:g} s ({reason}): "
                "start etcd, or point --etcd at a running one"
            )
        await asyncio.sleep(0.2)


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer"
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    text = str(error) or type(error).__name__
    # gRPC's "failed to connect to all addresses; last error: UNKNOWN: ipv4:...: Connection
    # refused" ends with the part a person needs
    return text.rsplit(": ", 1)[-1].strip(" []")
