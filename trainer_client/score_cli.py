"""genrm score FILE.jsonl: score the samples of a JSONL file through the router and write JSONL.

Each input line is a sample (question or prompt, solution or response, ground_truth, and optionally recipe,
data_source, extra_info, group_id). Each output line is that row, in input order, with its result under
"reward"; a row that could not be scored also has "error": {"row", "message", "status"} (its reward is null,
or with --on-failure rule_only the local math rule, flagged). Other fields of a row (ids, metadata) are kept
and not sent. Nothing stops at a bad row: a summary at the end counts the scored and failed rows by error.

Exit status: 0 when every row was scored, 1 when some row failed, 2 when the input could not be read (a row
that is not a JSON object is written as an error row too) or an option is wrong. Needs only the client
package: python -m trainer_client.score_cli works where the genrm command is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from trainer_client.errors import GenRMError
from trainer_client.protocol import RewardRequest
from trainer_client.reward_client import MODES, RewardClient, fallback_result

# A JSONL row may carry ids and metadata of its own: only the reward fields are sent, all are written back.
_FIELDS = frozenset(RewardRequest.model_fields) | {"prompt", "problem", "response", "solution_str"}
ON_FAILURE = ("error", "rule_only", "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="JSONL of samples ('-' = standard input).")
    p.add_argument("-o", "--output", default="-", help="Where to write the JSONL results [default: stdout].")
    p.add_argument("--url", default=None, help="Router URL [default: $GENRM_URL].")
    p.add_argument("--api-key", default=None, help="API key [default: $GENRM_API_KEY].")
    p.add_argument("--recipe", default=None, help="Recipe for samples that name none [default: the server's].")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="batch: chunks to /v1/reward/batch (the router fans them out); single: one call each "
                   "[default: auto, i.e. batch].")
    p.add_argument("--concurrency", type=int, default=64, help="Requests in flight at once [default: 64].")
    p.add_argument("--batch-size", type=int, default=256, help="Samples per batch request [default: 256].")
    p.add_argument("--timeout-s", type=float, default=600.0,
                   help="Deadline of one request, retries included [default: 600].")
    p.add_argument("--on-failure", choices=ON_FAILURE, default="error",
                   help="The reward of a row that failed (the row always gets its error and counts as failed): "
                   "error: null; rule_only: the local math rule, flagged; none: the same as error [default: "
                   "error].")
    p.add_argument("--no-progress", action="store_true",
                   help="No progress bar (there is one only when stderr is a terminal).")


def read_rows(stream: TextIO, name: str) -> list[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, sample or None, why it is not one) for every non-blank line."""
    rows: list[tuple[int, dict[str, Any] | None, str | None]] = []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except ValueError as exc:
            rows.append((number, None, f"{name}:{number}: not JSON ({exc})"))
            continue
        if not isinstance(sample, dict):
            rows.append((number, None, f"{name}:{number}: a sample must be a JSON object, got "
                                       f"{type(sample).__name__}"))
            continue
        rows.append((number, sample, None))
    return rows


def run(args: argparse.Namespace) -> int:
    name = "<stdin>" if args.file == "-" else args.file
    try:
        if args.file == "-":
            rows = read_rows(sys.stdin, name)
        else:
            with open(args.file, encoding="utf-8") as f:
                rows = read_rows(f, name)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"genrm score: cannot read {name}: {exc}", file=sys.stderr)
        return 2
    samples = [sample for _, sample, _ in rows if sample is not None]
    try:
        with RewardClient(args.url, api_key=args.api_key, recipe=args.recipe, timeout_s=args.timeout_s,
                          concurrency=args.concurrency, on_failure="error", mode=args.mode,
                          batch_size=args.batch_size, progress=False if args.no_progress else None) as client:
            results = iter(client.score_batch([{k: v for k, v in s.items() if k in _FIELDS} for s in samples]))
    except ValueError as exc:  # no URL, a bad URL or option
        message = str(exc).replace("pass base_url=... or set GENRM_URL", "pass --url or set GENRM_URL")
        print(f"genrm score: {message.replace('base_url', '--url')}", file=sys.stderr)
        return 2
    failures: Counter[str] = Counter()
    unreadable = 0
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for number, sample, why in rows:
            if sample is None:
                unreadable += 1
                failures[why.split(": ", 1)[1].split(" (", 1)[0]] += 1
                print(f"genrm score: {why}", file=sys.stderr)
                out.write(json.dumps({"reward": None, "error": {"row": number, "message": why, "status": None}})
                          + "\n")
                continue
            result = next(results)
            if isinstance(result, GenRMError):
                failures[_kind(result)] += 1
                reward = fallback_result(sample, result) if args.on_failure == "rule_only" else None
                error = {"row": number, "message": result.message, "status": result.status}
                out.write(json.dumps({**sample, "reward": reward, "error": error}) + "\n")
            else:
                out.write(json.dumps({**sample, "reward": result}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    failed = sum(failures.values())
    scored = len(rows) - failed
    summary = (f"genrm score: {scored} sample{'' if scored == 1 else 's'} scored, {failed} failed "
               f"(of {len(rows)} row{'' if len(rows) == 1 else 's'})")
    if failures:
        summary += "; by error: " + "; ".join(f"{n} × {kind}" for kind, n in failures.most_common(10))
    print(summary, file=sys.stderr)
    return 2 if unreadable else 1 if failed else 0


def _kind(error: GenRMError) -> str:
    """A failure's kind for the summary: its status and message, without what differs per row."""
    message = error.message.removeprefix("sample failed: ")
    return f"{error.status} {message}" if error.status else message


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="genrm score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
