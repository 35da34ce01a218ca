"""Schemathesis against the server's and the router's own OpenAPI schemas (``pip install -e .[fuzz]``).

Every operation of each schema gets schema-conforming (positive) and schema-violating (negative) cases;
at least ``MIN_CASES`` are sent per target, counted here. Every answer must be: not a 5xx, not a hang
(``TIMEOUT_S``); a 4xx carries the error envelope ``{"error": {"message", "type", "param", "code"}}``
with a non-empty message; a 200 of a reward route carries numeric scores (a NaN or ±inf score would
reach the client as null). Afterwards no process has died or logged a traceback.

The processes are this module's own: two servers with a 128-token context (``--max-model-len``, so any
generated ``max_tokens``/``n`` stays cheap on CPU) and a router with client and admin keys in front of
them (two workers: the batch fan-out and the admin API are fuzzed too).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")  # the `fuzz` extra (in `dev`)

import requests  # noqa: E402 - schemathesis's transport; installed with it
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from services.local_stack import Child  # noqa: E402
from tests.conftest import start_router, start_server  # noqa: E402

MIN_CASES = 1000
# Cases per operation and mode. An operation with nothing to vary yields one case (Hypothesis stops there)
# and none in negative mode; the others reach these counts: server 6 x 2 x 90 + 5 = 1085, router
# 14 x 2 x 45 + 2 = 1262 (behind keys, its GET routes have an Authorization header to violate).
EXAMPLES = {"server": 90, "router": 45}
TIMEOUT_S = 30.0
SEED = int(os.environ["GENRM_FUZZ_SEED"]) if os.environ.get("GENRM_FUZZ_SEED") else None
CLIENT_KEY, ADMIN_KEY = "sk-fuzz-client-3b9d", "sk-fuzz-admin-71ce"
REWARD_ROUTES = {"/v1/reward", "/slime/reward", "/v1/reward/batch", "/get_reward"}


@pytest.fixture(scope="module")
def fuzz_targets(tiny_model: Path, logs: Path) -> Iterator[dict[str, Child]]:
    flags = ("--max-model-len", "128", "--torch-threads", "1", "--max-wait-ms", "5", "--judge-max-tokens", "16")
    servers: list[Child] = []
    router = None
    try:
        for i in range(2):
            servers.append(start_server(tiny_model, logs, *flags, name=f"fuzz-server{i}"))
        router = start_router([s.url for s in servers], logs, "--api-keys", CLIENT_KEY, "--admin-api-keys",
                              ADMIN_KEY, "--health-interval-s", "0.5")
        yield {"server": servers[0], "router": router, "other": servers[1]}
    finally:
        for child in [router, *servers]:
            if child is not None:
                child.stop()


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def problem(path: str, status: int, body: Any) -> str | None:
    """What is wrong with one answer, or None."""
    if status >= 500:
        return f"{status}: {str(body)[:300]}"
    if 400 <= status < 500:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or set(body) != {"error"}:
            return f"{status} without the error envelope: {str(body)[:300]}"
        if not isinstance(error.get("message"), str) or not error["message"].strip():
            return f"{status} with an empty message: {body}"
        if error.get("code") != status or not isinstance(error.get("type"), str):
            return f"{status} with a bad envelope: {body}"
    if status == 200 and path in REWARD_ROUTES and isinstance(body, dict):
        if path == "/v1/reward/batch":
            scores = [item["result"].get("score") for item in body.get("results", [])
                      if isinstance(item, dict) and isinstance(item.get("result"), dict)]
        elif path == "/get_reward":
            scores = body.get("rewards", [])
        else:
            scores = [body.get("score")]
        if not all(_is_number(s) for s in scores):
            return f"200 with a non-numeric score: {str(body)[:300]}"
    return None


def fuzz(target: Child, examples: int, headers: dict[str, str]) -> tuple[Counter, list[str], float]:
    """Run every operation's positive and negative cases; (cases by operation, problems, seconds)."""
    schema = schemathesis.openapi.from_url(target.url + "/openapi.json", headers=headers, timeout=30)
    session = requests.Session()
    counts: Counter = Counter()
    problems: list[str] = []
    start = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:
            try:
                fuzz_operation(operation, mode, examples, target.url, session, headers, counts, problems)
            except Unsatisfiable:  # nothing to violate (no parameters, no body): no negative case exists
                assert mode is GenerationMode.NEGATIVE, operation.label
    return counts, problems, time.monotonic() - start


def fuzz_operation(operation: Any, mode: GenerationMode, examples: int, base_url: str, session: requests.Session,
                   headers: dict[str, str], counts: Counter, problems: list[str]) -> None:
    label = f"{operation.label} [{mode.value}]"

    # The same cases on every run (CI time and results stay stable); GENRM_FUZZ_SEED=N explores others.
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=SEED is None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        counts[operation.label] += 1
        try:
            resp = case.call(base_url=base_url, session=session, headers=headers, timeout=TIMEOUT_S)
        except requests.RequestException as exc:  # a hang (timeout) or a dropped connection
            problems.append(f"{label}: no answer: {exc!r}\n    {case.as_curl_command(headers=headers)}")
            return
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        found = problem(operation.path, resp.status_code, body)
        if found:
            problems.append(f"{label}: {found}\n    {case.as_curl_command(headers=headers)}")

    (run if SEED is None else seed(SEED)(run))()


@pytest.mark.parametrize("name", ["server", "router"])
def test_schemathesis_finds_no_5xx_and_every_4xx_has_the_envelope(fuzz_targets, name, record_property):
    target = fuzz_targets[name]
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"} if name == "router" else {}
    logs_before = {c.name: (c, c.log_path.stat().st_size) for c in fuzz_targets.values()}
    counts, problems, seconds = fuzz(target, EXAMPLES[name], headers)
    total = sum(counts.values())
    record_property("fuzz_cases", total)
    print(f"\nschemathesis {name}: {total} cases over {len(counts)} operations in {seconds:.1f} s: {dict(counts)}")
    assert not problems, f"{len(problems)} bad answers of {total}:\n" + "\n".join(problems[:15])
    assert total >= MIN_CASES, counts
    # Reached: every operation of the schema, the router's own and the proxied ones.
    if name == "router":
        assert {"GET /workers", "POST /admin/workers", "DELETE /admin/workers", "POST /v1/reward/batch"} <= set(counts)
    assert {"POST /v1/chat/completions", "POST /v1/reward", "POST /get_reward"} <= set(counts)
    # Nobody crashed or logged a traceback meanwhile (a 4xx never logs one either).
    for child, size in logs_before.values():
        assert child.process.poll() is None, f"{child.name} died:\n{child.log_tail()}"
        with open(child.log_path, "rb") as f:
            f.seek(size)
            new = f.read().decode(errors="replace")
        assert "Traceback" not in new, f"{child.name} logged:\n{new[-3000:]}"
