"""Code rewards, side by side: samples/s per core of verl's prime_code, SandboxFusion and our sandbox.

Workloads (bench/code_workloads.py): (a) a trivial program, (b) a 10-test stdin/stdout problem, (c) a 10-test
call-based problem, all passing, (d) each of those with the first test failing. Contenders:

- ``prime_code``: verl's ``prime_code.compute_score(text, tests, continuous=True)`` in this process (its own
  multiprocessing children; no isolation), ``--prime-workers`` samples at a time in threads;
- ``sandboxfusion``: verl's ``sandbox_fusion.compute_score`` (one ``/run_code`` call per test, all of a
  sample's tests at once) against SandboxFusion run locally (``--sandboxfusion-src DIR`` starts it through
  bench/peers/sandboxfusion.py, or ``--sandboxfusion-url``), ``--sf-concurrency`` samples at a time;
- ``ours``: ``services.sandbox.scoring.score_code`` with the bubblewrap ``Sandbox`` factory, in this process;
- ``ours-http-batch``: the ``code`` recipe through a GenRM server's ``/v1/reward/batch`` (``RewardClient``);
- ``ours-http-run_code``: verl's sandbox_fusion client against the GenRM server's ``/run_code``.

The two ``ours-http-*`` need a running server (``--genrm-url``). A contender whose import or service is
missing is skipped with the reason printed.

Per core: each batch's CPU time is read from /proc for every process involved (bench/proc_tree.py): this
process and its descendants (prime_code's and our sandbox's children, verl's client threads) plus the
service's process tree (SandboxFusion's uvicorn and the programs it forks; the GenRM server's), each
counted once. ``samples/s per core`` = samples / CPU seconds: the rate one fully busy core would give. The
other processes of the machine are not counted; their load during each batch is printed (``other cores``)
because they slow the wall-clock figures. Every batch is checked: each sample's score must be the one that
contender gives that workload (code_workloads.Workload.score_of); a wrong score aborts the run.

    python bench/sandbox_bench.py --sandboxfusion-src /work/peers/SandboxFusion
    python bench/sandbox_bench.py --contenders prime_code,ours --workloads stdio10,call10 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from code_workloads import WORKLOADS, Workload
from proc_tree import listener_pids, tree_cpu_seconds

CONTENDERS = ("prime_code", "sandboxfusion", "ours", "ours-http-batch", "ours-http-run_code")
BASELINES = ("prime_code", "sandboxfusion")
Sample = tuple[str, str]  # (completion text, ground truth JSON)


class Skip(Exception):
    """A contender that cannot run here; the message says why."""


@dataclass
class Contender:
    """One way of scoring a batch of samples; ``pids`` are its service processes outside this process tree."""

    name: str
    score: Callable[[Sequence[Sample]], list[float]]
    pids: list[int] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


# -- contenders ------------------------------------------------------------------------------------------


def prime_code(workers: int) -> Contender:
    try:
        from verl.utils.reward_score import prime_code as pc
    except ImportError as e:
        raise Skip(f"verl not importable: {e}") from e
    pool = ThreadPoolExecutor(workers)

    def one(sample: Sample) -> float:
        return float(pc.compute_score(sample[0], sample[1], continuous=True)[0])

    return Contender("prime_code", lambda batch: list(pool.map(one, batch)), close=pool.shutdown)


def verl_sandbox_fusion(name: str, run_code_url: str, pids: list[int], concurrency: int) -> Contender:
    """verl's sandbox_fusion client as verl calls it (reward.sandbox_fusion.url, max_concurrent=64,
    memory_limit_mb=1024, continuous=True)."""
    try:
        from verl.utils.reward_score import sandbox_fusion as sfc
    except ImportError as e:
        raise Skip(f"verl not importable: {e}") from e
    pool = ThreadPoolExecutor(concurrency)
    semaphore = threading.Semaphore(64)

    def one(sample: Sample) -> float:
        return float(sfc.compute_score(run_code_url, semaphore, 1024, sample[0], sample[1], continuous=True)[0])

    return Contender(name, lambda batch: list(pool.map(one, batch)), pids, close=pool.shutdown)


class _LoopThread:
    """An event loop in a thread: our sandbox's pool is bound to the loop it was made on."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def ours(concurrency: int, workers: int | None) -> Contender:
    try:  # by name: the package is being built beside this bench
        Sandbox = importlib.import_module("services.sandbox").Sandbox
        score_code = importlib.import_module("services.sandbox.scoring").score_code
        SandboxBusy = importlib.import_module("services.sandbox.session").SandboxBusy
    except (ImportError, AttributeError) as e:
        raise Skip(f"services.sandbox (Sandbox, scoring.score_code) not importable: {e}") from e
    lt = _LoopThread()

    async def make() -> Any:
        box = Sandbox(workers=workers) if workers else Sandbox()
        check = getattr(box, "check", None)
        if check is not None and asyncio.iscoroutine(result := check()):
            await result
        return box

    try:
        box = lt.run(make())
    except Exception as e:
        lt.stop()
        raise Skip(f"the sandbox does not start here: {type(e).__name__}: {e}") from e

    async def one(limit: asyncio.Semaphore, sample: Sample) -> float:
        async with limit:
            while True:
                try:
                    return (await score_code(box, sample[0], sample[1], scoring="continuous")).score
                except SandboxBusy as busy:
                    await asyncio.sleep(busy.retry_after_s)

    async def batch(samples: Sequence[Sample]) -> list[float]:
        limit = asyncio.Semaphore(concurrency)
        return list(await asyncio.gather(*(one(limit, s) for s in samples)))

    def close() -> None:
        aclose = getattr(box, "aclose", None)
        if aclose is not None:
            lt.run(aclose())
        lt.stop()

    return Contender("ours", lambda samples: lt.run(batch(samples)), close=close)


