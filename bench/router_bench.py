"""Benchmark the genrm router against sglang-router and vllm-router in front of mock workers (loopback only).

Not a test: it prints markdown tables, each value the median of --reps runs, systems interleaved per
repetition (rotating the order) so that they are measured side by side under the same machine noise.
The router under test is pinned to --router-cpu; wrk, the mock workers (bench/mock_worker.py) and this
script to --load-cpu. Router CPU time and RSS are read from /proc for the router's whole process group.

Scenarios (--scenarios):
  overhead  2 workers, --connections, service time 0 ms and 50 ms: direct (wrk at worker 1), genrm,
            sglang-router, vllm-router, all round_robin; req/s, latency, router CPU µs/request, RSS.
  scaling   genrm only, 1/2/4/8 workers of 16 slots at 50 ms, 16 connections per worker: % of linear.
  slow      4 workers, one 5× slower (250 ms vs 50 ms); genrm policies vs an all-fast pool; p99 ratio.
  grpo      aiohttp client, groups of 8 requests sharing a prompt and an affinity key, 4 workers:
            share of each group on its modal worker and load imbalance, per genrm policy.
  grpo_multi  the same GRPO trace through R = 1, 2, 3 genrm router replicas (--policy affinity), each request
            to a replica picked at random, over 4 workers at 50 ms and over a pool with one 5× slower;
            this checkout against --baseline-ref (the router of that commit, exported with git archive).
  fairshare 4 workers at 50 ms behind --max-in-flight-per-worker 8, two API keys: a light client (8 in flight)
            alone, then beside a heavy client sending 4,096-request bursts (bench/load_client.py); its p99
            ratio and the heavy client's throughput, with fair share on and off (FIFO).

    .venv/bin/python bench/router_bench.py --install-rust-routers     # once: .bench-venv with the Rust routers
    .venv/bin/python bench/router_bench.py --scenarios overhead --duration 5 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import contextlib
import importlib.metadata
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
SYSTEM_PROMPT = ("You are a strict grader. Read the problem and the candidate solution, check every step, "
                 "and answer with the final verdict in \\boxed{1} (correct) or \\boxed{-1} (incorrect).")
FILLER = "We expand the expression, collect like terms and check each step of the arithmetic carefully. "
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOTES: list[str] = []  # printed under the table of the scenario that produced them


def note(text: str) -> None:
    print(f"  note: {text}", file=sys.stderr, flush=True)
    NOTES.append(text)


def chat_body(question: str, solution: str, **extra: object) -> dict:
    return {"model": "mock", "max_tokens": 16, **extra,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": f"Problem: {question}\n\nSolution: {solution}"}]}


# -- processes ----------------------------------------------------------------------------------------


class Fleet:
    """Subprocesses started in their own process group, pinned with taskset; all killed on exit."""

    _all: ClassVar[list[subprocess.Popen]] = []

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: Sequence[str], cpus: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(["taskset", "-c", cpus, *cmd], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})}, cwd=cwd)
        log.close()
        proc.log_path = self.logdir / f"{name}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        Fleet._all.append(proc)
        return proc

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            kill(proc)
            Fleet._all.remove(proc)

    @classmethod
    def kill_all(cls) -> None:
        """Kill what no ``with Fleet`` block has stopped yet (at exit, also after Ctrl-C or SIGTERM)."""
        while cls._all:
            kill(cls._all.pop())


def kill(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s``."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of a group whose leader exited
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace_s)


def log_tail(proc: subprocess.Popen, lines: int = 3) -> str:
    text = Path(proc.log_path).read_text(errors="replace").strip().splitlines()  # type: ignore[attr-defined]
    return " | ".join(line.strip()[:200] for line in text[-lines:])


def worker_posts(url: str) -> int:
    """POSTs a mock worker has served so far (its /stats)."""
    with urllib.request.urlopen(url + "/stats", timeout=5) as resp:
        return json.loads(resp.read())["posts"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def probe(url: str, body: bytes | None = None, header: str | None = None, timeout: float = 2.0,
          key: str | None = None) -> str:
    """GET (or POST ``body``) ``url``: "" when it answers 200 (with ``header`` when given), else why not."""
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            if header and header not in resp.headers:
                return f"{resp.status} without a {header} header"
            return ""
    except OSError as e:  # HTTPError (non-2xx) included
        return f"{url}: {e}"


def wait_until(proc: subprocess.Popen, check: Callable[[], str], timeout_s: float = 60.0) -> str:
    """Poll ``check`` until it returns ""; else the reason: the process exited, or the last failure at timeout."""
    deadline, why = time.monotonic() + timeout_s, "timeout"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited ({proc.returncode})"
        why = check()
        if not why:
            return ""
        time.sleep(0.2)
    return f"not ready in {timeout_s:.0f} s ({why})"


def group_usage(pgid: int) -> tuple[float, int]:
    """CPU seconds (utime+stime, all threads) and VmRSS bytes summed over process group ``pgid``."""
    cpu_ticks, rss_kb = 0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
            if int(fields[2]) != pgid:
                continue
            cpu_ticks += int(fields[11]) + int(fields[12])
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return cpu_ticks / CLK_TCK, rss_kb * 1024


# -- workers and routers --------------------------------------------------------------------------------


@dataclass
class Ctx:
    """Settings shared by all scenarios."""

    args: argparse.Namespace
    logdir: Path
    body_file: Path
    genrm: str
    rust_python: Path | None  # None: sglang-router not installed
    vllm_router: Path | None


def start_workers(fleet: Fleet, ctx: Ctx, delays_ms: Sequence[float], max_concurrency: int = 0) -> list[str]:
    """Start one mock worker per delay; return their base URLs once all answer /health."""
    urls, procs = [], []
    for delay in delays_ms:
        port = free_port()
        procs.append(fleet.start(f"worker-{port}", [sys.executable, str(BENCH / "mock_worker.py"), "--host", HOST,
                                                     "--port", str(port), "--delay-ms", str(delay),
                                                     "--max-concurrency", str(max_concurrency)],
                                 ctx.args.load_cpu))
        urls.append(f"http://{HOST}:{port}")
    for proc, url in zip(procs, urls, strict=True):
        why = wait_until(proc, lambda u=url: probe(u + "/health"), 30)
        if why:
            raise RuntimeError(f"mock worker {url} {why}: {log_tail(proc)}")
    return urls


def router_command(ctx: Ctx, system: str, port: int, workers: Sequence[str], policy: str,
                   extra: Sequence[str] = ()) -> tuple[list[str], dict]:
    """Command line and extra env of one router (``system``: genrm, sglang or vllm; ``extra``: genrm flags)."""
    if system == "genrm":
        return [ctx.genrm, "route", "--host", HOST, "--port", str(port), "--workers", ",".join(workers),
                "--policy", policy, "--log-level", "warning", *extra], {}
    offline = {"HF_HUB_OFFLINE": "1"}
    metrics = ["--prometheus-host", HOST, "--prometheus-port", str(free_port())]  # the default 29000 collides
    if system == "sglang":
        return [str(ctx.rust_python), "-m", "sglang_router.launch_router", "--host", HOST, "--port", str(port),
                "--worker-urls", *workers, "--policy", policy, "--log-level", "warn", *metrics], offline
    if system == "vllm":
        return [str(ctx.vllm_router), "--host", HOST, "--port", str(port), "--worker-urls", *workers,
                "--policy", policy, "--log-level", "warning", *metrics], offline
    raise ValueError(system)


@dataclass
class Target:
    """Something wrk can load: a router (with its process, for CPU/RSS) or a worker hit directly."""

    name: str
    url: str
    proc: subprocess.Popen | None = None


def start_router(fleet: Fleet, ctx: Ctx, system: str, workers: Sequence[str], policy: str,
                 extra: Sequence[str] = (), key: str | None = None) -> Target | None:
    """Start a router and wait until a real POST comes back from a worker; None (noted) when it fails to start.
    ``extra``: more genrm flags; ``key``: the API key of that first POST."""
    port = free_port()
    cmd, env = router_command(ctx, system, port, workers, policy, extra)
    proc = fleet.start(f"{system}-{policy}-{port}", cmd, ctx.args.router_cpu, env)
    url = f"http://{HOST}:{port}"
    body = ctx.body_file.read_bytes()
    why = wait_until(proc, lambda: probe(url + "/ready")) if system == "genrm" else ""
    why = why or wait_until(proc, lambda: probe(url + CHAT_PATH, body, "x-worker", key=key))
    if why:
        note(f"{system} --policy {policy} {why}; log: {log_tail(proc) or '(empty)'}; skipped")
        kill(proc)
        return None
    return Target(f"{system} ({policy})", url, proc)


def start_genrm(fleet: Fleet, ctx: Ctx, workers: Sequence[str], policies: Sequence[str]) -> Target | None:
    """Our router with the first policy of ``policies`` it accepts (a fallback is noted)."""
    for i, policy in enumerate(policies):
        target = start_router(fleet, ctx, "genrm", workers, policy)
        if target:
            if i:
                note(f"genrm: {policies[0]} not available, measured with {policy} instead")
            return target
    return None


# -- measuring ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_req: float | None = None
    rss_mb: float | None = None
    slow_share: float | None = None  # % of the requests served by the slow worker (slow scenario)

    def __str__(self) -> str:
        return (f"{self.rps:,.0f} req/s, p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, {self.errors} errors, "
                f"router {fmt(self.cpu_us_per_req, 0)} µs/req")


def run_wrk(ctx: Ctx, target: Target, connections: int, duration_s: int, affinity_keys: bool = False) -> Run:
    """One wrk run (1 thread, pinned to the load CPU) with router CPU and RSS measured around it."""
    env = {**os.environ, "WRK_BODY_FILE": str(ctx.body_file), "WRK_AFFINITY_KEYS": "1" if affinity_keys else "0"}
    cmd = ["taskset", "-c", ctx.args.load_cpu, ctx.args.wrk, "-t1", f"-c{connections}", f"-d{duration_s}s",
           "--timeout", "10s", "-s", str(BENCH / "wrk_post.lua"), target.url + CHAT_PATH]
    if target.proc and target.proc.poll() is not None:
        raise RuntimeError(f"{target.name} exited ({target.proc.returncode}): {log_tail(target.proc)}")
    cpu0 = group_usage(target.proc.pid)[0] if target.proc else 0.0
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration_s + 60)
    cpu1, rss = group_usage(target.proc.pid) if target.proc else (0.0, 0)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (rc {out.returncode}): {out.stderr.strip()[-300:]}")
    r = json.loads(line[5:])
    run = Run(r["requests"], r["requests"] / (r["duration_us"] / 1e6), r["p50"] / 1000, r["p99"] / 1000, r["errors"])
    if target.proc and r["requests"]:
        run.cpu_us_per_req, run.rss_mb = (cpu1 - cpu0) / r["requests"] * 1e6, rss / 2**20
    return run


T = TypeVar("T")


def interleave(ctx: Ctx, keys: Sequence[str], measure: Callable[[str, int], T],
               seconds: int | None = None) -> dict[str, list[T]]:
    """``measure(key, seconds)`` for every key: --warmup once (discarded), then --reps times in a rotating order
    (``seconds``: each measured run's, instead of --duration)."""
    a, keys = ctx.args, list(keys)
    runs: dict[str, list[T]] = {k: [] for k in keys}
    for rep in range(-1 if a.warmup else 0, a.reps):
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)] if keys else []:
            try:
                result = measure(key, a.warmup if rep < 0 else seconds or a.duration)
            except Exception as e:  # one failed run must not lose the others
                note(f"{key}, {'warmup' if rep < 0 else f'repetition {rep + 1}'}: {e}")
                continue
            if rep >= 0:
                runs[key].append(result)
                print(f"  [{rep + 1}/{a.reps}] {key}: {result}", file=sys.stderr, flush=True)
    return runs


