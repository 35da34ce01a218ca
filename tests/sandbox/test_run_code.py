"""/run_code as SandboxFusion answers it: the mapping of each outcome, the refusals naming their field, and verl
0.9.1's own sandbox_fusion client scoring against it over real HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from services.sandbox import BwrapConfig, Limits, Sandbox
from services.sandbox.run_code import RunCodeInvalid, RunCodeMaxima, run_code
from tests.sandbox.conftest import needs_bwrap, needs_gxx
from trainer_client.protocol import RunCodeRequest

pytestmark = needs_bwrap


def request(**fields: object) -> RunCodeRequest:
    return RunCodeRequest.model_validate({"language": "python", **fields})


async def test_python_success(sandbox: Sandbox) -> None:
    out = await run_code(sandbox, request(code="print(input()[::-1])", stdin="abc\n"))
    assert out.status == "Success" and out.message == "" and out.compile_result is None
    assert out.run_result is not None
    assert (out.run_result.status, out.run_result.return_code, out.run_result.stdout) == ("Finished", 0, "cba\n")
    assert out.run_result.execution_time is not None and out.run_result.execution_time > 0
    assert out.files == {}


async def test_python_syntax_error_is_the_run_exiting_1(sandbox: Sandbox) -> None:
    out = await run_code(sandbox, request(code="print(1"))
    assert out.status == "Failed" and out.compile_result is None and out.run_result is not None
    assert (out.run_result.status, out.run_result.return_code) == ("Finished", 1)
    assert "SyntaxError" in (out.run_result.stderr or "")


@pytest.mark.parametrize(("code", "status", "return_code"), [
    ("import sys\nprint('x')\nsys.exit(3)", "Finished", 3),
    ("raise ValueError('v')", "Finished", 1),
    ("x = bytearray(8 * 1024 ** 3)", "Finished", 1),  # MemoryError under memory_limit_MB
    ("while True: pass", "TimeLimitExceeded", None),
])
async def test_python_failures(sandbox: Sandbox, code: str, status: str, return_code: int | None) -> None:
    out = await run_code(sandbox, request(code=code, run_timeout=1, memory_limit_MB=512))
    assert out.status == "Failed" and out.run_result is not None
    assert (out.run_result.status, out.run_result.return_code) == (status, return_code)


@needs_gxx
async def test_cpp_compile_and_run(sandbox: Sandbox) -> None:
    code = "#include <iostream>\nint main() { int a, b; std::cin >> a >> b; std::cout << a * b << std::endl; }"
    out = await run_code(sandbox, request(language="cpp", code=code, stdin="6 7"))
    assert out.status == "Success"
    assert out.compile_result is not None and (out.compile_result.status, out.compile_result.return_code) == (
        "Finished", 0)
    assert out.run_result is not None and out.run_result.stdout == "42\n"
    broken = await run_code(sandbox, request(language="cpp", code="int main() { return nope; }"))
    assert broken.status == "Failed" and broken.run_result is None and broken.compile_result is not None
    assert (broken.compile_result.status, broken.compile_result.return_code) == ("Finished", 1)
    assert "nope" in (broken.compile_result.stderr or "")


async def test_files_and_fetch_files(sandbox: Sandbox) -> None:
    code = "data = open('in/data.bin', 'rb').read()\nopen('out.txt', 'wb').write(data[::-1])\nprint(len(data))"
    out = await run_code(sandbox, request(code=code, files={"in/data.bin": base64.b64encode(b"\x00\x01xyz").decode(),
                                                            "skipped.txt": None},
                                          fetch_files=["out.txt", "absent.txt"]))
    assert out.status == "Success" and out.run_result is not None and out.run_result.stdout == "5\n"
    assert out.files == {"out.txt": base64.b64encode(b"zyx\x01\x00").decode()}


@pytest.mark.parametrize(("fields", "field"), [
    ({"language": "rust"}, "language"),
    ({"language": "nodejs"}, "language"),
    ({"run_timeout": 1000}, "run_timeout"),
    ({"run_timeout": 0}, "run_timeout"),
    ({"compile_timeout": 1000}, "compile_timeout"),
    ({"memory_limit_MB": 1 << 20}, "memory_limit_MB"),
    ({"code": "x = 1\n" * (9 * 1024 * 1024)}, "code"),  # 54 MB
    ({"files": {"../escape": "eA=="}}, "files"),
    ({"files": {"/etc/passwd": "eA=="}}, "files"),
    ({"files": {"a.txt": "not base64!"}}, "files"),
    ({"files": {"main.py": "eA=="}}, "files"),
    ({"fetch_files": ["/etc/shadow"]}, "fetch_files"),
])
async def test_refusals_name_the_field(sandbox: Sandbox, fields: dict, field: str) -> None:
    with pytest.raises(RunCodeInvalid) as refused:
        await run_code(sandbox, request(**{"code": "print(1)", **fields}), maxima=RunCodeMaxima())
    assert refused.value.field == field and field.split("_")[0] in str(refused.value)
    assert sandbox.stats.sessions == 0


async def test_a_broken_sandbox_is_a_sandbox_error() -> None:
    broken = Sandbox(workers=1, config=BwrapConfig(bwrap="/nonexistent/bwrap"))
    out = await run_code(broken, request(code="print(1)"))
    assert out.status == "SandboxError" and "bubblewrap is not installed" in out.message
    assert out.run_result is None and out.compile_result is None


async def test_limits_come_from_the_request(sandbox: Sandbox) -> None:
    out = await run_code(sandbox, request(code="import time\ntime.sleep(0.6)\nprint('slept')", run_timeout=0.3),
                         defaults=Limits(wall_s=30))
    assert out.run_result is not None and out.run_result.status == "TimeLimitExceeded"
    assert 0.3 <= (out.run_result.execution_time or 0) < 2


# -- verl's own client over HTTP -------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_code_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real sandbox server (``genrm serve --recipe code``): its /run_code, as verl's client calls it."""
    from tests.conftest import start_server

    child = start_server("", tmp_path_factory.mktemp("run-code"), "--recipe", "code", "--sandbox-workers", "4",
                         name="sandbox")
    try:
        yield child.url + "/run_code"
    finally:
        child.stop()


