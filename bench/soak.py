"""Soak test: the router and 2 GenRM servers under steady load for 10 minutes; watch memory, fds, latency.

A local stack (2 ``genrm serve`` processes on the tiny model + a ``genrm route`` router, started and stopped
here, logs in a temp dir) takes single ``POST /v1/reward`` calls (math recipe, judge-free) through the router:

1. capacity probe: a closed loop of --workers callers for --probe-s seconds -> requests/s;
2. soak: an open loop at --load x capacity for --duration-s seconds. Requests are fired on a fixed schedule
   (latency is measured from the planned send time, so a stall shows as latency, not as a slower schedule);
   sent by --workers callers, the same as the probe's, so the generator costs the same per request in both;
   a stall leaves a backlog of planned times that the callers catch up on (a request not sent within
   --timeout-s of its planned time is an error, "late"). Every answer is checked: HTTP 200 and the score
   equal to the in-process ``compute_math``; errors and wrong scores are counted apart.

Every --interval-s the RSS (/proc/PID/status VmRSS) and open fds (/proc/PID/fd) of the router and each server
are sampled, with that interval's sent/ok/errors/wrong and p50/p99 latency; a row is printed per interval and
a markdown table + summary at the end. The CPU share of each process, this one (the load generator, "client")
included, is shown too: on a small machine the generator competes with the stack for the same cores.

Leaks, not load, are gated. Under load the open fds follow the connections in use (a stall of 100 ms at
2,000 req/s opens hundreds), so fds are compared *at rest*: after --rest-s of no traffic (idle keep-alive
connections expire: 4 s router -> worker, 5 s in uvicorn, 15 s in this client) before and after the soak.
RSS is compared as the peak of the second half of the run against the peak of the first half after the
warm-up: a leak grows, a burst's buffers show in both halves.
PASS needs: errors = 0, wrong scores = 0, RSS growth < 5% and fd growth at rest < 5% (+2 for a health probe
caught in flight) for every process. The p99 drift (last interval vs first interval after warm-up) is
reported, not gated.

    python bench/soak.py                                  # 10 min at 80% of capacity, a row every 30 s
    python bench/soak.py --duration-s 60 --interval-s 10  # smoke
    python bench/soak.py --json soak.json                 # also dump everything as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import shlex
import sys
import tempfile
import time

import aiohttp
from reward_bench import make_samples

from services.local_stack import LocalStack
from trainer_client.math_rule import compute_math

GROWTH_LIMIT = 0.05
CLIENT = "client"  # this process (the load generator): sampled for the CPU picture, not gated


def proc_stats(pid: int) -> dict[str, float]:
    """RSS in MiB, open fds and CPU seconds so far of a live process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    rss_kib = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
                break
    return {"rss_mib": rss_kib / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")), "cpu_s": cpu_s}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Load:
    """Pre-encoded request bodies with their expected scores, and the counters of one interval."""

    def __init__(self, url: str, samples: list[dict]):
        self.url = url + "/v1/reward"
        self.bodies = [json.dumps(s).encode() for s in samples]
        self.expected = [compute_math(s["solution"], s["ground_truth"]).score for s in samples]
        self.next = 0
        self.inflight = 0
        self.reset()

    def reset(self) -> None:
        self.sent = self.ok = self.errors = self.wrong = 0
        self.latencies: list[float] = []
        self.error_kinds: collections.Counter[str] = collections.Counter()

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] += 1

    async def one(self, session: aiohttp.ClientSession, planned: float) -> None:
        i = self.next % len(self.bodies)
        self.next += 1
        self.inflight += 1
        self.sent += 1
        try:
            async with session.post(self.url, data=self.bodies[i],
                                    headers={"content-type": "application/json"}) as resp:
                body = await resp.read()
                if resp.status != 200:
                    self.error(f"http {resp.status}")
                    return
            latency = time.perf_counter() - planned
            if json.loads(body)["score"] != self.expected[i]:
                self.wrong += 1
            else:
                self.ok += 1
            self.latencies.append(latency)
        except Exception as exc:  # counted, never raised: a soak must run to the end
            self.error(type(exc).__name__)
        finally:
            self.inflight -= 1