def median(runs: Sequence[object], attr: str) -> float | None:
    """Median of ``attr`` over runs, ignoring None."""
    values = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# -- scenarios ---------------------------------------------------------------------------------------------


def scenario_overhead(ctx: Ctx) -> tuple[str, str]:
    """Per-request cost of each router over 2 workers at 0 ms and 50 ms service time, direct as the floor."""
    a, rows = ctx.args, []
    for delay in (0.0, 50.0):
        with Fleet(ctx.logdir) as fleet:
            workers = start_workers(fleet, ctx, [delay, delay])
            targets = [Target("direct (worker 1 only, no router)", workers[0])]
            targets.append(start_genrm(fleet, ctx, workers, ["round_robin", "least_outstanding"]))
            for system, present in (("sglang", ctx.rust_python), ("vllm", ctx.vllm_router)):
                if present:
                    targets.append(start_router(fleet, ctx, system, workers, "round_robin"))
                else:
                    note(f"{system}-router not installed in {a.rust_venv} (see --install-rust-routers); skipped")
            by_name = {t.name: t for t in targets if t}
            print(f"overhead, {delay:g} ms: {', '.join(by_name)}", file=sys.stderr, flush=True)
            runs = interleave(ctx, by_name, lambda k, s, t=by_name: run_wrk(ctx, t[k], a.connections, s))
        rps = {k: median(v, "rps") for k, v in runs.items()}
        if delay == 0:
            rust = [v for k, v in rps.items() if k.startswith(("sglang", "vllm")) and v]
            ref, ref_name = (max(rust) if rust else None), "fastest Rust router"
        else:
            ref, ref_name = rps.get("direct (worker 1 only, no router)"), "direct"
        for name, rs in runs.items():
            rows.append([f"{delay:g}", name, fmt(rps[name], 0), fmt(median(rs, "p50_ms"), 2),
                         fmt(median(rs, "p99_ms"), 2), fmt(median(rs, "cpu_us_per_req"), 0),
                         fmt(median(rs, "rss_mb"), 0),
                         f"{rps[name] / ref:.2f}× {ref_name}" if ref and rps[name] else "n/a",
                         str(sum(r.errors for r in rs))])
    title = (f"overhead: 2 workers, {a.connections} connections, round_robin, wrk 1 thread; "
             "direct = wrk straight at worker 1 (the 1-worker equivalent: the same connections, no router hop)")
    return title, md_table(["service ms", "system", "req/s", "p50 ms", "p99 ms", "router CPU µs/req",
                            "router RSS MB", "req/s ratio", "errors"], rows)


