"""services/genrm_server/metrics.py: vLLM's gauge names, reward samples counted by recipe, judge calls in the token
counters, and every score of a batch in the histogram."""

from __future__ import annotations

import re

import httpx

from tests.support.reward_calls import QUESTION, post_reward


def test_load_gauges_use_vllm_names(server):
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "genrm_server_request_latency_seconds",
                 "genrm_server_prompt_tokens_total", "genrm_server_generation_tokens_total"):
        assert name in text, name


def test_reward_metrics_count_by_recipe(server):
    before = httpx.get(server.url + "/metrics", timeout=5).text
    post_reward(server.url, solution="\\boxed{4}", ground_truth="4")
    after = httpx.get(server.url + "/metrics", timeout=5).text
    pattern = r'^genrm_reward_samples_total\{outcome="ok",recipe="math"\} (\S+)'
    count = [float(m.group(1)) if (m := re.search(pattern, t, re.M)) else 0.0 for t in (before, after)]
    assert count[1] == count[0] + 1


def test_judge_calls_count_in_the_servers_token_counters(server):
    """Dashboards read tokens/s from genrm_server_*_tokens: reward traffic (judge calls) must count there."""
    def tokens(text: str, name: str) -> float:
        m = re.search(rf"^genrm_server_{name}_tokens_total\{{[^}}]*\}} (\S+)", text, re.M)
        return float(m.group(1)) if m else 0.0

    before = httpx.get(server.url + "/metrics", timeout=5).text
    result = post_reward(server.url, recipe="fapo", question=QUESTION, solution="token count \\boxed{4}",
                         ground_truth="4").json()
    after = httpx.get(server.url + "/metrics", timeout=5).text
    assert result["judge_asked"] is True
    assert tokens(after, "prompt") - tokens(before, "prompt") > 20  # the judge prompt, template included
    assert tokens(after, "generation") > tokens(before, "generation")


def test_a_batch_counts_every_score_in_the_histogram(server):
    """Judge-free samples of a batch are counted at once: count, buckets and the _sum (a mean score) agree."""
    def series(text: str) -> dict[str, float]:
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^genrm_reward_score_(count|sum|bucket\{le="-1\.0",recipe="math"\})(?:\{recipe="math"\})? (\S+)',
            text, re.M)}

    before = series(httpx.get(server.url + "/metrics", timeout=5).text)
    samples = [{"solution": f"\\boxed{{{4 if i % 3 else 5}}}", "ground_truth": "4"} for i in range(30)]
    body = httpx.post(server.url + "/v1/reward/batch", json={"samples": samples}, timeout=30).json()
    scores = [item["result"]["score"] for item in body["results"]]
    after = series(httpx.get(server.url + "/metrics", timeout=5).text)
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    assert scores.count(-1.0) == 10 and scores.count(1.0) == 20
    assert delta["count"] == 30 and delta["sum"] == sum(scores) == 10.0
    assert delta['bucket{le="-1.0",recipe="math"}'] == 10  # the -1 scores sit in the first bucket
