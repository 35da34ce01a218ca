"""A misbehaving worker for router tests (``python tests/support/bad_worker.py PORT MODE``), run as a real process.

It answers ``GET /health`` and ``GET /ready`` like a healthy server (other GETs: 404), then for any
other request:

- ``drop`` closes the connection without a response (a worker dying mid-request);
- ``silent`` reads the request and never answers (a hung worker whose socket stays open);
- ``garbage`` answers 200 with a body that is not JSON, and keeps the connection;
- ``break`` starts a chunked SSE answer (one event), then closes the connection mid-stream;
- ``stall`` starts it the same way, then sends nothing more and keeps the socket open;
- ``stale`` answers the first request of each connection (200, JSON, keep-alive) and closes the connection,
  unanswered, on the next one: the keep-alive race of a worker closing an idle connection as it is reused.
"""

from __future__ import annotations

import asyncio
import sys

READY = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 19\r\n\r\n{"status": "ready"}'
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
GARBAGE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\nnot json!"
OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"ok": true}'
EVENT = b'data: {"n": 0}\n\n'
STREAM_START = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(EVENT), EVENT))


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str) -> None:
    answered = 0  # requests answered on this connection
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            if head.startswith(b"GET "):
                writer.write(READY if head.startswith((b"GET /ready ", b"GET /health ")) else NOT_FOUND)
                await writer.drain()
                continue
            if mode == "silent":
                await asyncio.sleep(3600)
            elif mode == "garbage" or (mode == "stale" and not answered):
                writer.write(GARBAGE if mode == "garbage" else OK)
                await writer.drain()
                answered += 1
                continue
            elif mode in ("break", "stall"):
                writer.write(STREAM_START)
                await writer.drain()
                if mode == "stall":
                    await asyncio.sleep(3600)
            break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def main(port: int, mode: str) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, mode), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
