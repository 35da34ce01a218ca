"""router/metrics.py: request, latency, per-worker and policy series move as a real router serves."""

from __future__ import annotations

from tests.support.metrics_text import metric, samples, scrape
from tests.support.router_calls import (
    CHAT_PATH,
    ROTATE,
    chat,
    control,
    port_of,
)


def test_metrics_move(procs):
    e1, e2 = procs.echo("met1"), procs.echo("met2")
    router = procs.router([e1, e2], *ROTATE)
    before = scrape(router)
    n = 6
    ports = [chat(router).json()["worker"] for _ in range(n)]
    after = scrape(router)

    def grew(text_name: str, **labels: str) -> float:
        return metric(after, text_name, **labels) - metric(before, text_name, **labels)

    for w in (e1, e2):
        served = ports.count(port_of(w))
        assert served > 0
        assert grew("genrm_router_requests_total", route=CHAT_PATH, status="200", worker=w.url) == served
    assert grew("genrm_router_requests_total", route=CHAT_PATH) == n
    assert grew("genrm_router_request_latency_seconds_count", route=CHAT_PATH) == n
    assert grew("genrm_router_request_latency_seconds_sum", route=CHAT_PATH) > 0
    in_flight = {lab["worker"]: v for lab, v in samples(after, "genrm_router_worker_in_flight")}
    assert in_flight == {e1.url: 0.0, e2.url: 0.0}
    assert {lab["worker"] for lab, _ in samples(after, "genrm_router_worker_ready")} == {e1.url, e2.url}
    ratios = {lab["policy"]: v for lab, v in samples(after, "genrm_router_affinity_spill_ratio")}
    assert "round_robin" in ratios and all(0.0 <= v <= 1.0 for v in ratios.values())
    assert grew("genrm_router_policy_decisions_total", policy="round_robin") == n

    # A router-made error is counted under its status too.
    control(e1, status=503)
    control(e2, status=503)
    assert chat(router).status_code == 503
    final = scrape(router)
    assert metric(final, "genrm_router_requests_total", route=CHAT_PATH, status="503") == 1