async def probe(load: Load, session: aiohttp.ClientSession, workers: int, seconds: float) -> float:
    """Closed loop: `workers` callers back to back for `seconds`; returns completed requests/s."""
    async def caller(deadline: float) -> None:
        while time.perf_counter() < deadline:
            await load.one(session, time.perf_counter())

    await asyncio.gather(*(caller(time.perf_counter() + 3.0) for _ in range(workers)))  # warm-up
    load.reset()
    t0 = time.perf_counter()
    await asyncio.gather(*(caller(t0 + seconds) for _ in range(workers)))
    elapsed = time.perf_counter() - t0
    if load.errors or load.wrong:
        print(f"probe: {load.errors} errors {dict(load.error_kinds)}, {load.wrong} wrong", flush=True)
    return load.ok / elapsed


async def paced(load: Load, session: aiohttp.ClientSession, workers: int, rate: float, t0: float, total: int,
                late_s: float) -> None:
    """Open loop on a fixed schedule (request k at t0 + k/rate), sent by `workers` callers of one request each.

    Callers, not a task per request: the generator costs the same per request as in the probe, and a stall
    of the stack leaves a backlog of planned times to catch up on, not thousands of queued tasks competing
    with the stack for the cores. A request picked up more than `late_s` after its planned time is an error.
    """
    fired = 0

    async def caller() -> None:
        nonlocal fired
        while fired < total:
            planned = t0 + fired / rate
            fired += 1
            wait = planned - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            elif -wait > late_s:
                load.sent += 1
                load.error("late")  # could not even be sent within the timeout
                continue
            await load.one(session, planned)

    await asyncio.gather(*(caller() for _ in range(workers)))


async def soak(stack: LocalStack, args: argparse.Namespace) -> dict:
    load = Load(stack.url, make_samples(512, 8))
    procs = {"router": stack.router.process.pid, **{f"server-{i}": s.process.pid for i, s in enumerate(stack.servers)},
             CLIENT: os.getpid()}
    # keepalive below the rest period: idle connections are gone when the fds are counted at rest
    connector = aiohttp.TCPConnector(limit=args.workers, keepalive_timeout=min(5.0, args.rest_s / 2))
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        capacity = await probe(load, session, args.workers, args.probe_s)
        rate = args.load * capacity
        rest_before = await at_rest(procs, args.rest_s)
        print(f"capacity {capacity:,.0f} req/s (closed loop, {args.workers} callers, {args.probe_s:.0f} s); soak at "
              f"{args.load:.0%} = {rate:,.0f} req/s for {args.duration_s:.0f} s, a row every {args.interval_s:.0f} s",
              flush=True)
        load.reset()
        header = (f"{'t s':>5} {'sent':>7} {'ok':>7} {'err':>4} {'wrong':>5} {'p50 ms':>7} {'p99 ms':>7}  "
                  + "  ".join(f"{n + ' MiB/fds/cpu%':>22}" for n in procs))
        print(header, flush=True)
        rows: list[dict] = []
        last = {name: proc_stats(pid)["cpu_s"] for name, pid in procs.items()}
        t0 = last_t = time.perf_counter()
        sender = asyncio.create_task(paced(load, session, args.workers, rate, t0, int(args.duration_s * rate),
                                           args.timeout_s))
        for k in range(1, int(args.duration_s / args.interval_s + 0.5) + 1):
            due = t0 + min(k * args.interval_s, args.duration_s)
            if due >= t0 + args.duration_s:
                await sender  # the last interval closes when its requests have been answered
            else:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            now = time.perf_counter()
            stats = {}
            for name, pid in procs.items():
                try:
                    stats[name] = proc_stats(pid)
                except OSError:  # the process is gone
                    stats[name] = {"rss_mib": float("nan"), "fds": -1, "cpu_s": float("nan")}
                stats[name]["cpu_pct"] = 100 * (stats[name]["cpu_s"] - last[name]) / (now - last_t)
                last[name] = stats[name]["cpu_s"]
            last_t = now
            row = {"t_s": round(min(now, t0 + args.duration_s) - t0, 1), "sent": load.sent, "ok": load.ok,
                   "errors": load.errors, "wrong": load.wrong, "p50_ms": percentile(load.latencies, 0.50) * 1e3,
                   "p99_ms": percentile(load.latencies, 0.99) * 1e3, "error_kinds": dict(load.error_kinds),
                   "inflight": load.inflight, "procs": stats}
            rows.append(row)
            load.reset()
            print(f"{row['t_s']:>5.0f} {row['sent']:>7} {row['ok']:>7} {row['errors']:>4} {row['wrong']:>5} "
                  f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}  "
                  + "  ".join(f"{s['rss_mib']:>10.1f}/{s['fds']:<5}/{s['cpu_pct']:<4.0f}" for s in stats.values())
                  + (f"  errors: {row['error_kinds']}" if row["error_kinds"] else ""), flush=True)
        rest_after = await at_rest(procs, args.rest_s)
    return {"capacity_rps": capacity, "rate_rps": rate, "procs": procs, "rows": rows,
            "rest_before": rest_before, "rest_after": rest_after}