def _genrm_pids(url: str, given: str | None) -> list[int]:
    if given:
        return [int(p) for p in given.split(",")]
    port = urlparse(url).port or 80
    pids = listener_pids(port)
    if not pids:
        raise Skip(f"nothing listens on port {port} of this machine (--genrm-pids to name the processes)")
    return pids


def ours_http_batch(url: str | None, pids: str | None, batch_size: int, concurrency: int) -> Contender:
    if not url:
        raise Skip("no --genrm-url: start a GenRM server with the code recipe and pass its URL")
    try:
        import httpx

        from trainer_client import RewardClient
        recipes = httpx.get(f"{url}/v1/recipes", timeout=5).json()
    except Exception as e:
        raise Skip(f"{url}/v1/recipes: {type(e).__name__}: {e}") from e
    if "code" not in {r.get("name") for r in recipes.get("recipes", [])}:
        raise Skip(f"the server at {url} has no `code` recipe")
    client = RewardClient(url, mode="batch", batch_size=batch_size, concurrency=concurrency, progress=False)

    def score(samples: Sequence[Sample]) -> list[float]:
        bodies = [{"recipe": "code", "solution": text, "ground_truth": truth, "extra_info": {"language": "python"}}
                  for text, truth in samples]
        return [float(r["score"]) for r in client.score_batch(bodies)]

    return Contender("ours-http-batch", score, _genrm_pids(url, pids), close=client.close)


def ours_http_run_code(url: str | None, pids: str | None, concurrency: int) -> Contender:
    if not url:
        raise Skip("no --genrm-url: start a GenRM server with /run_code and pass its URL")
    try:
        import httpx
        answer = httpx.post(f"{url}/run_code", json={"code": "print(1)", "language": "python"}, timeout=30)
    except Exception as e:
        raise Skip(f"{url}/run_code: {type(e).__name__}: {e}") from e
    if answer.status_code != 200 or answer.json().get("status") != "Success":
        raise Skip(f"{url}/run_code answered {answer.status_code}: {answer.text[:200]}")
    return verl_sandbox_fusion("ours-http-run_code", f"{url}/run_code", _genrm_pids(url, pids), concurrency)


# -- measurement -----------------------------------------------------------------------------------------