def scenario_scaling(ctx: Ctx) -> tuple[str, str]:
    """genrm over 1, 2, 4, 8 workers of 16 slots; throughput against 1-worker throughput × n."""
    a, counts = ctx.args, [1, 2, 4, 8]
    with Fleet(ctx.logdir) as fleet:
        workers = start_workers(fleet, ctx, [50.0] * max(counts), max_concurrency=16)
        targets = {}
        for n in counts:
            t = start_genrm(fleet, ctx, workers[:n], [a.policy])
            if t:
                targets[f"{n} workers"] = (t, n)
        print(f"scaling: {', '.join(targets)}", file=sys.stderr, flush=True)
        runs = interleave(ctx, targets, lambda k, s: run_wrk(ctx, targets[k][0], 16 * targets[k][1], s))
    one = median(runs["1 workers"], "rps") if "1 workers" in runs else None
    rows = []
    for k, rs in runs.items():
        n, rps = targets[k][1], median(rs, "rps")
        rows.append([str(n), str(16 * n), fmt(rps, 0), fmt(n * one if one else None, 0),
                     fmt(100 * rps / (n * one) if one and rps else None, 0, " %"),
                     fmt(median(rs, "p50_ms"), 1), fmt(median(rs, "p99_ms"), 1), fmt(median(rs, "cpu_us_per_req"), 0),
                     str(sum(r.errors for r in rs))])
    title = (f"scaling: genrm --policy {a.policy}, workers of 16 slots at 50 ms (320 req/s each at most), "
             "16 connections per worker; linear = 1-worker req/s × n")
    return title, md_table(["workers", "connections", "req/s", "linear req/s", "% of linear", "p50 ms", "p99 ms",
                            "router CPU µs/req", "errors"], rows)


