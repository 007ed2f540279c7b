"""Whether a listening address is taken, so that a busy port is reported as one clear line.

gRPC only says "Failed to bind to address HOST:PORT" (and logs its own line from C++),
whatever the cause; `busy_address` tells a port another process holds apart from every
other bind failure.
"""

from __future__ import annotations

import errno
import re
import socket

_BIND_FAILURE = re.compile(r"Failed to bind to address (\S+?)[;\s]")


def port_in_use(host: str, port: int) -> bool:
    """True when another socket already holds `port` on an address `host` resolves to.

    Port 0 is never in use (the system picks one), and an address that cannot be resolved
    or assigned is not "in use": the server reports that itself.
    """
    if port == 0:
        return False
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return False
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC does: connections of an earlier server left in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return True
    return False


def busy_address(error: BaseException) -> str | None:
    """The HOST:PORT of a gRPC bind failure whose port is in use; None for any other error."""
    match = _BIND_FAILURE.search(f"{error} ")
    if match is None:
        return None
    address = match.group(1)
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not port_in_use(host, int(port)):
        return None
    return address
