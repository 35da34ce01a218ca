"""A stand-in router whose answers a test scripts (``python tests/support/scripted_router.py PORT``), run as
a real process, to see what a client does with each answer and what it sends.

``POST /script`` with ``{"answers": [ANSWER, ...], "default": ANSWER}`` sets the answers to the next requests
(then ``default`` for every one after) and clears the log; ``GET /seen`` lists the requests since, each as
``{"method", "path", "headers", "at"}`` (headers lower-cased, ``at`` in seconds of a monotonic clock).
An ANSWER is ``{"status", "headers", "body", "sleep_s", "drop"}`` (all optional): the status (200), extra
headers, a JSON body (``{}``), seconds to wait before answering, or ``drop`` to close the connection
without an answer. ``GET /ready`` answers 200.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class Script:
    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.default: dict[str, Any] = {}
        self.seen: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        return self.answers.pop(0) if self.answers else self.default


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> bytes:
    data = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", "content-type: application/json",
            f"content-length: {len(data)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, script: Script) -> None:
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.strip().split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            if path == "/ready":
                writer.write(response(200, {"status": "ready"}))
            elif path == "/script":
                plan = json.loads(body)
                script.answers, script.default, script.seen = list(plan.get("answers", [])), plan.get("default", {}), []
                writer.write(response(200, {}))
            elif path == "/seen":
                writer.write(response(200, script.seen))
            else:
                script.seen.append({"method": method, "path": path, "headers": headers, "at": time.monotonic()})
                answer = script.next()
                if answer.get("sleep_s"):
                    await asyncio.sleep(answer["sleep_s"])
                if answer.get("drop"):
                    break
                writer.write(response(answer.get("status", 200), answer.get("body", {}), answer.get("headers")))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def main(port: int) -> None:
    script = Script()
    server = await asyncio.start_server(lambda r, w: handle(r, w, script), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
