"""A Python program runs in the sandbox exactly as ``python3 main.py < stdin`` runs it (specs/code-rule.md §3):
each case runs both ways, the host's real interpreter being the reference, and must agree on stdout, stderr and
the exit status."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.sandbox import SANDBOX_ENV, BwrapConfig, Limits, Sandbox
from tests.sandbox.conftest import needs_bwrap

pytestmark = needs_bwrap

SANDBOX_MAIN = "/box/work/main.py"

CASES: dict[str, tuple[str, bytes]] = {
    "global": ('''
count = 0
def bump():
    global count
    count += 1
for line in open(0):
    bump()
print(count)
''', b"a\nb\nc\n"),
    "stdin_buffer": ('''
import sys
data = sys.stdin.buffer.read()
print(len(data), data.split())
''', b"1 2\n3\r\n\xff\n"),
    "open_0": ("print(open(0).read().upper(), end='')\n", b"abc\ndef"),
    "input": ("a = input()\nb = input()\nprint(repr(a), repr(b))\n", b"x y\r\nz\n"),
    "input_eof": ("print(input())\nprint(input())\n", b"only\n"),
    "for_sys_stdin": ("import sys\nfor line in sys.stdin:\n    print(line.split())\n", b"1 2\n\n3\n"),
    "readline_and_read": ("import sys\nn = int(sys.stdin.readline())\nprint(n, sys.stdin.read().split())\n",
                          b"2\n5 6\n"),
    "surrogates": ("import sys\ns = sys.stdin.read()\nprint(repr(s))\nprint(s, end='')\n", b"caf\xc3\xa9 \xff\n"),
    "unicode_out": ("print('h\u00e9llo \u2713 \u4e16\u754c')\n", b""),
    "exit": ("print('before')\nexit()\nprint('after')\n", b""),
    "exit_3": ("print('x')\nexit(3)\n", b""),
    "exit_message": ("exit('bye now')\n", b""),
    "sys_exit_0": ("import sys\nprint(1)\nsys.exit(0)\n", b""),
    "sys_exit_none": ("import sys\nsys.exit(None)\n", b""),
    "sys_exit_msg": ("import sys\nprint('partial')\nsys.exit('fatal: msg')\n", b""),
    "sys_exit_256": ("import sys\nsys.exit(256)\n", b""),
    "sys_exit_neg": ("import sys\nsys.exit(-1)\n", b""),
    "sys_exit_true": ("import sys\nsys.exit(True)\n", b""),
    "uncaught": ("print('out first')\ndef f():\n    return 1 / 0\nf()\n", b""),
    "uncaught_chained": ("try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('v') from e\n", b""),
    "keyboard_interrupt": ("raise KeyboardInterrupt\n", b""),
    "main_guard": ("def main():\n    print(__name__)\nif __name__ == '__main__':\n    main()\n", b""),
    "argv": ("import sys\nprint(sys.argv[1:], len(sys.argv))\n", b""),
    "no_newline": ("import sys\nsys.stdout.write('no newline')\n", b""),
    "stderr_and_stdout": ("import sys\nprint('o1')\nprint('e1', file=sys.stderr)\nprint('o2')\n", b""),
    "atexit": ("import atexit\natexit.register(lambda: print('at exit'))\nprint('main')\n", b""),
    "thread_after_main": ('''
import threading, time
def late():
    time.sleep(0.2)
    print("thread done")
threading.Thread(target=late).start()
print("main done")
''', b""),
    "file_left_open": ("f = open('out.txt', 'w')\nf.write('data')\nprint(open('out.txt').read() == '')\n", b""),
    "deep_recursion": ('''
import sys
sys.setrecursionlimit(10 ** 6)
def depth(n):
    return 0 if n == 0 else 1 + depth(n - 1)
print(depth(200000))
''', b""),
    "recursion_error": ("def f(n):\n    return f(n + 1)\n"
                        "try:\n    f(0)\nexcept RecursionError:\n    print('recursion')\n", b""),
    "memory_error_caught": ("try:\n    x = bytearray(10 ** 13)\nexcept MemoryError:\n    print('caught')\n", b""),
    "syntax_error": ("def f(:\n    pass\n", b""),
    "indentation_error": ("if True:\nprint(1)\n", b""),
    "hash_order": ("print(list({'apple', 'banana', 'cherry', 'date'}))\nprint(hash('x'))\n", b""),
    "big_output": ("import sys\nsys.stdout.write('0123456789' * 100000)\n", b""),
    "stdin_twice": ("import sys\nprint(len(sys.stdin.read()), repr(open(0).read()))\n", b"abc\n"),
    "print_flush_interleave": ('''
import os, sys
print("buffered", end="")
os.write(1, b"direct\\n")
sys.stdout.flush()
''', b""),
    "sys_modules_main": ("import sys\nprint(sys.modules['__main__'].__dict__.get('marker'))\nmarker = 5\n", b""),
    "excepthook": ('''
import sys
def hook(t, v, tb):
    print("hooked", t.__name__, v)
sys.excepthook = hook
raise RuntimeError("boom")
''', b""),
    "stdout_encoding": ("import sys\nprint(sys.stdout.encoding, sys.stdout.errors, sys.stdin.errors,"
                        " sys.stderr.errors, sys.stdout.line_buffering, sys.stderr.line_buffering,"
                        " sys.stdin.name)\n", b""),
}


def host_run(code: str, stdin: bytes, tmp: Path) -> tuple[str, str, int]:
    """The reference: the real interpreter, its own process, the sandbox's environment, the program as a file."""
    main = tmp / "main.py"
    main.write_text(code)
    (tmp / "stdin").write_bytes(stdin)
    with open(tmp / "stdin", "rb") as fd:
        done = subprocess.run([BwrapConfig().python, str(main)], stdin=fd, capture_output=True, cwd=tmp,
                              env=SANDBOX_ENV, timeout=30)

    def fix(out: bytes) -> str:
        return out.decode("utf-8", "replace").replace(str(main), SANDBOX_MAIN)

    return fix(done.stdout), fix(done.stderr), done.returncode


