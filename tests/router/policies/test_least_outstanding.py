"""router/policies/least_outstanding.py, the default policy of the OpenAI routes, through real routers: the worker
with a slow request is avoided, idle ones alternate, overlapping requests reach both servers of a stack, and every
decision is counted."""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from common.load_report import HEADER, LATENCY_AVG, LATENCY_STALE_S, parse_report
from tests.conftest import start_router, wait_for
from tests.support.metrics_text import metric, scrape
from tests.support.router_calls import answered_by, chat, control, port_of, seen, workers_of
from trainer_client import AsyncGenRMClient

CHAT = [{"role": "user", "content": "Is 2 + 2 = 4? Answer in \\boxed{}."}]


def test_least_outstanding_avoids_the_worker_with_a_slow_request(echo3, router):
    r = router([e.url for e in echo3])  # --policy defaults to least_outstanding
    assert httpx.get(r.url + "/workers", timeout=5).json()["policy"] == "least_outstanding"
    before = {port_of(e): len(seen(e)) for e in echo3}
    for e in echo3:
        control(e, delay_s=2.0)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(chat, r, "slow one")
        # The worker that received it: its handler has already read delay_s, so it stays busy for 2 s.
        busy = wait_for(lambda: next((p for p, e in zip(before, echo3, strict=True) if len(seen(e)) > before[p]),
                                     None), "the slow request to reach a worker", 5)
        for e in echo3:
            control(e, delay_s=0)
        t0 = time.monotonic()
        picks = [answered_by(chat(r, f"fast {i}")) for i in range(8)]
        assert time.monotonic() - t0 < 1.5, "the fast requests must finish while the slow one is still in flight"
        assert workers_of(r)[f"http://127.0.0.1:{busy}"]["in_flight"] == 1
        assert busy not in picks
        assert Counter(picks) == {p: 4 for p in before if p != busy}  # the two idle workers alternate
        assert answered_by(slow.result(timeout=10)) == busy


def test_least_outstanding_decisions_are_counted(echo3, router):
    # The series is fed by the policy's own counter: LeastOutstanding.select must count each decision.
    r = router([e.url for e in echo3])
    for i in range(6):
        answered_by(chat(r, f"q{i}"))
    assert metric(r, "genrm_router_policy_decisions_total", policy="least_outstanding") >= 6


def test_default_policy_decisions_are_counted(procs):
    e1, e2 = procs.echo("dec1"), procs.echo("dec2")
    router = procs.router([e1, e2])
    for _ in range(4):
        assert chat(router).status_code == 200
    assert metric(scrape(router), "genrm_router_policy_decisions_total", policy="least_outstanding") == 4


async def test_requests_spread_over_both_servers(stack, logs):
    """Overlapping requests reach both servers, through a router of its own. A server that served an earlier test's
    long generation in the last seconds reports that latency, and against the other's short answers here it
    is rightly a straggler: first wait until neither reports a latency (idle for LATENCY_STALE_S)."""
    def chats() -> list[float]:
        text = [httpx.get(s.url + "/metrics", timeout=10).text for s in stack.servers]
        pattern = r'genrm_server_requests_total\{route="/v1/chat/completions",status="200"\} (\S+)'
        return [float(m.group(1)) if (m := re.search(pattern, t)) else 0.0 for t in text]

    def latencies() -> list[float]:
        return [parse_report(httpx.get(s.url + "/ready", timeout=10).headers[HEADER])[LATENCY_AVG]
                for s in stack.servers]

    wait_for(lambda: latencies() == [0, 0], "both servers to report no latency", timeout_s=LATENCY_STALE_S + 15)
    router = start_router([s.url for s in stack.servers], logs)
    try:
        before = chats()
        async with AsyncGenRMClient(router.url) as client:
            await client.chat_batch([CHAT] * 12, concurrency=6, max_tokens=16, ignore_eos=True)
        counts = [a - b for a, b in zip(chats(), before, strict=True)]
    finally:
        router.stop()
    assert sum(counts) == 12 and all(c >= 2 for c in counts), counts
