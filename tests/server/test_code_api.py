"""Code rewards behind one router URL, with real processes: a judge server (tiny model) and a CPU-only sandbox
server (``genrm up --sandbox-replicas``). The router sends ``recipe=code`` and ``/run_code`` to the sandbox and
judge recipes to the judge; verl's own ``sandbox_fusion`` client and the ``code`` recipe both score through it;
every hostile program of ``tests/support/sandbox_attacks.py`` is contained through both routes while the server
keeps serving others; bad input is a 400 naming the field."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.local_stack import LocalStack
from tests.sandbox.conftest import needs_bwrap
from tests.sandbox.test_security import PROJECT_FILE, LoopbackServer, host_processes_with
from tests.support.sandbox_attacks import ATTACKS, Attack, AttackContext
from trainer_client import AsyncRewardClient, RewardClient

pytestmark = needs_bwrap

SECRET_VAR = "GENRM_SERVER_TEST_SECRET"
ADD = "```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n```"
STDIO = {"inputs": ["1 2\n", "10 20\n", "-5 5\n"], "outputs": ["3\n", "30\n", "0\n"]}


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackContext]:
    server = LoopbackServer()
    secret = "sk-" + secrets.token_hex(16)
    models = tmp_path_factory.mktemp("model-dir")
    model_file = models / "weights.safetensors"
    model_file.write_text(f"weights {secret}")
    host_dir = tmp_path_factory.mktemp("host-dir")
    host_dir.chmod(0o777)
    ctx = AttackContext(port=server.port, secret=secret, project_file=str(PROJECT_FILE), model_file=str(model_file),
                        host_dir=str(host_dir), marker="genrm-attack-" + secrets.token_hex(6))
    yield ctx
    server.close()
    assert server.accepted == 0, "a sandboxed program reached the host's loopback server"


@pytest.fixture(scope="module")
def code_stack(tiny_model: Path, logs: Path, context: AttackContext) -> Iterator[LocalStack]:
    """Router + 1 judge + 1 sandbox server; the servers' environment holds a secret, as an API key would."""
    os.environ[SECRET_VAR] = context.secret  # inherited by every child
    try:
        with LocalStack(1, tiny_model, log_dir=logs / "code-stack", sandbox_replicas=1) as stack:
            yield stack
    finally:
        os.environ.pop(SECRET_VAR, None)


def _reward(url: str, **sample: object) -> httpx.Response:
    return httpx.post(url + "/v1/reward", json=sample, timeout=180)


# -- routing by recipe --------------------------------------------------------------------------------------


def test_the_router_lists_both_pools_recipes(code_stack: LocalStack) -> None:
    listed = httpx.get(code_stack.url + "/v1/recipes", timeout=10).json()
    names = {r["name"] for r in listed["recipes"]}
    assert {"code", "fapo", "math"} <= names
    assert listed["default"] == "math"  # the judges' default: a recipe-less reward goes to them
    code = next(r for r in listed["recipes"] if r["name"] == "code")
    assert code["settings"]["sandbox"] == "bwrap"
    assert [m["id"] for m in httpx.get(code_stack.url + "/v1/models", timeout=10).json()["data"]] == ["tiny"]


