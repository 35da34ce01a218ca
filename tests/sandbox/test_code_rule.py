"""specs/code-rule.md §1-§4 end to end: score_code over real processes (the ``--code-sandbox none`` sessions)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from services.sandbox.input_error import CodeInputError
from services.sandbox.local import LocalSession, LocalSessions
from services.sandbox.scoring import KEYS, CodeResult, score_code
from services.sandbox.session import Language, Limits, SandboxBusy, SandboxFailure

ADD = {"inputs": ["1 2\n", "3 4\n", "10 -3\n"], "outputs": ["3\n", "7\n", "7\n"]}


class Recorded(LocalSessions):
    """Local sessions that remember what they opened, to check every one is closed."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.opened: list[LocalSession] = []

    def open(self, language: Language, code: str, limits: Limits) -> LocalSession:
        session = super().open(language, code, limits)
        self.opened.append(session)
        return session


@pytest.fixture
def sessions() -> Recorded:
    return Recorded()


def py(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\nIt reads the input and prints the answer."


async def score(sessions: Recorded, code: str, gt: Any, **kwargs: Any) -> CodeResult:
    result = await score_code(sessions, code, gt, **kwargs)
    assert set(result.to_dict()) == set(KEYS)
    assert all(s.dir is None for s in sessions.opened), "a session was left open"
    return result


@pytest.mark.parametrize("code", [
    "a, b = map(int, input().split())\nprint(a + b)",
    # a `global` at module level of a helper: prime_code's wrapping in a function breaks it
    "total = 0\ndef add(k):\n    global total\n    total += k\nfor k in map(int, input().split()):\n    add(k)\n"
    "print(total)",
    "import sys\na, b = map(int, sys.stdin.buffer.read().split())\nsys.stdout.write(f'{a + b}\\n')",
    "a, b = map(int, open(0).read().split())\nprint(a + b)",
    "a, b = map(int, input().split())\nprint(a + b)\nexit()",
    "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(0)",
    "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n\nif __name__ == '__main__':\n    main()",
    "a, b = map(int, input().split())\nprint('  ', a + b, '  ')",
])
async def test_a_correct_program_passes_as_written(sessions: Recorded, code: str) -> None:
    result = await score(sessions, py(code), ADD)
    assert result.to_dict() == {"score": 1.0, "acc": True, "pass_rate": 1.0, "tests_passed": 3, "tests_total": 3,
                                "status": "passed"}


async def test_double_spaces_and_two_floats_on_a_line(sessions: Recorded) -> None:
    gt = {"inputs": ["3\n"], "outputs": ["0.333333  0.666667\n"]}
    assert (await score(sessions, py("n = int(input())\nprint(1 / n, 2 / n)"), gt)).status == "passed"


async def test_a_non_zero_exit_after_correct_output_is_a_runtime_error(sessions: Recorded) -> None:
    result = await score(sessions, py("a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(3)"), ADD)
    assert (result.score, result.status, result.tests_passed) == (0.0, "runtime_error", 0)


async def test_continuous_partial_credit_and_the_first_failing_status_by_index(sessions: Recorded) -> None:
    code = ("import time\na, b = map(int, input().split())\n"
            "if a == 3:\n    time.sleep(1)\n    print(0)\n"  # test 1: wrong answer, and last to finish
            "elif a == 10:\n    raise ValueError\n"  # test 2: runtime error, first to finish
            "else:\n    print(a + b)")
    result = await score(sessions, py(code), ADD)
    assert result.to_dict() == {"score": pytest.approx(1 / 3), "acc": False, "pass_rate": pytest.approx(1 / 3),
                                "tests_passed": 1, "tests_total": 3, "status": "wrong_answer"}


async def test_binary_stops_at_the_first_failure(sessions: Recorded) -> None:
    gt = {"inputs": [str(i) for i in range(8)], "outputs": [str(i) for i in range(8)]}
    code = ("import time\nn = int(input())\n"
            "if n == 2:\n    print(-1)\nelif n > 2:\n    time.sleep(30)\nelse:\n    print(n)")
    started = time.monotonic()
    result = await score(sessions, py(code), gt, scoring="binary", limits=Limits(wall_s=20))
    assert time.monotonic() - started < 10, "the tests after the failure were not cancelled"
    assert result.to_dict() == {"score": 0.0, "acc": False, "pass_rate": 0.25, "tests_passed": 2, "tests_total": 8,
                                "status": "wrong_answer"}


async def test_binary_reports_the_first_failure_by_index_not_by_time(sessions: Recorded) -> None:
    code = "import time\na, b = map(int, input().split())\nif a == 1:\n    time.sleep(1)\n    print(0)\nelse:\n    x"
    result = await score(sessions, py(code), ADD, scoring="binary")
    assert (result.status, result.tests_passed, result.score) == ("wrong_answer", 0, 0.0)


async def test_binary_all_passed(sessions: Recorded) -> None:
    result = await score(sessions, py("a, b = map(int, input().split())\nprint(a + b)"), ADD, scoring="binary")
    assert (result.score, result.acc, result.tests_passed) == (1.0, True, 3)


async def test_max_tests(sessions: Recorded) -> None:
    code = "a, b = map(int, input().split())\nprint(a + b if a < 10 else 0)"
    result = await score(sessions, py(code), ADD, max_tests=2)
    assert (result.score, result.tests_total, result.status) == (1.0, 2, "passed")


async def test_syntax_error_is_a_compile_error(sessions: Recorded) -> None:
    result = await score(sessions, py("print(1"), ADD)
    assert result.to_dict() == {"score": 0.0, "acc": False, "pass_rate": 0.0, "tests_passed": 0, "tests_total": 3,
                                "status": "compile_error"}


async def test_no_fence_is_no_code_and_prose_is_never_run(sessions: Recorded, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"open({str(marker)!r}, 'w')\na, b = map(int, input().split())\nprint(a + b)"
    result = await score(sessions, text, ADD)
    assert (result.score, result.status, result.tests_total) == (0.0, "no_code", 3)
    assert not marker.exists() and not sessions.opened


async def test_limits_give_their_statuses(sessions: Recorded) -> None:
    gt = {"inputs": ["1"], "outputs": ["1"]}
    cases = {"timeout": "while True:\n    pass", "memory_limit": "x = bytearray(1 << 30)",
             "output_limit": "while True:\n    print('x' * 1000)"}
    limits = Limits(wall_s=1, memory_mb=256, output_bytes=1 << 16)
    for status, code in cases.items():
        assert (await score(sessions, py(code), gt, limits=limits)).status == status


async def test_call_based_livecodebench_form_with_partial_credit(sessions: Recorded) -> None:
    gt = {"fn_name": "twoSum", "inputs": ["[2, 7, 11, 15]\n9", "[3, 2, 4]\n6", "[3, 3]\n6"],
          "outputs": ["[0, 1]", "[1, 2]", "[0, 1]"]}
    code = ("class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
            "        seen = {}\n        for i, x in enumerate(nums):\n"
            "            if target - x in seen and x != 3:\n                return (seen[target - x], i)\n"
            "            seen[x] = i\n        return []")
    result = await score(sessions, py(code), json.dumps(gt))
    assert (result.tests_passed, result.tests_total, result.status) == (2, 3, "wrong_answer")
    assert result.score == pytest.approx(2 / 3)


async def test_call_based_apps_form_with_the_one_element_wrap(sessions: Recorded) -> None:
    gt = {"fn_name": "add", "inputs": [[1, 2], [[1], [2]], [0.1, 0.2]], "outputs": [[3], [[1, 2]], 0.3]}
    result = await score(sessions, py("def add(a, b):\n    return a + b"), gt)
    assert (result.status, result.tests_passed) == ("passed", 3)


async def test_cpp_stdio(sessions: Recorded) -> None:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH")
    code = ("```cpp\n#include <cstdio>\n"
            "int main() { long a, b; scanf(\"%ld %ld\", &a, &b); printf(\"%ld\\n\", a + b); }\n```")
    assert (await score(sessions, code, ADD, language="cpp")).status == "passed"
    assert (await score(sessions, code, {**ADD, "language": "c++"})).status == "passed"
    assert (await score(sessions, code, ADD)).status == "no_code"  # python by default: a cpp block is not python


async def test_cpp_is_stdio_only(sessions: Recorded) -> None:
    for gt in ({"fn_name": "f", "inputs": ["1"], "outputs": ["1"]}, {"assert_case": ["assert f(1) == 1"]}):
        with pytest.raises(CodeInputError) as err:
            await score_code(sessions, "```cpp\nint f(int x) { return x; }\n```", gt, language="cpp")
        assert err.value.param == "language"
    assert not sessions.opened


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"scoring": "all"}, "scoring"), ({"float_tolerance": -1}, "float_tolerance"),
    ({"float_tolerance": float("nan")}, "float_tolerance"), ({"max_tests": 0}, "max_tests"),
    ({"language": "java"}, "extra_info.language")])
