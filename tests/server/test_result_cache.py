"""services/genrm_server/result_cache.py: identical calls in flight share one run, finished results are kept in a
bounded LRU and handed out as copies, failed or uncacheable ones never are, a caller that leaves does not cancel the
others' call; then on a real FAPO server: identical judge requests coalesce, then hit the cache, and failed judge
results are not cached."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.genrm_server.result_cache import CoalescingCache, digest
from tests.support.reward_calls import QUESTION, correct_solution, judge_prompts, post_reward


def _always(result: dict[str, Any]) -> bool:
    return True


class Calls:
    """Run functions that count their runs per name and, while ``gate`` is closed, wait before answering."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()

    def answer(self, name: str, result: dict[str, Any] | None = None) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def run() -> dict[str, Any]:
            self.runs[name] += 1
            await self.gate.wait()
            return dict(result if result is not None else {"score": 1.0, "of": name})
        return run

    def fail(self, name: str) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def run() -> dict[str, Any]:
            self.runs[name] += 1
            await self.gate.wait()
            raise RuntimeError(f"judge call {name} failed")
        return run


async def _settle() -> None:
    """Let every task that is ready run up to its next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_identical_calls_in_flight_share_one_run_then_hit():
    cache, calls = CoalescingCache(8), Calls()
    calls.gate.clear()
    key = digest("fapo", "2 + 2?", "4", "so 4")
    waiting = [asyncio.ensure_future(cache.get_or_run(key, calls.answer("a"), _always)) for _ in range(4)]
    await _settle()
    assert not any(t.done() for t in waiting) and len(cache) == 0  # in flight, not finished
    calls.gate.set()
    results = await asyncio.gather(*waiting)
    assert calls.runs["a"] == 1
    assert sorted(outcome for _, outcome in results) == ["coalesced", "coalesced", "coalesced", "miss"]
    assert all(result == {"score": 1.0, "of": "a"} for result, _ in results)
    assert len({id(result) for result, _ in results}) == 4  # each caller gets its own copy
    results[0][0]["score"] = -1.0  # a caller changing its copy changes nobody else's
    hit, outcome = await cache.get_or_run(key, calls.answer("a"), _always)
    assert (hit, outcome) == ({"score": 1.0, "of": "a"}, "hit")
    hit["score"] = -1.0  # nor does a caller served from the cache
    assert await cache.get_or_run(key, calls.answer("a"), _always) == ({"score": 1.0, "of": "a"}, "hit")
    assert calls.runs["a"] == 1 and len(cache) == 1


async def test_finished_results_are_kept_in_a_bounded_lru():
    cache, calls = CoalescingCache(2), Calls()

    async def outcome(name: str) -> str:
        return (await cache.get_or_run(digest(name), calls.answer(name), _always))[1]

    assert [await outcome(n) for n in "abc"] == ["miss", "miss", "miss"]
    assert len(cache) == 2  # "a", the oldest, made room for "c"
    assert await outcome("b") == "hit"  # used: "c" is now the oldest
    assert await outcome("a") == "miss"  # evicted, so run again; it evicts "c"
    assert await outcome("b") == "hit"
    assert await outcome("c") == "miss"
    assert len(cache) == 2 and calls.runs == {"a": 2, "b": 1, "c": 2}


async def test_failed_and_uncacheable_results_are_not_kept():
    cache, calls = CoalescingCache(8), Calls()
    calls.gate.clear()
    key = digest("down")
    waiting = [asyncio.ensure_future(cache.get_or_run(key, calls.fail("down"), _always)) for _ in range(3)]
    await _settle()
    calls.gate.set()
    errors = await asyncio.gather(*waiting, return_exceptions=True)
    assert calls.runs["down"] == 1  # the failure was shared too
    assert all(isinstance(e, RuntimeError) and "down failed" in str(e) for e in errors), errors
    assert len(cache) == 0
    assert (await cache.get_or_run(key, calls.answer("down"), _always))[1] == "miss"  # tried again

    def judged(result: dict[str, Any]) -> bool:
        return result["judge_ok"]

    unjudged = calls.answer("unjudged", {"score": 1.0, "judge_ok": False})
    for _ in range(2):
        assert await cache.get_or_run(digest("unjudged"), unjudged, judged) == (
            {"score": 1.0, "judge_ok": False}, "miss")
    assert calls.runs["unjudged"] == 2 and len(cache) == 1


async def test_a_caller_that_leaves_does_not_cancel_the_call_the_others_wait_for():
    cache, calls = CoalescingCache(8), Calls()
    calls.gate.clear()
    key = digest("shared")
    first = asyncio.ensure_future(cache.get_or_run(key, calls.answer("shared"), _always))
    second = asyncio.ensure_future(cache.get_or_run(key, calls.answer("shared"), _always))
    await _settle()
    first.cancel()  # the caller whose call it is goes away (a client disconnected)
    await _settle()
    calls.gate.set()
    assert await second == ({"score": 1.0, "of": "shared"}, "coalesced")
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await cache.get_or_run(key, calls.answer("shared"), _always) == ({"score": 1.0, "of": "shared"}, "hit")
    assert calls.runs["shared"] == 1


async def test_capacity_zero_runs_every_call():
    cache, calls = CoalescingCache(0), Calls()
    for _ in range(2):
        assert (await cache.get_or_run(digest("k"), calls.answer("k"), _always))[1] == "miss"
    assert calls.runs["k"] == 2 and len(cache) == 0


def test_digest_names_what_the_recipe_reads():
    assert len(digest("fapo", "q")) == 32  # SHA-256, not the texts themselves
    assert digest("fapo", {"split": "train", "index": 1}) == digest("fapo", {"index": 1, "split": "train"})
    assert digest("fapo", "q", "s") != digest("fapo", "q", "s ")
    assert digest("fapo", "ab", "c") != digest("fapo", "a", "bc")  # parts are kept apart, not concatenated
    assert digest("fapo", "q") != digest("genrm_verdict", "q")


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
