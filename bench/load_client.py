"""A lean HTTP/1.1 load client for router benchmarks (bench-only): raw asyncio protocol on uvloop with httptools.

Two shapes, each on keep-alive connections (one per request in flight), printing one JSON line at the end:

- ``--in-flight N``: a closed loop (a trainer's steady calls): N requests always out, each sent again as
  soon as it is answered; latency percentiles of every answer.
- ``--burst N``: bursts (a trainer's step): N requests at once, the next burst ``--gap`` seconds after all N are
  answered.

Both run for ``--duration`` seconds (a burst that is still out then is abandoned) or until SIGTERM.
A cheap client, so that a 4,096-request burst costs the load CPU little and the router is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httptools
import uvloop


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends a prepared request and waits for its status."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(0)
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, data: bytes) -> asyncio.Future[int]:
        """Send a request; the future gets its status (0: the connection is gone). No task per request."""
        self.waiter = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            self.waiter.set_result(0)
        else:
            self.transport.write(data)
        return self.waiter


def build_request(url: str, body: bytes, key: str | None) -> bytes:
    parts = urlsplit(url)
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"host: {parts.netloc}", "content-type: application/json",
            f"content-length: {len(body)}"]
    if key:
        head.append(f"authorization: Bearer {key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def connect(url: str, n: int) -> list[_Conn]:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    conns: list[_Conn] = []
    for start in range(0, n, 256):  # in waves: a 4,096-connection SYN flood would overflow the accept backlog
        made = await asyncio.gather(*(loop.create_connection(_Conn, parts.hostname, parts.port)
                                      for _ in range(start, min(n, start + 256))))
        conns += [protocol for _, protocol in made]
    return conns


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


async def closed_loop(conns: list[_Conn], data: bytes, deadline: float, trace: list | None = None) -> dict:
    latencies: list[float] = []
    errors = 0

    async def one(conn: _Conn) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            status = await conn.send(data)
            if status == 200:
                latencies.append(time.perf_counter() - t0)
                if trace is not None:
                    trace.append((time.time(), latencies[-1]))
            else:
                errors += 1
                if status == 0:
                    return

    t0 = time.monotonic()
    await asyncio.gather(*(one(c) for c in conns))
    elapsed = time.monotonic() - t0
    latencies.sort()
    ms = {f"p{int(q * 100)}_ms": (v * 1000 if (v := percentile(latencies, q)) is not None else None)
          for q in (0.5, 0.9, 0.99)}
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "max_ms": latencies[-1] * 1000 if latencies else None, **ms}


async def bursts(conns: list[_Conn], data: bytes, deadline: float, gap_s: float = 0.0) -> dict:
    done = errors = 0
    times: list[float] = []
    starts: list[float] = []
    while time.monotonic() < deadline:
        if starts and gap_s:
            await asyncio.sleep(gap_s)  # a trainer's step between two scoring bursts
        t0 = time.monotonic()
        starts.append(time.time())
        pending = [c.send(data) for c in conns]
        finished, _ = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        for fut in finished:
            if fut.result() == 200:
                done += 1
            else:
                errors += 1
        if len(finished) < len(pending):
            break  # the deadline passed mid-burst
        times.append(time.monotonic() - t0)
    return {"requests": done, "errors": errors, "bursts": len(times), "burst_s": times, "started": starts}


async def main_async(a: argparse.Namespace, data: bytes) -> dict:
    n = a.in_flight or a.burst
    conns = await connect(a.url, n)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    print("connected", file=sys.stderr, flush=True)
    deadline = time.monotonic() + a.duration
    trace: list | None = [] if a.trace else None
    work = asyncio.ensure_future(closed_loop(conns, data, deadline, trace) if a.in_flight
                                 else bursts(conns, data, deadline, a.gap))
    await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
    for c in conns:
        c.transport.close()
    if not work.done():
        await asyncio.sleep(0)  # the abandoned requests see their connections lost
        await asyncio.wait([work], timeout=1)
    if not work.done():
        work.cancel()
        return {"stopped": True}
    if trace is not None:
        Path(a.trace).write_text("".join(f"{t:.6f} {lat * 1000:.3f}\n" for t, lat in trace))
    return work.result()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="Full URL to POST to.")
    p.add_argument("--body-file", required=True, help="JSON body of every request.")
    p.add_argument("--key", default=None, help="Bearer API key.")
    shape = p.add_mutually_exclusive_group(required=True)
    shape.add_argument("--in-flight", type=int, default=0, help="Closed loop with this many requests out.")
    shape.add_argument("--burst", type=int, default=0, help="Bursts of this many requests.")
    p.add_argument("--duration", type=float, default=10.0, help="Seconds to run.")
    p.add_argument("--gap", type=float, default=0.0, help="Bursts: seconds between one burst's end and the next.")
    p.add_argument("--trace", default=None, help="Closed loop: write 'unix time answered, latency ms' lines here.")
    a = p.parse_args()
    data = build_request(a.url, Path(a.body_file).read_bytes(), a.key)
    print(json.dumps(uvloop.run(main_async(a, data))), flush=True)


if __name__ == "__main__":
    main()