async def test_bad_options_are_request_errors(sessions: Recorded, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(CodeInputError) as err:
        await score_code(sessions, py("print(1)"), ADD, **kwargs)
    assert err.value.param == param


async def test_a_sandbox_failure_is_raised_never_a_score() -> None:
    broken = Recorded(python="/nonexistent/python3")
    with pytest.raises(SandboxFailure):
        await score_code(broken, py("print(1)"), ADD)
    assert all(s.dir is None for s in broken.opened)


async def test_busy_is_raised_never_a_score() -> None:
    """A sandbox whose queue is full says so (503 + Retry-After upstream); the sample is not scored 0."""
    busy = Recorded(workers=1, queue_size=0)
    with pytest.raises(SandboxBusy):
        await score_code(busy, py("import time\ntime.sleep(0.5)\nprint(3)"), ADD)
    assert busy.opened and all(s.dir is None for s in busy.opened)


async def test_cancelling_closes_the_session_and_kills_the_runs(tmp_path: Path) -> None:
    sessions = Recorded(workers=3)
    code = f"import os, time\nopen({str(tmp_path)!r} + '/' + str(os.getpid()), 'w')\ntime.sleep(30)"
    task = asyncio.ensure_future(score_code(sessions, py(code), ADD, limits=Limits(wall_s=30)))
    deadline = time.monotonic() + 20
    while len(list(tmp_path.iterdir())) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    pids = [int(p.name) for p in tmp_path.iterdir()]
    assert len(pids) == 3 and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(s.dir is None for s in sessions.opened)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