def scenario_slow(ctx: Ctx) -> tuple[str, str]:
    """Each genrm policy over a pool with one 5× slower worker vs an all-fast pool (same policy)."""
    a = ctx.args
    with Fleet(ctx.logdir) as fleet:
        fast = start_workers(fleet, ctx, [50.0] * 4)
        slow = start_workers(fleet, ctx, [250.0])
        pools = {"all-fast": fast, "one slow": [*fast[:3], *slow]}
        targets: dict[str, Target] = {}
        for policy in a.slow_policies.split(","):
            for pool, workers in pools.items():
                t = start_router(fleet, ctx, "genrm", workers, policy)
                if not t:
                    break  # the policy is refused: skip its other pool too
                targets[f"{policy} / {pool}"] = t
        print(f"slow: {', '.join(targets)}", file=sys.stderr, flush=True)

        def measure(key: str, seconds: int) -> Run:
            before = worker_posts(slow[0])
            run = run_wrk(ctx, targets[key], a.connections, seconds, affinity_keys=True)
            run.slow_share = 100 * (worker_posts(slow[0]) - before) / max(run.requests, 1)
            return run

        runs = interleave(ctx, targets, measure)
    rows = []
    for policy in a.slow_policies.split(","):
        base, mixed = runs.get(f"{policy} / all-fast"), runs.get(f"{policy} / one slow")
        if not base or not mixed:
            continue
        p99b, p99m = median(base, "p99_ms"), median(mixed, "p99_ms")
        rows.append([policy, fmt(median(base, "rps"), 0), fmt(median(mixed, "rps"), 0), fmt(median(base, "p50_ms"), 1),
                     fmt(median(mixed, "p50_ms"), 1), fmt(p99b, 1), fmt(p99m, 1),
                     fmt(p99m / p99b if p99b and p99m else None, 2, "×"), fmt(median(mixed, "slow_share"), 1, " %"),
                     str(sum(r.errors for r in base + mixed))])
    title = (f"slow worker: genrm, 4 workers (all-fast: 4 × 50 ms; one slow: 3 × 50 ms + 1 × 250 ms), "
             f"{a.connections} connections, a different X-Affinity-Key per request; slow share = POSTs the slow "
             "worker served / requests wrk completed (25 % = blind spread)")
    return title, md_table(["policy", "req/s all-fast", "req/s one slow", "p50 ms all-fast", "p50 ms one slow",
                            "p99 ms all-fast", "p99 ms one slow", "p99 one slow / all-fast",
                            "slow worker's share", "errors"], rows)


_GROUP_IDS = itertools.count()  # unique across runs: every run sends new prompts, as a new training step does


@dataclass
class GrpoRun:
    rps: float
    p50_ms: float
    p99_ms: float
    modal_pct: float  # share of a group's requests on its most used worker, mean over groups
    imbalance: float  # busiest worker's request count / mean worker count
    groups: int
    errors: int
    modal_min_pct: float = 0.0  # the same share for the most split group
    whole_pct: float = 0.0  # groups entirely on one worker

    def __str__(self) -> str:
        return (f"{self.rps:,.0f} req/s, p99 {self.p99_ms:.1f} ms, modal {self.modal_pct:.1f} % "
                f"(min {self.modal_min_pct:.0f} %, whole {self.whole_pct:.1f} %), "
                f"busiest/mean {self.imbalance:.2f}, {self.groups} groups, {self.errors} errors")


