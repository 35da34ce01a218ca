"""Real vLLM on a GPU: GRPO affinity routing on a real prefix cache, and what the platform costs on it.

Any CUDA machine with vLLM installed. A Qwen3-4B-shaped model with random weights (``gpu_bench.ensure_model``:
written once to ``--model-dir`` with a word-level tokenizer and a chat template; nothing downloaded) is
served by ``--replicas`` ``vllm serve`` processes sharing the GPU (``--gpu-memory-utilization`` each). In
front of each, ``genrm serve --engine openai --recipe fapo``; in front of those, ``genrm route`` with one
``--reward-policy`` per run. The load is a GRPO batch sent the way a trainer sends it: ``--groups`` groups
of 8 samples, each group arriving together, ``--concurrency`` reward calls in flight, through the real
``AsyncRewardClient``. Every solution is correct by the rule, so every sample asks the judge once.

Two shapes (tokens: shared prefix / unique part / judge output)::

    fapo    ~400 / ~1,500 / 512   the FAPO template, problem and ground truth first, then the solution
    shared  ~2,000 / ~200 / 256   a long shared context, a short candidate

Per shape: ``direct`` (the same judge prompts straight to the vLLM servers, no platform, each group on one
replica and the groups dealt to the replicas in turn: the ideal placement), then each policy. Every run
draws fresh problems, so no run finds another's prefixes cached.
Reported: rewards/s, judge tokens/s (vLLM's own ``vllm:generation_tokens``), p50/p99 latency of a reward,
and the prefix-cache hit rate (``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``, over all
replicas and per replica), plus the ratios the issue asks for.

``--section inproc`` instead checks the in-process engine: one ``genrm serve --engine vllm`` behind a
router, a small batch of rewards, and vLLM's metrics on the server's own ``/metrics``.

The vLLM servers can outlive this process (``--start-only``) and be reused (``--upstreams FILE``), so a
short-lived shell can start them once and measure in a later command::

    python bench/vllm_bench.py --start-only --state /tmp/vb/upstreams.json   # start 4 replicas, then exit
    python bench/vllm_bench.py --upstreams /tmp/vb/upstreams.json           # measure, then stop them
    python bench/vllm_bench.py --section inproc                               # the in-process engine
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script on a machine without an install

from services.genrm_server.recipes.templates import FAPO_PROMPT, fill
from services.local_stack import Child, free_port, spawn, wait_ready
from trainer_client import AsyncRewardClient

SHAPES = {"fapo": (300, 1500, 512), "shared": (2000, 200, 256)}  # problem words, solution words, judge tokens
POLICIES = ["affinity", "cache_aware", "least_outstanding", "round_robin"]
GROUP = 8
METRIC = re.compile(r"^(vllm:[a-z_]+?)(?:_total)?(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M)


# -- the vLLM servers ---------------------------------------------------------------------------

def start_vllm(args: argparse.Namespace, model: Path, log_dir: Path) -> list[dict[str, Any]]:
    """Start the replicas one after another (each measures free GPU memory at start-up: overlapping starts
    would see each other's allocations), in sessions of their own so they can outlive this process."""
    upstreams = []
    for i in range(args.replicas):
        port = free_port()
        cmd = [*args.vllm_cmd.split(), str(model), "--port", str(port), "--host", "127.0.0.1",
               "--served-model-name", "judge", "--gpu-memory-utilization", str(args.gpu_memory_utilization),
               "--max-model-len", str(args.max_model_len), "--enable-prefix-caching", *args.vllm_args.split()]
        log = open(log_dir / f"vllm-{i}.log", "wb")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        wait_upstream(url, proc, log_dir / f"vllm-{i}.log", args.start_timeout_s)
        print(f"vllm replica {i} ready at {url} in {time.perf_counter() - t0:.0f} s", flush=True)
        upstreams.append({"url": url, "pid": proc.pid})
    return upstreams


def wait_upstream(url: str, proc: subprocess.Popen | None, log_path: Path | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"{url} exited with code {proc.returncode}:\n{tail}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready in {timeout_s:.0f} s")


def stop_upstreams(upstreams: list[dict[str, Any]]) -> None:
    for u in upstreams:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(u["pid"], signal.SIGTERM)


def scrape(url: str) -> dict[str, float]:
    """vLLM's counters and gauges summed over label sets (``{}`` when the server has no /metrics)."""
    try:
        text = httpx.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    totals: dict[str, float] = {}
    for name, value in METRIC.findall(text):
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


# -- workload -----------------------------------------------------------------------------------

def make_batch(shape: str, groups: int, seed: int) -> list[dict[str, Any]]:
    problem_words, solution_words, _ = SHAPES[shape]
    rng = random.Random(seed)
    words = lambda k: " ".join(f"w{rng.randrange(4, 151936)}" for _ in range(k))  # noqa: E731
    samples = []
    for g in range(groups):
        question = words(problem_words)
        for _ in range(GROUP):  # correct by the rule: every sample asks the judge
            samples.append({"question": question, "solution": words(solution_words) + " The answer is \\boxed{7}",
                            "ground_truth": "7", "group_id": f"s{seed}-g{g}"})
    return samples


def judge_prompt(sample: dict[str, Any]) -> str:
    return fill(FAPO_PROMPT, problem=sample["question"], ground_truth=sample["ground_truth"],
                solution=sample["solution"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def through_platform(routers: list[str], samples: list[dict[str, Any]], concurrency: int,
                           seed: int = 0) -> tuple[list[float], int]:
    """Latencies of the reward calls, and how many failed (an HTTP error or a judge that was not asked). With
    several router replicas each call goes to one picked at random, as a Service spreads a trainer's calls."""
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failed = 0
    pick = random.Random(seed)
    clients = [AsyncRewardClient(r, recipe="fapo", mode="single", concurrency=concurrency, timeout_s=900,
                                 on_failure="none", progress=False) for r in routers]
    try:
        async def one(sample: dict[str, Any], client: AsyncRewardClient) -> None:
            nonlocal failed
            async with limit:
                t0 = time.perf_counter()
                result = await client.score(sample)
                latencies.append(time.perf_counter() - t0)
            if result is None or not result.get("judge_asked"):
                failed += 1

        await asyncio.gather(*(one(s, pick.choice(clients)) for s in samples))
    finally:
        for client in clients:
            await client.aclose()
    return latencies, failed


async def direct(upstreams: list[str], samples: list[dict[str, Any]], concurrency: int,
                 judge_tokens: int) -> tuple[list[float], int]:
    """The same judge prompts straight to vLLM, by a hand-placed ideal:
    each group on one replica, groups dealt to the replicas in turn (sticky and perfectly balanced)."""
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failed = 0
    home: dict[str, int] = {}
    for sample in samples:
        home.setdefault(sample["group_id"], len(home) % len(upstreams))
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=concurrency * 2)) as http:
        async def one(sample: dict[str, Any]) -> None:
            nonlocal failed
            replica = home[sample["group_id"]]
            # Not streamed: one process parsing hundreds of token streams would measure this client, not vLLM.
            body = {"model": "judge", "messages": [{"role": "user", "content": judge_prompt(sample)}],
                    "max_tokens": judge_tokens}
            async with limit:
                t0 = time.perf_counter()
                try:
                    resp = await http.post(upstreams[replica] + "/v1/chat/completions", json=body)
                    ok = resp.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
            failed += not ok

        await asyncio.gather(*(one(s) for s in samples))
    return latencies, failed


# -- runs -----------------------------------------------------------------------------------------

RUN_TIMEOUT_S = 600.0  # one run; a later run must not hang a short-lived shell (set by --run-timeout-s)
HEARTBEAT_S = 30.0


async def watched(go, upstreams: list[str]) -> tuple[list[float], int]:
    """Run ``go()``; while it runs, print every replica's running / waiting / finished requests every 30 s, so a
    run that hangs shows where (nothing reached vLLM, or vLLM holds requests it never finishes); give up after
    RUN_TIMEOUT_S."""
    task = asyncio.ensure_future(go())
    t0 = time.perf_counter()
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_S)
        if done:
            return task.result()
        state = await asyncio.gather(*(asyncio.to_thread(scrape, u) for u in upstreams))
        waited = time.perf_counter() - t0
        print(f"    ... {waited:.0f} s: per replica running / waiting / finished " + "  ".join(
            f"{d.get('vllm:num_requests_running', 0):.0f}/{d.get('vllm:num_requests_waiting', 0):.0f}/"
            f"{d.get('vllm:request_success', 0):.0f}" for d in state), flush=True)
        if waited > RUN_TIMEOUT_S:
            task.cancel()
            raise TimeoutError(f"a run took over {RUN_TIMEOUT_S:.0f} s (--run-timeout-s)")


