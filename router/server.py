"""Run the router: uvloop, one listening socket, graceful stop on SIGTERM/SIGINT.

On a stop signal the router stops accepting, lets requests in flight finish (up to ``grace_s``),
then closes idle keep-alive connections and its worker pools.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl

import uvloop

from router.app import RouterApp
from router.settings import RouterSettings

log = logging.getLogger("genrm.router")


async def serve(settings: RouterSettings, sock: socket.socket, grace_s: float = 10.0) -> int:
    """Serve on ``sock`` (bound by the caller) until SIGTERM/SIGINT; return the signal that stopped it."""
    loop = asyncio.get_running_loop()
    app = RouterApp(settings, loop)
    context = None
    if settings.ssl_certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    await app.start()
    server = await loop.create_server(app.connection, sock=sock, ssl=context, backlog=4096)
    # Start-up objects (modules, settings, pools) never die: keep full collections from walking them.
    gc.freeze()
    host, port = server.sockets[0].getsockname()[:2]
    app.bound = (settings.host, port)
    scheme = "https" if context else "http"
    log.info("router listening on %s://%s:%d", scheme, host, port)
    stop = asyncio.Event()
    received = [0]

    def on_signal(signum: int) -> None:
        received[0] = received[0] or signum
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await stop.wait()
        log.info("router stopping: %d requests in flight", app.busy())
        server.close()
        deadline = loop.time() + grace_s
        while app.busy() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(app.connections):
            if conn.transport is not None:
                conn.transport.close()
    finally:
        await app.stop()
    return received[0]


def run(settings: RouterSettings, sock: socket.socket) -> int:
    """Run the router on ``sock``; the exit status: 130 after Ctrl-C (SIGINT), 0 after SIGTERM."""
    signum = uvloop.run(serve(settings, sock))
    return 128 + signum if signum == signal.SIGINT else 0
