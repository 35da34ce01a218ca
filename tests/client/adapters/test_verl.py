"""The verl adapter: verl's own reward managers driving ``compute_score``/``compute_score_async`` against a real
router + 2 GenRM servers, the fixed key set (fallback included), settings precedence, event-loop safety.

The tests that build verl's managers need verl, which cannot be a ``dev`` dependency (verl pins
``transformers<5.11`` and pulls datasets, peft, wandb...): ``scripts/setup.sh`` installs it with ``--no-deps``
from ``scripts/verl-test-requirements.txt`` (nothing there touches torch); they are skipped without it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import trainer_client.adapters.verl as adapter
from services.local_stack import free_port
from trainer_client import GenRMError
from trainer_client.adapters.verl import BUILTIN_RECIPE_KEYS, compute_score, compute_score_async

ADAPTER_PATH = Path(adapter.__file__)
MATH_KEYS = {"score", "acc", "pred", "reward_source"}
FAPO_KEYS = MATH_KEYS | {"flawed_positive", "judge_verdict", "judge_ok", "judge_asked"}

# (solution, ground truth, expected score): correct, wrong, no answer at all, correct.
CASES = [
    ("2x + 3 = 11, so x = 4. The answer is \\boxed{4}.", "4", 1.0),
    ("2x + 3 = 11, so x = 5. The answer is \\boxed{5}.", "4", -1.0),
    ("I do not know.", "4", -1.0),
    ("The remainder is \\boxed{2}.", "2", 1.0),
]
QUESTIONS = ["Solve 2x + 3 = 11.", "Find the remainder when 2^{100} is divided by 7."]


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nobody listens


def score_all(**kwargs: Any) -> list[dict]:
    return [compute_score("math_dapo", sol, gt, {"index": i // 2, "question": QUESTIONS[i // 2]}, **kwargs)
            for i, (sol, gt, _) in enumerate(CASES)]


# -- against the real stack ----------------------------------------------------------------------------------------


def test_builtin_key_table_matches_the_servers_recipes(stack):
    listing = httpx.get(f"{stack.url}/v1/recipes", timeout=30).json()
    served = {r["name"]: tuple(r["keys"]) for r in listing["recipes"]}
    assert {"math", "fapo"} <= served.keys()
    for name, keys in served.items():
        if name in BUILTIN_RECIPE_KEYS:
            assert BUILTIN_RECIPE_KEYS[name] == keys, name
    assert set(served["fapo"]) | {"reward_source"} == FAPO_KEYS


def test_sync_scores_with_a_constant_key_set(stack):
    results = score_all(genrm_url=stack.url, recipe="math")
    assert [r["score"] for r in results] == [c[2] for c in CASES]
    assert all(set(r) == MATH_KEYS for r in results)
    assert [r["acc"] for r in results] == [True, False, False, True]
    assert [r["pred"] for r in results] == ["4", "5", "[INVALID]", "2"]
    assert {r["reward_source"] for r in results} == {"remote"}
    assert all(type(r["score"]) is float for r in results)


def test_async_matches_sync_and_survives_new_event_loops(stack):
    async def run() -> list[dict]:
        return list(await asyncio.gather(*(
            compute_score_async("math_dapo", sol, gt, {"index": i // 2}, genrm_url=stack.url, recipe="math")
            for i, (sol, gt, _) in enumerate(CASES))))

    first = asyncio.run(run())
    clients = [entry.client for _, entry in adapter._async.values() if entry.settings.url == stack.url]
    assert clients and all(c._http is None for c in clients), "asyncio.run's end must close the loop's client"
    second = asyncio.run(run())  # a new loop: the first loop's client is dropped, a new one made
    sync = score_all(genrm_url=stack.url, recipe="math")
    for results in (first, second):
        assert [(r["score"], r["acc"], r["pred"]) for r in results] == [(r["score"], r["acc"], r["pred"]) for r in sync]
        assert all(set(r) == MATH_KEYS and r["reward_source"] == "remote" for r in results)
    mine = [k for k, (_, entry) in adapter._async.items() if entry.settings.url == stack.url]
    assert len(mine) <= 1, "clients of finished loops must not pile up"


def test_one_client_per_settings(stack):
    before = len(adapter._sync)
    score_all(genrm_url=stack.url, recipe="math")
    score_all(genrm_url=stack.url, recipe="math", some_verl_kwarg=1)  # unrelated kwargs: the same client
    assert len(adapter._sync) - before <= 1
    score_all(genrm_url=stack.url, recipe="math", timeout_s=123)
    assert len(adapter._sync) - before <= 2


@pytest.mark.timeout(120)
def test_sync_call_from_inside_a_running_loop_does_not_deadlock(stack):
    """verl's reward loop runs a sync reward function in executor threads of its running loop."""
    kwargs = {"genrm_url": stack.url, "recipe": "math"}

    async def main() -> tuple[dict, list[dict]]:
        inline = compute_score("math_dapo", CASES[0][0], "4", None, **kwargs)  # blocks this loop's own thread
        threaded = await asyncio.gather(*(
            asyncio.to_thread(compute_score, "math_dapo", sol, gt, {"index": i}, **kwargs)
            for i, (sol, gt, _) in enumerate(CASES * 4)))
        loop = asyncio.get_running_loop()  # what verl does: loop.run_in_executor(None, lambda: fn(...))
        executor = await loop.run_in_executor(None, lambda: compute_score("math_dapo", CASES[1][0], "4", {}, **kwargs))
        return inline, [*threaded, executor]

    inline, rest = asyncio.run(main())
    assert inline["score"] == 1.0
    assert [r["score"] for r in rest] == [c[2] for c in CASES * 4] + [-1.0]


