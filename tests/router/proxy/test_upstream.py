"""router/proxy/upstream.py: worker responses are passed on as they arrive, never buffered (SSE through a real
router from echo workers that stream)."""

from __future__ import annotations

import time

import httpx


def test_stream_arrives_incrementally(echo3, router):
    r = router([e.url for e in echo3])
    body = {"model": "judge", "messages": [{"role": "user", "content": "stream"}], "stream": True, "chunks": 5,
            "interval_s": 0.2}
    times, events = [], []
    t0 = time.monotonic()
    with httpx.stream("POST", r.url + "/v1/chat/completions", json=body, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                times.append(time.monotonic() - t0)
                events.append(line)
    assert events[-1] == "data: [DONE]" and len(events) == 6
    assert times[0] < 0.5, f"first event after {times[0]:.2f}s: the stream was buffered"
    assert times[-1] >= 0.8
    assert times[-1] - times[0] >= 0.6


def test_a_connection_paused_for_a_slow_client_reads_again_when_pooled(procs):
    """A multi-megabyte answer (as /run_code's can be) fills the client's send buffer, so the router pauses
    reading that worker connection (back-pressure); once the answer is done the connection goes back to the pool
    and must read again, or the next request sent on it never gets its answer."""
    worker = procs.echo("big-answers", recipes="code")  # /run_code goes to workers serving the code recipe
    r = procs.router([worker])
    for i in range(20):
        big = httpx.post(r.url + "/run_code", json={"pad_bytes": 4 << 20, "i": i}, timeout=10)
        assert big.status_code == 200 and len(big.json()["pad"]) == 4 << 20
        small = httpx.post(r.url + "/run_code", json={"i": i}, timeout=10)  # on the pooled connection
        assert small.status_code == 200 and small.json()["body"] == {"i": i}
