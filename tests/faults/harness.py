"""Fault-injection harness (issue 7, "nothing lost on faults"): real processes on 127.0.0.1, no mocks.

Pieces:

- :class:`Proc`: one real process (``genrm serve``, ``genrm route``, a helper script) that can be killed with
  SIGKILL, frozen with SIGSTOP, thawed with SIGCONT and restarted *on the same port*;
- :func:`make_samples`: varied reward samples (half right, half wrong; short and long; distractor boxes),
  each with a unique id in ``extra_info`` and an answer that encodes the id, so every answer can be matched
  to the sample it belongs to (``pred`` names it) and its score checked against the math rule run here;
- :class:`Load`: the real :class:`~trainer_client.AsyncRewardClient` sending single ``/v1/reward`` calls,
  a bounded number at a time, each with its own deadline, paced so that faults land mid-run; the fault
  script runs beside it and can wait for progress (:meth:`Load.reached`) or hold the senders
  (:meth:`Load.hold` / :meth:`Load.release`);
- :class:`Report`: sent / completed / failed / duplicated / wrong / silent zeros / latencies of one run,
  with :func:`markdown_table` to print several.

Scenarios live in :mod:`tests.faults.scenarios`; ``python -m tests.faults.run`` runs them all and prints the
table; ``tests/faults/test_faults.py`` runs them under pytest and asserts on the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.local_stack import Child, _die_with_parent, free_port, wait_ready
from trainer_client import AsyncRewardClient, GenRMError
from trainer_client.math_rule import compute_math

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FAULTY_WORKER = HERE / "faulty_worker.py"
SCRIPTED_JUDGE = ROOT / "tests" / "support" / "scripted_judge.py"

# Answers encode the sample id: right answers are TRUTH_BASE + id, wrong ones WRONG_BASE + id.
TRUTH_BASE, WRONG_BASE = 10_000, 60_000
MAX_SAMPLES = WRONG_BASE - TRUTH_BASE

# Router settings of every scenario: failure detection in about a second instead of the defaults' few
# seconds (probes every 0.5 s, 2 misses take a worker out), short breaker back-off so re-admission is seen
# within a run. Everything else (policy: affinity on reward routes, 3 attempts, ...) is the default.
ROUTER_ARGS = ("--health-interval-s", "0.5", "--health-timeout-s", "1", "--health-failure-threshold", "2",
               "--breaker-backoff-s", "0.5", "--breaker-backoff-max-s", "4", "--connect-timeout-s", "1")
SERVER_ARGS = ("--torch-threads", "1")  # the math recipe never runs the model; leave the cores to the load


# -- processes --------------------------------------------------------------------------------------


class Proc:
    """A real child process on a fixed port that can be killed, frozen and restarted on that port."""

    def __init__(self, name: str, argv: Callable[[int], list[str]], log_dir: Path, port: int = 0):
        self.name, self.argv, self.log_dir = name, argv, log_dir
        self.port = port or free_port()
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.child is not None, f"{self.name} is not running"
        return self.child.process.pid

    def spawn(self) -> Proc:
        """Start the process (appending to its log) without waiting for it."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{self.name}-{self.port}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - closed by Child.stop / kill9
        process = subprocess.Popen(self.argv(self.port), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   start_new_session=True, preexec_fn=_die_with_parent)
        self.child = Child(self.name, self.url, process, log_path, log)
        return self

    def start(self, timeout_s: float = 120.0) -> Proc:
        """Start it and return once ``/ready`` answers 200 (the log tail is in the error otherwise)."""
        self.spawn()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    async def astart(self, timeout_s: float = 120.0) -> Proc:
        """:meth:`start` for a coroutine: spawned from the calling (event-loop) thread, waited for in another.

        Never spawn from a worker thread: children die with their parent (``PR_SET_PDEATHSIG``), and to the
        kernel the parent is the *thread* that forked, so an executor thread ending would SIGTERM them.
        """
        self.spawn()
        try:
            await asyncio.to_thread(self.wait_ready, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        assert self.child is not None
        wait_ready(self.child, time.monotonic() + timeout_s)

    def kill9(self) -> None:
        """SIGKILL: no clean-up, no goodbye; sockets are reset by the kernel."""
        if self.child is not None:
            self.child.process.kill()
            self.child.process.wait()
            if self.child.log_file:
                self.child.log_file.close()
            self.child = None

    def sigstop(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def sigcont(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self) -> None:
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            self.child.stop(timeout_s=10)
            self.child = None

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        return self.child.log_tail(lines) if self.child else ""


def genrm(*args: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-m", "services.cli", *args, "--port", str(port)]


def script(path: Path, *args: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, str(path), str(port), *args]


def math_server(model: Path | str, log_dir: Path, name: str, *extra: str) -> Proc:
    return Proc(name, genrm("serve", "--model", str(model), "--log-level", "warning", *SERVER_ARGS, *extra), log_dir)


def router(workers: Sequence[str], log_dir: Path, *extra: str, name: str = "router", port: int = 0) -> Proc:
    return Proc(name, genrm("route", "--workers", *workers, "--log-level", "warning", *ROUTER_ARGS, *extra),
                log_dir, port=port)


def faulty_worker(mode: str, log_dir: Path, upstream: str | None = None) -> Proc:
    return Proc(f"faulty-{mode}", script(FAULTY_WORKER, mode, *([upstream] if upstream else [])), log_dir)


def scripted_judge(log_dir: Path, name: str = "judge") -> Proc:
    return Proc(name, script(SCRIPTED_JUDGE), log_dir)


def fapo_server(judge_url: str, log_dir: Path, name: str) -> Proc:
    """A FAPO server on the ``openai`` engine whose judge is ``judge_url`` (a scripted judge, or a dead port)."""
    return Proc(name, genrm("serve", "--engine", "openai", "--upstream-url", judge_url + "/v1",
                            "--upstream-model", "scripted-judge", "--recipe", "fapo", "--judge-timeout-s", "2",
                            "--upstream-timeout-s", "2", "--log-level", "warning"), log_dir)


# -- observing the router and servers ----------------------------------------------------------------


def workers_state(router_url: str) -> dict[str, dict[str, Any]]:
    """The router's view of each worker (``GET /workers``), by URL."""
    body = httpx.get(router_url + "/workers", timeout=5).json()
    return {w["url"]: w for w in body["workers"]}


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the Prometheus samples named ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        base, _, rest = series.partition("{")
        if base != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def scrape(url: str) -> str:
    try:
        return httpx.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


async def wait_until(cond: Callable[[], Any], what: str, timeout_s: float = 30.0, every_s: float = 0.05) -> Any:
    """Poll ``cond`` (run in a thread: it may do blocking HTTP) until truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            value = await asyncio.to_thread(cond)
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(every_s)


# -- samples ------------------------------------------------------------------------------------------

_FILLER = ("We expand the expression, collect like terms and check each step against the previous one. "
           "Nothing here changes the result; it only makes the solution long, as real ones are. ")


def make_samples(n: int, recipe: str = "math", flawed_every: int = 0) -> list[dict[str, Any]]:
    """``n`` varied samples, about half right and half wrong, each with ``extra_info.sample_id``.

    Right answers are ``TRUTH_BASE + id``, wrong ones ``WRONG_BASE + id``: the ``pred`` of any answer says
    which sample it belongs to. Kinds (by ``id % 6``): right; wrong; right after a wrong distractor box;
    wrong after the right box; right at the end of ~1.6 KB of text; no box at all (an "Answer:" line, which
    the boxed mode does not read: wrong, ``pred = [INVALID]``). For ``fapo``, every ``flawed_every``-th
    right sample asks the scripted judge to name a flawed step (``<<reply:\\boxed{2}>>``): scored 0.0 when
    judged, so a judge outage is visible in the score.
    """
    if n > MAX_SAMPLES:
        raise ValueError(f"at most {MAX_SAMPLES} samples")
    samples = []
    for i in range(n):
        truth, wrong = TRUTH_BASE + i, WRONG_BASE + i
        kind = i % 6
        question = f"Sample {i}: what is {truth - 777} + 777?"
        lead = f"Step 1. {truth - 777} + 777 needs a carry. "
        if kind == 0:
            solution = f"{lead}So the answer is \\boxed{{{truth}}}."
        elif kind == 1:
            solution = f"{lead}So the answer is \\boxed{{{wrong}}}."
        elif kind == 2:
            solution = f"{lead}At first I wrote \\boxed{{{wrong}}}, but rechecking: \\boxed{{{truth}}}."
        elif kind == 3:
            solution = f"{lead}I get \\boxed{{{truth}}}... no, it must be \\boxed{{{wrong}}}."
        elif kind == 4:
            solution = f"{lead}{_FILLER * 9}Therefore \\boxed{{{truth}}}."
        else:
            solution = f"{lead}Answer: {truth}"
        right = kind in (0, 2, 4)
        flawed = bool(recipe == "fapo" and flawed_every and right and (i // 6) % flawed_every == 0)
        if flawed:  # before the final box: the math rule reads the last one
            solution = solution.replace("Step 1.", "Step 1. <<reply:the flaw is in \\boxed{2}>>", 1)
        sample = {"recipe": recipe, "question": question, "solution": solution, "ground_truth": str(truth),
                  "extra_info": {"sample_id": i, "split": "train"}}
        assert compute_math(solution, str(truth)).acc == right, sample
        samples.append(sample)
    return samples


def sample_of_pred(pred: Any) -> int | None:
    """The sample id an answer's ``pred`` encodes (None for ``[INVALID]`` or anything else)."""
    if isinstance(pred, str) and pred.isdigit():
        value = int(pred)
        if TRUTH_BASE <= value < WRONG_BASE:
            return value - TRUTH_BASE
        if WRONG_BASE <= value < WRONG_BASE + MAX_SAMPLES:
            return value - WRONG_BASE
    return None


def flawed_marker(sample: dict[str, Any]) -> bool:
    return "<<reply:" in sample["solution"]


def check(sample: dict[str, Any], result: dict[str, Any]) -> str:
    """'' when ``result`` is the right answer to ``sample``, else what is wrong with it."""
    rule = compute_math(sample["solution"], sample["ground_truth"])
    if result.get("pred") != rule.pred or result.get("acc") != rule.acc:
        return f"pred/acc {result.get('pred')!r}/{result.get('acc')} != {rule.pred!r}/{rule.acc}"
    expected = rule.score
    if sample["recipe"] == "fapo" and rule.acc:
        if result.get("judge_asked") is not True:
            return "a right training sample was not sent to the judge"
        if result.get("judge_ok") is True:
            flawed = flawed_marker(sample)
            if result.get("flawed_positive") is not flawed:
                return f"flawed_positive {result.get('flawed_positive')} != {flawed}"
            expected = 0.0 if flawed else 1.0  # the default --fapo-flaw-penalty of 1.0
        elif result.get("judge_ok") is not False:
            return f"judge_ok is {result.get('judge_ok')!r}"
        # judge_ok false: the rule score stands, flagged (specs/fapo-judge.md)
    if result.get("score") != expected:
        return f"score {result.get('score')} != {expected}"
    return ""


def silent_zero(result: dict[str, Any]) -> bool:
    """A 0 that no judge verdict explains: the failure this platform must never produce."""
    return result.get("score") == 0 and not (result.get("judge_ok") is True and result.get("flawed_positive"))


# -- the load -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    index: int
    latency_s: float
    result: dict[str, Any] | None = None
    error: str = ""


class Load:
    """``samples`` through the real AsyncRewardClient: single ``/v1/reward`` calls, ``concurrency`` at a time,
    each with a deadline of ``deadline_s`` (sent to the router as ``X-GenRM-Timeout``), paced at
    ``rate`` calls/s (0 = as fast as possible) so that a run lasts long enough for faults to land in it."""

    def __init__(self, url: str, samples: Sequence[dict[str, Any]], *, concurrency: int = 32,
                 deadline_s: float = 10.0, rate: float = 0.0, max_retries: int = 4,
                 on_failure: str = "raise"):
        self.url, self.samples = url, list(samples)
        self.concurrency, self.deadline_s, self.rate = concurrency, deadline_s, rate
        self.max_retries, self.on_failure = max_retries, on_failure
        self.outcomes: list[Outcome] = []
        self.sent = 0
        self._next = 0
        self._go = asyncio.Event()
        self._go.set()
        self.started = 0.0
        self.wall_s = 0.0

    @property
    def done(self) -> int:
        return len(self.outcomes)

    def hold(self) -> None:
        """Senders stop taking new samples (calls already out go on)."""
        self._go.clear()

    def release(self) -> None:
        self._go.set()

    async def reached(self, n: int) -> None:
        """Wait until ``n`` calls have ended (answered or failed)."""
        while self.done < min(n, len(self.samples)):
            await asyncio.sleep(0.01)

    async def before(self, n: int, step: Awaitable[Any]) -> Any:
        """Await ``step`` (say, a restart and its re-admission); should the load reach ``n`` finished calls
        first, hold the senders until ``step`` is done, so the calls after ``n`` see its outcome."""
        task = asyncio.ensure_future(step)
        gate = asyncio.ensure_future(self.reached(n))
        try:
            done, _ = await asyncio.wait({task, gate}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                self.hold()
            return await task
        finally:
            gate.cancel()
            self.release()

    async def _sender(self, client: AsyncRewardClient) -> None:
        while True:
            await self._go.wait()
            i = self._next
            if i >= len(self.samples):
                return
            self._next += 1
            if self.rate:
                delay = self.started + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._go.wait()  # held while pacing: still send this one, but after the hold
            self.sent += 1
            t0 = time.monotonic()
            try:
                result = await client.score(self.samples[i])
                outcome = Outcome(i, time.monotonic() - t0, result=result)
            except GenRMError as exc:
                outcome = Outcome(i, time.monotonic() - t0, error=str(exc))
            except Exception as exc:  # anything else is a client bug: counted as a failure, never swallowed
                outcome = Outcome(i, time.monotonic() - t0, error=f"unexpected {exc!r}")
            self.outcomes.append(outcome)

    async def run(self, inject: Callable[[Load], Awaitable[Any]] | None = None) -> Load:
        """Send every sample; ``inject(self)`` (the fault script) runs alongside and must finish too."""
        client = AsyncRewardClient(self.url, timeout_s=self.deadline_s, max_retries=self.max_retries,
                                   concurrency=self.concurrency, on_failure=self.on_failure, mode="single",
                                   progress=False)
        self.started = time.monotonic()
        try:
            senders = [asyncio.create_task(self._sender(client)) for _ in range(self.concurrency)]
            script = asyncio.create_task(inject(self)) if inject else None
            await asyncio.gather(*senders)
            self.wall_s = time.monotonic() - self.started
            if script is not None:
                await script
        finally:
            await client.aclose()
        return self


# -- reports ------------------------------------------------------------------------------------------


@dataclass
class Report:
    scenario: str
    sent: int = 0
    completed: int = 0
    failed: int = 0
    duplicated: int = 0
    misdelivered: int = 0
    wrong: int = 0
    silent_zeros: int = 0
    judge_failed: int = 0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    deadline_s: float = 0.0
    wall_s: float = 0.0
    executions: float | None = None
    executions_at_least: bool = False  # a killed server's last counts died with it
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # what the scenario observed (ejections, states, ...)
    errors: list[str] = field(default_factory=list)  # a few failure messages, for the assertion text

    @property
    def lost(self) -> int:
        return self.sent - self.completed - self.failed

    @property
    def re_executions(self) -> float | None:
        return None if self.executions is None else self.executions - self.completed

    def summary(self) -> str:
        return (f"{self.scenario}: sent {self.sent}, completed {self.completed}, failed {self.failed}, "
                f"duplicated {self.duplicated}, misdelivered {self.misdelivered}, wrong {self.wrong}, "
                f"silent zeros {self.silent_zeros}, judge_ok=false {self.judge_failed}, p99 {self.p99_ms:.0f} ms, "
                f"max {self.max_ms:.0f} ms (deadline {self.deadline_s:g} s); notes: {'; '.join(self.notes)}; "
                f"first errors: {self.errors[:3]}")


def build_report(scenario: str, load: Load, notes: Sequence[str] = (), executions: float | None = None,
                 facts: dict[str, Any] | None = None) -> Report:
    samples = load.samples
    rep = Report(scenario, sent=load.sent, deadline_s=load.deadline_s, wall_s=load.wall_s, executions=executions,
                 notes=list(notes), facts=dict(facts or {}))
    answered: Counter[int] = Counter()
    latencies = sorted(o.latency_s for o in load.outcomes)
    for o in load.outcomes:
        if o.result is None:
            rep.failed += 1
            if len(rep.errors) < 5:
                rep.errors.append(o.error or "None result")
            continue
        rep.completed += 1
        sample = samples[o.index]
        owner = sample_of_pred(o.result.get("pred"))
        if owner is not None:
            answered[owner] += 1
            if owner != o.index:  # another sample's answer came back to this call
                rep.misdelivered += 1
        problem = check(sample, o.result)
        if problem:
            rep.wrong += 1
            if len(rep.errors) < 5:
                rep.errors.append(f"sample {o.index}: {problem}")
        if silent_zero(o.result):
            rep.silent_zeros += 1
        if o.result.get("judge_ok") is False:
            rep.judge_failed += 1
    rep.duplicated = sum(c - 1 for c in answered.values() if c > 1)
    if latencies:
        rep.p99_ms = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000
        rep.max_ms = latencies[-1] * 1000
    return rep


def markdown_table(reports: Sequence[Report]) -> str:
    lines = ["| scenario | sent | completed | failed | duplicated | wrong | p99 ms | max ms | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in reports:
        notes = list(r.notes)
        if r.misdelivered:
            notes.insert(0, f"{r.misdelivered} answers of another sample")
        if r.silent_zeros:
            notes.insert(0, f"{r.silent_zeros} SILENT ZEROS")
        if r.lost:
            notes.insert(0, f"{r.lost} LOST")
        notes.append(f"deadline {r.deadline_s:g} s, wall {r.wall_s:.1f} s")
        if r.re_executions is not None:
            if r.executions_at_least:  # some of the killed process's executions were never scraped
                notes.append(f"server-side executions >= {r.executions:.0f} (the killed server's last counts "
                             "died with it)")
            else:
                notes.append(f"server-side executions {r.executions:.0f} (re-executed {r.re_executions:+.0f})")
        lines.append(f"| {r.scenario} | {r.sent} | {r.completed} | {r.failed} | {r.duplicated} | {r.wrong} | "
                     f"{r.p99_ms:.0f} | {r.max_ms:.0f} | {'; '.join(notes)} |")
    return "\n".join(lines)