def test_kwargs_override_the_environment(stack, monkeypatch):
    monkeypatch.setenv("GENRM_URL", dead_url())
    monkeypatch.setenv("GENRM_RECIPE", "fapo")
    for key in ("genrm_url", "url"):
        result = compute_score("math_dapo", CASES[0][0], "4", None, recipe="math", timeout_s=30, **{key: stack.url})
        assert result["reward_source"] == "remote" and set(result) == MATH_KEYS
    # Environment only: router and recipe from GENRM_URL / GENRM_RECIPE.
    monkeypatch.setenv("GENRM_URL", stack.url)
    monkeypatch.setenv("GENRM_RECIPE", "math")
    assert compute_score("math_dapo", CASES[0][0], "4")["score"] == 1.0
    monkeypatch.delenv("GENRM_URL")
    with pytest.raises(ValueError, match="GENRM_URL"):
        compute_score("math_dapo", CASES[0][0], "4")


def test_fapo_key_set_from_the_server_and_from_the_fallback_agree(stack):
    # Wrong answer, or a test split: the judge is not asked, so the tiny model's noise plays no part.
    info = {"index": 0, "question": QUESTIONS[0], "split": "train"}
    wrong = compute_score("math_dapo", CASES[1][0], "4", info, genrm_url=stack.url, recipe="fapo")
    test_split = compute_score("math_dapo", CASES[0][0], "4", {**info, "split": "test"}, genrm_url=stack.url,
                               recipe="fapo")
    fallback = compute_score("math_dapo", CASES[0][0], "4", info, genrm_url=dead_url(), recipe="fapo",
                             on_failure="rule_only", timeout_s=1)
    assert set(wrong) == set(test_split) == set(fallback) == FAPO_KEYS
    assert (wrong["score"], wrong["judge_asked"], wrong["reward_source"]) == (-1.0, False, "remote")
    assert (test_split["score"], test_split["judge_asked"]) == (1.0, False)
    assert fallback == {"score": 1.0, "acc": True, "pred": "4", "flawed_positive": False, "judge_verdict": None,
                        "judge_ok": False, "judge_asked": False, "reward_source": "fallback"}


