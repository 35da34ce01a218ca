"""Soak test: the router and 2 GenRM servers under steady load for 10 minutes; watch memory, fds, latency.

A local stack (2 ``genrm serve`` processes on the tiny model + a ``genrm route`` router, started and stopped
here, logs in a temp dir) takes single ``POST /v1/reward`` calls (math recipe, judge-free) through the router:

1. capacity probe: a closed loop of --probe-concurrency calls for --probe-s seconds -> requests/s;
2. soak: an open loop at --load x capacity for --duration-s seconds. Requests are fired on a fixed schedule
   (latency is measured from the planned send time, so a stall shows as latency, not as a slower schedule);
   at most --max-inflight are outstanding, a request that would exceed it is counted as an error
   ("overload") instead of being queued in this process. Every answer is checked: HTTP 200 and the score
   equal to the in-process ``compute_math``; errors and wrong scores are counted apart.

Every --interval-s the RSS (/proc/PID/status VmRSS) and open fds (/proc/PID/fd) of the router and each server
are sampled, with that interval's sent/ok/errors/wrong and p50/p99 latency; a row is printed per interval and
a markdown table + summary at the end. The CPU share of each process, this one (the load generator, "client")
included, is shown too: on a small machine the generator competes with the stack for the same cores.
Growth is measured from the first sample after --warmup-s to the last.
PASS needs: errors = 0, wrong scores = 0, RSS growth < 5% and fd growth < 5% for every process. The p99 drift
(last interval vs first interval after warm-up) is reported, not gated.

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


async def probe(load: Load, session: aiohttp.ClientSession, concurrency: int, seconds: float) -> float:
    """Closed loop: `concurrency` callers back to back for `seconds`; returns completed requests/s."""
    async def caller(deadline: float) -> None:
        while time.perf_counter() < deadline:
            await load.one(session, time.perf_counter())

    await asyncio.gather(*(caller(time.perf_counter() + 3.0) for _ in range(concurrency)))  # warm-up
    load.reset()
    t0 = time.perf_counter()
    await asyncio.gather(*(caller(t0 + seconds) for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    if load.errors or load.wrong:
        print(f"probe: {load.errors} errors {dict(load.error_kinds)}, {load.wrong} wrong", flush=True)
    return load.ok / elapsed


async def soak(stack: LocalStack, args: argparse.Namespace) -> dict:
    load = Load(stack.url, make_samples(512, 8))
    procs = {"router": stack.router.process.pid, **{f"server-{i}": s.process.pid for i, s in enumerate(stack.servers)},
             CLIENT: os.getpid()}
    connector = aiohttp.TCPConnector(limit=args.max_inflight)
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        capacity = await probe(load, session, args.probe_concurrency, args.probe_s)
        rate = args.load * capacity
        print(f"capacity {capacity:,.0f} req/s (closed loop, {args.probe_concurrency} in flight, {args.probe_s:.0f} s);"
              f" soak at {args.load:.0%} = {rate:,.0f} req/s for {args.duration_s:.0f} s, a row every "
              f"{args.interval_s:.0f} s", flush=True)
        load.reset()
        header = (f"{'t s':>5} {'sent':>7} {'ok':>7} {'err':>4} {'wrong':>5} {'p50 ms':>7} {'p99 ms':>7}  "
                  + "  ".join(f"{n + ' MiB/fds/cpu%':>22}" for n in procs))
        print(header, flush=True)
        rows: list[dict] = []
        tasks: set[asyncio.Task] = set()
        cpu0 = {name: proc_stats(pid)["cpu_s"] for name, pid in procs.items()}
        t0 = last_t = time.perf_counter()
        fired = 0
        next_sample = t0 + args.interval_s
        end = t0 + args.duration_s
        while True:
            now = time.perf_counter()
            due = min(int((now - t0) * rate), int(args.duration_s * rate))
            while fired < due:
                planned = t0 + fired / rate
                fired += 1
                if load.inflight >= args.max_inflight:
                    load.sent += 1
                    load.error("overload")
                    continue
                task = asyncio.create_task(load.one(session, planned))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if now >= next_sample or now >= end:
                if now >= end and tasks:  # let the last interval's requests finish before closing it
                    await asyncio.wait(set(tasks), timeout=args.timeout_s + 1)
                    now = time.perf_counter()
                stats = {}
                for name, pid in procs.items():
                    try:
                        stats[name] = proc_stats(pid)
                    except OSError:  # the process is gone
                        stats[name] = {"rss_mib": float("nan"), "fds": -1, "cpu_s": float("nan")}
                    before = rows[-1]["procs"][name]["cpu_s"] if rows else cpu0[name]
                    stats[name]["cpu_pct"] = 100 * (stats[name]["cpu_s"] - before) / (now - last_t)
                last_t = now
                row = {"t_s": round(min(now, end) - t0, 1), "sent": load.sent, "ok": load.ok, "errors": load.errors,
                       "wrong": load.wrong, "p50_ms": percentile(load.latencies, 0.50) * 1e3,
                       "p99_ms": percentile(load.latencies, 0.99) * 1e3, "error_kinds": dict(load.error_kinds),
                       "inflight": load.inflight, "procs": stats}
                rows.append(row)
                load.reset()
                print(f"{row['t_s']:>5.0f} {row['sent']:>7} {row['ok']:>7} {row['errors']:>4} {row['wrong']:>5} "
                      f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}  "
                      + "  ".join(f"{s['rss_mib']:>10.1f}/{s['fds']:<5}/{s['cpu_pct']:<4.0f}" for s in stats.values())
                      + (f"  errors: {row['error_kinds']}" if row["error_kinds"] else ""), flush=True)
                next_sample += args.interval_s
                if now >= end:
                    break
            await asyncio.sleep(0.001)
    return {"capacity_rps": capacity, "rate_rps": rate, "procs": procs, "rows": rows}


def summarize(result: dict, args: argparse.Namespace) -> dict:
    rows = result["rows"]
    warmup = min(args.warmup_s, args.duration_s / 2)
    base = next((r for r in rows if r["t_s"] >= warmup), rows[0])  # first sample after warm-up
    last = rows[-1]
    growth = {}
    for name in result["procs"]:
        if name == CLIENT:
            continue
        b, e = base["procs"][name], last["procs"][name]
        growth[name] = {"rss_from": b["rss_mib"], "rss_to": e["rss_mib"],
                        "rss_growth": e["rss_mib"] / b["rss_mib"] - 1 if b["rss_mib"] else float("nan"),
                        "rss_max": max(r["procs"][name]["rss_mib"] for r in rows),
                        "fds_from": b["fds"], "fds_to": e["fds"],
                        "fds_growth": e["fds"] / b["fds"] - 1 if b["fds"] > 0 else float("nan"),
                        "fds_max": max(r["procs"][name]["fds"] for r in rows)}
    totals = {k: sum(r[k] for r in rows) for k in ("sent", "ok", "errors", "wrong")}
    kinds: collections.Counter[str] = collections.Counter()
    for r in rows:
        kinds.update(r["error_kinds"])
    checks = {
        "errors == 0": totals["errors"] == 0,
        "wrong == 0": totals["wrong"] == 0,
        "RSS growth < 5%": all(g["rss_growth"] < GROWTH_LIMIT for g in growth.values()),
        "fd growth < 5%": all(g["fds_growth"] < GROWTH_LIMIT for g in growth.values()),
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
    print(f"growth from t={summary['baseline_t_s']:.0f} s (after warm-up) to the end:")
    for name, g in summary["growth"].items():
        print(f"  {name}: RSS {g['rss_from']:.1f} -> {g['rss_to']:.1f} MiB ({g['rss_growth']:+.1%}, max "
              f"{g['rss_max']:.1f}); fds {g['fds_from']} -> {g['fds_to']} ({g['fds_growth']:+.1%}, max {g['fds_max']})")
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
    p.add_argument("--probe-concurrency", type=int, default=32, help="capacity probe: calls in flight [default: 32]")
    p.add_argument("--max-inflight", type=int, default=256,
                   help="soak: outstanding requests beyond this are counted as errors [default: 256]")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per-request timeout [default: 10]")
    p.add_argument("--replicas", type=int, default=2, help="GenRM servers behind the router [default: 2]")
    p.add_argument("--json", metavar="PATH", help="write the samples, summary and settings as JSON")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="genrm-soak-") as logs, LocalStack(args.replicas, log_dir=logs) as stack:
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
