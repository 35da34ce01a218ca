"""Benchmark the trainer client: a GRPO batch scored remotely (batch vs single calls) vs in-process.

4,096 samples (512 prompts x 8 responses, the math recipe; samples from ``reward_bench.make_samples``) go
through ``RewardClient`` to a local stack (2 GenRM servers + router on the tiny model, started and stopped
here) in its two modes, and through the math rule in this process. Every remote score is checked against
the in-process one. Median of --repeats runs, modes interleaved per repeat; the table gives samples/s and
the ratio to in-process (target on a 2-core machine: remote >= 0.5x).

    python bench/client_bench.py                # defaults: 512 x 8 samples, 5 repeats
    python bench/client_bench.py --cpu-runs 60  # then also: each process's CPU per batch (Linux /proc)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from reward_bench import in_process, make_samples
from soak import proc_stats

from services.local_stack import LocalStack
from trainer_client import RewardClient


def timed(fn: Callable[[], list[float]], expected: list[float]) -> float:
    t0 = time.perf_counter()
    scores = fn()
    elapsed = time.perf_counter() - t0
    assert scores == expected, "a remote score differs from the in-process one"
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=64, help="single mode: requests in flight")
    p.add_argument("--batch-size", type=int, default=256, help="batch mode: samples per request")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--cpu-runs", type=int, default=0,
                   help="after the timed runs, this many more batches: CPU ms per batch of each process")
    a = p.parse_args(argv)
    samples = make_samples(a.prompts, a.group)
    expected = in_process(samples)
    times: dict[str, list[float]] = {"in-process (math rule)": [], "client batch": [], "client single": []}
    with tempfile.TemporaryDirectory() as logs, LocalStack(a.replicas, log_dir=logs) as stack:
        batch = RewardClient(stack.url, mode="batch", batch_size=a.batch_size, concurrency=a.concurrency,
                             progress=False)
        single = RewardClient(stack.url, mode="single", concurrency=a.concurrency, progress=False)
        runs = {
            "in-process (math rule)": lambda: in_process(samples),
            "client batch": lambda: [r["score"] for r in batch.score_batch(samples)],
            "client single": lambda: [r["score"] for r in single.score_batch(samples)],
        }
        for fn in runs.values():  # warm-up: connections, server caches off the measured path
            timed(fn, expected)
        for _ in range(a.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn, expected))
        split = cpu_split(stack, lambda: batch.score_batch(samples), a.cpu_runs) if a.cpu_runs else None
        batch.close()
        single.close()
    n = len(samples)
    base = n / statistics.median(times["in-process (math rule)"])
    print(f"\n{n} samples ({a.prompts} prompts x {a.group}), {a.replicas} servers + router, median of {a.repeats}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| mode | wall s | samples/s | × in-process |")
    print("|---|---|---|---|")
    for name, values in times.items():
        wall = statistics.median(values)
        print(f"| {name} | {wall:.3f} | {n / wall:,.0f} | {n / wall / base:.2f} |")
    if split:
        print(f"\nCPU ms per client batch, {a.cpu_runs} batches (/proc utime + stime):\n")
        print("| " + " | ".join(split) + " |")
        print("|" + "---|" * len(split))
        print("| " + " | ".join(f"{v:.1f}" for v in split.values()) + " |")
    return 0


def cpu_split(stack: LocalStack, run: Callable[[], object], runs: int) -> dict[str, float]:
    """Each process's CPU time per ``run()`` (the client is this process), its sum, and the wall time."""
    pids = {"client": os.getpid(), "router": stack.router.process.pid}  # type: ignore[union-attr]
    pids.update({f"server {i}": s.process.pid for i, s in enumerate(stack.servers)})
    before, t0 = {k: proc_stats(pid)["cpu_s"] for k, pid in pids.items()}, time.perf_counter()
    for _ in range(runs):
        run()
    wall = (time.perf_counter() - t0) / runs * 1e3
    split = {k: (proc_stats(pid)["cpu_s"] - before[k]) / runs * 1e3 for k, pid in pids.items()}
    return {**split, "sum": sum(split.values()), "wall": wall}



if __name__ == "__main__":
    sys.exit(main())