async def at_rest(procs: dict[str, int], rest_s: float) -> dict[str, dict[str, float]]:
    """RSS and fds of every process after `rest_s` seconds without traffic."""
    await asyncio.sleep(rest_s)
    return {name: proc_stats(pid) for name, pid in procs.items()}


def summarize(result: dict, args: argparse.Namespace) -> dict:
    rows = result["rows"]
    warmup = min(args.warmup_s, args.duration_s / 2)
    base = next((r for r in rows if r["t_s"] >= warmup), rows[0])  # first sample after warm-up
    last = rows[-1]
    measured = rows[rows.index(base):]
    half = max(1, len(measured) // 2)
    first, second = measured[:half], measured[half:] or measured[-1:]
    growth = {}
    for name in result["procs"]:
        if name == CLIENT:
            continue
        rss1 = max(r["procs"][name]["rss_mib"] for r in first)
        rss2 = max(r["procs"][name]["rss_mib"] for r in second)
        fds1, fds2 = result["rest_before"][name]["fds"], result["rest_after"][name]["fds"]
        growth[name] = {"rss_first_half_max": rss1, "rss_second_half_max": rss2,
                        "rss_growth": rss2 / rss1 - 1 if rss1 else float("nan"),
                        "rss_rest_before": result["rest_before"][name]["rss_mib"],
                        "rss_rest_after": result["rest_after"][name]["rss_mib"],
                        "fds_rest_before": fds1, "fds_rest_after": fds2,
                        "fds_growth": fds2 / fds1 - 1 if fds1 > 0 else float("nan"),
                        "fds_ok": fds2 <= fds1 * (1 + GROWTH_LIMIT) + 2,
                        "fds_max": max(r["procs"][name]["fds"] for r in rows)}
    totals = {k: sum(r[k] for r in rows) for k in ("sent", "ok", "errors", "wrong")}
    kinds: collections.Counter[str] = collections.Counter()
    for r in rows:
        kinds.update(r["error_kinds"])
    checks = {
        "errors == 0": totals["errors"] == 0,
        "wrong == 0": totals["wrong"] == 0,
        "RSS growth < 5%": all(g["rss_growth"] < GROWTH_LIMIT for g in growth.values()),
        "fd growth at rest < 5%": all(g["fds_ok"] for g in growth.values()),
    }
    return {"baseline_t_s": base["t_s"], "growth": growth, "totals": totals, "error_kinds": dict(kinds),
            "p99_first_ms": base["p99_ms"], "p99_last_ms": last["p99_ms"],
            "p99_max_ms": max(r["p99_ms"] for r in rows), "checks": checks, "pass": all(checks.values())}


def report(result: dict, summary: dict, args: argparse.Namespace) -> None:
    names = list(result["procs"])
    print(f"\nsoak: {args.duration_s:.0f} s at {args.load:.0%} of {result['capacity_rps']:,.0f} req/s = "
          f"{result['rate_rps']:,.0f} req/s, POST /v1/reward through the router to {len(names) - 2} servers; "
          f"{os.cpu_count()} cores, Python {platform.python_version()}\n")
    print("| t s | sent | ok | errors | wrong | p50 ms | p99 ms | "
          + " | ".join(f"{n} RSS MiB / fds / CPU %" for n in names) + " |")
    print("|---:" * (7 + len(names)) + "|")
    for r in result["rows"]:
        print(f"| {r['t_s']:.0f} | {r['sent']:,} | {r['ok']:,} | {r['errors']} | {r['wrong']} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | " + " | ".join(f"{r['procs'][n]['rss_mib']:.1f} / {r['procs'][n]['fds']} / "
                                                f"{r['procs'][n]['cpu_pct']:.0f}" for n in names) + " |")
    t = summary["totals"]
    print(f"\ntotals: sent {t['sent']:,}, ok {t['ok']:,}, errors {t['errors']} {summary['error_kinds'] or ''}, "
          f"wrong {t['wrong']}")
    print(f"p99: {summary['p99_first_ms']:.2f} ms at t={summary['baseline_t_s']:.0f} s -> "
          f"{summary['p99_last_ms']:.2f} ms in the last interval (max {summary['p99_max_ms']:.2f} ms)")
    print(f"growth (RSS: peak of the second half vs the first half after t={summary['baseline_t_s']:.0f} s; "
          f"fds: at rest, {args.rest_s:.0f} s without traffic, before vs after the soak):")
    for name, g in summary["growth"].items():
        print(f"  {name}: RSS {g['rss_first_half_max']:.1f} -> {g['rss_second_half_max']:.1f} MiB "
              f"({g['rss_growth']:+.1%}; at rest {g['rss_rest_before']:.1f} -> {g['rss_rest_after']:.1f}); "
              f"fds at rest {g['fds_rest_before']} -> {g['fds_rest_after']} ({g['fds_growth']:+.1%}; "
              f"peak under load {g['fds_max']})")
    print("checks: " + ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in summary["checks"].items()))
    print("PASS" if summary["pass"] else "FAIL", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration-s", type=float, default=600.0, help="soak length [default: 600]")
    p.add_argument("--interval-s", type=float, default=30.0, help="sampling interval [default: 30]")
    p.add_argument("--warmup-s", type=float, default=60.0,
                   help="growth is measured from the first sample after this [default: 60; at most half the run]")
    p.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity [default: 0.8]")
    p.add_argument("--probe-s", type=float, default=15.0, help="capacity probe length [default: 15]")
    p.add_argument("--workers", type=int, default=64,
                   help="callers (one request and connection each) of the probe and the soak [default: 64]")
    p.add_argument("--rest-s", type=float, default=20.0,
                   help="quiet seconds before the fds are counted at rest, before and after the soak [default: 20]")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per-request timeout [default: 10]")
    p.add_argument("--replicas", type=int, default=2, help="GenRM servers behind the router [default: 2]")
    p.add_argument("--router-args", default="", metavar="ARGS",
                   help="extra `genrm route` arguments, e.g. \"--reward-policy least_outstanding\" [default: none]")
    p.add_argument("--log-dir", metavar="DIR", help="keep the stack's logs here [default: a temp dir, removed]")
    p.add_argument("--json", metavar="PATH", help="write the samples, summary and settings as JSON")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="genrm-soak-") as tmp:
        logs = args.log_dir or tmp
        os.makedirs(logs, exist_ok=True)
        return run(args, logs)


def run(args: argparse.Namespace, logs: str) -> int:
    with LocalStack(args.replicas, log_dir=logs, router_args=shlex.split(args.router_args)) as stack:
        result = asyncio.run(soak(stack, args))
        dead = stack.dead_child()
        if dead is not None:
            print(f"{dead.name} exited with code {dead.process.returncode}:\n{dead.log_tail()}", file=sys.stderr)
    summary = summarize(result, args)
    report(result, summary, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                                           "platform": platform.platform()},
                       **result, "summary": summary}, f, indent=1)
    return 0 if summary["pass"] and dead is None else 1


if __name__ == "__main__":
    sys.exit(main())
