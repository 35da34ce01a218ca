"""Run the fault scenarios and print a markdown table: ``python -m tests.faults.run [--n 2000] [--only NAME ...]``.

Starts 3 ``genrm serve`` math servers on the tiny model (written to a temporary directory), then each
scenario with its own router; logs go to ``--log-dir`` (default: a temporary directory, removed after a
clean run and kept, and named, when a goal was missed).
Exit status 1 when any scenario lost, failed (where no failure is expected), duplicated or got a wrong
score, or produced a silent zero.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from services.tiny_model import write_tiny_model
from tests.faults.harness import markdown_table
from tests.faults.scenarios import CONCURRENCY, DEADLINE_S, RATE, SCENARIOS, Env, N, run_all

# Scenarios where failures are the expected outcome (explicit errors, never lost): the deadline is
# shorter than the time to notice a hung worker.
FAILURES_EXPECTED = {"sigstop-short-deadline"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=N, help="reward calls per scenario")
    p.add_argument("--rate", type=float, default=RATE, help="calls per second (0 = as fast as possible)")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY)
    p.add_argument("--deadline-s", type=float, default=DEADLINE_S, help="each call's deadline")
    p.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="scenarios to run (default: all)")
    p.add_argument("--log-dir", type=Path, help="where process logs go")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="genrm-faults-"))
    log_dir = args.log_dir or work / "logs"
    model = write_tiny_model(work / "tiny")
    env = Env(model, log_dir, n=args.n, rate=args.rate, concurrency=args.concurrency, deadline_s=args.deadline_s)
    t0 = time.monotonic()
    env.start()
    print(f"3 servers ready in {time.monotonic() - t0:.1f} s; logs in {log_dir}", file=sys.stderr)
    names = args.only or list(SCENARIOS)
    try:
        reports = asyncio.run(run_all(env, names))
    finally:
        env.stop()
    bad = []
    for name, rep in zip(names, reports, strict=True):
        print(rep.summary(), file=sys.stderr)
        if rep.lost or rep.duplicated or rep.wrong or rep.misdelivered or rep.silent_zeros or (
                rep.failed and name not in FAILURES_EXPECTED):
            bad.append(rep.scenario)
    print(f"\n{len(names)} scenarios in {time.monotonic() - t0:.0f} s "
          f"({args.n} calls each, {args.concurrency} at a time, {args.rate:g}/s, deadline {args.deadline_s:g} s)\n")
    print(markdown_table(reports))
    if bad:
        print(f"\nFAILED GOALS: {', '.join(bad)} (logs in {log_dir})")
    elif not args.log_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
