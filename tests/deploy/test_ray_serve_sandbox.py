"""Code rewards on Ray Serve (services/ray_serve.py): a GenRMSandbox deployment (CPU only, bubblewrap inside Ray's
worker process) beside the tiny-model judge, on the session's real local Ray cluster, real HTTP through Serve's
proxy: /run_code and recipe=code reach the sandbox replica, the rest the judge, a mixed batch is split by recipe."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray.serve")

from services.genrm_server.settings import ServerSettings
from services.ray_serve import RayServeArgs, app_builder, build_app, sandbox_settings

APP, PREFIX = "genrm-code", "/code"
ADD = "```python\nprint(sum(map(int, input().split())))\n```"
TESTS = json.dumps({"inputs": ["1 2\n", "20 22\n"], "outputs": ["3\n", "42\n"]})


def _code_sample(group: str, solution: str = ADD) -> dict:
    return {"recipe": "code", "solution": solution, "ground_truth": TESTS, "group_id": group}


def _math_sample(group: str, answer: str) -> dict:
    return {"recipe": "math", "question": "1+1?", "solution": f"\\boxed{{{answer}}}", "ground_truth": "2",
            "group_id": group}


# -- the application's shape, no cluster ------------------------------------------------------------


def test_sandbox_deployment_is_cpu_only_with_the_code_settings(tiny_model):
    args = RayServeArgs.model_validate({"model": str(tiny_model), "num_gpus": "1", "sandbox_replicas": "3",
                                        "sandbox_num_cpus": "4", "code_scoring": "binary", "math_mode": "answer"})
    ingress = build_app(args)._bound_deployment
    sandbox = ingress.init_kwargs["sandbox"]._bound_deployment
    assert sandbox.name == "GenRMSandbox"
    assert sandbox.ray_actor_options == {"num_cpus": 4.0, "num_gpus": 0}
    assert sandbox._deployment_config.num_replicas == 3
    code = ServerSettings(**sandbox.init_args[0])
    assert code.engine == "none" and code.recipe == "code" and code.sandbox_isolation == "bwrap"
    assert code.sandbox_workers == 4 and code.code_scoring == "binary" and code.math_mode == "answer"
    judge = ServerSettings(**ingress.init_args[0]._bound_deployment.init_args[0])
    assert judge.engine == "transformers" and judge.sandbox_isolation == "off"  # the judges run no code
    assert ingress.init_kwargs["max_body_bytes"] == code.max_body_bytes  # programs may exceed the judges' limit
    assert build_app({"model": str(tiny_model)})._bound_deployment.init_kwargs["sandbox"] is None  # off by default


def test_sandbox_settings_keep_an_explicit_unsandboxed_choice(tiny_model):
    trusted = sandbox_settings(ServerSettings(model=str(tiny_model), code_sandbox="none"), workers=2)
    assert trusted.sandbox_isolation == "none" and trusted.sandbox_workers == 2
    sized = sandbox_settings(ServerSettings(model=str(tiny_model), sandbox_workers=6), workers=2)
    assert sized.sandbox_workers == 6  # an explicit --sandbox-workers wins over the CPUs


# -- a real Serve application ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def code_app(ray_serve_url: str, tiny_model: Path) -> Iterator[str]:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    from ray import serve

    serve.run(app_builder({"model": str(tiny_model), "num_replicas": "1", "num_cpus": "1",
                           "ingress_num_cpus": "0.5", "sandbox_replicas": "1", "sandbox_num_cpus": "2",
                           "judge_max_tokens": "8"}), name=APP, route_prefix=PREFIX)
    url = ray_serve_url + PREFIX
    deadline = time.monotonic() + 60
    while httpx.get(url + "/v1/recipes", timeout=30).status_code != 200:  # the handles learn of the replicas
        assert time.monotonic() < deadline, "the code app did not answer within 60 s"
        time.sleep(0.5)
    yield url
    serve.delete(APP)


def _replica(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return resp.headers["x-genrm-replica"]


def test_run_code_and_code_rewards_reach_the_sandbox_replica(code_app):
    with httpx.Client(base_url=code_app, timeout=60) as client:
        judge = _replica(client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
        ran = client.post("/run_code", json={"code": "print(input()[::-1])", "language": "python", "stdin": "abc"})
        sandbox = _replica(ran)
        assert sandbox != judge
        assert ran.json()["status"] == "Success" and ran.json()["run_result"]["stdout"] == "cba\n"
        cpp = client.post("/run_code", json={"code": "#include <cstdio>\nint main(){std::puts(\"hi\");}",
                                             "language": "cpp"})
        assert _replica(cpp) == sandbox and cpp.json()["run_result"]["stdout"] == "hi\n", cpp.json()
        scored = client.post("/v1/reward", json=_code_sample("g1"))
        assert _replica(scored) == sandbox
        assert scored.json()["score"] == 1.0 and scored.json()["tests_passed"] == 2, scored.json()
        wrong = client.post("/v1/reward", json=_code_sample("g1", "```python\nprint(0)\n```")).json()
        assert wrong["score"] == 0.0 and wrong["tests_passed"] == 0, wrong
        math = client.post("/v1/reward", json=_math_sample("g2", "2"))
        assert _replica(math) == judge and math.json()["score"] == 1.0
        # OpenRLHF's route names the recipe in the query string
        prompt = "<|im_start|>user\nAdd two numbers.<|im_end|>\n<|im_start|>assistant\n"
        openrlhf = client.post("/get_reward?recipe=code", json={
            "query": [prompt + ADD + "<|im_end|>"], "prompts": [prompt], "labels": [TESTS]})
        assert _replica(openrlhf) == sandbox and openrlhf.json()["rewards"] == [1.0], openrlhf.json()


def test_a_mixed_batch_is_split_by_recipe_and_gathered_in_order(code_app):
    samples = [_code_sample("c1"), _math_sample("m1", "2"), _code_sample("c2", "```python\nprint(3)\n```"),
               _math_sample("m1", "3"), _code_sample("c1")]
    resp = httpx.post(code_app + "/v1/reward/batch", json={"samples": samples}, headers={"X-GenRM-Trace": "1"},
                      timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [item["index"] for item in body["results"]] == list(range(len(samples)))
    scores = [item["result"]["score"] for item in body["results"]]
    assert scores == [1.0, 1.0, 0.5, -1.0, 1.0]  # print(3) passes the first test of two
    replicas = body["replicas"]
    code_replicas = {replicas[i] for i, s in enumerate(samples) if s["recipe"] == "code"}
    math_replicas = {replicas[i] for i, s in enumerate(samples) if s["recipe"] == "math"}
    assert len(code_replicas) == len(math_replicas) == 1 and code_replicas != math_replicas
    assert "tests_passed" in body["results"][0]["result"] and "tests_passed" not in body["results"][1]["result"]


def test_recipes_list_both_kinds_of_replica(code_app):
    listed = httpx.get(code_app + "/v1/recipes", timeout=30).json()
    names = [r["name"] for r in listed["recipes"]]
    assert listed["default"] == "math"  # the judges' default, not the sandbox's
    assert "code" in names and "fapo" in names and len(names) == len(set(names))
