"""``genrm score FILE.jsonl``: score samples from a JSONL file through the router; JSONL out.

Each input line is a sample (``question``/``prompt``, ``solution``/``response``, ``ground_truth``, optional
``recipe``, ``data_source``, ``extra_info``, ``group_id``); each output line is that object with the
result under ``"reward"`` (None where ``--on-failure none`` dropped it), in input order; other fields (ids,
metadata) are kept in the output and not sent. Needs only the
client package: ``python -m trainer_client.score_cli`` works where the ``genrm`` command is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from trainer_client.errors import GenRMError
from trainer_client.protocol import RewardRequest
from trainer_client.reward_client import MODES, POLICIES, RewardClient

# A JSONL row may carry ids and metadata of its own: only the reward fields are sent, all are written back.
_FIELDS = frozenset(RewardRequest.model_fields) | {"prompt", "problem", "response", "solution_str"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="JSONL of samples ('-' = standard input).")
    p.add_argument("-o", "--output", default="-", help="Where to write the JSONL results (default: stdout).")
    p.add_argument("--url", default=None, help="Router URL (default: $GENRM_URL).")
    p.add_argument("--api-key", default=None, help="API key (default: $GENRM_API_KEY).")
    p.add_argument("--recipe", default=None, help="Recipe for samples that name none (default: the server's).")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="batch: chunks to /v1/reward/batch (the router fans them out); single: one call each.")
    p.add_argument("--concurrency", type=int, default=64, help="Requests in flight at once.")
    p.add_argument("--batch-size", type=int, default=256, help="Samples per batch request.")
    p.add_argument("--timeout-s", type=float, default=600.0, help="Deadline of one request, retries included.")
    p.add_argument("--on-failure", choices=POLICIES, default="raise",
                   help="raise: stop with an error; rule_only: the local math rule, flagged; none: null.")
    p.add_argument("--no-progress", action="store_true", help="No progress bar (it is off when not a terminal).")


def read_samples(stream: TextIO, name: str) -> list[dict[str, Any]]:
    samples = []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{name}:{number}: not JSON ({exc})") from None
        if not isinstance(sample, dict):
            raise ValueError(f"{name}:{number}: a sample must be a JSON object, got {type(sample).__name__}")
        samples.append(sample)
    return samples


def run(args: argparse.Namespace) -> int:
    try:
        if args.file == "-":
            samples = read_samples(sys.stdin, "<stdin>")
        else:
            with open(args.file, encoding="utf-8") as f:
                samples = read_samples(f, args.file)
    except (OSError, ValueError) as exc:
        print(f"genrm score: {exc}", file=sys.stderr)
        return 2
    try:
        with RewardClient(args.url, api_key=args.api_key, recipe=args.recipe, timeout_s=args.timeout_s,
                          concurrency=args.concurrency, on_failure=args.on_failure, mode=args.mode,
                          batch_size=args.batch_size, progress=False if args.no_progress else None) as client:
            results = client.score_batch([{k: v for k, v in s.items() if k in _FIELDS} for s in samples])
    except ValueError as exc:  # e.g. no URL
        print(f"genrm score: {exc}", file=sys.stderr)
        return 2
    except GenRMError as exc:
        print(f"genrm score: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for sample, result in zip(samples, results, strict=True):
            out.write(json.dumps({**sample, "reward": result}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    failed = sum(r is None or r.get("reward_source") == "fallback" for r in results)
    print(f"genrm score: {len(samples)} samples scored" + (f", {failed} failed" if failed else ""), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="genrm score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
