"""Capture SandboxFusion's exact ``/run_code`` answers into tests/sandbox/fixtures/sandboxfusion_responses.json.

Each case is a request we send and the JSON SandboxFusion answered (and its HTTP status), for python and
cpp: success, wrong output, non-zero exit, uncaught exception, syntax/compile error, timeouts, memory
blow-up, large outputs, stdin, ``files``/``fetch_files``, a bad base64 file (SandboxError) and an unknown
language (422). The ``verl_*`` cases are the requests verl 0.9.1's own sandbox_fusion client sends for a
stdin/stdout, a call-based and an assert-case problem (recorded from ``requests.post`` as it posts them),
with the score it made of the answers. Host-specific values are normalised, keeping keys and types:
``execution_time`` numbers become 0.0, the random temporary paths in stderr/messages become
``/tmp/tmpDIR/tmpFILE``, ``executor_pod_name`` is what it was (null: no pod).

    python bench/peers/capture_sandboxfusion.py --sandboxfusion-src /work/peers/SandboxFusion
    python bench/peers/capture_sandboxfusion.py --url http://127.0.0.1:8080   # a running service
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sandboxfusion import DEFAULT_VENV, SandboxFusion

OUT = Path(__file__).resolve().parents[2] / "tests" / "sandbox" / "fixtures" / "sandboxfusion_responses.json"

PY_SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
CPP_SUM = "#include <cstdio>\nint main() { int a, b; scanf(\"%d %d\", &a, &b); printf(\"%d\\n\", a + b); }\n"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# (name, what it shows, request)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("python_success", "exit 0, right output",
     {"code": PY_SUM, "language": "python", "stdin": "2 3\n"}),
    ("python_wrong_output", "exit 0, output not the expected one: still Success (no comparison in /run_code)",
     {"code": "print(42)\n", "language": "python", "stdin": "2 3\n"}),
    ("python_nonzero_exit", "sys.exit(3) after printing",
     {"code": "import sys\nprint('partial')\nsys.exit(3)\n", "language": "python"}),
    ("python_exception", "uncaught exception: traceback on stderr, return code 1",
     {"code": "def f():\n    raise ValueError('boom')\nf()\n", "language": "python"}),
    ("python_syntax_error", "SyntaxError: a run with return code 1 (no compile step for python)",
     {"code": "print(1\n", "language": "python"}),
    ("python_timeout", "busy loop past run_timeout=1: output so far is kept",
     {"code": "print('started', flush=True)\nwhile True:\n    pass\n", "language": "python", "run_timeout": 1}),
    ("python_sleep_timeout", "sleep past run_timeout=0.5",
     {"code": "import time\ntime.sleep(5)\n", "language": "python", "run_timeout": 0.5}),
    ("python_memory_limit", "2 GiB allocation with memory_limit_MB=256 (RLIMIT_AS): MemoryError, return code 1",
     {"code": "x = bytearray(2 * 1024 ** 3)\nprint(len(x))\n", "language": "python", "memory_limit_MB": 256}),
    ("python_killed_by_signal", "the program SIGKILLs itself: return code -9",
     {"code": "import os, signal\nprint('bye', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n",
      "language": "python"}),
    ("python_output_230k", "230,000 bytes (over its pipe + reader buffer, ~219 KB): it exits, stdout cut silently",
     {"code": "import sys\nsys.stdout.write('x' * 230000)\n", "language": "python", "run_timeout": 3}),
    ("python_output_10m", "10 MB of stdout: the pipe fills, the program blocks: TimeLimitExceeded",
     {"code": "import sys\nsys.stdout.write('x' * 10000000)\n", "language": "python", "run_timeout": 2}),
    ("python_binary_output", "stdout that is not UTF-8: the field becomes a '[DecodeError] ...' text",
     {"code": "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe')\n", "language": "python"}),
    ("python_stdin_lines", "reads all of stdin (sys.stdin, several lines)",
     {"code": "import sys\nnums = [int(x) for x in sys.stdin.read().split()]\nprint(sum(nums), len(nums))\n",
      "language": "python", "stdin": "1 2 3\n4 5\n6\n"}),
    ("python_no_stdin", "input() with stdin null: EOFError",
     {"code": "print(input())\n", "language": "python", "stdin": None}),
    ("python_stderr", "stderr written, exit 0: Success",
     {"code": "import sys\nprint('out')\nprint('err', file=sys.stderr)\n", "language": "python"}),
    ("python_files", "files (base64, nested path) are written into the working dir; fetch_files returns base64",
     {"code": "print(open('data/in.txt').read().upper())\nopen('out.txt', 'w').write('written')\n",
      "language": "python", "files": {"data/in.txt": _b64("hello file")},
      "fetch_files": ["out.txt", "missing.txt"]}),
    ("python_bad_base64", "a file that is not base64: SandboxError, message says why",
     {"code": "print(1)\n", "language": "python", "files": {"a.txt": "!!not base64"}}),
    ("unknown_language", "a language it does not know: 422 from request validation",
     {"code": "print(1)\n", "language": "cobol"}),
    ("cpp_success", "compile + run",
     {"code": CPP_SUM, "language": "cpp", "stdin": "2 3\n"}),
    ("cpp_wrong_output", "exit 0, output not the expected one",
     {"code": "#include <cstdio>\nint main() { puts(\"42\"); }\n", "language": "cpp", "stdin": "2 3\n"}),
    ("cpp_nonzero_exit", "main returns 3",
     {"code": "#include <cstdio>\nint main() { puts(\"partial\"); return 3; }\n", "language": "cpp"}),
    ("cpp_exception", "uncaught C++ exception: abort, return code -6",
     {"code": "#include <stdexcept>\nint main() { throw std::runtime_error(\"boom\"); }\n", "language": "cpp"}),
    ("cpp_compile_error", "g++ fails: compile_result return code 1, run_result null",
     {"code": "int main() { return 3 }\n", "language": "cpp"}),
    ("cpp_compile_timeout", "compile_timeout=0.01: compile_result TimeLimitExceeded, run_result null",
     {"code": CPP_SUM, "language": "cpp", "compile_timeout": 0.01}),
    ("cpp_timeout", "busy loop past run_timeout=1",
     {"code": "int main() { volatile int x = 0; while (true) x++; }\n", "language": "cpp", "run_timeout": 1}),
    ("cpp_memory_limit", "2 GB vector with memory_limit_MB=256: bad_alloc, abort, -6",
     {"code": "#include <vector>\n#include <cstdio>\nint main() { std::vector<char> v(2000000000LL, 1); "
              "printf(\"%d\\n\", v[7]); }\n", "language": "cpp", "memory_limit_MB": 256}),
    ("cpp_segfault", "null write: SIGSEGV, return code -11",
     {"code": "int main() { volatile int *p = nullptr; *p = 1; }\n", "language": "cpp"}),
    ("cpp_output_10m", "10 MB of stdout: blocks on the full pipe, TimeLimitExceeded",
     {"code": "#include <cstdio>\nint main() { for (int i = 0; i < 10000000; i++) putchar('x'); }\n",
      "language": "cpp", "run_timeout": 2}),
    ("cpp_stdin_lines", "reads all numbers from stdin",
     {"code": "#include <cstdio>\nint main() { long s = 0, n = 0, x; while (scanf(\"%ld\", &x) == 1) { s += x; n++; }"
              " printf(\"%ld %ld\\n\", s, n); }\n", "language": "cpp", "stdin": "1 2 3\n4 5\n6\n"}),
    ("cpp_files", "files are readable next to the binary; fetch_files returns what it wrote",
     {"code": "#include <fstream>\n#include <iostream>\n#include <string>\nint main() { std::ifstream in(\"in.txt\");"
              " std::string s; std::getline(in, s); std::cout << s.size() << \"\\n\"; std::ofstream(\"out.txt\") << s;"
              " }\n", "language": "cpp", "files": {"in.txt": _b64("hello file")}, "fetch_files": ["out.txt"]}),
]

# verl's own client: a stdin/stdout problem, a call-based one (LiveCodeBench form) and an assert-case one.
VERL_PROBLEMS: list[tuple[str, str, dict[str, Any]]] = [
    ("verl_stdio", "```python\n" + PY_SUM + "```",
     {"inputs": ["2 3\n", "10 -4\n"], "outputs": ["5\n", "7\n"]}),  # the second expected output is wrong
    ("verl_call_based", "```python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n```",
     {"inputs": ["2\n3", "[1]\n[2]"], "outputs": ["5", "[1, 2]"], "fn_name": "add"}),
    ("verl_assert_case", "```python\ndef add(a, b):\n    return a + b\n```",
     {"assert_case": ["assert add(2, 3) == 5", "assert add(1, 1) == 3"]}),
]

_TMP_PATH = re.compile(r"/tmp/tmp[A-Za-z0-9_]+(/tmp[A-Za-z0-9_]+)?")


def normalise(value: Any, key: str = "") -> Any:
    """Keep keys and types; drop what differs between hosts and runs (timings, random temporary paths)."""
    if isinstance(value, dict):
        return {k: normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if key == "execution_time" and isinstance(value, float):
        return 0.0
    if isinstance(value, str):
        return _TMP_PATH.sub(lambda m: "/tmp/tmpDIR" + ("/tmpFILE" if m.group(1) else ""), value)
    return value


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(f"{url}/run_code", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def capture_cases(url: str) -> list[dict[str, Any]]:
    out = []
    for name, what, request in CASES:
        status, response = post(url, request)
        out.append({"name": name, "language": request["language"], "what": what, "request": request,
                    "http_status": status, "response": normalise(response)})
        print(f"{name:24} {status} {response.get('status') if isinstance(response, dict) else ''}")
    return out


def capture_verl(url: str) -> list[dict[str, Any]]:
    """Run verl's sandbox_fusion.compute_score on each problem, recording every request it posts."""
    import requests
    from verl.utils.reward_score import sandbox_fusion

    recorded: list[tuple[dict[str, Any], int, Any]] = []
    lock = threading.Lock()
    real_post = requests.post

    def recording_post(*args: Any, **kwargs: Any) -> Any:
        response = real_post(*args, **kwargs)
        with lock:
            recorded.append((json.loads(kwargs["data"]), response.status_code, response.json()))
        return response

    out = []
    requests.post = recording_post  # verl's client calls requests.post(url, headers=..., data=..., timeout=...)
    try:
        for name, completion, tests in VERL_PROBLEMS:
            recorded.clear()
            score, metadata = sandbox_fusion.compute_score(f"{url}/run_code", None, 1024, completion,
                                                           json.dumps(tests), continuous=True)
            calls = sorted(recorded, key=lambda r: (r[0]["stdin"] or "", r[0]["code"]))
            out.append({"name": name, "language": "python",
                        "what": "verl 0.9.1 sandbox_fusion.compute_score(url, None, 1024, completion, tests, "
                                "continuous=True): one request per test, as it posts them",
                        "verl_completion": completion, "verl_test_cases": tests, "verl_score": score,
                        "verl_test_statuses": [m.get("status") for m in metadata],
                        "calls": [{"request": req, "http_status": st, "response": normalise(resp)}
                                  for req, st, resp in calls]})
            print(f"{name:24} score {score} {[m.get('status') for m in metadata]}")
    finally:
        requests.post = real_post
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sandboxfusion-src", type=Path, help="start SandboxFusion from this source tree")
    src.add_argument("--url", help="a running SandboxFusion, e.g. http://127.0.0.1:8080")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--commit", default="", help="the SandboxFusion commit captured (recorded in the file)")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    sf = SandboxFusion(a.sandboxfusion_src, a.venv, a.port) if a.sandboxfusion_src else None
    url = sf.url if sf else a.url.rstrip("/")
    if sf:
        sf.start()
    try:
        doc = {
            "source": {"project": "bytedance/SandboxFusion", "commit": a.commit or None,
                       "config": "SANDBOX_CONFIG=local (isolation: none), started by bench/peers/sandboxfusion.py",
                       "captured_by": "bench/peers/capture_sandboxfusion.py"},
            "normalised": "execution_time numbers -> 0.0; /tmp/tmpXXXX[/tmpYYYY] paths -> /tmp/tmpDIR[/tmpFILE]",
            "cases": capture_cases(url),
            "verl_client": capture_verl(url),
        }
    finally:
        if sf:
            sf.stop()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