def system_busy_seconds() -> float:
    """CPU seconds all cores of the machine have been busy (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Batch:
    samples: int
    wall_s: float
    cpu_s: float
    service_cpu_s: float  # of cpu_s: the service's processes (SandboxFusion, the GenRM server)
    other_cpu_s: float  # the rest of the machine during the batch
    scores: list[float]

    @property
    def rate(self) -> float:
        return self.samples / self.wall_s

    @property
    def per_core(self) -> float:
        return self.samples / self.cpu_s if self.cpu_s > 0 else float("nan")


def measure(c: Contender, samples: Sequence[Sample], all_service_pids: set[int]) -> Batch:
    me = os.getpid()
    roots, exclude = [me, *c.pids], all_service_pids - set(c.pids)
    svc0, cpu0 = tree_cpu_seconds(c.pids), tree_cpu_seconds(roots, exclude)
    sys0, t0 = system_busy_seconds(), time.perf_counter()
    scores = c.score(samples)
    wall = time.perf_counter() - t0
    cpu, svc = tree_cpu_seconds(roots, exclude) - cpu0, tree_cpu_seconds(c.pids) - svc0
    return Batch(len(samples), wall, cpu, svc, max(0.0, system_busy_seconds() - sys0 - cpu), scores)


def batch_of(w: Workload, n: int, offset: int) -> list[Sample]:
    truth = w.ground_truth_json()
    return [(w.completion(offset + i), truth) for i in range(n)]


def check(c: Contender, w: Workload, b: Batch) -> None:
    want = w.score_of(c.name)
    bad = [s for s in b.scores if abs(s - want) > 1e-9]
    if bad:
        raise SystemExit(f"{c.name} scored {w.name} {bad[:5]} (expected {want}): the setup is broken")


# -- report ----------------------------------------------------------------------------------------------


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def report(results: dict[tuple[str, str], list[Batch]], workloads: Sequence[Workload], names: Sequence[str],
           with_service: set[str]) -> str:
    med = statistics.median
    rows, ratio_rows = [], []
    # every contender against prime_code; ours against SandboxFusion too
    pairs = [(a, "prime_code") for a in names if a != "prime_code" and "prime_code" in names]
    pairs += [(a, "sandboxfusion") for a in names if a not in BASELINES and "sandboxfusion" in names]
    for w in workloads:
        per_core = {}
        for name in names:
            runs = results.get((name, w.name))
            if not runs:
                continue
            per_core[name] = med(b.per_core for b in runs)
            rows.append([f"({w.key}) {w.name}", name, f"{runs[0].scores[0]:g}", f"{med(b.rate for b in runs):.1f}",
                         f"{1000 * med(b.cpu_s / b.samples for b in runs):.1f}",
                         f"{1000 * med(b.service_cpu_s / b.samples for b in runs):.1f}" if name in with_service
                         else "-", f"{per_core[name]:.1f}",
                         f"{med(b.cpu_s / b.wall_s for b in runs):.2f}",
                         f"{med(b.other_cpu_s / b.wall_s for b in runs):.2f}"])
        ratio_rows.append([f"({w.key}) {w.name}",
                           *(f"{per_core[a] / per_core[b]:.2f}x" if a in per_core and b in per_core else "-"
                             for a, b in pairs)])
    out = md_table(["workload", "contender", "score", "samples/s", "CPU ms/sample", "of which service",
                    "samples/s per core",
                    "cores used", "other cores"], rows)
    if pairs:
        out += "\n\nPer-core ratios (medians of the same run):\n\n" + md_table(
            ["workload", *(f"{a} / {b}" for a, b in pairs)], ratio_rows)
    return out


# -- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma list of {', '.join(CONTENDERS)}")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}")
    p.add_argument("--samples", type=int, default=20, help="samples per timed batch")
    p.add_argument("--repeats", type=int, default=5, help="timed batches per contender and workload (median)")
    p.add_argument("--sandboxfusion-src", type=Path, help="SandboxFusion source tree: started for the run")
    p.add_argument("--sandboxfusion-url", help="a running SandboxFusion instead, e.g. http://127.0.0.1:8080")
    p.add_argument("--sandboxfusion-venv", type=Path, default=None, help="its venv (default /work/peers/sf-venv)")
    p.add_argument("--sandboxfusion-port", type=int, default=18080)
    p.add_argument("--genrm-url", help="a GenRM server or router serving the code recipe and /run_code")
    p.add_argument("--genrm-pids", help="its processes (comma list; default: whoever listens on its port)")
    cores = os.cpu_count() or 1
    p.add_argument("--prime-workers", type=int, default=cores, help="prime_code: samples at a time (threads)")
    p.add_argument("--sf-concurrency", type=int, default=8,
                   help="verl sandbox_fusion client: samples at a time (each sends all its tests at once)")
    p.add_argument("--ours-concurrency", type=int, default=2 * cores, help="ours: samples in flight")
    p.add_argument("--ours-workers", type=int, default=None, help="ours: Sandbox(workers=...) (default: its own)")
    p.add_argument("--http-batch-size", type=int, default=8)
    p.add_argument("--http-concurrency", type=int, default=4)
    a = p.parse_args(argv)
    names = [n for n in a.contenders.split(",") if n]
    unknown = set(names) - set(CONTENDERS) | set(a.workloads.split(",")) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown contender or workload: {', '.join(sorted(unknown))}")
    workloads = [WORKLOADS[n] for n in a.workloads.split(",")]

    sf_service = None
    contenders: list[Contender] = []
    for name in names:
        try:
            if name == "prime_code":
                contenders.append(prime_code(a.prime_workers))
            elif name == "sandboxfusion":
                if a.sandboxfusion_url:
                    url = a.sandboxfusion_url.rstrip("/")
                    pids = listener_pids(urlparse(url).port or 80)
                elif a.sandboxfusion_src:
                    from peers.sandboxfusion import DEFAULT_VENV, SandboxFusion
                    sf_service = SandboxFusion(a.sandboxfusion_src, a.sandboxfusion_venv or DEFAULT_VENV,
                                               a.sandboxfusion_port)
                    try:
                        sf_service.start()
                    except Exception as e:
                        raise Skip(f"SandboxFusion did not start: {e}") from e
                    url, pids = sf_service.url, [sf_service.pid]
                else:
                    raise Skip("no --sandboxfusion-src or --sandboxfusion-url")
                contenders.append(verl_sandbox_fusion("sandboxfusion", f"{url}/run_code", pids, a.sf_concurrency))
            elif name == "ours":
                contenders.append(ours(a.ours_concurrency, a.ours_workers))
            elif name == "ours-http-batch":
                contenders.append(ours_http_batch(a.genrm_url, a.genrm_pids, a.http_batch_size, a.http_concurrency))
            elif name == "ours-http-run_code":
                contenders.append(ours_http_run_code(a.genrm_url, a.genrm_pids, a.http_concurrency))
        except Skip as why:
            print(f"skipped {name}: {why}", flush=True)
    if not contenders:
        print("no contender can run")
        return 1

    service_pids = {pid for c in contenders for pid in c.pids}
    results: dict[tuple[str, str], list[Batch]] = {}
    load0 = os.getloadavg()
    try:
        for w in workloads:  # warm-up: imports, first compiles, pools
            for c in contenders:
                check(c, w, measure(c, batch_of(w, 2, 10**6), service_pids))
        for r in range(a.repeats):
            for w in workloads:
                for c in contenders:  # interleaved: every contender sees the same machine state, in turn
                    b = measure(c, batch_of(w, a.samples, r * a.samples), service_pids)
                    check(c, w, b)
                    results.setdefault((c.name, w.name), []).append(b)
            print(f"repeat {r + 1}/{a.repeats} done", flush=True)
    finally:
        for c in contenders:
            c.close()
        if sf_service:
            sf_service.stop()
    print(f"\n{platform.node()}: {cores} cores, Python {platform.python_version()}; load average "
          f"{load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {a.samples} samples a batch, median of "
          f"{a.repeats}; per core = samples / CPU seconds of every process involved; 'other cores' = the rest "
          "of the machine's busy cores during the batch\n")
    print(report(results, workloads, [c.name for c in contenders], {c.name for c in contenders if c.pids}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