STDIO = {"inputs": ["1 2\n", "10 20\n", "-5 5\n"], "outputs": ["3\n", "30\n", "0\n"]}


def test_verl_compute_score_stdio(run_code_url: str) -> None:
    from verl.utils.reward_score.sandbox_fusion import compute_score

    right = "```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n```"
    score, meta = compute_score(run_code_url, None, 1024, right, STDIO, continuous=True, timeout=10)
    assert score == 1.0, meta
    wrong = "```python\na, b = map(int, input().split())\nprint(a + b if a > 0 else 1)\n```"
    score, meta = compute_score(run_code_url, None, 1024, wrong, STDIO, continuous=True, timeout=10)
    assert score == pytest.approx(2 / 3), meta
    assert [m["status"] for m in meta] == ["success", "success", "wrong_answer"]


def test_verl_compute_score_call_based(run_code_url: str) -> None:
    from verl.utils.reward_score.sandbox_fusion import compute_score

    cases = {"fn_name": "add", "inputs": ["1\n2", "[1]\n[2]"], "outputs": ["3", "[1, 2]"]}
    code = "```python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n```"
    score, meta = compute_score(run_code_url, None, 1024, code, cases, continuous=True, timeout=10)
    assert score == 1.0, meta


def test_verl_statuses_through_http(run_code_url: str) -> None:
    from verl.utils.reward_score.sandbox_fusion.utils import check_correctness

    cases = {"inputs": ["", "", ""], "outputs": ["", "", ""]}
    results, meta = check_correctness(run_code_url, cases, "import time\ntime.sleep(5)", timeout=1)
    assert results == [-3, -3, -3], meta  # timeout
    results, meta = check_correctness(run_code_url, cases, "raise SystemExit(2)", timeout=5)
    assert results == [-2, -2, -2], meta  # runtime error
    results, meta = check_correctness(run_code_url, cases, "def f(:", timeout=5)
    assert results == [-2, -2, -2], meta  # SandboxFusion runs Python without a compile step


@needs_gxx
def test_verl_cpp(run_code_url: str) -> None:
    from verl.utils.reward_score.sandbox_fusion.utils import check_correctness

    code = "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << std::endl; }"
    results, meta = check_correctness(run_code_url, STDIO, code, timeout=10, language="cpp")
    assert results == [True, True, True], meta
    results, meta = check_correctness(run_code_url, STDIO, "int main() { return x; }", timeout=10, language="cpp")
    assert results == [-4, -4, -4], meta  # compile error


def test_http_refusals(run_code_url: str) -> None:
    answer = httpx.post(run_code_url, json={"code": "print(1)", "language": "cobol"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "language"
    answer = httpx.post(run_code_url, json={"code": "print(1)", "language": "python", "run_timeout": 3600})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "run_timeout"
