"""Client connections that one API key's long backlog keeps unread, and which of them have something to read.

A parked connection's reading is paused (its next request waits in the socket buffer); its descriptor is also
watched by an epoll set of this key's own, so that only connections with a request waiting (or closed by the
client) are read again: an idle keep-alive connection stays parked across a trainer's pause between two bursts,
and its next burst is read as it is served instead of all at once.
"""

from __future__ import annotations

import contextlib
import select
from typing import Any

_WATCH = select.EPOLLIN | select.EPOLLRDHUP


class Parking:
    """One key's parked connections (``ClientConnection``: ``transport``, ``closed``, ``parked``)."""

    def __init__(self) -> None:
        self._conns: dict[int, Any] = {}  # descriptor -> connection
        self._fds: dict[Any, int] = {}  # connection -> descriptor
        self._epoll: select.epoll | None = None

    def __len__(self) -> int:
        return len(self._conns)

    def park(self, conn: Any) -> None:
        sock = conn.transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0 or fd in self._conns:
            return
        if self._epoll is None:
            self._epoll = select.epoll()
        try:
            self._epoll.register(fd, _WATCH)
        except OSError:  # closed meanwhile: leave it to the loop
            return
        conn.transport.pause_reading()
        conn.parked = self
        self._conns[fd], self._fds[conn] = conn, fd

    def resume_ready(self, limit: int) -> int:
        """Read again up to ``limit`` connections with a request waiting (or closed); how many."""
        if not self._conns or limit <= 0:
            return 0
        events = self._epoll.poll(0, limit)  # type: ignore[union-attr]
        for fd, _ in events:
            conn = self._conns.pop(fd)
            del self._fds[conn]
            self._unwatch(fd)
            conn.parked = None
            if not conn.closed:
                conn.transport.resume_reading()
        return len(events)

    def idle(self) -> list[Any]:
        """Parked connections with nothing to read (the idle reaper may close them like any idle connection)."""
        if not self._conns:
            return []
        ready = {fd for fd, _ in self._epoll.poll(0, len(self._conns))}  # type: ignore[union-attr]
        return [conn for fd, conn in self._conns.items() if fd not in ready]

    def forget(self, conn: Any) -> None:
        """``conn`` is closed (or about to be): stop watching it."""
        fd = self._fds.pop(conn, None)
        if fd is not None:
            del self._conns[fd]
            self._unwatch(fd)
        conn.parked = None

    def _unwatch(self, fd: int) -> None:
        with contextlib.suppress(OSError):  # already closed: the kernel dropped it from the set
            self._epoll.unregister(fd)  # type: ignore[union-attr]