def log_tails(log_dir: Path, lines: int = 15) -> None:
    """The end of every server's log under ``log_dir``: what a failed or hung run needs to be understood."""
    for log in sorted(log_dir.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log} (last {len(tail)} lines)\n" + "\n".join(tail), flush=True)


def measure(label: str, upstreams: list[str], go) -> dict[str, Any]:
    before = [scrape(u) for u in upstreams]
    t0 = time.perf_counter()
    latencies, failed = asyncio.run(watched(go, upstreams))
    wall = time.perf_counter() - t0
    after = [scrape(u) for u in upstreams]
    delta = [{k: a.get(k, 0.0) - b.get(k, 0.0) for k in a} for a, b in zip(after, before, strict=True)]
    total = lambda key: sum(d.get(key, 0.0) for d in delta)  # noqa: E731
    queries, hits = total("vllm:prefix_cache_queries"), total("vllm:prefix_cache_hits")
    row = {
        "route": label, "rewards": len(latencies), "failed": failed, "wall_s": wall,
        "rewards_s": len(latencies) / wall, "tokens_s": total("vllm:generation_tokens") / wall,
        "p50_s": percentile(latencies, 0.5), "p99_s": percentile(latencies, 0.99),
        "hit_rate": hits / queries if queries else float("nan"),
        "replica_hits": [d.get("vllm:prefix_cache_hits", 0) / d["vllm:prefix_cache_queries"]
                         if d.get("vllm:prefix_cache_queries") else float("nan") for d in delta],
        "replica_requests": [int(d.get("vllm:request_success", 0)) for d in delta],
        "preemptions": int(total("vllm:num_preemptions")),
    }
    print(f"  {label:<18} {row['rewards_s']:7.2f} rewards/s {row['tokens_s']:8,.0f} tok/s  p50 {row['p50_s']:6.2f} s"
          f"  p99 {row['p99_s']:6.2f} s  hit rate {row['hit_rate']:.1%}  per replica "
          f"{[f'{h:.0%}' for h in row['replica_hits']]} requests {row['replica_requests']}  failed {failed}"
          f"  preemptions {row['preemptions']}", flush=True)
    return row


