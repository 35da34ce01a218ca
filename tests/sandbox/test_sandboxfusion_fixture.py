"""SandboxFusion's captured ``/run_code`` answers (tests/sandbox/fixtures/sandboxfusion_responses.json, made by
bench/peers/capture_sandboxfusion.py against the real service) hold to the schema and status rules our
``/run_code`` must reproduce; the same file is the reference for testing ours against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "sandboxfusion_responses.json"
DOC = json.loads(FIXTURE.read_text())
CASES = {c["name"]: c for c in DOC["cases"]}
RESPONSE_KEYS = {"status", "message", "compile_result", "run_result", "executor_pod_name", "files"}
RESULT_KEYS = {"status", "execution_time", "return_code", "stdout", "stderr"}
# What verl 0.9.1's client posts for every test (verl/utils/reward_score/sandbox_fusion/utils.py).
VERL_REQUEST_KEYS = {"compile_timeout", "run_timeout", "code", "stdin", "memory_limit_MB", "language", "files",
                     "fetch_files"}


def top_status(response: dict[str, Any]) -> str:
    """SandboxFusion's rule: an ``Error`` result (or an exception before any result) is SandboxError; else a
    time limit or a non-zero return code anywhere is Failed; else Success."""
    results = [r for r in (response["compile_result"], response["run_result"]) if r is not None]
    if not results or any(r["status"] == "Error" for r in results):
        return "SandboxError"
    if any(r["status"] == "TimeLimitExceeded" or r["return_code"] not in (0, None) for r in results):
        return "Failed"
    return "Success"


def answered() -> list[dict[str, Any]]:
    calls = [c for c in DOC["cases"] if c["http_status"] == 200]
    verl = [{"name": f"{v['name']}#{i}", **call} for v in DOC["verl_client"] for i, call in enumerate(v["calls"])]
    return calls + verl


@pytest.mark.parametrize("case", answered(), ids=lambda c: c["name"])
def test_schema_and_status_rule(case: dict[str, Any]) -> None:
    r = case["response"]
    assert set(r) == RESPONSE_KEYS and case["http_status"] == 200
    assert r["status"] == top_status(r)
    assert (r["message"] != "") == (r["status"] == "SandboxError")
    assert r["executor_pod_name"] is None and isinstance(r["files"], dict)
    for result in (r["compile_result"], r["run_result"]):
        if result is None:
            continue
        assert set(result) == RESULT_KEYS and isinstance(result["execution_time"], float)
        assert result["status"] in ("Finished", "TimeLimitExceeded", "Error")
        # a time limit has no return code; a finished process always has one (negative: killed by a signal)
        assert (result["return_code"] is None) == (result["status"] == "TimeLimitExceeded")
    compile_ok = r["compile_result"] is None or (r["compile_result"]["status"] == "Finished"
                                                 and r["compile_result"]["return_code"] == 0)
    assert (r["run_result"] is not None) == (compile_ok and r["status"] != "SandboxError")
    assert (r["compile_result"] is not None) == (case["request"]["language"] == "cpp")


def test_the_captured_outcomes() -> None:
    run = {name: c["response"]["run_result"] for name, c in CASES.items() if c["http_status"] == 200}
    assert CASES["python_wrong_output"]["response"]["status"] == "Success"  # /run_code never compares output
    assert run["python_exception"]["return_code"] == 1 and "ValueError: boom" in run["python_exception"]["stderr"]
    assert "SyntaxError" in run["python_syntax_error"]["stderr"]  # python: no compile step, a failed run
    assert run["python_timeout"]["stdout"] == "started\n"  # output before the time limit is kept
    assert "MemoryError" in run["python_memory_limit"]["stderr"]  # RLIMIT_AS: an exception, not a kill
    assert run["python_killed_by_signal"]["return_code"] == -9
    assert run["cpp_exception"]["return_code"] == -6 and run["cpp_segfault"]["return_code"] == -11
    # more than its pipe + reader buffer: cut silently if the program can still exit, else a time limit
    assert run["python_output_230k"]["status"] == "Finished" and len(run["python_output_230k"]["stdout"]) < 230000
    assert run["python_output_10m"]["status"] == "TimeLimitExceeded"
    assert run["python_binary_output"]["stdout"].startswith("[DecodeError] ")  # not UTF-8: an error text
    assert CASES["python_files"]["response"]["files"] == {"out.txt": "d3JpdHRlbg=="}  # missing files: absent
    assert CASES["cpp_compile_timeout"]["response"]["compile_result"]["status"] == "TimeLimitExceeded"
    assert "base64" in CASES["python_bad_base64"]["response"]["message"]
    unknown = CASES["unknown_language"]
    assert unknown["http_status"] == 422 and unknown["response"]["detail"][0]["loc"] == ["body", "language"]


@pytest.mark.parametrize("problem", DOC["verl_client"], ids=lambda v: v["name"])
def test_verl_client_requests_and_score(problem: dict[str, Any]) -> None:
    tests = problem["verl_test_cases"]
    n = len(tests.get("inputs", tests.get("assert_case", [])))
    assert len(problem["calls"]) == n  # one request per test
    for call in problem["calls"]:
        req = call["request"]
        assert set(req) == VERL_REQUEST_KEYS and req["language"] == "python"
        assert req["compile_timeout"] == req["run_timeout"] == 10 and req["memory_limit_MB"] == 1024
        assert req["files"] == {} and req["fetch_files"] == []
    passed = problem["verl_test_statuses"].count("success")
    assert problem["verl_score"] == passed / n  # continuous: the pass rate of the first 10 tests
