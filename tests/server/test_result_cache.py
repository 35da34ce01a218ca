"""services/genrm_server/result_cache.py on a real FAPO server: identical judge requests coalesce, then hit the
cache; failed judge results are not cached."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.support.reward_calls import QUESTION, correct_solution, judge_prompts, post_reward


def test_identical_judge_requests_coalesce_then_hit_the_cache(fapo_server, judge):
    sample = {"question": QUESTION, "solution": correct_solution("<<sleep:0.5>><<reply:\\boxed{1}>> coalesce"),
              "ground_truth": "4"}
    before = len(judge_prompts(judge))
    hits_before = _cache_hits(fapo_server.url)  # the server is shared by the session: count from here

    async def burst():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(
                client.post(fapo_server.url + "/v1/reward", json={**sample, "extra_info": {"index": i}})
                for i in range(4)
            ))

    results = [r.json() for r in asyncio.run(burst())]
    assert len(judge_prompts(judge)) == before + 1  # four identical samples, one judge call
    assert all(r == results[0] for r in results) and results[0]["flawed_positive"] is True
    again = post_reward(fapo_server.url, **sample, extra_info={"index": 99}).json()  # index is not read by fapo
    assert again == results[0] and len(judge_prompts(judge)) == before + 1
    other_split = post_reward(fapo_server.url, **sample, extra_info={"split": "test"}).json()
    assert other_split["judge_asked"] is False  # split is part of the key: no stale verdict
    hits = _cache_hits(fapo_server.url)
    assert (hits["coalesced"] - hits_before["coalesced"], hits["hit"] - hits_before["hit"]) == (3.0, 1.0)


def _cache_hits(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    found = dict(re.findall(r'^genrm_reward_cache_hits_total\{kind="(\w+)",recipe="fapo"\} (\S+)', text, re.M))
    return {kind: float(found.get(kind, 0.0)) for kind in ("coalesced", "hit")}


def test_failed_judge_results_are_not_cached(fapo_server, judge):
    sample = {"question": QUESTION, "solution": correct_solution("<<reply:undecided, no box>> nocache"),
              "ground_truth": "4"}
    before = len(judge_prompts(judge))
    for _ in range(2):
        assert post_reward(fapo_server.url, **sample).json()["judge_ok"] is False
    assert len(judge_prompts(judge)) == before + 2
