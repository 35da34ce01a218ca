"""``genrm demo``: start a local stack, send a batch of judge calls through the client, print a table.

The prompts are the verdict-judge template of ``specs/fapo-judge.md`` over a few math solutions; with
the embedded tiny model the verdicts are random text — the point is the path, not the judgments.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

from services.local_stack import LocalStack
from trainer_client import AsyncGenRMClient

VERDICT_PROMPT = (
    "The following is a math problem and an AI solution:\n\n[Math Problem]\n\n{problem}\n\n[AI Solution]\n\n"
    "{solution}\n\nYour task is to review and critique the solution step by step, and output whether the AI "
    "solution is correct.\n\nPlease put your final answer (i.e., 'True' or 'False') in \\boxed{{}}."
)

SAMPLES = [
    ("What is 17 * 23?", "Step 1: 17 * 20 = 340. Step 2: 17 * 3 = 51. Step 3: 340 + 51 = \\boxed{391}."),
    ("Solve 2x + 3 = 11.", "Step 1: 2x = 8. Step 2: x = \\boxed{4}."),
    ("What is the sum of the first 10 positive integers?", "Step 1: 10 * 11 / 2 = \\boxed{55}."),
    ("Compute 2^10.", "Step 1: 2^10 = 1000, so the answer is \\boxed{1000}."),
]


async def _send(url: str, requests: int, max_tokens: int) -> list[tuple[int, str, float, object]]:
    async with AsyncGenRMClient(url) as client:
        models = await client.models()

        async def one(i: int):
            problem, solution = SAMPLES[i % len(SAMPLES)]
            messages = [{"role": "user", "content": VERDICT_PROMPT.format(problem=problem, solution=solution)}]
            t0 = time.perf_counter()
            resp = await client.chat(messages, max_tokens=max_tokens, temperature=0.7, seed=i)
            return i, problem, time.perf_counter() - t0, resp

        print(f"model: {models.data[0].id}; sending {requests} judge calls concurrently")
        return list(await asyncio.gather(*(one(i) for i in range(requests))))


def run_demo(*, replicas: int = 2, model: str | None = None, requests: int = 16, max_tokens: int = 48) -> int:
    with tempfile.TemporaryDirectory(prefix="genrm-demo-") as logs:
        print(f"starting {replicas} GenRM servers + router (logs in {logs}) ...", flush=True)
        t0 = time.perf_counter()
        with LocalStack(replicas, model, log_dir=logs) as stack:
            print(f"router ready: {stack.url} ({time.perf_counter() - t0:.1f}s)", flush=True)
            t1 = time.perf_counter()
            rows = asyncio.run(_send(stack.url, requests, max_tokens))
            wall = time.perf_counter() - t1
        print()
        print(f"{'#':>3}  {'problem':<48} {'tokens':>6} {'finish':>7} {'latency':>9}  answer")
        total = 0
        for i, problem, latency, resp in rows:
            choice = resp.choices[0]
            total += resp.usage.completion_tokens
            answer = (choice.message.content or "").replace("\n", " ")[:28]
            print(f"{i:>3}  {problem[:48]:<48} {resp.usage.completion_tokens:>6} {choice.finish_reason:>7} "
                  f"{latency * 1000:>7.0f}ms  {answer!r}")
        print(f"\n{requests} judge calls, {total} tokens in {wall:.2f}s: {requests / wall:.1f} calls/s, "
              f"{total / wall:.0f} tokens/s")
        if model is None:
            print("note: the embedded tiny model has random weights, so its verdicts are meaningless; "
                  "run `genrm demo --model DIR` with a real GenRM for real judgments.")
    return 0
