"""Dynamic batching on one server: concurrency is served in batches, abandoned requests free slots."""

from __future__ import annotations

import asyncio
import re
import time

import httpx


def _metric(url: str, pattern: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    match = re.search(pattern + r" (\S+)", text)
    assert match, f"{pattern} not in /metrics"
    return float(match.group(1))


def _batch_stats(url: str) -> tuple[float, float]:
    return (_metric(url, r'genrm_server_batch_size_count\{model_name="tiny"\}'),
            _metric(url, r'genrm_server_batch_size_sum\{model_name="tiny"\}'))


async def test_32_concurrent_requests_complete_in_batches(server):
    count0, sum0 = _batch_stats(server.url)
    async with httpx.AsyncClient(timeout=120) as client:
        async def one(i: int) -> dict:
            body = {"prompt": f"request {i}: the answer is", "max_tokens": 16, "ignore_eos": True,
                    "temperature": 0.8, "seed": i}
            resp = await client.post(server.url + "/v1/completions", json=body)
            assert resp.status_code == 200, resp.text
            return resp.json()

        results = await asyncio.gather(*(one(i) for i in range(32)))
    assert all(r["usage"]["completion_tokens"] == 16 for r in results)
    count1, sum1 = _batch_stats(server.url)
    steps, rows = count1 - count0, sum1 - sum0  # one observation per forward step: rows in that step
    assert rows >= 32 * 16  # every generated token was part of some step
    assert rows / steps > 8, (steps, rows)  # mostly batched; sequential would give exactly 1


async def test_sequence_joining_a_running_batch_matches_its_solo_output(server):
    """Continuous batching pads and merges KV caches; that must not change a single greedy token."""
    prompts = ["short", "a much longer prompt with many more tokens, " * 3, "mid-length prompt"]
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        async def greedy(prompt: str, tokens: int, delay: float = 0.0) -> str:
            await asyncio.sleep(delay)
            body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}
            return (await client.post("/v1/completions", json=body)).json()["choices"][0]["text"]

        solo = [await greedy(p, 30) for p in prompts]
        running = asyncio.ensure_future(greedy("x " * 300, 600))  # long: the others join it mid-decode
        await asyncio.sleep(0.2)
        assert _running(server.url) == 1
        joined = await asyncio.gather(*(greedy(p, 30, 0.05 * i) for i, p in enumerate(prompts)))
        await running
    assert joined == solo


def _running(url: str) -> float:
    return _metric(url, r'vllm:num_requests_running\{model_name="tiny"\}')


def _aborted(url: str) -> float:
    return _metric(url, r'genrm_server_aborted_sequences_total\{model_name="tiny"\}')


def _wait_freed(url: str, aborted_before: float) -> None:
    """The sequence must be dropped (counted as aborted), not run to its 4,000-token end, on any machine."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _running(url) == 0:
            assert _aborted(url) == aborted_before + 1, "the engine finished generating for a client that left"
            return
        time.sleep(0.05)
    raise AssertionError("the engine kept generating for a client that left")


def test_disconnected_stream_frees_its_slot(server):
    aborted = _aborted(server.url)
    body = {"prompt": "long", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as client, client.stream("POST", server.url + "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        for _ in range(5):
            next(lines)
        assert _running(server.url) == 1
    _wait_freed(server.url, aborted)


def test_disconnected_blocking_request_frees_its_slot(server):
    aborted = _aborted(server.url)
    body = {"prompt": "long", "max_tokens": 4000, "ignore_eos": True}
    try:
        httpx.post(server.url + "/v1/completions", json=body, timeout=0.5)
    except httpx.ReadTimeout:
        pass
    else:
        raise AssertionError("4,000 tokens should not finish in 0.5 s")
    _wait_freed(server.url, aborted)


def test_load_gauges_use_vllm_names(server):
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "genrm_server_request_latency_seconds",
                 "genrm_server_prompt_tokens_total", "genrm_server_generation_tokens_total"):
        assert name in text, name
