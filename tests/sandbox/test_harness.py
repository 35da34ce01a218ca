"""The call-based and assert harnesses under attack: a solution's output cannot forge or corrupt a result,
and an early exit cannot pass an assert test. Real processes through the ``--code-sandbox none`` sessions."""

from __future__ import annotations

from typing import Any

import pytest

from services.sandbox.harness import assert_harness, assert_stdin, read_mark
from services.sandbox.local import LocalSessions
from services.sandbox.scoring import score_code
from services.sandbox.session import Limits

CALL = {"fn_name": "double", "inputs": ["1", "2"], "outputs": ["2", "4"]}
ASSERTS = {"assert_case": ["assert double(1) == 2", "assert double(2) == 4\nassert double(0) == 0"]}


def py(code: str) -> str:
    return f"```python\n{code}\n```"


async def status(code: str, gt: Any, **kwargs: Any) -> str:
    return (await score_code(LocalSessions(), py(code), gt, **kwargs)).status


@pytest.mark.parametrize("code", [
    "def double(x):\n    return 2 * x",
    "class Solution:\n    def double(self, x):\n        return 2 * x",
    # Solution's method wins over a top-level function of that name
    "def double(x):\n    return 0\nclass Solution:\n    def double(self, x):\n        return 2 * x",
    # prints of the solution are ignored, at any level
    "import os, sys\nprint('noise')\ndef double(x):\n    print(99); sys.stdout.write('7\\n'); os.write(1, b'3\\n')\n"
    "    print('x', file=sys.stderr)\n    return 2 * x",
    # a demo block under __main__ is not run (it would wait on stdin)
    "def double(x):\n    return 2 * x\nif __name__ == '__main__':\n    print(double(int(input())))",
    # LeetCode starter code uses typing and collections names without importing them
    "class Solution:\n    def double(self, x: int) -> Optional[int]:\n        return sum(deque([x, x]))",
])
async def test_call_based_passes(code: str) -> None:
    assert await status(code, CALL) == "passed"


async def test_printing_the_expected_value_does_not_pass_a_wrong_function() -> None:
    code = "import os\ndef double(x):\n    print(2 * x)\n    os.write(1, f'{2 * x}\\n'.encode())\n    return -1"
    assert await status(code, CALL) == "wrong_answer"


async def test_a_forged_result_line_then_an_exit_is_a_runtime_error() -> None:
    # Without the nonce the solution cannot write a line the scorer reads as a result; its early exit means
    # the function never returned.
    code = ("import os, sys\ndef double(x):\n    for fd in (1, 3, 4, 5):\n        try:\n"
            "            os.write(fd, f'return {2 * x}\\n'.encode())\n        except OSError:\n            pass\n"
            "    os._exit(0)")
    assert await status(code, CALL) == "runtime_error"


@pytest.mark.parametrize("code", ["import sys\nsys.exit(0)\ndef double(x):\n    return 2 * x",
                                  "def double(x):\n    exit()"])
async def test_exiting_instead_of_returning_is_a_runtime_error(code: str) -> None:
    assert await status(code, CALL) == "runtime_error"


async def test_never_returning_is_a_timeout() -> None:
    assert await status("def double(x):\n    while True:\n        pass", CALL, limits=Limits(wall_s=1)) == "timeout"


async def test_a_missing_function_is_a_runtime_error_and_a_syntax_error_a_compile_error() -> None:
    assert await status("def triple(x):\n    return 3 * x", CALL) == "runtime_error"
    assert await status("def double(x):\n    return 2 *", CALL) == "compile_error"


async def test_return_values_are_json_normalised() -> None:
    gt = {"fn_name": "f", "inputs": ["1"], "outputs": ['[[1, 2], {"1": "a"}]']}
    assert await status("def f(x):\n    return ((1, 2), {1: 'a'})", gt) == "passed"
    assert await status("def f(x):\n    return {1, 2}", gt) == "wrong_answer"  # a set is no JSON value


async def test_a_solution_containing_the_harness_placeholders_runs_as_written() -> None:
    code = "def double(x):\n    s = '__FN_NAME__ __SOLUTION__ __PRELUDE__'\n    return 2 * x"
    assert await status(code, CALL) == "passed"


async def test_assert_cases() -> None:
    assert await status("def double(x):\n    return 2 * x", ASSERTS) == "passed"
    assert await status("def double(x):\n    return x + 1", ASSERTS) == "wrong_answer"
    assert await status("def double(x):\n    return 2 * y", ASSERTS) == "runtime_error"
    assert await status("def double(x):\n    return 2 * x +", ASSERTS) == "compile_error"


@pytest.mark.parametrize("escape", ["import os\nos._exit(0)", "import sys\nsys.exit(0)", "exit()", "quit(0)",
                                    "raise SystemExit",
                                    "print('passed')\nimport os\nos.write(1, b'passed\\n')\nos._exit(0)"])
async def test_an_early_exit_cannot_pass_an_assert_test(escape: str) -> None:
    assert await status(f"def double(x):\n    return 0\n{escape}", ASSERTS) == "runtime_error"


async def test_the_gap_in_the_spec_a_literal_reading_passes_an_early_exit() -> None:
    """§2 says an assert test passes when (solution + assertions) exits 0: run that program literally as a plain
    stdio program and ``os._exit(0)`` before the assertions exits 0. The harness's mark is what closes this."""
    program = "def double(x):\n    return 0\nimport os\nos._exit(0)\n" + ASSERTS["assert_case"][0]
    session = LocalSessions().open("python", program, Limits())
    try:
        assert await session.prepare() is None
        literal = await session.run("")
    finally:
        await session.aclose()
    assert (literal.status, literal.return_code) == ("ok", 0)  # a literal reading: passed
    session = LocalSessions().open("python", assert_harness("def double(x):\n    return 0\nimport os\nos._exit(0)\n"),
                                   Limits())
    try:
        assert await session.prepare() is None
        harnessed = await session.run(assert_stdin("n0nce", ASSERTS["assert_case"][0]))
    finally:
        await session.aclose()
    assert harnessed.status == "ok" and read_mark(harnessed.stdout, "n0nce") is None  # exit 0, but no mark