def test_loading_the_file_by_path_as_verl_does_gives_the_package_functions():
    """verl's ``custom_reward_function.path`` execs the file as an anonymous module (not in ``sys.modules``):
    it must load (no ``@dataclass`` there), share the package's client cache and pickle by reference (the
    ``remote`` manager ships the function to Ray workers)."""
    import importlib.util
    import pickle
    from functools import partial

    spec = importlib.util.spec_from_file_location(f"custom_module_{hash(str(ADAPTER_PATH))}", ADAPTER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.compute_score is compute_score and module.compute_score_async is compute_score_async
    fn = pickle.loads(pickle.dumps(partial(module.compute_score, recipe="math")))
    assert fn.func is compute_score


# -- failures --------------------------------------------------------------------------------------------------------


def test_rule_only_with_a_dead_router_gives_flagged_fallbacks_with_the_same_keys(stack):
    remote = score_all(genrm_url=stack.url, recipe="math")
    fallback = score_all(genrm_url=dead_url(), recipe="math", on_failure="rule_only", timeout_s=1)
    assert all(set(r) == MATH_KEYS and r["reward_source"] == "fallback" for r in fallback)
    assert [(r["score"], r["acc"], r["pred"]) for r in fallback] == [(r["score"], r["acc"], r["pred"]) for r in remote]


async def test_rule_only_async_and_raise_by_default():
    url = dead_url()
    result = await compute_score_async("math_dapo", CASES[0][0], "4", None, genrm_url=url, on_failure="rule_only",
                                       timeout_s=1)
    assert set(result) == MATH_KEYS and result["reward_source"] == "fallback" and result["score"] == 1.0
    with pytest.raises(GenRMError) as err:
        await compute_score_async("math_dapo", CASES[0][0], "4", None, genrm_url=url, timeout_s=1)
    assert url in str(err.value)
    with pytest.raises(GenRMError):
        compute_score("math_dapo", CASES[0][0], "4", None, genrm_url=url, timeout_s=1)
    with pytest.raises(ValueError, match="on_failure"):
        compute_score("math_dapo", CASES[0][0], "4", None, genrm_url=url, on_failure="none")


# -- what is sent, against a recording HTTP server ---------------------------------------------------------------


CUSTOM_RECIPE = {"name": "my_judge", "keys": ["score", "parsed", "judge_ok", "judge_asked"]}


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # /v1/recipes
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, None))  # type: ignore[attr-defined]
        self._reply({"default": "math", "recipes": [{"name": "math", "keys": ["score", "acc", "pred"]},
                                                       CUSTOM_RECIPE]})

    def do_POST(self) -> None:  # /v1/reward: the keys a recipe has, plus ones the adapter must drop
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))  # type: ignore[attr-defined]
        if body["recipe"] == "my_judge":
            self._reply({"score": 0.5, "parsed": "7", "judge_ok": True, "judge_asked": True, "critique": "..."})
        else:
            self._reply({"score": 1.0, "acc": True, "pred": "4", "critique": "...", "overlong_penalty": 0.0})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_request_carries_question_group_and_plain_json_and_no_overlong(recorder):
    url, seen = recorder
    extra_info = {"index": np.int64(7), "problem": "What is 2 + 2?", "split": "train", "weights": np.arange(3),
                  "num_turns": None, "rollout_reward_scores": {}}
    result = compute_score(np.str_("math_dapo"), "so \\boxed{4}", np.int64(4), extra_info, genrm_url=url,
                           recipe="math", api_key="secret-key", reward_router_address="10.0.0.1:8000",
                           reward_model_tokenizer=object(), max_resp_len=1024,
                           overlong_buffer_cfg={"enable": True, "len": 512})
    assert result == {"score": 1.0, "acc": True, "pred": "4", "reward_source": "remote"}  # extra keys dropped
    path, headers, body = seen[-1]
    assert path == "/v1/reward"
    assert headers["authorization"] == "Bearer secret-key"
    assert body == {"recipe": "math", "data_source": "math_dapo", "question": "What is 2 + 2?",
                    "solution": "so \\boxed{4}", "ground_truth": 4, "group_id": 7,
                    "extra_info": {"index": 7, "problem": "What is 2 + 2?", "split": "train", "weights": [0, 1, 2],
                                   "num_turns": None, "rollout_reward_scores": {}}}