async def grpo_trace(urls: str | Sequence[str], worker_ids: Sequence[str], duration_s: float, groups_in_flight: int,
                     group_size: int, seed: int = 0) -> GrpoRun:
    """Send GRPO-shaped groups for ``duration_s`` (``groups_in_flight`` at a time); see where each request went.

    With several ``urls`` (router replicas behind one Service), each request goes to one picked at random.
    """
    import random

    import aiohttp

    urls = [urls] if isinstance(urls, str) else list(urls)
    pick = random.Random(seed).choice

    groups: list[list[str]] = []
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration_s

    async def one(session: aiohttp.ClientSession, gid: str, question: str, i: int) -> str | None:
        nonlocal errors
        body = chat_body(question, f"Response {i}: {FILLER * 8}so the answer is \\boxed{{{i}}}.", group_id=gid)
        t0 = time.perf_counter()
        try:
            async with session.post(pick(urls) + CHAT_PATH, json=body, headers={"X-Affinity-Key": gid}) as resp:
                await resp.read()
                if resp.status == 200 and "x-worker" in resp.headers:
                    latencies.append(time.perf_counter() - t0)
                    return resp.headers["x-worker"]
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        errors += 1
        return None

    async def loop(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            gid = f"group-{next(_GROUP_IDS)}"
            question = f"[{gid}] Compute the value of expression {gid} and justify every step. " + FILLER * 6
            served = await asyncio.gather(*(one(session, gid, question, i) for i in range(group_size)))
            if any(served):
                groups.append([w for w in served if w])

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(session) for _ in range(groups_in_flight)))
        elapsed = time.perf_counter() - t0
    if not latencies:
        raise RuntimeError(f"no request succeeded ({errors} errors)")
    per_worker = collections.Counter(w for g in groups for w in g)
    counts = [per_worker.get(w, 0) for w in worker_ids]
    latencies.sort()
    modal = [max(collections.Counter(g).values()) / len(g) for g in groups]
    return GrpoRun(
        rps=len(latencies) / elapsed, p50_ms=1000 * latencies[len(latencies) // 2],
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        modal_pct=100 * statistics.mean(modal), imbalance=max(counts) / statistics.mean(counts), groups=len(groups),
        errors=errors, modal_min_pct=100 * min(modal), whole_pct=100 * sum(m == 1 for m in modal) / len(modal))


def scenario_grpo(ctx: Ctx) -> tuple[str, str]:
    """Where each genrm policy sends the requests of GRPO groups: group locality and load balance."""
    a = ctx.args
    with Fleet(ctx.logdir) as fleet:
        workers = start_workers(fleet, ctx, [50.0] * 4)
        worker_ids = [u.removeprefix("http://") for u in workers]
        targets = {p: t for p in a.grpo_policies.split(",") if (t := start_router(fleet, ctx, "genrm", workers, p))}
        print(f"grpo: {', '.join(targets)}", file=sys.stderr, flush=True)
        runs = interleave(ctx, targets, lambda k, s: asyncio.run(
            grpo_trace(targets[k].url, worker_ids, s, a.groups_in_flight, a.group_size)))
    rows = []
    for policy, rs in runs.items():
        if not rs:
            continue
        med = {k: median(rs, k) for k in ("modal_pct", "imbalance", "rps", "p50_ms", "p99_ms", "groups")}
        rows.append([policy, fmt(med["modal_pct"], 1, " %"), fmt(med["imbalance"], 2), fmt(med["rps"], 0),
                     fmt(med["p50_ms"], 1), fmt(med["p99_ms"], 1), fmt(med["groups"], 0),
                     str(sum(r.errors for r in rs))])
    title = (f"GRPO trace: genrm, 4 workers at 50 ms, {a.groups_in_flight} groups of {a.group_size} in flight "
             "(each group: one prompt, group_id and X-Affinity-Key), Python aiohttp client on the load CPU; "
             f"modal = share of a group's requests on its most used worker ({100 / len(workers):.0f} % = even spread)")
    return title, md_table(["policy", "on modal worker (mean over groups)", "busiest / mean worker", "req/s",
                            "p50 ms", "p99 ms", "groups", "errors"], rows)


def baseline_tree(ctx: Ctx, ref: str) -> Path:
    """The source tree of ``ref`` exported under the log dir (git archive: no worktree, nothing checked out)."""
    dest = ctx.logdir / f"baseline-{ref.replace('/', '_')}"
    if not dest.exists():
        dest.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "common", "router", "services",
                                  "trainer_client"], capture_output=True, check=True, timeout=120).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=120)
    return dest


def start_replicas(fleet: Fleet, ctx: Ctx, code: Path, workers: Sequence[str], count: int,
                   extra: Sequence[str] = ()) -> list[str]:
    """``count`` genrm routers (``--policy affinity`` + ``extra``) of the tree ``code`` over ``workers``; their URLs."""
    urls, procs = [], []
    body = ctx.body_file.read_bytes()
    for _ in range(count):
        port = free_port()
        cmd = [sys.executable, "-m", "services.cli", "route", "--host", HOST, "--port", str(port),
               "--workers", ",".join(workers), "--policy", "affinity", "--log-level", "warning", *extra]
        # In the tree's own directory: ``python -m`` puts the working directory first on the import path.
        procs.append(fleet.start(f"genrm-{code.name}-{port}", cmd, ctx.args.router_cpu, {"PYTHONPATH": str(code)},
                                 cwd=code))
        urls.append(f"http://{HOST}:{port}")
    for proc, url in zip(procs, urls, strict=True):
        why = wait_until(proc, lambda u=url: probe(u + "/ready")) or wait_until(
            proc, lambda u=url: probe(u + CHAT_PATH, body, "x-worker"))
        if why:
            raise RuntimeError(f"router {url} of {code} {why}: {log_tail(proc)}")
    return urls


def scenario_grpo_multi(ctx: Ctx) -> tuple[str, str]:
    """GRPO groups through R router replicas, requests spread at random: this checkout (as it is, and with a hard
    bound on each replica's own counts: --affinity-spill-width 0) against the router of --baseline-ref."""
    a = ctx.args
    variants = {"new": ("this checkout", REPO, ()),
                "hard": ("this checkout, spill width 0", REPO, ("--affinity-spill-width", "0"))}
    if a.baseline_ref:
        variants["baseline"] = (f"baseline {a.baseline_ref}", baseline_tree(ctx, a.baseline_ref), ())
    codes = {variants[v][0]: variants[v][1:] for v in a.grpo_variants.split(",") if v in variants}
    counts = [int(r) for r in a.replicas.split(",")]
    rows = []
    pools = {"fast": ("4 × 50 ms", [50.0] * 4), "slow": ("one 5× slower", [50.0] * 3 + [250.0])}
    for pool, delays in (pools[p] for p in a.grpo_pools.split(",")):
        with Fleet(ctx.logdir) as fleet:
            # Workers of its own for every router set: replicas learn from the workers' reports whether others
            # use them, so routers idle between their runs must not watch another set's load there.
            targets = {}
            for r in counts:
                for name, (code, extra) in codes.items():
                    workers = start_workers(fleet, ctx, delays)
                    targets[f"{name}, R={r}"] = (start_replicas(fleet, ctx, code, workers, r, extra),
                                                 [u.removeprefix("http://") for u in workers])
            print(f"grpo_multi, {pool}: {', '.join(targets)}", file=sys.stderr, flush=True)
            runs = interleave(ctx, targets, lambda k, s, t=targets: asyncio.run(
                grpo_trace(*t[k], s, a.groups_in_flight, a.group_size, seed=next(_GROUP_IDS))))
        for key, rs in runs.items():
            if not rs:
                continue
            name, _, r = key.rpartition(", R=")
            rows.append([pool, r, name, spread(rs, "modal_pct", 1, " %"), spread(rs, "modal_min_pct", 0, " %"),
                         spread(rs, "whole_pct", 1, " %"), spread(rs, "imbalance", 2), spread(rs, "rps", 0),
                         spread(rs, "p50_ms", 0), spread(rs, "p99_ms", 0), str(sum(r.errors for r in rs))])
    title = (f"GRPO through R router replicas: genrm --policy affinity, {a.groups_in_flight} groups of "
             f"{a.group_size} in flight (X-Affinity-Key per group), each request to a replica picked at random; "
             "routers share the router CPU, workers and the aiohttp client the load CPU; "
             "each cell: median (min–max) over the repetitions")
    return title, md_table(["workers", "R", "router", "on modal worker (mean)", "modal (most split group)",
                            "groups whole", "busiest / mean worker", "req/s", "p50 ms", "p99 ms", "errors"], rows)


