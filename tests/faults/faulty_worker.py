"""A misbehaving GenRM worker, run as a real process: ``python tests/faults/faulty_worker.py PORT MODE [UPSTREAM]``.

GETs (``/health``, ``/ready``, ``/v1/models``, ``/v1/recipes``, ``/metrics``) are passed to UPSTREAM (a real
``genrm serve``) when one is given, so the router probes and learns it like any healthy server; without
UPSTREAM ``/health`` and ``/ready`` answer 200 and other GETs 404. Every other request (the reward calls)
gets the fault of MODE once the fault is on. With UPSTREAM the worker starts healthy (reward calls pass
through to UPSTREAM) and ``SIGUSR1`` turns the fault on (again: off), so a fault can be injected mid-run;
without UPSTREAM the fault is on from the start. Modes:

- ``error500``: ``500`` with an OpenAI-style error body (a worker whose engine crashed);
- ``malformed``: ``200``, ``content-type: application/json``, a correct ``content-length``, a body that is
  not JSON (a broken serializer, a middlebox that rewrote it);
- ``truncated``: ``200`` announcing ``content-length: 400`` that sends 40 bytes of a plausible answer, then
  closes (a worker dying mid-response);
- ``slow``: forwarded to UPSTREAM, its answer held back so it takes ``SLOW_FACTOR``× the upstream's time
  (at least ``SLOW_FLOOR_S``): a straggler whose answers are right but late.

Reward calls received are counted at ``GET /fault-stats`` (``{"mode", "on", "requests", "faulted"}``), so
a test can see whether the router kept sending it traffic once it misbehaved.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

SLOW_FACTOR = 10.0
SLOW_FLOOR_S = 0.01

STATS = {"on": False, "requests": 0, "faulted": 0}


def _response(status: int, reason: str, body: bytes, content_length: int | None = None,
              content_type: bytes = b"application/json") -> bytes:
    length = len(body) if content_length is None else content_length
    return (f"HTTP/1.1 {status} {reason}\r\n".encode() + b"content-type: " + content_type
            + f"\r\ncontent-length: {length}\r\n\r\n".encode() + body)


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes, int | None]:
    """One HTTP/1.1 message (request or response): head, body and status (responses) or None."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    status = None
    if head.startswith(b"HTTP/"):
        status = int(head.split(b" ", 2)[1])
    return head, body, status


async def _forward(upstream: tuple[str, int], head: bytes, body: bytes) -> bytes:
    """Send one request to the upstream on a fresh connection; return its whole response, re-framed."""
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        lines = [line for line in head.split(b"\r\n") if line and not line.lower().startswith(b"connection:")]
        writer.write(b"\r\n".join(lines) + b"\r\nconnection: close\r\n\r\n" + body)
        await writer.drain()
        resp_head, resp_body, status = await _read_message(reader)
    finally:
        writer.close()
    content_type = b"application/json"
    for line in resp_head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            content_type = value.strip()
    reason = resp_head.split(b"\r\n", 1)[0].split(b" ", 2)[2].decode("latin-1") if status else "OK"
    return _response(status or 502, reason, resp_body, content_type=content_type)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str,
                 upstream: tuple[str, int] | None) -> None:
    try:
        while True:
            head, body, _ = await _read_message(reader)
            if head.startswith(b"GET "):
                path = head.split(b" ", 2)[1]
                if path == b"/fault-stats":
                    writer.write(_response(200, "OK", json.dumps({"mode": mode, **STATS}).encode()))
                elif upstream is not None:
                    writer.write(await _forward(upstream, head, body))
                elif path in (b"/health", b"/ready"):
                    writer.write(_response(200, "OK", b'{"status": "ready"}'))
                else:
                    writer.write(_response(404, "Not Found", b"{}"))
                await writer.drain()
                continue
            STATS["requests"] += 1
            if not STATS["on"]:
                writer.write(await _forward(upstream, head, body))
                await writer.drain()
                continue
            STATS["faulted"] += 1
            if mode == "error500":
                error = {"error": {"message": "injected fault: engine crashed", "type": "InternalServerError",
                                   "param": None, "code": 500}}
                writer.write(_response(500, "Internal Server Error", json.dumps(error).encode()))
            elif mode == "malformed":
                writer.write(_response(200, "OK", b'{"score": 1.0, "acc": tru, "pred": <html>oops'))
            elif mode == "truncated":
                writer.write(_response(200, "OK", b'{"score": 1.0, "acc": true, "pred": "12', content_length=400))
                await writer.drain()
                break  # close with 360 bytes still owed
            elif mode == "slow":
                assert upstream is not None, "slow mode needs an UPSTREAM"
                t0 = time.monotonic()
                answer = await _forward(upstream, head, body)
                elapsed = time.monotonic() - t0
                await asyncio.sleep(max((SLOW_FACTOR - 1) * elapsed, SLOW_FLOOR_S))
                writer.write(answer)
            else:
                raise SystemExit(f"unknown mode {mode!r}")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def main(port: int, mode: str, upstream_url: str | None) -> None:
    upstream = None
    if upstream_url:
        hostport = upstream_url.split("://", 1)[-1].rstrip("/")
        host, _, up_port = hostport.rpartition(":")
        upstream = (host, int(up_port))
    STATS["on"] = upstream is None
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, lambda: STATS.update(on=not STATS["on"]))
    server = await asyncio.start_server(lambda r, w: handle(r, w, mode, upstream), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
