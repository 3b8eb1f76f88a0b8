"""The socket of ``redflags serve``: bound before anything else starts, announced once it listens.

uvicorn binds its port only after the application's startup (engine processes started,
"service_ready" logged), so a port in use ended ``serve`` with error lines after the ready
line. Binding first makes that one clear line and exit 1 before anything starts. The socket is
only bound, not listening: until uvicorn listens on it (after the startup) a connection is
refused, as before, so a health check never hangs on a service that is still starting. Once
it listens, ``AnnouncingServer`` logs its URL (the real port with ``--port 0``).
"""

from __future__ import annotations

import errno
import socket

import click
import uvicorn

from engine.logger import get_logger

log = get_logger("redflags.serve")

#: errno -> what to say (anything else: the system's own words).
ADVICE = {
    errno.EADDRINUSE: "address already in use (another process listens there): stop it or choose --port",
    errno.EACCES: "permission denied: ports below 1024 need privileges; choose another --port",
    errno.EADDRNOTAVAIL: "address not available on this machine; check --host",
}


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to HOST:PORT (uvicorn makes it listen), or ClickException: one line, exit 1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart past TIME_WAIT
        sock.bind((host, port))  # refused while another socket listens on it (SO_REUSEADDR or not)
    except OSError as exc:
        sock.close()
        reason = ADVICE.get(exc.errno or 0) or exc.strerror or type(exc).__name__
        raise click.ClickException(f"cannot listen on {_authority(host, port)}: {reason}") from None
    return sock


def listener_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://{_authority(host, port)}"


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, logging the URL of each socket once it accepts calls."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            for sock in sockets or ():
                log.info("listening", url=listener_url(sock))
