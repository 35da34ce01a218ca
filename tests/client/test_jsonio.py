"""trainer_client/jsonio.py: request bodies encode the same with orjson or pydantic-core (numpy values included).
``is_json`` and exact big integers are checked in test_reward_client.py, beside the client that reads answers."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("fast", [True, False])
def test_request_bodies_encode_numpy_and_anything_pydantic_takes(fast, monkeypatch):
    """orjson when installed (numpy values as verl's batches carry them), pydantic-core otherwise or for what
    orjson refuses; both give the same JSON."""
    import numpy as np
    from pydantic_core import from_json

    from trainer_client import jsonio

    if not fast:
        monkeypatch.setattr(jsonio, "orjson", None)
    elif jsonio.orjson is None:
        pytest.skip("orjson is not installed")
    body = {"samples": [{"solution": "\\boxed{4}\n", "extra_info": {"index": np.int64(3), "w": np.float32(0.5)}}]}
    assert from_json(jsonio.dumps(body)) == {
        "samples": [{"solution": "\\boxed{4}\n", "extra_info": {"index": 3, "w": 0.5}}]}
    assert from_json(jsonio.dumps({"tags": {"a"}})) == {"tags": ["a"]}  # orjson refuses sets
