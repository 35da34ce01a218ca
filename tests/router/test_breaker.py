"""router/breaker.py: a worker failing in a row is ejected, kept out for the back-off, closed by a half-open trial
(a real router in front of echo workers)."""

from __future__ import annotations

import time
from collections import Counter

from tests.conftest import wait_for
from tests.support.metrics_text import metric
from tests.support.router_calls import (
    answered_by,
    chat,
    control,
    port_of,
    seen,
    workers_of,
)


def test_breaker_ejects_after_threshold_and_closes_after_a_half_open_trial(echo3, router):
    a, b = echo3[:2]
    r = router([a.url, b.url], "--breaker-failure-threshold", "2", "--breaker-backoff-s", "1",
               "--health-interval-s", "60")
    control(a, status=502)
    base = len(seen(a))
    ejections = metric(r, "genrm_router_ejections_total", worker=a.url, cause="breaker")
    for i in range(20):
        assert answered_by(chat(r, f"q{i}")) == port_of(b)
        hits = len(seen(a)) - base
        state = workers_of(r)[a.url]["breaker"]
        if hits >= 2:
            break
        assert state == "closed", f"breaker {state} after only {hits} failure(s)"
    assert hits == 2
    t_open = time.monotonic()
    assert workers_of(r)[a.url]["breaker"] == "open"
    assert metric(r, "genrm_router_ejections_total", worker=a.url, cause="breaker") - ejections == 1

    control(a, status=200)  # fixed at once: only the breaker keeps it out now
    while time.monotonic() < t_open + 0.8:
        assert answered_by(chat(r, "during back-off")) == port_of(b)
        time.sleep(0.02)
    assert len(seen(a)) - base == 2, "worker A got traffic while its breaker was open"

    def closed() -> bool:
        chat(r, "probe").raise_for_status()
        return workers_of(r)[a.url]["breaker"] == "closed"

    wait_for(closed, "the half-open trial to close the breaker", t_open + 3 - time.monotonic(), every_s=0.02)
    assert time.monotonic() - t_open >= 0.8
    picks = Counter(answered_by(chat(r, f"after {i}")) for i in range(6))
    assert picks[port_of(a)] >= 2