def spread(runs: Sequence[object], attr: str, digits: int, suffix: str = "") -> str:
    """Median of ``attr`` with its range: "m (lo–hi)"."""
    values = [getattr(r, attr) for r in runs]
    med = statistics.median(values)
    if len(values) < 2:
        return fmt(med, digits, suffix)
    return f"{fmt(med, digits, suffix)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"
WRK_SCENARIOS = {"overhead", "scaling", "slow"}  # the others bring their own clients
FAIR_KEYS = {"heavy": "bench-heavy-trainer-key", "light": "bench-light-trainer-key"}


@dataclass
class FairRun:
    alone_p50_ms: float
    alone_p99_ms: float
    p50_ms: float  # the light client's, beside the heavy one
    p99_ms: float
    ratio: float  # p99 beside the heavy client / p99 alone
    light_rps: float
    heavy_rps: float
    heavy_share: float  # % of the capacity the light client leaves that the heavy client got
    end_queue: int
    errors: int

    def __str__(self) -> str:
        return (f"light p99 {self.alone_p99_ms:.1f} ms alone, {self.p99_ms:.1f} ms beside heavy ({self.ratio:.2f}×); "
                f"light {self.light_rps:,.0f} req/s, heavy {self.heavy_rps:,.0f} req/s ({self.heavy_share:.0f} % of "
                f"what light leaves), queue at the end {self.end_queue}, {self.errors} errors")


def load_client(ctx: Ctx, url: str, key: str, shape: str, n: int, seconds: float) -> list[str]:
    return ["taskset", "-c", ctx.args.load_cpu, sys.executable, str(BENCH / "load_client.py"), "--url",
            url + CHAT_PATH, "--body-file", str(ctx.body_file), "--key", key, f"--{shape}", str(n),
            "--duration", str(seconds), "--gap", str(ctx.args.fair_gap_s)]


