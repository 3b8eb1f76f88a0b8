"""The listening socket of ``redflags serve``, bound before anything else starts.

uvicorn binds its port only after the application's startup (engine processes, "service_ready"
logged), and a port in use then ends it with a traceback-like log after the ready line. Binding
first makes that one clear line and exit 1 before anything starts; the bound socket is handed to
uvicorn, and its address (the real port with ``--port 0``) is the URL ``serve`` logs.
"""

from __future__ import annotations

import errno
import socket

import click

#: errno -> what to say (anything else: the system's own words).
ADVICE = {
    errno.EADDRINUSE: "address already in use (another process listens there): stop it or choose --port",
    errno.EACCES: "permission denied: ports below 1024 need privileges; choose another --port",
    errno.EADDRNOTAVAIL: "address not available on this machine; check --host",
}


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to HOST:PORT and listening, or ClickException (one line, exit 1)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart past TIME_WAIT
        sock.bind((host, port))
        sock.listen(2048)
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
