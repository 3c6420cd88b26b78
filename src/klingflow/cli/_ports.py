"""A busy port is said before anything else happens: no banner, nothing published."""

from __future__ import annotations

import errno
import socket

import typer

from klingflow.cli._console import err
from klingflow.cli.exit_codes import PORT_IN_USE_EXIT_CODE

__all__ = ["require_free_port"]


def require_free_port(host: str, port: int) -> None:
    """Exit 21 with `port P is in use` when `host:port` cannot be bound (port 0 always can).

    The probe binds without SO_REUSEADDR's sharing on Linux, as uvicorn will; it is closed
    at once, so the server binds a moment later.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            err.print(
                f"error: port {port} is in use on {host}: stop what listens there, or choose "
                "another --port",
                markup=False,
            )
            raise typer.Exit(code=PORT_IN_USE_EXIT_CODE) from None
