"""router/fanout.py: a reward batch split by GRPO group over workers (serving its recipe), gathered in order,
a failed sub-batch retried elsewhere; 10,000 samples fanned out or routed whole."""

from __future__ import annotations

import httpx
import pytest

from tests.support.metrics_text import metric
from tests.support.router_calls import (
    control,
    port_of,
    seen,
)
from tests.support.samples import numbered_batch


def test_reward_batch_goes_to_workers_serving_its_recipe(echo3, disrm_worker, router):
    r = router([echo3[0].url, echo3[1].url, disrm_worker.url])
    samples = [{"recipe": "disrm", "group_id": g, "question": "q", "solution": "s", "ground_truth": g}
               for g in range(6)]
    resp = httpx.post(r.url + "/v1/reward/batch", json={"samples": samples}, timeout=10)
    assert resp.status_code == 200
    assert {item["result"]["worker"] for item in resp.json()["results"]} == {port_of(disrm_worker)}
    # Mixed: each recipe's samples only on the workers serving it, results still in order.
    mixed = [{**s, "recipe": "math" if i % 2 else "disrm", "ground_truth": i} for i, s in enumerate(samples * 2)]
    resp = httpx.post(r.url + "/v1/reward/batch", json={"samples": mixed}, timeout=10)
    results = resp.json()["results"]
    assert [item["result"]["score"] for item in results] == [float(i) for i in range(len(mixed))]
    by_recipe = {recipe: {item["result"]["worker"] for item, s in zip(results, mixed, strict=True)
                          if s["recipe"] == recipe} for recipe in ("math", "disrm")}
    assert by_recipe["disrm"] == {port_of(disrm_worker)}
    assert port_of(disrm_worker) not in by_recipe["math"]


BAD_AT = 10


def batch_samples() -> list[dict]:
    """24 samples in 6 groups of 4 (interleaved) plus one bad sample at BAD_AT; ground_truth = position."""
    samples: list[dict] = []
    k = 0
    for pos in range(25):
        if pos == BAD_AT:
            samples.append({"bad": True, "question": "broken", "ground_truth": pos})
            continue
        samples.append({"group_id": f"grp-{k % 6}", "question": f"question of group {k % 6}", "solution": "x",
                        "ground_truth": pos})
        k += 1
    return samples


def check_batch(resp: httpx.Response, samples: list[dict]) -> dict[str, set[int]]:
    """Order, scores and the bad item's error; return group -> workers that scored it."""
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == len(samples)
    assert [item["index"] for item in results] == list(range(len(samples)))
    groups: dict[str, set[int]] = {}
    for pos, (item, sample) in enumerate(zip(results, samples, strict=True)):
        if pos == BAD_AT:
            assert item["result"] is None
            assert item["error"]["param"] == f"samples.{BAD_AT}"
            continue
        assert not item.get("error"), item
        assert item["result"]["score"] == float(pos)
        groups.setdefault(sample["group_id"], set()).add(item["result"]["worker"])
    return groups


def test_reward_batch_fans_out_by_group_and_gathers_in_order(echo3, router):
    r = router([e.url for e in echo3])
    samples = batch_samples()
    counts = {e.url: len(seen(e, "/v1/reward/batch")) for e in echo3}
    fanned = metric(r, "genrm_router_fanout_items_total")
    groups = check_batch(httpx.post(r.url + "/v1/reward/batch", json={"samples": samples}, timeout=10), samples)
    assert len(groups) == 6 and all(len(w) == 1 for w in groups.values()), groups
    used = {p for w in groups.values() for p in w}
    assert len(used) >= 2
    assert metric(r, "genrm_router_fanout_items_total") - fanned == 25
    for e in echo3:  # one sub-batch per worker at most, holding whole groups
        subs = seen(e, "/v1/reward/batch")[counts[e.url]:]
        assert len(subs) <= 1
        if port_of(e) in used:
            assert len(subs) == 1
            assert {g for g in subs[0]["groups"] if g is not None} == {
                g for g, w in groups.items() if port_of(e) in w}

    # One worker answers 503: its sub-batch is retried elsewhere and the batch still completes.
    victim = next(e for e in echo3 if port_of(e) in used)
    control(victim, status=503)
    before = len(seen(victim, "/v1/reward/batch"))
    retries = metric(r, "genrm_router_retries_total", reason="503")
    groups = check_batch(httpx.post(r.url + "/v1/reward/batch", json={"samples": samples}, timeout=10), samples)
    assert len(seen(victim, "/v1/reward/batch")) - before == 1  # it was asked, failed, and its share moved
    assert metric(r, "genrm_router_retries_total", reason="503") - retries == 1
    assert port_of(victim) not in {p for w in groups.values() for p in w}
    assert all(len(w) == 1 for w in groups.values())


def test_reward_batch_with_one_worker_is_passed_through_whole(echo3, router):
    only = echo3[0]
    r = router([only.url])
    samples = batch_samples()
    before = len(seen(only, "/v1/reward/batch"))
    groups = check_batch(httpx.post(r.url + "/v1/reward/batch", json={"samples": samples}, timeout=10), samples)
    assert {p for w in groups.values() for p in w} == {port_of(only)}
    subs = seen(only, "/v1/reward/batch")[before:]
    assert len(subs) == 1 and len(subs[0]["groups"]) == 25
    assert metric(r, "genrm_router_fanout_items_total") == 0


@pytest.mark.parametrize("how", ["fan-out", "whole"])
def test_a_10k_item_batch_through_the_router(stack, how):
    """Fanned out over both workers, or routed whole to one (X-Affinity-Key): every result, in order."""
    samples, scores = numbered_batch(10_000)
    headers = {"x-affinity-key": "one-group"} if how == "whole" else {}
    resp = httpx.post(stack.url + "/v1/reward/batch", json={"samples": samples}, headers=headers, timeout=120)
    assert resp.status_code == 200, resp.text[:500]
    results = resp.json()["results"]
    assert [r["index"] for r in results] == list(range(10_000))
    assert [r["result"]["score"] for r in results] == scores
