"""Bind a server's listening socket before anything slow happens, with one clear line when it cannot.

``genrm serve`` binds before loading the model and ``genrm route`` before starting its pools, so a busy port
fails at once and names the setting, instead of a traceback after a minute of model loading.
"""

from __future__ import annotations

import errno
import socket

from common.settings_io import SettingsError

_WHY = {
    errno.EADDRINUSE: "address already in use (another process listens there; choose another port, or 0 for a "
                      "free one)",
    errno.EADDRNOTAVAIL: "no such address on this machine",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}


def bind_listener(host: str, port: int, *, flag: str = "--port", env: str = "") -> socket.socket:
    """A bound (not yet listening) TCP socket for ``host:port``; :class:`SettingsError` naming the setting if not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SettingsError(f"invalid setting 'host' (--host): cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT does not block
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = _WHY.get(exc.errno or 0, exc.strerror or str(exc))
        where = f"{flag}, {env}" if env else flag
        raise SettingsError(f"invalid setting 'port' ({where}): cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def check_port_free(host: str, port: int, *, flag: str = "--port") -> None:
    """Fail now, naming the setting, when ``host:port`` cannot be bound (for a child that will bind it later)."""
    bind_listener(host, port, flag=flag).close()
