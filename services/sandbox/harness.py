"""The programs that run call-based and assert tests inside a session, built once per sample.

A session prepares ONE program and runs it once per stdin, so the harness embeds the solution's code and
reads the per-test part (the arguments, or the assertions) from stdin, after a per-run random nonce line.

The result travels on a channel the solution's output cannot forge or corrupt: before the solution runs, the
harness keeps a private duplicate of fd 1 and points fds 0 and 1 at /dev/null, so ``print``, ``sys.stdout``
and ``os.write(1, ...)`` of the solution go nowhere; the harness then writes one line ``<nonce> <kind>
<payload>`` on its duplicate and leaves with ``os._exit`` (no atexit hook or lingering thread of the solution
runs after it). A program that never returns is the sandbox's ``timeout``. An assert test passes only on the
``passed`` mark the harness writes after the assertions ran: a solution that exits early (``os._exit(0)``,
``sys.exit(0)``, ``exit()``) before them exits 0 but carries no mark, and fails. Code in the same process
that reads the harness's memory could still find the nonce and the fd; nothing inside one process stops that.
"""

from __future__ import annotations

import json
import re
from typing import Any

# The names LiveCodeBench's own judge defines before a call-based solution (LeetCode starter code uses
# ``List[int]``, ``Optional``, ``deque`` without importing them); prime_code and SandboxFusion's verl client
# prepend the same list. ``from builtins import *`` undoes the shadowing of builtins such as ``pow``.
CALL_PRELUDE = """\
from string import *
from re import *
from datetime import *
from collections import *
from heapq import *
from bisect import *
from copy import *
from math import *
from random import *
from statistics import *
from itertools import *
from functools import *
from operator import *
from io import *
from sys import *
from json import *
from builtins import *
from typing import *
import string
import re
import datetime
import collections
import heapq
import bisect
import copy
import math
import random
import statistics
import itertools
import functools
import operator
import io
import sys
import json
sys.setrecursionlimit(50000)
"""

# Shared by both harnesses: read stdin whole, hide fds 0/1 from the solution, compile it (a SyntaxError is
# reported as ``compile_error``), and write the one result line.
_COMMON = r'''
import os as _os
import sys as _sys
import types as _types

_SOLUTION = __SOLUTION__


def _open_channel():
    raw = _sys.stdin.buffer.read()
    nonce, _, payload = raw.partition(b"\n")
    null = _os.open(_os.devnull, _os.O_RDWR)
    out = _os.dup(1)  # not inheritable: a child of the solution does not get it
    _os.dup2(null, 0)
    _os.dup2(null, 1)
    _os.close(null)

    def mark(kind, text=""):
        line = nonce + b" " + kind.encode() + (b" " + text.encode() if text else b"") + b"\n"
        while line:
            line = line[_os.write(out, line):]
        _sys.stderr.flush()

    return payload, mark


def _print_exc():
    import traceback  # only on the failure paths: it costs ~3 ms to import

    traceback.print_exc()


def _compile(mark):
    try:
        return compile(_SOLUTION, "<solution>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):  # ValueError: a null byte in the source
        _print_exc()
        mark("compile_error")
        _os._exit(1)
'''

_CALL = _COMMON + r'''
import json as _json

_FN_NAME = __FN_NAME__
_PRELUDE = __PRELUDE__


def _target(namespace):
    """Solution().NAME when the code defines class Solution with that method, else the top-level NAME."""
    cls = namespace.get("Solution")
    if isinstance(cls, type) and hasattr(cls, _FN_NAME):
        return getattr(cls(), _FN_NAME)
    function = namespace.get(_FN_NAME)
    return function if callable(function) else None


def _main():
    payload, mark = _open_channel()
    code = _compile(mark)
    args = _json.loads(payload)
    module = _types.ModuleType("solution")
    _sys.modules["solution"] = module
    exec(_PRELUDE, module.__dict__)
    exec(code, module.__dict__)
    target = _target(module.__dict__)
    if target is None:
        _sys.stderr.write(f"no class Solution with a method {_FN_NAME} and no function {_FN_NAME}\n")
        mark("not_found")
        _os._exit(1)
    result = target(*args)
    try:
        text = _json.dumps(result)
    except (TypeError, ValueError, RecursionError) as exc:
        _sys.stderr.write(f"the return value is not JSON: {exc}\n")
        mark("unserializable", type(result).__name__)
        _os._exit(0)
    mark("return", text)
    _os._exit(0)


_main()
'''

_ASSERT = _COMMON + r'''

def _main():
    payload, mark = _open_channel()
    code = _compile(mark)
    tests = compile(payload.decode(), "<tests>", "exec", dont_inherit=True)
    module = _types.ModuleType("__main__")  # the solution and its assertions, as one program run as a script
    _sys.modules["__main__"] = module
    exec(code, module.__dict__)
    try:
        exec(tests, module.__dict__)
    except AssertionError:
        _print_exc()
        mark("failed")
        _os._exit(1)
    mark("passed")
    _os._exit(0)


_main()
'''


_SLOT = re.compile(r"__(SOLUTION|FN_NAME|PRELUDE)__")


def _fill(template: str, **values: str) -> str:
    """One pass over the template only: a solution that contains ``__FN_NAME__`` stays as written."""
    return _SLOT.sub(lambda m: repr(values[m.group(1)]), template)


def call_harness(solution: str, fn_name: str) -> str:
    """The program for call-based tests; each run's stdin is :func:`call_stdin`."""
    return _fill(_CALL, SOLUTION=solution, FN_NAME=fn_name, PRELUDE=CALL_PRELUDE)


def assert_harness(solution: str) -> str:
    """The program for assert tests (the solution, then the test's assertions); stdin is :func:`assert_stdin`."""
    return _fill(_ASSERT, SOLUTION=solution)


def call_stdin(nonce: str, args: list[Any]) -> str:
    return f"{nonce}\n{json.dumps(args)}"


def assert_stdin(nonce: str, source: str) -> str:
    return f"{nonce}\n{source}"


def read_mark(stdout: str, nonce: str) -> tuple[str, str] | None:
    """``(kind, payload)`` of the harness's result line, or None when the program ended without writing one."""
    prefix = nonce + " "
    for line in reversed(stdout.split("\n")):
        if line.startswith(prefix):
            kind, _, payload = line[len(prefix):].partition(" ")
            return kind, payload
    return None
