"""router/rate_limit.py: per-key token buckets (per client address without keys) on a real router."""

from __future__ import annotations

import time

import httpx

from tests.support.metrics_text import metric, scrape
from tests.support.router_calls import (
    CHAT,
    CHAT_PATH,
    CLIENT_KEY,
    OTHER_CLIENT_KEY,
    bearer,
    chat,
    error_of,
    seen,
)


def test_rate_limit_is_per_key(procs):
    worker = procs.echo("rate")
    router = procs.router([worker], "--api-keys", f"{CLIENT_KEY},{OTHER_CLIENT_KEY}", "--rate-limit-rps", "2",
                          "--rate-limit-burst", "2")
    with httpx.Client(timeout=10) as c:
        statuses, limited = [], None
        for _ in range(5):
            resp = c.post(router.url + CHAT_PATH, json=CHAT, headers=bearer(CLIENT_KEY))
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                limited = resp
        assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429, 429], statuses
        assert int(limited.headers["retry-after"]) >= 1
        assert "rate_limit_rps" in error_of(limited)["message"]
        # Another key has a bucket of its own.
        assert c.post(router.url + CHAT_PATH, json=CHAT, headers=bearer(OTHER_CLIENT_KEY)).status_code == 200
        # The bucket refills at 2/s.
        time.sleep(0.6)
        assert c.post(router.url + CHAT_PATH, json=CHAT, headers=bearer(CLIENT_KEY)).status_code == 200
    assert len(seen(worker)) == 4  # rejected requests never reached the worker
    assert metric(scrape(router, bearer(OTHER_CLIENT_KEY)), "genrm_router_rejected_total", reason="rate_limit") == 3


def test_rate_limit_without_keys_is_per_client_address(procs):
    worker = procs.echo("rate-ip")
    router = procs.router([worker], "--rate-limit-rps", "1", "--rate-limit-burst", "1")
    statuses = [chat(router).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]


def test_rate_limit_cannot_be_evaded_with_made_up_authorization_headers(procs):
    worker = procs.echo("rate-evade")
    router = procs.router([worker], "--rate-limit-rps", "1", "--rate-limit-burst", "1")
    statuses = [chat(router, headers=bearer(f"made-up-{i}")).status_code for i in range(4)]
    assert statuses.count(429) >= 3, statuses


def test_rate_limit_cannot_be_evaded_by_spelling_the_same_key_differently(procs):
    """The router accepts ``Bearer k``, ``bearer k`` and ``Bearer  k`` as one key: they share its bucket."""
    worker = procs.echo("rate-spelling")
    router = procs.router([worker], "--api-keys", CLIENT_KEY, "--rate-limit-rps", "1", "--rate-limit-burst", "1")
    spellings = [f"Bearer {CLIENT_KEY}", f"bearer {CLIENT_KEY}", f"Bearer  {CLIENT_KEY}", f"BEARER {CLIENT_KEY}"]
    statuses = [chat(router, headers={"Authorization": a}).status_code for a in spellings]
    assert statuses[0] == 200 and statuses[1:].count(429) >= 2, statuses
