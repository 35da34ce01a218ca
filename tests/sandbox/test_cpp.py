"""C++ in the sandbox: g++ -O2 -std=c++17 compiled once per session, inside the sandbox, then run per test."""

from __future__ import annotations

import time

import pytest

from services.sandbox import Limits, Sandbox
from tests.sandbox.conftest import needs_bwrap, needs_gxx

pytestmark = [needs_bwrap, needs_gxx]

SUM = """
#include <iostream>
int main() {
    long long a, b;
    std::cin >> a >> b;
    std::cout << a + b << "\\n";
    return 0;
}
"""


async def test_compiled_once_then_run_per_test(sandbox: Sandbox) -> None:
    async with sandbox.open("cpp", SUM, Limits(wall_s=5)) as session:
        started = time.monotonic()
        assert await session.prepare() is None
        compile_s = time.monotonic() - started
        results = []
        for a in range(5):
            began = time.monotonic()
            raw = await session.run(f"{a} 40")
            results.append((raw.status, raw.stdout, time.monotonic() - began))
    assert [(s, out) for s, out, _ in results] == [("ok", f"{a + 40}\n") for a in range(5)]
    assert max(t for *_, t in results) < compile_s  # no test pays for a compile


async def test_the_binary_survives_a_test_that_deletes_files(sandbox: Sandbox) -> None:
    code = """
#include <cstdio>
#include <filesystem>
int main() {
    for (auto& entry : std::filesystem::directory_iterator(".")) std::filesystem::remove_all(entry.path());
    std::printf("%zu\\n", (size_t)std::distance(std::filesystem::directory_iterator("."), {}));
}
"""
    async with sandbox.open("cpp", code) as session:
        first, second = await session.run(""), await session.run("")
    assert (first.status, first.stdout) == (second.status, second.stdout) == ("ok", "0\n")


@pytest.mark.parametrize(("code", "status", "return_code"), [
    ("int main() { return 3; }", "runtime_error", 3),
    ("int main() { volatile int* p = nullptr; return *p; }", "runtime_error", -11),
    ("#include <cstdlib>\nint main() { std::abort(); }", "runtime_error", -6),
    ("#include <stdexcept>\nint main() { throw std::runtime_error(\"x\"); }", "runtime_error", -6),
    ("int main() { while (true) {} }", "timeout", None),
    ("#include <cstdio>\nint main() { for (;;) std::fputs(\"spam spam spam\\n\", stdout); }", "output_limit", -9),
])
async def test_statuses(sandbox: Sandbox, code: str, status: str, return_code: int | None) -> None:
    async with sandbox.open("cpp", code, Limits(wall_s=1.5)) as session:
        raw = await session.run("")
    assert (raw.status, raw.return_code) == (status, return_code), raw


async def test_deep_recursion_has_the_memory_limit_as_stack(sandbox: Sandbox) -> None:
    """~150 MB of stack: a segfault under the usual 8 MB, fine with the stack bounded by the memory limit."""
    code = """
#include <cstdio>
__attribute__((noinline)) long depth(int n) {
    volatile char pad[128];
    pad[n % 128] = 1;
    if (n == 0) return 0;
    long below = depth(n - 1);
    return below + pad[n % 128];
}
int main() { std::printf("%ld\\n", depth(1000000)); }
"""
    async with sandbox.open("cpp", code) as session:
        raw = await session.run("")
    assert (raw.status, raw.stdout) == ("ok", "1000000\n"), raw


async def test_compile_error_and_timeout(sandbox: Sandbox) -> None:
    async with sandbox.open("cpp", "int main() { return undefined_name; }") as session:
        failed = await session.prepare()
        assert failed is not None and failed.status == "compile_error" and failed.return_code == 1
        assert "undefined_name" in failed.stderr
        assert await session.run("") == failed  # every test of a program that does not compile
    # Constant evaluation that keeps g++ busy for seconds (each loop under g++'s own limits): killed at the
    # compile limit, so no return code.
    slow = """
constexpr long f() { long s = 0; for (long i = 0; i < 5000; ++i) for (long j = 0; j < 5000; ++j) s += i ^ j; return s; }
static_assert(f() > 0);
int main() { return 0; }
"""
    async with sandbox.open("cpp", slow, Limits(compile_s=0.5)) as session:
        failed = await session.prepare()
    assert failed is not None and failed.status == "compile_error" and failed.return_code is None, failed