def bench_shapes(args: argparse.Namespace, upstreams: list[str], log_dir: Path) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    seed = args.seed
    for shape in args.shapes:
        judge_tokens = SHAPES[shape][2]
        servers = []
        for i, upstream in enumerate(upstreams):
            port = free_port()
            flags = ["serve", "--engine", "openai", "--upstream-url", upstream + "/v1", "--port", str(port),
                     "--recipe", "fapo", "--judge-max-tokens", str(judge_tokens), "--log-level", "warning"]
            servers.append(spawn(f"genrm-{shape}-{i}", f"http://127.0.0.1:{port}", flags, log_dir=log_dir))
        try:
            for s in servers:
                wait_ready(s, time.monotonic() + 120)
            print(f"{shape}: {args.groups} groups x {GROUP}, {args.concurrency} in flight, "
                  f"{len(upstreams)} vLLM replicas", flush=True)
            warm = make_batch(shape, 4, seed := seed + 1)
            asyncio.run(watched(lambda w=warm, j=judge_tokens: direct(upstreams, w, args.concurrency, j), upstreams))
            rows = []
            for _ in range(args.repeats):
                batch = make_batch(shape, args.groups, seed := seed + 1)
                rows.append(measure("direct", upstreams,
                                    lambda b=batch, j=judge_tokens: direct(upstreams, b, args.concurrency, j)))
                for policy in args.policies:
                    routers = [start_router([s.url for s in servers], policy, log_dir, args.router_args)
                               for _ in range(args.routers)]
                    try:
                        batch = make_batch(shape, args.groups, seed := seed + 1)
                        urls = [r.url for r in routers]
                        rows.append(measure(policy, upstreams, lambda b=batch, u=urls, k=seed: through_platform(
                            u, b, args.concurrency, k)))
                    finally:
                        for router in routers:
                            router.stop()
            results[shape] = rows
        finally:
            for s in servers:
                s.stop()
    return results