def test_code_goes_to_the_sandbox_and_judge_recipes_to_the_judge(code_stack: LocalStack) -> None:
    scored = _reward(code_stack.url, recipe="code", solution=ADD, ground_truth=STDIO)
    assert scored.status_code == 200, scored.text
    assert scored.json() == {"score": 1.0, "acc": True, "pass_rate": 1.0, "tests_passed": 3, "tests_total": 3,
                             "status": "passed"}
    math = _reward(code_stack.url, solution="\\boxed{4}", ground_truth="4")  # no recipe: the judges' default
    assert math.status_code == 200 and set(math.json()) == {"score", "acc", "pred"}
    fapo = _reward(code_stack.url, recipe="fapo", question="2+2?", solution="\\boxed{4}", ground_truth="4")
    assert fapo.status_code == 200 and "judge_asked" in fapo.json()
    chat = httpx.post(code_stack.url + "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, timeout=60)
    assert chat.status_code == 200 and chat.json()["model"] == "tiny"  # never the model-less sandbox


def test_a_mixed_batch_is_split_by_recipe(code_stack: LocalStack) -> None:
    samples = [{"recipe": "code", "solution": ADD, "ground_truth": STDIO, "group_id": "c"},
               {"recipe": "math", "solution": "\\boxed{4}", "ground_truth": "4", "group_id": "m"},
               {"recipe": "code", "solution": "```python\nprint(0)\n```", "ground_truth": json.dumps(STDIO)}]
    results = httpx.post(code_stack.url + "/v1/reward/batch", json={"samples": samples}, timeout=60).json()["results"]
    assert [r["result"]["score"] for r in results] == [1.0, 1.0, pytest.approx(1 / 3)]
    with RewardClient(code_stack.url) as client:  # the client's keyed chunks of mixed recipes too
        assert [r["score"] for r in client.score_batch(samples)] == [1.0, 1.0, pytest.approx(1 / 3)]


def test_the_client_and_binary_scoring(code_stack: LocalStack) -> None:
    wrong_first = "```python\na, b = map(int, input().split())\nprint(a + b if a != 1 else 0)\n```"

    async def run() -> list:
        async with AsyncRewardClient(code_stack.url, recipe="code") as client:
            return await client.score_batch([
                {"solution": wrong_first, "ground_truth": STDIO, "group_id": 1},
                {"solution": wrong_first, "ground_truth": STDIO, "group_id": 1, "extra_info": {"scoring": "binary"}},
            ])

    continuous, binary = asyncio.run(run())
    assert (continuous["score"], continuous["tests_passed"], continuous["status"]) == (
        pytest.approx(2 / 3), 2, "wrong_answer")
    assert (binary["score"], binary["tests_passed"], binary["status"]) == (0.0, 0, "wrong_answer")


def test_verl_adapter_and_genrm_score_with_the_code_recipe(code_stack: LocalStack, tmp_path: Path) -> None:
    from trainer_client.adapters.verl import compute_score, compute_score_batch

    result = compute_score("codecontests", ADD, json.dumps(STDIO), {"index": 3}, genrm_url=code_stack.url,
                           recipe="code")
    assert result == {"score": 1.0, "acc": True, "pass_rate": 1.0, "tests_passed": 3, "tests_total": 3,
                      "status": "passed", "reward_source": "remote"}
    batch = compute_score_batch(["apps", "apps"], [ADD, "no code here"], [STDIO, STDIO], [{}, {}],
                                genrm_url=code_stack.url, recipe="code")
    assert [(r["score"], r["status"]) for r in batch] == [(1.0, "passed"), (0.0, "no_code")]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"solution": ADD, "ground_truth": STDIO}) + "\n")
    done = subprocess.run([sys.executable, "-m", "services.cli", "score", str(src), "-o", str(out), "--url",
                           code_stack.url, "--recipe", "code"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["reward"]["status"] == "passed"


def test_openrlhf_and_slime_routes_with_the_code_recipe(code_stack: LocalStack) -> None:
    """The trainers' own protocols name the recipe in the query: the router sends them to the sandbox."""
    prompt = "<|im_start|>user\nAdd two numbers.<|im_end|>\n<|im_start|>assistant\n"
    wrong = "```python\nprint(0)\n```"
    body = {"query": [prompt + ADD + "<|im_end|>", prompt + wrong + "<|im_end|>"], "prompts": [prompt, prompt],
            "labels": [json.dumps(STDIO), json.dumps(STDIO)]}
    answer = httpx.post(code_stack.url + "/get_reward?recipe=code", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rewards"] == [1.0, pytest.approx(1 / 3)]
    assert answer.json()["extra_logs"]["tests_total"] == [3.0, 3.0]
    slime = httpx.post(code_stack.url + "/slime/reward?recipe=code",
                       json={"prompt": prompt, "response": ADD, "label": json.dumps(STDIO)}, timeout=60)
    assert slime.status_code == 200 and slime.json()["score"] == 1.0 and slime.json()["status"] == "passed"


def test_verl_sandbox_fusion_client_through_the_router(code_stack: LocalStack) -> None:
    """verl 0.9.1's own client with ``reward.sandbox_fusion.url=http://ROUTER/run_code``, unchanged."""
    pytest.importorskip("verl", reason="verl is not installed")
    from verl.utils.reward_score.sandbox_fusion import compute_score

    url = code_stack.url + "/run_code"
    score, meta = compute_score(url, None, 1024, ADD, STDIO, continuous=True, timeout=10)
    assert score == 1.0, meta
    wrong = "```python\na, b = map(int, input().split())\nprint(a + b if a > 0 else 1)\n```"
    score, meta = compute_score(url, None, 1024, wrong, STDIO, continuous=True, timeout=10)
    assert score == pytest.approx(2 / 3), meta
    calls = {"fn_name": "add", "inputs": ["1\n2", "[1]\n[2]"], "outputs": ["3", "[1, 2]"]}
    method = "```python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n```"
    score, meta = compute_score(url, None, 1024, method, calls, continuous=True, timeout=10)
    assert score == 1.0, meta


# -- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "param"), [
    ({"code": "print(1)", "language": "cobol"}, "language"),
    ({"code": "print(1)", "language": "python", "run_timeout": 3600}, "run_timeout"),
    ({"code": "print(1)", "language": "python", "memory_limit_MB": 10 ** 6}, "memory_limit_MB"),
    ({"code": "print(1)", "language": "python", "files": {"a.txt": "not base64!"}}, "files"),
    ({"language": "python"}, "code"),
])
def test_run_code_refusals_name_the_field(code_stack: LocalStack, body: dict, param: str) -> None:
    answer = httpx.post(code_stack.url + "/run_code", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


@pytest.mark.parametrize(("sample", "param"), [
    ({"ground_truth": {"inputs": ["1"]}}, "ground_truth.outputs"),
    ({"ground_truth": "not json"}, "ground_truth"),
    ({"ground_truth": None}, "ground_truth"),
    ({"ground_truth": STDIO, "extra_info": {"language": "cobol"}}, "extra_info.language"),
    ({"ground_truth": STDIO, "extra_info": {"run_timeout": 3600}}, "extra_info.run_timeout"),
    ({"ground_truth": STDIO, "extra_info": {"scoring": "sometimes"}}, "extra_info.scoring"),
])
def test_code_recipe_refusals_name_the_field(code_stack: LocalStack, sample: dict, param: str) -> None:
    answer = _reward(code_stack.url, recipe="code", solution=ADD, **sample)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_50_mb_program_is_refused_naming_the_field(code_stack: LocalStack) -> None:
    program = "x = 1\n" * (50 * 1024 * 1024 // 6)
    answer = httpx.post(code_stack.url + "/run_code", json={"code": program, "language": "python"}, timeout=120)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "code", answer.text[:300]
    answer = _reward(code_stack.url, recipe="code", solution=f"```python\n{program}```", ground_truth=STDIO)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "solution", answer.text[:300]


# -- hostile programs through both routes -------------------------------------------------------------------


def _run_timeout(attack: Attack) -> float:
    limits = attack.limits
    return min(limits.get("wall_s", 6.0), limits.get("cpu_s", 6.0))


def _memory(attack: Attack) -> int:
    return attack.limits.get("memory_mb", 1024)


# The recipe's status for each raw run status (the test's expected output is never printed: "ok" is a
# wrong answer), and /run_code's run_result for it.
RECIPE_STATUS = {"ok": "wrong_answer", "runtime_error": "runtime_error", "timeout": "timeout",
                 "memory_limit": "memory_limit", "output_limit": "output_limit", "compile_error": "compile_error"}


def _check_run_code(attack: Attack, ctx: AttackContext, answer: dict) -> None:
    run = answer["run_result"] or answer["compile_result"]
    detail = json.dumps(answer)[:3000]
    assert answer["status"] != "SandboxError", detail
    out, err = run.get("stdout") or "", run.get("stderr") or ""
    if attack.status == "ok":
        assert (answer["status"], run["status"], run["return_code"]) == ("Success", "Finished", 0), detail
    elif attack.status == "timeout":
        assert (answer["status"], run["status"]) == ("Failed", "TimeLimitExceeded"), detail
    else:
        assert answer["status"] == "Failed" and run["return_code"] != 0, detail
    for text in attack.expect:
        assert text in out, f"{attack.name}: {text!r} missing: {detail}"
    for text in attack.forbidden_texts(ctx):
        assert text not in out and text not in err, f"{attack.name}: {text!r} leaked: {detail}"


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained_through_both_routes(code_stack: LocalStack, context: AttackContext,
                                                 attack: Attack) -> None:
    if attack.language == "cpp" and shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH: C++ cannot be compiled")
    program = attack.program(context)
    answer = httpx.post(code_stack.url + "/run_code", json={
        "code": program, "language": attack.language, "stdin": attack.stdin, "run_timeout": _run_timeout(attack),
        "memory_limit_MB": _memory(attack)}, timeout=120)
    assert answer.status_code == 200, answer.text
    _check_run_code(attack, context, answer.json())
    fence = "cpp" if attack.language == "cpp" else "python"
    scored = _reward(code_stack.url, recipe="code", solution=f"```{fence}\n{program}\n```",
                     ground_truth={"inputs": [attack.stdin], "outputs": ["never printed"]},
                     extra_info={"language": attack.language, "run_timeout": _run_timeout(attack),
                                 "memory_limit_MB": _memory(attack)})
    assert scored.status_code == 200, scored.text
    assert scored.json()["status"] == RECIPE_STATUS[attack.status], scored.text
    assert not list(Path(context.host_dir).iterdir()), f"{attack.name} wrote into a host directory"
    assert host_processes_with(context.marker) == [], f"{attack.name}: a process outlived its run"
    # The server keeps serving: a well-behaved sample right after scores as it should.
    assert _reward(code_stack.url, recipe="code", solution=ADD, ground_truth=STDIO).json()["score"] == 1.0


def test_attacks_all_at_once_lose_no_other_request(code_stack: LocalStack, context: AttackContext) -> None:
    """Every attack at once through /run_code, beside 40 well-behaved samples: all 40 score 1.0, none lost."""

    async def run() -> tuple[list, list]:
        async with httpx.AsyncClient(timeout=180) as client:
            attacks = [client.post(code_stack.url + "/run_code", json={
                "code": a.program(context), "language": a.language, "stdin": a.stdin,
                "run_timeout": _run_timeout(a), "memory_limit_MB": _memory(a)}) for a in ATTACKS]
            good = [client.post(code_stack.url + "/v1/reward", json={
                "recipe": "code", "solution": ADD, "ground_truth": STDIO}) for _ in range(40)]
            answers = await asyncio.gather(*attacks, *good)
            return answers[:len(ATTACKS)], answers[len(ATTACKS):]

    hostile, benign = asyncio.run(run())
    assert all(a.status_code == 200 and a.json()["status"] != "SandboxError" for a in hostile)
    assert [b.json().get("score") for b in benign] == [1.0] * 40
    assert host_processes_with(context.marker) == []