def test_group_id_alternatives_and_none(recorder):
    url, seen = recorder
    for info, group in [({"uid": "u-1"}, "u-1"), ({"group_id": 3}, 3), ({}, None), (None, None)]:
        compute_score("ds", "\\boxed{4}", "4", info, url=url)
        assert seen[-1][2]["group_id"] == group
        assert seen[-1][2]["question"] is None


async def test_custom_recipe_keys_come_from_the_server_or_recipe_keys(recorder, monkeypatch):
    url, seen = recorder
    monkeypatch.setenv("GENRM_API_KEY", "env-key")
    result = compute_score("ds", "x", "4", None, genrm_url=url, recipe="my_judge")
    assert result == {"score": 0.5, "parsed": "7", "judge_ok": True, "judge_asked": True, "reward_source": "remote"}
    assert await compute_score_async("ds", "x", "4", None, genrm_url=url, recipe="my_judge") == result
    assert [p for p, _, _ in seen].count("/v1/recipes") == 2  # once per client (sync, async), not per sample
    assert all(h["authorization"] == "Bearer env-key" for _, h, _ in seen)
    # A custom recipe whose router is down: its keys cannot be known, unless given.
    with pytest.raises(GenRMError, match="recipe_keys"):
        compute_score("ds", "x", "4", None, genrm_url=dead_url(), recipe="my_judge", on_failure="rule_only",
                      timeout_s=1)
    fallback = compute_score("ds", "\\boxed{4}", "4", None, genrm_url=dead_url(), recipe="my_judge",
                             on_failure="rule_only", timeout_s=1, recipe_keys=["parsed", "judge_ok", "judge_asked"])
    assert fallback == {"score": 1.0, "parsed": None, "judge_ok": False, "judge_asked": False,
                        "reward_source": "fallback"}
    with pytest.raises(ValueError, match="not served"):
        compute_score("ds", "x", "4", None, genrm_url=url, recipe="nope")