def run_light(ctx: Ctx, url: str, seconds: float) -> dict:
    out = subprocess.run(load_client(ctx, url, FAIR_KEYS["light"], "in-flight", ctx.args.fair_light, seconds),
                         capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"light client failed (rc {out.returncode}): {out.stderr.strip()[-300:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["requests"]:
        raise RuntimeError(f"light client got no answer ({result['errors']} errors)")
    return result


def router_state(url: str) -> tuple[dict[str, float], int]:
    """(served requests per key id, queue depth) from the router's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    req = urllib.request.Request(url + "/metrics", headers={"authorization": f"Bearer {FAIR_KEYS['heavy']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    served, depth = {}, 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "genrm_router_key_served_total":
                served[sample.labels["key"]] = sample.value
            elif sample.name == "genrm_router_queue_depth":
                depth = int(sample.value)
    return served, depth


def fair_measure(ctx: Ctx, target: Target, seconds: int) -> FairRun:
    """The light client alone, then beside the heavy client's bursts (throughput read from per-key metrics)."""
    from common.api_keys import key_id

    a = ctx.args
    heavy_id, light_id = key_id(FAIR_KEYS["heavy"]), key_id(FAIR_KEYS["light"])
    alone = run_light(ctx, target.url, seconds / 2)
    heavy = subprocess.Popen(load_client(ctx, target.url, FAIR_KEYS["heavy"], "burst", a.fair_burst, seconds + 120),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while router_state(target.url)[1] < min(a.fair_burst // 4, 32):  # saturated: the heavy burst waits
            if heavy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the heavy client's burst never queued (client rc {heavy.poll()})")
            time.sleep(0.1)
        served0, _ = router_state(target.url)
        t0 = time.monotonic()
        light = run_light(ctx, target.url, seconds)
        served1, peak = router_state(target.url)
        elapsed = time.monotonic() - t0
    finally:
        kill(heavy)
    deadline = time.monotonic() + 60
    while router_state(target.url)[1] and time.monotonic() < deadline:  # the abandoned burst leaves the queue
        time.sleep(0.1)
    capacity = a.fair_workers * a.fair_cap / 0.05
    heavy_rps = (served1.get(heavy_id, 0) - served0.get(heavy_id, 0)) / elapsed
    light_rps = (served1.get(light_id, 0) - served0.get(light_id, 0)) / elapsed
    return FairRun(alone["p50_ms"], alone["p99_ms"], light["p50_ms"], light["p99_ms"],
                   light["p99_ms"] / alone["p99_ms"], light_rps, heavy_rps,
                   100 * heavy_rps / max(capacity - light_rps, 1e-9), peak, alone["errors"] + light["errors"])


def scenario_fairshare(ctx: Ctx) -> tuple[str, str]:
    """A light client (closed loop) alone and beside a heavy client's bursts: fair share vs FIFO at the router."""
    a = ctx.args
    keys = ",".join(FAIR_KEYS.values())
    common = ["--max-in-flight-per-worker", str(a.fair_cap), "--api-keys", keys, "--queue-size",
              str(2 * a.fair_burst), "--queue-timeout-s", "300"]
    with Fleet(ctx.logdir) as fleet:
        workers = start_workers(fleet, ctx, [50.0] * a.fair_workers)
        targets: dict[str, Target] = {}
        for name, flags in (("fair share", ["--fair-share"]), ("FIFO (--no-fair-share)", ["--no-fair-share"])):
            t = start_router(fleet, ctx, "genrm", workers, "least_outstanding", [*common, *flags], FAIR_KEYS["light"])
            if t:
                targets[name] = t
        print(f"fairshare: {', '.join(targets)}", file=sys.stderr, flush=True)
        runs = interleave(ctx, targets, lambda k, s: fair_measure(ctx, targets[k], s), seconds=a.fair_seconds)
    rows = []
    for name, rs in runs.items():
        if not rs:
            continue

        def spread(attr: str, digits: int = 1, suffix: str = "", rs: list[FairRun] = rs) -> str:
            values = [getattr(r, attr) for r in rs]
            low, high = fmt(min(values), digits), fmt(max(values), digits)
            return f"{fmt(statistics.median(values), digits, suffix)} ({low}–{high})"

        rows.append([name, spread("alone_p50_ms"), spread("alone_p99_ms"), spread("p50_ms"), spread("p99_ms"),
                     spread("ratio", 2, "×"), spread("light_rps", 0), spread("heavy_rps", 0),
                     spread("heavy_share", 0, " %"), fmt(median(rs, "end_queue"), 0), str(sum(r.errors for r in rs))])
    capacity = a.fair_workers * a.fair_cap / 0.05
    title = (f"fair share: genrm, {a.fair_workers} workers at 50 ms behind --max-in-flight-per-worker {a.fair_cap} "
             f"({capacity:,.0f} req/s at most); light client: {a.fair_light} in flight, closed loop, "
             f"{a.fair_seconds / 2:g} s alone then {a.fair_seconds} s beside a heavy client sending "
             f"{a.fair_burst:,}-request bursts (the next {a.fair_gap_s:g} s after all are answered); two API keys "
             "of weight 1; "
             "median (min–max) of the repetitions; goal: p99 ratio ≤ 1.5 and the heavy client gets what the light "
             "one leaves")
    return title, md_table(["router", "light p50 ms alone", "light p99 ms alone", "light p50 ms beside heavy",
                            "light p99 ms beside heavy", "p99 beside / alone", "light req/s", "heavy req/s",
                            "heavy share of what light leaves", "queue depth at the end", "light errors"], rows)


SCENARIOS: dict[str, Callable[[Ctx], tuple[str, str]]] = {
    "overhead": scenario_overhead, "scaling": scenario_scaling, "slow": scenario_slow, "grpo": scenario_grpo,
    "grpo_multi": scenario_grpo_multi,
    "fairshare": scenario_fairshare,
}


# -- environment -------------------------------------------------------------------------------------------


def install_rust_routers(venv: Path) -> None:
    print(f"creating {venv} with sglang-router and vllm-router", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "sglang-router", "vllm-router"],
                   check=True)


def rust_versions(venv: Path) -> dict[str, str]:
    pip = venv / "bin" / "pip"
    versions = {"sglang-router": "not installed", "vllm-router": "not installed"}
    if pip.exists():
        out = subprocess.run([str(pip), "show", *versions], capture_output=True, text=True, timeout=60).stdout
        name = None
        for line in out.splitlines():
            key, _, value = line.partition(": ")
            if key == "Name":
                name = value.strip().lower()
            elif key == "Version" and name in versions:
                versions[name] = value.strip()
    return versions


def machine_line(ctx: Ctx, scenario: str = "") -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown CPU")
    try:
        ours = importlib.metadata.version("genrm-platform")
    except importlib.metadata.PackageNotFoundError:
        ours = "unknown"
    wrk = (subprocess.run([ctx.args.wrk, "-v"], capture_output=True, text=True).stdout.split(" Copyright")[0]
           if shutil.which(ctx.args.wrk) else "wrk not installed")
    rust = rust_versions(ctx.args.rust_venv)
    return (f"machine: nproc {len(os.sched_getaffinity(0))}, {cpu}; router on CPU {ctx.args.router_cpu}, load on CPU "
            f"{ctx.args.load_cpu} · Python {platform.python_version()} · genrm-platform {ours} · sglang-router "
            f"{rust['sglang-router']} · vllm-router {rust['vllm-router']} · {wrk.strip()} · "
            f"{ctx.args.fair_seconds if scenario == 'fairshare' else ctx.args.duration} s per run, median of "
            f"{ctx.args.reps}")


def find_rust(venv: Path) -> tuple[Path | None, Path | None]:
    """(python of the venv if it can import sglang_router, vllm-router binary if present)."""
    python, vllm = venv / "bin" / "python", venv / "bin" / "vllm-router"
    has_sglang = python.exists() and subprocess.run(
        [str(python), "-c", "import importlib.util, sys; sys.exit(not importlib.util.find_spec('sglang_router'))"],
        capture_output=True, timeout=60).returncode == 0
    return (python if has_sglang else None), (vllm if vllm.exists() else None)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"Comma-separated subset of: {', '.join(SCENARIOS)}.")
    p.add_argument("--duration", type=int, default=5, help="Seconds per measured run (wrk takes whole seconds).")
    p.add_argument("--reps", type=int, default=3, help="Repetitions per system; tables show the median.")
    p.add_argument("--warmup", type=int, default=1, help="Seconds of unmeasured load per system first (0: none).")
    p.add_argument("--connections", type=int, default=64, help="wrk connections in the overhead and slow scenarios.")
    p.add_argument("--policy", default="least_outstanding", help="genrm policy of the scaling scenario.")
    p.add_argument("--slow-policies", default="round_robin,least_outstanding,power_of_two,affinity",
                   help="genrm policies of the slow scenario; ones the router refuses are skipped.")
    p.add_argument("--grpo-policies", default="affinity,cache_aware,least_outstanding,round_robin",
                   help="genrm policies of the grpo scenario; ones the router refuses are skipped.")
    p.add_argument("--groups-in-flight", type=int, default=32, help="grpo: groups sent concurrently.")
    p.add_argument("--group-size", type=int, default=8, help="grpo: requests per group.")
    p.add_argument("--replicas", default="1,2,3", help="grpo_multi: router replica counts.")
    p.add_argument("--grpo-variants", default="new,hard,baseline",
                   help="grpo_multi: routers to compare, of: new (this checkout), hard (this checkout with "
                        "--affinity-spill-width 0: own counts, a hard bound), baseline (--baseline-ref).")
    p.add_argument("--grpo-pools", default="fast,slow",
                   help="grpo_multi: worker pools, of: fast (4 × 50 ms), slow (3 × 50 ms + 1 × 250 ms).")
    p.add_argument("--baseline-ref", default="37742d4",
                   help="grpo_multi: git ref whose router runs beside this checkout's ('' = none): by default the "
                        "last commit whose affinity bounded load by each replica's own in-flight counts.")
    p.add_argument("--fair-workers", type=int, default=4, help="fairshare: mock workers at 50 ms.")
    p.add_argument("--fair-cap", type=int, default=8, help="fairshare: --max-in-flight-per-worker.")
    p.add_argument("--fair-light", type=int, default=8, help="fairshare: the light client's requests in flight.")
    p.add_argument("--fair-burst", type=int, default=4096, help="fairshare: the heavy client's burst size.")
    p.add_argument("--fair-gap-s", type=float, default=0.0,
                   help="fairshare: seconds between the end of a heavy burst and the next (a trainer's step).")
    p.add_argument("--fair-seconds", type=int, default=20,
                   help="fairshare: seconds of each light run beside the heavy client (alone: half).")
    p.add_argument("--rust-venv", type=Path, default=REPO / ".bench-venv",
                   help="Virtualenv holding sglang-router and vllm-router (missing ones are skipped).")
    p.add_argument("--install-rust-routers", action="store_true",
                   help="Create --rust-venv (python -m venv) and pip install sglang-router vllm-router into it first.")
    p.add_argument("--router-cpu", default="0", help="taskset CPU list of the router under test.")
    p.add_argument("--load-cpu", default="1",
                   help="CPUs (comma-separated) of wrk, the mock workers, the grpo client and this script.")
    p.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help="wrk binary.")
    a = p.parse_args(argv)
    a.scenarios = [name for name in a.scenarios.split(",") if name]  # "" = none (e.g. only --install-rust-routers)
    unknown = set(a.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if a.duration < 1 or a.reps < 1:
        p.error("--duration and --reps must be at least 1")
    if set(a.scenarios) & WRK_SCENARIOS and not shutil.which(a.wrk):
        p.error(f"wrk not found at {a.wrk} (apt-get install wrk)")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="router-bench-"))
    atexit.register(shutil.rmtree, logdir, True)
    atexit.register(Fleet.kill_all)  # runs before the rmtree (LIFO)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started with SIGINT ignored (`cmd &`)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))  # unwinds: Fleet exits and atexit kill all
    if a.install_rust_routers:
        install_rust_routers(a.rust_venv)
    body_file = logdir / "body.json"
    body_file.write_text(json.dumps(chat_body("Compute the sum of the first 40 odd numbers.", FILLER * 19)))
    genrm = Path(sys.executable).with_name("genrm")  # the venv running this script, else PATH
    ctx = Ctx(a, logdir, body_file, str(genrm) if genrm.exists() else shutil.which("genrm") or "genrm",
              *find_rust(a.rust_venv))
    headers = {name: machine_line(ctx, name) for name in a.scenarios}  # before the pinning below: nproc is all CPUs
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {int(c) for c in a.load_cpu.split(",")})  # keep this script off the router's CPU
    try:
        for name in a.scenarios:
            NOTES.clear()
            title, table = SCENARIOS[name](ctx)
            print(f"\n### {title}\n\n{headers[name]}\n\n{table}\n", flush=True)
            for text in dict.fromkeys(NOTES):
                print(f"- note: {text}")
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("interrupted; stopping all processes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