@pytest.mark.parametrize("name", sorted(CASES))
async def test_runs_as_python3_would(sandbox: Sandbox, tmp_path: Path, name: str) -> None:
    code, stdin = CASES[name]
    expected = host_run(code, stdin, tmp_path)
    async with sandbox.open("python", code, Limits(wall_s=10)) as session:
        failed = await session.prepare()
        raw = failed or await session.run(stdin.decode("utf-8", "surrogateescape"))
    assert (raw.stdout, raw.stderr, raw.return_code) == expected
    if expected[2] == 0:
        assert raw.status == "ok"
    elif "Error:" in expected[1] and ("SyntaxError" in expected[1] or "IndentationError" in expected[1]):
        assert raw.status == "compile_error"  # a Python SyntaxError is found at prepare(), before any test
    else:
        assert raw.status == "runtime_error"


async def test_each_test_is_its_own_process(sandbox: Sandbox) -> None:
    """Tests of one session see nothing of each other: files, /tmp, /dev/shm, processes, module state, random."""
    code = '''
import os, random, sys
print(sorted(os.listdir(".")), sorted(os.listdir("/tmp")), sorted(os.listdir("/dev/shm")))
print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()) == sorted({1, os.getppid(), os.getpid()}))
print(getattr(sys, "leftover", None), random.random())
sys.leftover = 1
for path in ("state.txt", "/tmp/state", "/dev/shm/state"):
    open(path, "w").write("x")
os.mkdir("sub")
os.chmod(".", 0o500)
if os.fork() == 0:
    os.setsid()
    import time
    time.sleep(60)
'''
    async with sandbox.open("python", code, Limits(wall_s=5)) as session:
        first = await session.run("")
        second = await session.run("")
    assert first.status == second.status == "ok", (first, second)
    lines1, lines2 = first.stdout.splitlines(), second.stdout.splitlines()
    assert lines1[0] == lines2[0] == "['main.py'] [] []"
    assert lines1[1] == lines2[1] == "True"  # nothing but init, the runner and the test itself
    assert lines1[2].startswith("None ") and lines2[2].startswith("None ")
    assert lines1[2] != lines2[2]  # random is seeded afresh in each test, as in a new interpreter


async def test_stdin_as_bytes_and_huge(sandbox: Sandbox) -> None:
    code = "import sys\ndata = sys.stdin.buffer.read()\nprint(len(data), data.count(b'\\n'))\n"
    big = ("1 2 3\n" * 500_000).encode()
    async with sandbox.open("python", code, Limits(wall_s=10)) as session:
        raw, _ = await session.run_with_files(big)
    assert (raw.status, raw.stdout) == ("ok", f"{len(big)} 500000\n")


async def test_kernel_state_does_not_cross_tests(sandbox: Sandbox) -> None:
    """SysV IPC objects and POSIX message queues a test leaves are gone before the next test."""
    code = r'''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def ipc(kind):
    return sorted(open("/proc/sysvipc/" + kind).read().splitlines()[1:])
print(ipc("shm"), ipc("msg"), os.listdir("/dev/mqueue"))
assert libc.shmget(1234, 4096, 0o1600) >= 0, ctypes.get_errno()  # IPC_CREAT | 0600
assert libc.msgget(99, 0o1600) >= 0, ctypes.get_errno()
assert libc.mq_open(b"/stash", 0o102, 0o600, None) >= 0, ctypes.get_errno()  # O_RDWR | O_CREAT
print("stashed")
'''
    async with sandbox.open("python", code) as session:
        first, second = await session.run(""), await session.run("")
    assert first.status == second.status == "ok", (first, second)
    assert first.stdout == second.stdout == "[] [] []\nstashed\n"


async def test_resource_limits_seen_by_the_program(sandbox: Sandbox) -> None:
    code = """
import resource
for name in ("RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_CORE"):
    print(name, resource.getrlimit(getattr(resource, name)))
print("oom", open("/proc/self/oom_score_adj").read().strip())
"""
    async with sandbox.open("python", code, Limits(wall_s=2.5, memory_mb=256, processes=16)) as session:
        raw = await session.run("")
    assert raw.stdout.splitlines() == [
        f"RLIMIT_AS ({256 << 20}, {256 << 20})", "RLIMIT_NPROC (18, 18)", "RLIMIT_CPU (3, 4)",
        "RLIMIT_NOFILE (1024, 1024)", "RLIMIT_CORE (0, 0)", "oom 1000"], raw