# -- verl's own reward managers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    """The tiny model's tokenizer; the tests that use it need verl."""
    pytest.importorskip("verl", reason="verl is not installed (see this module's docstring)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def make_batch(tokenizer: Any, response_pad: int = 3) -> Any:
    """4 rollouts (2 prompts x 2), laid out as verl's rollout does: left-padded prompts, right-padded responses."""
    import torch
    from verl import DataProto

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompts = [tokenizer.encode(QUESTIONS[i // 2]) for i in range(len(CASES))]
    responses = [tokenizer.encode(sol) for sol, _, _ in CASES]
    width_p, width_r = max(map(len, prompts)), max(map(len, responses)) + response_pad
    p_ids = torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts])
    r_ids = torch.tensor([r + [pad] * (width_r - len(r)) for r in responses])
    mask = torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (width_r - len(r))
                         for p, r in zip(prompts, responses, strict=True)])
    non_tensors = {
        "data_source": np.array(["math_dapo"] * len(CASES), dtype=object),
        "reward_model": np.array([{"ground_truth": gt, "style": "rule"} for _, gt, _ in CASES], dtype=object),
        "extra_info": np.array([{"index": np.int64(i // 2), "question": QUESTIONS[i // 2], "split": "train"}
                                for i in range(len(CASES))], dtype=object),
    }
    tensors = {"prompts": p_ids, "responses": r_ids, "input_ids": torch.cat([p_ids, r_ids], 1), "attention_mask": mask}
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors), [len(r) for r in responses]


def reward_config(stack_url: str, fn: str, manager: str = "naive", path: str | None = None) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.create({"reward": {
        "reward_manager": {"source": "register", "name": manager},
        "custom_reward_function": {"path": path or str(ADAPTER_PATH), "name": fn,
                                   "reward_kwargs": {"genrm_url": stack_url, "recipe": "math"}},
        "reward_kwargs": {},
    }})


def expected_tensor(shape: Any, lengths: list[int], rewards: list[float]) -> Any:
    import torch

    out = torch.zeros(shape, dtype=torch.float32)
    for i, (n, r) in enumerate(zip(lengths, rewards, strict=True)):
        out[i, n - 1] = r
    return out


def test_verl_legacy_naive_manager(stack, tokenizer):
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager import NaiveRewardManager

    fn = get_custom_reward_fn(reward_config(stack.url, "compute_score"))  # loads the file by path, adds kwargs
    data, lengths = make_batch(tokenizer)
    out = NaiveRewardManager(tokenizer, num_examine=0, compute_score=fn)(data, return_dict=True)
    scores = [c[2] for c in CASES]
    assert out["reward_tensor"].equal(expected_tensor(data.batch["responses"].shape, lengths, scores))
    info = out["reward_extra_info"]
    assert set(info) == MATH_KEYS and all(len(v) == len(CASES) for v in info.values())
    assert info["score"] == scores and info["acc"] == [True, False, False, True]
    assert set(info["reward_source"]) == {"remote"}


def test_verl_legacy_dapo_manager_adds_the_overlong_penalty_itself(stack, tokenizer):
    import torch
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager import DAPORewardManager

    data, lengths = make_batch(tokenizer)
    max_resp_len = data.batch["responses"].shape[1]
    buffer = OmegaConf.create({"enable": True, "len": max_resp_len // 2, "penalty_factor": 1.0, "log": True})
    fn = get_custom_reward_fn(reward_config(stack.url, "compute_score", path=f"pkg://{adapter.__name__}"))
    manager = DAPORewardManager(tokenizer, num_examine=0, compute_score=fn, max_resp_len=max_resp_len,
                                overlong_buffer_cfg=buffer)
    out = manager(data, return_dict=True)
    scores = [c[2] for c in CASES]
    penalties = [min(-(n - (max_resp_len - buffer.len)) / buffer.len, 0) for n in lengths]
    assert any(p < 0 for p in penalties), "the batch must exercise the penalty"
    info = out["reward_extra_info"]
    assert info["score"] == scores  # the server's scores carry no shaping ...
    assert info["overlong_reward"] == pytest.approx(penalties)  # ... verl adds it once
    expected = expected_tensor(data.batch["responses"].shape, lengths, [s + p for s, p in zip(scores, penalties,
                                                                                              strict=True)])
    assert torch.allclose(out["reward_tensor"], expected)
    assert set(info) == MATH_KEYS | {"overlong_reward", "overlong"}


@pytest.mark.parametrize("manager", ["naive", "dapo", "rate_limited"])
@pytest.mark.parametrize("fn", ["compute_score", "compute_score_async"])
def test_verl_reward_loop_managers(stack, tokenizer, manager, fn, monkeypatch):
    """verl >= 0.9's reward loop: the sync function runs in the loop's executor, the async one is awaited."""
    import inspect

    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager

    # rate_limited keeps a class-level semaphore bound to the first event loop of the process (verl runs one
    # loop per reward worker); each test here runs its own loop, so let the class initialise again.
    monkeypatch.setattr(get_reward_manager_cls(manager), "_class_initialized", False)

    config = reward_config(stack.url, fn, manager)
    assert inspect.iscoroutinefunction(get_custom_reward_fn(config)) == (fn == "compute_score_async")
    data, lengths = make_batch(tokenizer)

    async def run() -> tuple[Any, list[dict]]:
        reward_manager = load_reward_manager(config, tokenizer)  # inside the loop: it keeps get_event_loop()
        outs = await asyncio.gather(*(reward_manager.run_single(data[i:i + 1]) for i in range(len(data))))
        return reward_manager, list(outs)

    reward_manager, outs = asyncio.run(run())
    scores = [o["reward_score"] for o in outs]
    assert scores == [c[2] for c in CASES]
    rm_scores = reward_manager.assemble_rm_scores(data, scores)
    assert rm_scores.equal(expected_tensor(data.batch["responses"].shape, lengths, scores))
    # What RewardLoopManager does next: the first sample's keys, then info[key] for every sample.
    infos = [o["reward_extra_info"] for o in outs]
    keys = list(infos[0])
    assert set(keys) == MATH_KEYS
    columns = {k: np.array([info[k] for info in infos]) for k in keys}
    assert list(columns["reward_source"]) == ["remote"] * len(CASES)


def test_the_example_config_works(stack, tokenizer):
    """examples/verl/genrm_reward.yaml, merged into verl 0.9.1's own reward config, with the router's URL."""
    import verl.trainer.config
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager import NaiveRewardManager

    example = OmegaConf.load(Path(__file__).parents[3] / "examples" / "verl" / "genrm_reward.yaml")
    defaults = OmegaConf.load(Path(verl.trainer.config.__file__).parent / "reward" / "reward.yaml")
    config = OmegaConf.merge({"reward": defaults}, example)
    config.reward.custom_reward_function.reward_kwargs.genrm_url = stack.url
    data, _ = make_batch(tokenizer)
    out = NaiveRewardManager(tokenizer, num_examine=0, compute_score=get_custom_reward_fn(config))(data, True)
    assert out["reward_extra_info"]["score"] == [c[2] for c in CASES]


@pytest.mark.timeout(240)
def test_verl_remote_manager_in_ray_workers(stack, tokenizer, ray_cluster):
    """The reward loop's ``remote`` manager pickles the function (loaded by file path) into Ray actor processes."""
    import ray
    from verl.trainer.ppo.reward import load_reward_manager

    config = reward_config(stack.url, "compute_score", "remote")
    config.reward.num_workers = 1
    data, _ = make_batch(tokenizer)
    assert ray.is_initialized()  # the session's cluster (tests/conftest.py)

    async def run() -> list[dict]:
        reward_manager = load_reward_manager(config, tokenizer)  # starts its Ray actors
        return list(await asyncio.gather(*(reward_manager.run_single(data[i:i + 1]) for i in range(len(data)))))

    outs = asyncio.run(run())
    assert [o["reward_score"] for o in outs] == [c[2] for c in CASES]
    assert all(set(o["reward_extra_info"]) == MATH_KEYS for o in outs)
    assert {o["reward_extra_info"]["reward_source"] for o in outs} == {"remote"}


def _router_batch_requests(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('genrm_router_requests_total{route="/v1/reward/batch"'))


def test_verl_legacy_batch_manager_scores_the_batch_in_one_call(stack, tokenizer):
    """verl's own BatchRewardManager (``reward_manager=batch``) with ``compute_score_batch``: the same keys and
    rewards as per-sample scoring, in one client call to /v1/reward/batch carrying whole groups."""
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager import BatchRewardManager

    fn = get_custom_reward_fn(reward_config(stack.url, "compute_score_batch"))
    data, lengths = make_batch(tokenizer)
    before = _router_batch_requests(stack.url)
    out = BatchRewardManager(tokenizer, num_examine=0, compute_score=fn)(data, return_dict=True)
    assert _router_batch_requests(stack.url) - before == 1  # the whole batch: one call
    scores = [c[2] for c in CASES]
    assert out["reward_tensor"].equal(expected_tensor(data.batch["responses"].shape, lengths, scores))
    info = out["reward_extra_info"]
    assert set(info) == MATH_KEYS and all(len(v) == len(CASES) for v in info.values())
    assert info["acc"] == [True, False, False, True] and set(info["reward_source"]) == {"remote"}


def test_batch_function_keeps_the_failure_policy(stack):
    sources, solutions, truths = ["math_dapo"] * 2, [CASES[0][0], CASES[1][0]], ["4", "4"]
    infos = [{"index": 0}, {"index": 0}]
    with pytest.raises(GenRMError):
        adapter.compute_score_batch(sources, solutions, truths, infos, genrm_url=dead_url(), timeout_s=1,
                                    recipe_keys=["acc", "pred"])
    results = adapter.compute_score_batch(sources, solutions, truths, infos, genrm_url=dead_url(), timeout_s=1,
                                          on_failure="rule_only", recipe_keys=["acc", "pred"])
    assert [r["score"] for r in results] == [1.0, -1.0]
    assert all(set(r) == MATH_KEYS and r["reward_source"] == "fallback" for r in results)
