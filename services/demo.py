"""``genrm demo``: start a local stack, score a GRPO-shaped batch of rewards through it, print a table.

The batch is 4 problems x 4 sampled solutions scored with the ``fapo`` recipe: the math rule first, then
the GenRM judge for correct training samples. With the embedded tiny model the judge's text is random, so
its verdicts come back unparsable (``judge_ok = false``, the rule score kept and counted) — the point is the
path, not the judgments. ``--model DIR`` with a real FAPO GenRM gives real ones.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

from services.local_stack import LocalStack
from trainer_client import AsyncGenRMClient

PROBLEMS = [
    ("What is 17 * 23?", "391", ["391", "391", "401", "391"]),
    ("Solve 2x + 3 = 11 for x.", "4", ["4", "x = 4", "7", "\\frac{8}{2}"]),
    ("What is the sum of the first 10 positive integers?", "55", ["55", "45", "55", "55"]),
    ("Compute 2^10.", "1024", ["1024", "1000", "1{,}024", "2048"]),
]


def samples() -> list[dict]:
    out = []
    for group, (problem, truth, answers) in enumerate(PROBLEMS):
        for answer in answers:
            solution = f"Step 0: Work through the problem.\nStep 1: The result is \\boxed{{{answer}}}."
            out.append({"recipe": "fapo", "question": problem, "solution": solution, "ground_truth": truth,
                        "group_id": str(group), "extra_info": {"split": "train"}})
    return out


async def _score(url: str) -> tuple[str, list, float]:
    async with AsyncGenRMClient(url) as client:
        model = (await client.models()).data[0].id
        t0 = time.perf_counter()
        batch = await client.reward_batch(samples())
        return model, batch.results, time.perf_counter() - t0


def run_demo(*, replicas: int = 2, model: str | None = None, judge_max_tokens: int = 48) -> int:
    with tempfile.TemporaryDirectory(prefix="genrm-demo-") as logs:
        print(f"starting {replicas} GenRM servers + router (logs in {logs}) ...", flush=True)
        t0 = time.perf_counter()
        args = ["--judge-max-tokens", str(judge_max_tokens)]
        with LocalStack(replicas, model, log_dir=logs, server_args=args) as stack:
            print(f"router ready: {stack.url} ({time.perf_counter() - t0:.1f}s)", flush=True)
            served, results, wall = asyncio.run(_score(stack.url))
    rows = samples()
    print(f"\nmodel: {served}; {len(rows)} samples (4 prompts x 4 responses), recipe fapo, {wall:.2f}s\n")
    print(f"{'problem':<44} {'answer':>12} {'truth':>6} {'score':>6} {'acc':>5} {'judged':>6} {'judge_ok':>8}")
    for sample, item in zip(rows, results, strict=True):
        if item.error is not None:
            print(f"{sample['question'][:44]:<44} error: {item.error.message}")
            continue
        r = item.result or {}
        answer = sample["solution"].rsplit("\\boxed{", 1)[1][:-2]
        print(f"{sample['question'][:44]:<44} {answer:>12} {sample['ground_truth']:>6} {r['score']:>6.1f} "
              f"{r['acc']!s:>5} {r['judge_asked']!s:>6} {r['judge_ok']!s:>8}")
    if model is None:
        print("\nnote: the embedded tiny model has random weights: its judge verdicts are unparsable noise, so "
              "judged samples keep the rule score with judge_ok=False. Run `genrm demo --model DIR` with a real "
              "FAPO GenRM for real judgments.")
    return 0