def start_router(workers: list[str], policy: str, log_dir: Path, extra: str = "") -> Child:
    port = free_port()
    child = spawn(f"router-{policy}-{port}", f"http://127.0.0.1:{port}",
                  ["route", "--port", str(port), "--workers", *workers, "--reward-policy", policy,
                   "--log-level", "warning", *extra.split()], log_dir=log_dir)
    wait_ready(child, time.monotonic() + 60)
    return child


def inproc(args: argparse.Namespace, model: Path, log_dir: Path) -> dict[str, Any]:
    """The in-process engine: genrm serve --engine vllm behind a router, a batch of rewards, vLLM's metrics."""
    port = free_port()
    server = spawn("genrm-vllm", f"http://127.0.0.1:{port}",
                   ["serve", "--engine", "vllm", "--model", str(model), "--port", str(port), "--recipe", "fapo",
                    "--judge-max-tokens", str(SHAPES["shared"][2]), "--max-model-len", str(args.max_model_len),
                    "--gpu-memory-utilization", str(args.gpu_memory_utilization), "--log-level", "warning"],
                   log_dir=log_dir)
    t0 = time.perf_counter()
    try:
        wait_ready(server, time.monotonic() + args.start_timeout_s)
        print(f"genrm serve --engine vllm ready in {time.perf_counter() - t0:.0f} s", flush=True)
        router = start_router([server.url], "affinity", log_dir)
        try:
            asyncio.run(through_platform([router.url], make_batch("shared", 2, args.seed), args.concurrency))
            row = measure("inproc-affinity", [server.url], lambda: through_platform(
                [router.url], make_batch("shared", args.groups, args.seed + 1), args.concurrency))
        finally:
            router.stop()
        exposed = sorted(k for k in scrape(server.url) if k.startswith("vllm:"))
        row["vllm_metrics_on_server"] = exposed
        print(f"  vLLM families on the server's /metrics: {len(exposed)} ({', '.join(exposed[:6])}, ...)", flush=True)
        return row
    finally:
        server.stop()


# -- report ---------------------------------------------------------------------------------------

