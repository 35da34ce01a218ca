"""services/genrm_server/recipes/overlong.py: DAPO overlong shaping is off unless a request asks for it."""

from __future__ import annotations

import pytest

from tests.support.reward_calls import post_reward


def test_overlong_shaping_is_opt_in(server):
    base = {"solution": "\\boxed{4}", "ground_truth": "4", "extra_info": {"response_length": 90}}
    plain = post_reward(server.url, **base).json()
    assert plain == {"score": 1.0, "acc": True, "pred": "4"}  # off by default: verl's DAPO manager adds it
    shaped = post_reward(server.url, **base, overlong={"max_resp_len": 100, "buffer_len": 20, "penalty_factor": 1.0})
    assert shaped.json()["overlong_penalty"] == pytest.approx(-0.5) and shaped.json()["score"] == pytest.approx(0.5)
    short = post_reward(server.url, **{**base, "extra_info": {"response_length": 50}},
                        overlong={"max_resp_len": 100, "buffer_len": 20})
    assert short.json()["overlong_penalty"] == 0.0
    missing = post_reward(server.url, solution="\\boxed{4}", ground_truth="4",
                          overlong={"max_resp_len": 100, "buffer_len": 20})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "extra_info.response_length"
