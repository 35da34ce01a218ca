"""The reward clients against real servers and routers: results, order, failure policies, retries, deadlines."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from services.local_stack import free_port
from tests.conftest import start_router, start_script, start_server
from tests.support.samples import math_sample
from trainer_client import AsyncRewardClient, GenRMError, RewardClient


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_score_and_batches_in_order_in_both_modes(transport, stack):
    samples = [math_sample(i, right=i % 3 != 0) for i in range(40)]
    expected = [1.0 if i % 3 else -1.0 for i in range(40)]
    with RewardClient(stack.url, transport=transport, recipe="math") as client:
        one = client.score(samples[1])
        assert one["score"] == 1.0 and one["acc"] is True and one["pred"] == "1"
        assert [r["score"] for r in client.score_batch(samples)] == expected
    with RewardClient(stack.url, transport=transport, recipe="math", mode="single", concurrency=8) as client:
        assert [r["score"] for r in client.score_batch(samples)] == expected
    # Several chunks, gathered in order.
    with RewardClient(stack.url, transport=transport, recipe="math", batch_size=7) as client:
        assert [r["pred"] for r in client.score_batch(samples)] == [str(i if i % 3 else i + 1) for i in range(40)]


def test_sync_client_works_inside_a_running_event_loop(stack):
    async def inside() -> float:
        with RewardClient(stack.url, recipe="math") as client:  # blocking call from a coroutine's thread
            return client.score(math_sample(2))["score"]

    assert asyncio.run(inside()) == 1.0


def test_item_errors_follow_the_failure_policy(stack):
    bad = {"recipe": "no-such-recipe", "solution": "\\boxed{1}", "ground_truth": "1"}
    with RewardClient(stack.url, recipe="math") as client, pytest.raises(GenRMError) as err:
        client.score_batch([math_sample(1), bad])
    assert "no-such-recipe" in str(err.value)
    with RewardClient(stack.url, recipe="math", on_failure="none") as client:
        ok, missing = client.score_batch([math_sample(1), bad])
    assert ok["score"] == 1.0 and missing is None


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_dead_router_raise_rule_only_and_none(transport):
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    t0 = time.monotonic()
    client = RewardClient(url, transport=transport, recipe="math", timeout_s=1.0, max_retries=50)
    with client, pytest.raises(GenRMError) as err:
        client.score(math_sample(3))
    assert time.monotonic() - t0 < 3.0, "the deadline was not kept"
    assert url in str(err.value) and err.value.attempts >= 2
    with RewardClient(url, transport=transport, recipe="math", timeout_s=0.5, on_failure="rule_only") as client:
        right, wrong = client.score_batch([math_sample(3), math_sample(4, right=False)])
    assert (right["score"], right["reward_source"], right["acc"]) == (1.0, "fallback", True)
    assert (wrong["score"], wrong["reward_source"], wrong["pred"]) == (-1.0, "fallback", "5")
    assert url in right["error"]
    with RewardClient(url, transport=transport, recipe="math", timeout_s=0.5, on_failure="none") as client:
        assert client.score(math_sample(3)) is None


def test_fallback_labels_read_as_the_server_reads_them():
    """rule_only's local rule takes a label as the server would: a number as its text, true as 1, NaN or
    ±Infinity (pandas' missing label) as none; and without a label it never gives +1, not even for an empty
    boxed answer that would equal the empty text."""
    import numpy as np

    from trainer_client.reward_client import fallback_result

    def score(solution: str, label: object) -> float:
        return fallback_result({"solution": solution, "ground_truth": label}, RuntimeError("down"))["score"]

    assert score("\\boxed{3}", 3) == score("\\boxed{3}", np.int64(3)) == score("\\boxed{1}", True) == 1.0
    assert score("\\boxed{3}", "3") == score("\\boxed{nan}", "nan") == 1.0  # text is text
    for missing in (float("nan"), np.float32("nan"), float("inf"), -float("inf"), None, ""):
        assert score("\\boxed{nan}", missing) == score("\\boxed{inf}", missing) == -1.0, missing
        assert score("\\boxed{}", missing) == -1.0, missing
    flagged = fallback_result({"solution": "\\boxed{}"}, RuntimeError("down"))
    assert flagged == {"score": -1.0, "acc": False, "pred": "", "reward_source": "fallback", "error": "down"}


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_retry_after_is_honoured(transport, stack, logs):
    # One request per second per client: the second call gets 429 + Retry-After: 1 and must wait, not fail.
    router = start_router([s.url for s in stack.servers], logs, "--rate-limit-rps", "1", "--rate-limit-burst", "1")
    try:
        with RewardClient(router.url, transport=transport, recipe="math", max_retries=3) as client:
            t0 = time.monotonic()
            first, second = client.score(math_sample(1)), client.score(math_sample(2))
            waited = time.monotonic() - t0
        assert first["score"] == second["score"] == 1.0
        assert waited >= 0.9, f"the 429's Retry-After was not honoured ({waited:.2f}s)"
    finally:
        router.stop()


@pytest.fixture(scope="module")
def slow_judge_router(logs):
    judge = start_script("support/scripted_judge.py", log_dir=logs, name="client-judge")
    server = start_server(judge.url, logs, "--engine", "openai", "--upstream-url", judge.url + "/v1",
                          "--recipe", "fapo", name="client-fapo")
    router = start_router([server.url], logs)
    yield router
    for child in (router, server, judge):
        child.stop()


def fapo_sample(i: int, sleep_s: float = 0.0) -> dict:
    marker = f"<<sleep:{sleep_s}>>" if sleep_s else ""
    return {"recipe": "fapo", "question": f"What is {i}?", "solution": f"Step 1. {marker} so \\boxed{{{i}}}",
            "ground_truth": str(i), "extra_info": {"split": "train"}}


def test_as_completed_yields_results_as_they_arrive(slow_judge_router):
    samples = [fapo_sample(0, sleep_s=1.5), fapo_sample(1), fapo_sample(2)]

    async def collect() -> list[int]:
        async with AsyncRewardClient(slow_judge_router.url) as client:
            return [i async for i, result in client.as_completed(samples) if result["judge_ok"]]

    order = asyncio.run(collect())
    assert sorted(order) == [0, 1, 2] and order[-1] == 0, order  # the slow judge call comes last
    fresh = [fapo_sample(10, sleep_s=1.5), fapo_sample(11), fapo_sample(12)]  # the server caches judged samples
    with RewardClient(slow_judge_router.url) as client:
        assert [i for i, _ in client.as_completed(fresh)][-1] == 0


def test_client_deadline_reaches_the_router(slow_judge_router):
    t0 = time.monotonic()
    with RewardClient(slow_judge_router.url, timeout_s=0.6) as client, pytest.raises(GenRMError):
        client.score(fapo_sample(5, sleep_s=5))
    assert time.monotonic() - t0 < 2.5
    # The router got the deadline too (X-GenRM-Timeout): it gave up on the worker, nothing stays in flight.
    deadline = time.monotonic() + 5
    while any(w["in_flight"] for w in httpx.get(slow_judge_router.url + "/workers", timeout=5).json()["workers"]):
        assert time.monotonic() < deadline, "the router kept waiting past the client's deadline"
        time.sleep(0.1)


def test_bad_arguments_are_refused_early():
    with pytest.raises(ValueError, match="on_failure"):
        AsyncRewardClient("http://127.0.0.1:1", on_failure="zero")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="GENRM_URL"):
        AsyncRewardClient(None)
    with RewardClient("http://127.0.0.1:1") as client, pytest.raises(TypeError, match="dict"):
        client.score("not a sample")  # type: ignore[arg-type]


@pytest.mark.parametrize("fast", [True, False])
def test_json_checks_and_reads(fast, monkeypatch):
    """``is_json`` gives the same answer with orjson or pydantic-core, NaN literals and big integers included;
    an answer's values keep an integer past 64 bits exact (orjson would make it an approximate float)."""
    from trainer_client import jsonio, retry

    if not fast:
        monkeypatch.setattr(jsonio, "orjson", None)
    elif jsonio.orjson is None:
        pytest.skip("orjson is not installed")
    answer = b'{"results": [{"index": 0, "result": {"score": -1.0, "acc": false, "pred": "7"}, "error": null}]}'
    for good in (answer, b'{"n": 123456789012345678901234567890}', b'{"x": NaN}', b"[" * 150 + b"]" * 150):
        assert jsonio.is_json(good), good[:40]
    for bad in (b'{"results": [', b'{"a": 1} trailing', b"\xff", b"", b"[" * 100000 + b"]" * 100000):
        assert not jsonio.is_json(bad), bad[:40]
    assert retry.decode_body(200, b'{"n": 123456789012345678901234567890}', "u", 1) == {
        "n": 123456789012345678901234567890}


def test_chunks_never_split_a_group_and_are_named_by_their_first_group():
    """Whole groups per chunk (by group_id, else the question), each chunk keyed by its first group for the
    router's affinity; a group larger than a chunk is split in chunk-sized parts; odd ids still group."""
    from trainer_client.reward_client import _group_chunks

    bodies = [{"group_id": g, "solution": "s"} for g in ("a", "a", 1, "b", 1, "a")]  # interleaved groups
    bodies += [{"question": "q1"}, {"prompt": "q1"}, {"problem": "q2"}, {"solution": "no key"}]
    bodies += [{"group_id": [1, 2]}, {"group_id": [1, 2]}, {"group_id": "big"}] + [{"group_id": "big"}] * 4
    chunks = _group_chunks(bodies, 4)
    assert sorted(i for _, ix in chunks for i in ix) == list(range(len(bodies)))  # each sample once
    where = {i: n for n, (_, ix) in enumerate(chunks) for i in ix}
    for group in ([0, 1, 5], [2, 4], [3], [6, 7], [10, 11]):
        assert len({where[i] for i in group}) == 1, group  # a group never spans two chunks
    assert all(len(ix) <= 4 for _, ix in chunks)
    assert {where[i] for i in range(12, 17)} == {where[12], where[16]} and len({where[12], where[16]}) == 2
    keys = [key for key, _ in chunks]
    assert keys[0] == "g:a" and "p:q1" in keys and any(k.startswith("g:[1, 2]") for k in keys)