def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\n{args.replicas} vLLM replicas ({args.gpu_memory_utilization:.0%} of the GPU each), "
          f"{args.groups} groups x {GROUP}, {args.concurrency} in flight; medians of {args.repeats} run(s)\n")
    print("| shape | route | rewards/s | judge tok/s | p50 s | p99 s | prefix hit rate | per replica | "
          "requests per replica | failed |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|---:|")
    for shape, rows in results.items():
        for label in ["direct", *args.policies]:
            mine = [r for r in rows if r["route"] == label]
            med = lambda k, m=mine: statistics.median(r[k] for r in m)  # noqa: E731
            last = mine[-1]
            print(f"| {shape} | {label} | {med('rewards_s'):.2f} | {med('tokens_s'):,.0f} | {med('p50_s'):.2f} | "
                  f"{med('p99_s'):.2f} | {med('hit_rate'):.1%} | "
                  f"{' / '.join(f'{h:.0%}' for h in last['replica_hits'])} | "
                  f"{' / '.join(str(n) for n in last['replica_requests'])} | {sum(r['failed'] for r in mine)} |")
    print()
    for shape, rows in results.items():
        rate = {label: statistics.median(r["rewards_s"] for r in rows if r["route"] == label)
                for label in ["direct", *args.policies]}
        p99 = {label: statistics.median(r["p99_s"] for r in rows if r["route"] == label)
               for label in ["direct", *args.policies]}
        parts = [f"{shape}: affinity / round_robin rewards/s = {rate['affinity'] / rate['round_robin']:.2f}x"
                 if "round_robin" in rate and "affinity" in rate else f"{shape}:"]
        if "affinity" in rate:
            parts.append(f"platform (affinity) / direct = {rate['affinity'] / rate['direct']:.2f}x")
            if "round_robin" in p99:
                parts.append(f"p99 affinity {p99['affinity']:.2f} s vs round_robin {p99['round_robin']:.2f} s")
        print("; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    global RUN_TIMEOUT_S
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=["policies", "inproc"], default="policies")
    p.add_argument("--model-dir", type=Path, default=Path("/tmp/genrm-gpu-bench/qwen3-4b-random"))
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.2)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--vllm-cmd", default=f"{sys.executable} -m vllm.entrypoints.cli.main serve",
                   help="how to start one vLLM server (the model path and flags are appended)")
    p.add_argument("--vllm-args", default="--max-num-seqs 64",
                   help="extra flags for every vLLM server [default: --max-num-seqs 64, the most ever in flight]")
    p.add_argument("--router-args", default="", help="extra flags for every router")
    p.add_argument("--routers", type=int, default=1,
                   help="router replicas per policy; each call goes to one at random [default: 1]")
    p.add_argument("--start-timeout-s", type=float, default=400)
    p.add_argument("--run-timeout-s", type=float, default=RUN_TIMEOUT_S,
                   help="give up on a run (and print the servers' logs) after this long [default: 600]")
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=POLICIES)
    p.add_argument("--groups", type=int, default=16, help="GRPO groups of 8 per run [default: 16]")
    p.add_argument("--concurrency", type=int, default=64, help="reward calls in flight [default: 64]")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", type=Path, default=Path("/tmp/genrm-vllm-bench"))
    p.add_argument("--start-only", action="store_true", help="start the vLLM servers, write --state, exit")
    p.add_argument("--state", type=Path, help="where --start-only writes the servers' URLs and pids")
    p.add_argument("--upstreams", type=Path, help="reuse the servers a --start-only run wrote here; stop them after")
    p.add_argument("--keep", action="store_true", help="leave the vLLM servers running at the end")
    p.add_argument("--json", type=Path, help="write every run as JSON")
    args = p.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    if args.upstreams:
        upstreams = json.loads(args.upstreams.read_text())
        model = args.model_dir
    else:
        from gpu_bench import ensure_model

        model = ensure_model(args.model_dir)
    if args.section == "inproc":
        row = inproc(args, model, args.log_dir)
        if args.json:
            args.json.write_text(json.dumps(row, indent=1))
        return 0
    if not args.upstreams:
        upstreams = start_vllm(args, model, args.log_dir)
        if args.start_only:
            (args.state or args.log_dir / "upstreams.json").write_text(json.dumps(upstreams))
            return 0
    for u in upstreams:
        wait_upstream(u["url"], None, None, args.start_timeout_s)
    RUN_TIMEOUT_S = args.run_timeout_s
    try:
        results = bench_shapes(args, [u["url"] for u in upstreams], args.log_dir)
    except BaseException:
        log_tails(args.log_dir)
        raise
    finally:
        if not args.keep:
            stop_upstreams(upstreams)
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
