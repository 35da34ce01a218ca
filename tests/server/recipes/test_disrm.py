"""services/genrm_server/recipes/disrm.py: the disrm recipe end to end on real processes: a tiny
sequence-classification reward model written by ``genrm tiny-model --classifier`` and served by the transformers
engine (batched scoring must not change a score), and a fake vLLM classification upstream behind the openai engine.
"""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.local_stack import Child, free_port, wait_ready
from tests.conftest import start_server

QUESTION = "What is 2 + 2?"
SOLUTIONS = [f"Step {i}: 2 + 2 = {i}. The answer is \\boxed{{{i}}}." for i in range(16)]
MAX_LEN = 512


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-rm"
    result = subprocess.run([sys.executable, "-m", "services.cli", "tiny-model", str(out), "--classifier"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"LlamaForSequenceClassification"' in (out / "config.json").read_text()
    return out


@pytest.fixture(scope="module")
def rm_server(tiny_rm: Path, logs: Path):
    # No result cache: every request below really runs the model.
    child = start_server(tiny_rm, logs, "--max-wait-ms", "50", "--max-model-len", str(MAX_LEN),
                         "--reward-cache-size", "0", name="rm")
    yield child
    child.stop()


def _reward(url: str, **sample) -> httpx.Response:
    return httpx.post(url + "/v1/reward", json={"recipe": "disrm", **sample}, timeout=60)


def _score(url: str, solution: str) -> float:
    resp = _reward(url, question=QUESTION, solution=solution)
    assert resp.status_code == 200, resp.text
    return resp.json()["score"]


def _batch_metric(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    values = [re.search(rf'^genrm_server_batch_size_{k}\{{model_name="tiny-rm"\}} (\S+)', text, re.M) for k in
              ("count", "sum")]
    assert all(values), text
    return float(values[0].group(1)), float(values[1].group(1))  # type: ignore[union-attr]


def test_disrm_returns_the_raw_scalar(rm_server):
    resp = _reward(rm_server.url, question=QUESTION, solution=SOLUTIONS[4])
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert set(result) == {"score", "rm_score"}
    assert isinstance(result["score"], float) and math.isfinite(result["score"])
    assert result["score"] == result["rm_score"]
    assert _score(rm_server.url, SOLUTIONS[4]) == result["score"]  # deterministic
    assert _score(rm_server.url, SOLUTIONS[5]) != result["score"]  # and it reads the solution


def test_concurrent_scores_are_batched_and_match_one_by_one(rm_server):
    """16 concurrent samples of different lengths share padded forwards; each scores as it does alone."""
    solutions = [s + " Let me check." * (i % 5) for i, s in enumerate(SOLUTIONS)]
    alone = [_score(rm_server.url, s) for s in solutions]
    count0, sum0 = _batch_metric(rm_server.url)

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(
                client.post(rm_server.url + "/v1/reward", json={"recipe": "disrm", "question": QUESTION,
                                                                 "solution": s})
                for s in solutions
            ))

    responses = asyncio.run(together())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    batched = [r.json()["score"] for r in responses]
    assert batched == pytest.approx(alone, abs=1e-4)
    count1, sum1 = _batch_metric(rm_server.url)
    assert sum1 - sum0 == len(solutions)
    assert count1 - count0 < len(solutions)  # some forward scored several samples: batching happened


def test_batch_endpoint_and_openrlhf_logs(rm_server):
    samples = [{"recipe": "disrm", "question": QUESTION, "solution": s} for s in SOLUTIONS[:3]]
    items = httpx.post(rm_server.url + "/v1/reward/batch", json={"samples": samples}, timeout=60).json()["results"]
    assert [it["result"]["score"] for it in items] == pytest.approx(
        [_score(rm_server.url, s) for s in SOLUTIONS[:3]], abs=1e-4)
    prompt = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    body = httpx.post(rm_server.url + "/get_reward", params={"recipe": "disrm"}, timeout=60,
                      json={"query": [prompt + SOLUTIONS[0] + "<|im_end|>"], "prompts": [prompt]}).json()
    assert body["rewards"] == pytest.approx([_score(rm_server.url, SOLUTIONS[0])], abs=1e-4)
    assert body["extra_logs"] == {"rm_score": body["rewards"]}


@pytest.mark.parametrize(("sample", "param"), [
    ({"question": QUESTION, "solution": "2 + 2 " * MAX_LEN}, "solution"),  # longer than max_model_len
    ({"solution": "\\boxed{4}"}, "question"),
])
def test_disrm_bad_input_names_the_field(rm_server, sample, param):
    resp = _reward(rm_server.url, **sample)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and param in error["message"]


def test_reward_model_does_not_generate(rm_server):
    resp = httpx.post(rm_server.url + "/v1/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == "model" and "tiny-rm" in error["message"] and "disrm" in error["message"]
    assert _reward(rm_server.url, question=QUESTION, solution=SOLUTIONS[0]).status_code == 200  # still serving


def test_disrm_on_a_generative_model_is_rejected(server):
    resp = _reward(server.url, question=QUESTION, solution=SOLUTIONS[0])
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == "recipe" and "sequence-classification" in error["message"]


def test_disrm_is_listed(rm_server):
    listed = httpx.get(rm_server.url + "/v1/recipes", timeout=10).json()
    disrm = next(r for r in listed["recipes"] if r["name"] == "disrm")
    assert disrm["keys"] == ["score", "rm_score"]


# -- openai engine: a fake vLLM classification upstream ----------------------------------------------

FAKE_VLLM = '''
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()
BODIES = []


@app.get("/v1/models")
async def models():
    return {"object": "list", "data": [{"id": "fake-rm", "object": "model", "max_model_len": 4096}]}


@app.get("/ready")
async def ready():
    return {"status": "ready"}


@app.get("/bodies")
async def bodies():
    return BODIES


@app.post("/classify")  # vLLM serves it at the root, not under /v1
async def classify(request: Request):
    body = await request.json()
    BODIES.append(body)
    if any("<<reject>>" in t for t in body["input"]):
        return JSONResponse({"error": {"message": "input too long", "param": None}}, status_code=400)
    # the "raw logit" is a function of the text; sent in reverse order (clients must sort by index)
    data = [{"index": i, "label": "LABEL_0", "probs": [len(t) / 10 - 3], "num_classes": 1}
            for i, t in enumerate(body["input"])]
    return {"object": "list", "model": body["model"], "data": data[::-1], "usage": {}}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


@pytest.fixture(scope="module")
def fake_vllm(tmp_path_factory: pytest.TempPathFactory, logs: Path):
    script = tmp_path_factory.mktemp("fake-vllm") / "fake_vllm.py"
    script.write_text(FAKE_VLLM)
    port = free_port()
    log = open(logs / f"fake-vllm-{port}.log", "wb")  # noqa: SIM115 - closed by Child.stop
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=log, stderr=subprocess.STDOUT)
    child = Child("fake-vllm", f"http://127.0.0.1:{port}", proc, logs / f"fake-vllm-{port}.log", log)
    wait_ready(child, time.monotonic() + 60)
    yield child
    child.stop()


@pytest.fixture(scope="module")
def upstream_rm(fake_vllm: Child, logs: Path):
    child = start_server(fake_vllm.url, logs, "--engine", "openai", "--upstream-url", fake_vllm.url + "/v1",
                         name="upstream-rm")
    yield child
    child.stop()


def test_openai_engine_classifies_through_the_upstream(upstream_rm, fake_vllm):
    solution = "2 + 2 = 4"
    result = _reward(upstream_rm.url, question=QUESTION, solution=solution).json()
    text = QUESTION + "\n" + solution  # no tokenizer here: the upstream gets plain text
    assert result == {"score": pytest.approx(len(text) / 10 - 3), "rm_score": pytest.approx(len(text) / 10 - 3)}
    body = httpx.get(fake_vllm.url + "/bodies", timeout=5).json()[-1]
    assert body == {"model": "fake-rm", "input": [text], "use_activation": False}


def test_openai_engine_upstream_rejection_is_a_400(upstream_rm):
    resp = _reward(upstream_rm.url, question=QUESTION, solution="<<reject>>")
    assert resp.status_code == 400, resp.text
    assert "input too long" in resp.json()["error"]["message"]
