"""GPU benchmark of the transformers engine and the platform around it (any CUDA machine).

Model: a Qwen3-4B-shaped causal LM with random bf16 weights, made on the GPU from its config and
written once to ``--model-dir`` with a word-level tokenizer assembled offline (151,936 entries, so
every sampled id decodes) and Qwen3's sampling defaults (temperature 0.6, top-p 0.95, top-k 20).
Nothing is downloaded. Prompts are FAPO judge prompts, rendered by the fapo recipe's own template
and chat template, about ``--prompt-tokens`` long; each judge call generates ``--new-tokens``
(random weights almost never sample EOS; the tokens actually generated are what is counted).

Sections (``--sections``), each a table of output tokens/s per number of concurrent requests:

- ``engine``: the engine alone (no HTTP), closed loop of C concurrent judge calls, with the ablation
  of its speed-ups side by side: ``plain`` (transformers' concatenating KV cache, full-vocabulary
  top-k, cuDNN attention), ``-cudnn``, ``+topk`` (top-k sampling over the k candidates), ``+packed-gqa``
  (grouped-query decode without a K/V copy per head), ``+cuda-graphs`` (static slot KV cache, decode steps
  replayed as CUDA graphs with cuDNN attention, fused RMSNorm: the default engine on CUDA;
  ``bench/gpu_step_profile.py`` splits that step's gains).
- ``http``: the same judge calls as rewards, client → router → server (``genrm route`` + ``genrm
  serve --recipe fapo``, group ids set, 8 per group) against the in-process default engine in the
  same round: rewards/s, tokens/s (server's ``genrm_server_generation_tokens``) and their ratio.
- ``sequential``: C concurrent calls with ``max_batch_size=1`` (no batching) vs dynamic batching.

Run::

    python bench/gpu_bench.py                                  # everything, ~10 min on an H100
    python bench/gpu_bench.py --sections engine --concurrency 1 64 --waves 1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.metadata
import json
import os
import random
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.genrm_server.engines import decode_attention, fused_norm
from services.genrm_server.engines.base import GenerationInput, SamplingParams
from services.genrm_server.engines.transformers_engine import TransformersEngine
from services.genrm_server.recipes.templates import FAPO_PROMPT, fill
from services.genrm_server.settings import ServerSettings

QWEN3_4B = dict(
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, max_position_embeddings=40960,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6,
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[UNK]"]
SMALL = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=32)  # --small: a CPU smoke run of this script's own logic
# (topk_sampling, cudnn_attention, attention, static slots + CUDA graphs), one speed-up more per column; http and
# sequential run the defaults. cuDNN attention keeps a plan per shape, so only the first column may use it: a
# later cuDNN column would run on plans the first paid for (the widths of two runs overlap), which no server with
# changing batches gets.
VARIANTS = {"plain": (False, True, "sdpa", False), "-cudnn": (False, False, "sdpa", False),
            "+topk": (True, False, "sdpa", False), "+packed-gqa": (True, False, decode_attention.NAME, False),
            "+cuda-graphs": (True, False, decode_attention.NAME, True)}
DEFAULT = "+cuda-graphs"  # what the engine does on CUDA by default


# -- model ----------------------------------------------------------------------------------------

def ensure_model(path: Path, device: str = "cuda", small: bool = False) -> Path:
    """Write the Qwen3-4B-shaped model (random weights), tokenizer and generation config once."""
    if (path / "config.json").is_file():
        return path
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from services.tiny_model import CHAT_TEMPLATE

    t0 = time.perf_counter()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), QWEN3_4B["vocab_size"])})
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  unk_token="[UNK]", additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHAT_TEMPLATE
    path.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(path)
    eos = [vocab["<|im_end|>"], vocab["<|endoftext|>"]]
    shape = {**QWEN3_4B, **(SMALL if small else {})}
    config = Qwen3Config(**shape, eos_token_id=eos, pad_token_id=vocab["<|endoftext|>"], bos_token_id=None)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen3ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=config.pad_token_id,
                                               temperature=0.6, top_p=0.95, top_k=20, do_sample=True)
    model.save_pretrained(path)
    del model
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def make_samples(n: int, solution_words: int, jitter: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """FAPO samples with a correct boxed answer (so the judge is asked), all distinct, 8 per group; solution
    lengths vary by up to ``jitter`` words either way, as policy samples do (a batch is then ragged)."""
    rng = random.Random(seed)
    words = lambda k: " ".join(f"w{rng.randrange(4, 151936)}" for _ in range(k))  # noqa: E731
    return [{"question": words(40), "solution": words(max(1, solution_words + rng.randint(-jitter, jitter)))
             + " The answer is \\boxed{7}", "ground_truth": "7", "group_id": f"g{i // 8}"} for i in range(n)]


def prompt_length(engine: TransformersEngine, sample: dict[str, Any]) -> int:
    return len(engine._encode(GenerationInput(messages=[{"role": "user", "content": judge_prompt(sample)}])))


def judge_prompt(sample: dict[str, Any]) -> str:
    return fill(FAPO_PROMPT, problem=sample["question"], ground_truth=sample["ground_truth"],
                solution=sample["solution"])


# -- closed-loop drivers --------------------------------------------------------------------------

@dataclass
class Run:
    concurrency: int
    requests: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    finish: collections.Counter = field(default_factory=collections.Counter)

    def describe(self) -> str:
        return (f"c={self.concurrency} requests={self.requests} tokens={self.tokens} wall={self.wall_s:.1f}s "
                f"tok/s={self.tok_s:,.0f} mean batch={self.extra.get('mean_batch', 0):.1f} "
                f"finish={dict(self.finish)} errors={len(self.errors)} {self.errors[:2]}")

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


async def closed_loop(call, items: list[Any], concurrency: int, stop_after: int | None = None) -> Run:
    """Keep ``concurrency`` calls in flight over ``items``; ``stop_after``: end once that many finished."""
    run, queue = Run(concurrency), list(reversed(items))
    enough = asyncio.Event()

    async def worker() -> None:
        while queue:
            try:
                tokens = await call(queue.pop())  # not `run.tokens += await ...`: that reads run.tokens first
            except Exception as exc:  # counted and shown: a failing call must not pass for a fast one
                run.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            run.tokens += tokens
            run.requests += 1
            if stop_after and run.requests >= stop_after:
                enough.set()
                return

    t0 = time.perf_counter()
    workers = asyncio.gather(*(worker() for _ in range(concurrency)))
    stop = asyncio.ensure_future(enough.wait())
    await asyncio.wait([workers, stop], return_when=asyncio.FIRST_COMPLETED)
    run.wall_s = time.perf_counter() - t0
    workers.cancel()
    stop.cancel()
    await asyncio.gather(workers, stop, return_exceptions=True)
    return run


def engine_call(engine: TransformersEngine, new_tokens: int, finish: collections.Counter | None = None):
    async def call(prompt: str) -> int:
        # Exactly what the fapo recipe's judge sends (recipes/base.py Judge._generate).
        inp = GenerationInput(messages=[{"role": "user", "content": prompt}], incremental=False)
        last = None
        async for delta in engine.generate(inp, SamplingParams(max_tokens=new_tokens)):
            last = delta
        if finish is not None:
            finish[f"{last.finish_reason}:{last.stop_reason}" if last.stop_reason else last.finish_reason] += 1
        return last.completion_tokens or 0

    return call


async def run_engine(engine: TransformersEngine, variant: str, prompts: list[str], c: int, args) -> Run:
    import torch

    engine.topk_sampling, cudnn, engine.model.config._attn_implementation, engine.use_slots = VARIANTS[variant]
    # The static-cache variant's graphs were captured with fused norms at load; the others run transformers' own.
    fused_norm.fuse(engine.model) if engine.use_slots else fused_norm.unfuse(engine.model)
    torch.backends.cuda.enable_cudnn_sdp(cudnn)
    finish: collections.Counter = collections.Counter()
    steps: list[int] = []
    engine.on_batch = steps.append  # rows of every decode step
    run = await closed_loop(engine_call(engine, args.new_tokens, finish), prompts[: c * args.waves], c)
    engine.on_batch = None
    run.finish = finish
    run.extra["mean_batch"] = statistics.fmean(steps) if steps else 0.0
    print(f"  {variant}: {run.describe()}", flush=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the server process of the http section needs the memory this run's KV held
    return run


# -- sections ---------------------------------------------------------------------------------------

async def section_engine(engine, samples, args) -> list[dict[str, Any]]:
    # Each variant and repeat gets prompts one token longer than the last (repeats of `plain` then meet some
    # new widths, as a server does; see VARIANTS on why only `plain` uses cuDNN).
    rows, shift = [], 0
    for c in args.concurrency:
        row: dict[str, Any] = {"concurrency": c}
        for variant in args.variants:
            runs = []
            for _ in range(args.repeats):
                shift += 1
                prompts = [judge_prompt({**s, "solution": "w4 " * shift + s["solution"]}) for s in samples]
                runs.append(await run_engine(engine, variant, prompts, c, args))
            row[variant] = statistics.median(r.tok_s for r in runs)
        rows.append(row)
        print("engine", json.dumps(row), flush=True)
    return rows


async def section_sequential(engine, samples, args) -> list[dict[str, Any]]:
    prompts = [judge_prompt(s) for s in samples]
    c = args.sequential_concurrency
    batched = await run_engine(engine, DEFAULT, prompts, c, args)
    engine.settings = engine.settings.model_copy(update={"max_batch_size": 1})
    try:  # all c wait; throughput is steady from the first completion on, so time a few of them
        alone = await closed_loop(engine_call(engine, args.new_tokens), prompts[:c], c, stop_after=2)
        print(f"  sequential: {alone.describe()}", flush=True)
    finally:
        engine.settings = engine.settings.model_copy(update={"max_batch_size": args.max_batch_size})
    row = {"concurrency": c, "sequential": alone.tok_s, "batched": batched.tok_s,
           "speedup": batched.tok_s / alone.tok_s}
    print("sequential", json.dumps(row), flush=True)
    return [row]


async def section_http(engine, samples, args) -> list[dict[str, Any]]:
    import httpx

    from services.local_stack import free_port, spawn, wait_ready
    from trainer_client import AsyncRewardClient

    logs = Path(args.log_dir)
    server_url, router_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    server = spawn("server", server_url, [
        "serve", "--model", args.model_dir, "--device", args.device, "--port", server_url.rsplit(":", 1)[1],
        "--max-batch-size", str(args.max_batch_size), "--recipe", "fapo", "--judge-max-tokens", str(args.new_tokens),
        "--reward-cache-size", "0", "--log-level", "warning", "--kv-cache-len", str(args.kv_cache_len),
    ], log_dir=logs)
    router = None
    try:
        wait_ready(server, time.monotonic() + 600)
        router = spawn("router", router_url, ["route", "--workers", server_url, "--port",
                                              router_url.rsplit(":", 1)[1], "--log-level", "warning"], log_dir=logs)
        wait_ready(router, time.monotonic() + 60)
        prompts = [judge_prompt(s) for s in samples]
        rows = []
        client = AsyncRewardClient(router_url, recipe="fapo", timeout_s=3600, concurrency=max(args.concurrency))
        async with client:
            judged = 0

            async def reward(sample: dict[str, Any]) -> int:
                nonlocal judged
                result = await client.score(sample)
                judged += bool(result.get("judge_asked"))
                return 1

            # Untimed, as the in-process engine's warm-up: the server's first requests pay one-time costs
            # (connections, first prefill shapes) that the engine alone paid before its first figure.
            await closed_loop(reward, samples[:8], 8)
            for c in args.concurrency:
                engine_runs, http_runs = [], []
                for _ in range(args.repeats):
                    engine_runs.append(await run_engine(engine, DEFAULT, prompts, c, args))
                    before = _counters(httpx.get(server_url + "/metrics").text)
                    run = await closed_loop(reward, samples[: c * args.waves], c)
                    after = _counters(httpx.get(server_url + "/metrics").text)
                    run.tokens = after[0] - before[0]
                    steps = after[2] - before[2]
                    run.extra["mean_batch"] = (after[1] - before[1]) / steps if steps else 0.0
                    run.extra["rewards_s"] = run.requests / run.wall_s
                    print(f"  http: {run.describe()}", flush=True)
                    http_runs.append(run)
                eng = statistics.median(r.tok_s for r in engine_runs)
                http = statistics.median(r.tok_s for r in http_runs)
                row = {"concurrency": c, "engine_tok_s": eng, "http_tok_s": http, "ratio": http / eng,
                       "rewards_s": statistics.median(r.extra["rewards_s"] for r in http_runs)}
                rows.append(row)
                print("http", json.dumps(row), flush=True)
            assert judged > 0, "no reward went through the judge: the samples do not exercise the engine"
        return rows
    finally:
        for child in (router, server):
            if child is not None:
                child.stop()


def _counters(metrics: str) -> tuple[float, float, float]:
    """Tokens generated, and the decode steps' rows summed and counted (genrm_server_batch_size)."""
    def value(name: str) -> float:
        m = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", metrics, re.M)
        return float(m.group(1)) if m else 0.0

    return (value("genrm_server_generation_tokens_total"), value("genrm_server_batch_size_sum"),
            value("genrm_server_batch_size_count"))


# -- main -------------------------------------------------------------------------------------------

def print_tables(results: dict[str, Any]) -> None:
    env = results["env"]
    print(f"\n## {env['gpu']} · torch {env['torch']} · transformers {env['transformers']}")
    print(f"prompt ≈ {env['prompt_tokens']} ± {env['prompt_jitter']} tokens, {env['new_tokens']} new tokens, "
          f"waves {env['waves']}, repeats {env['repeats']} (median)\n")
    if rows := results.get("engine"):
        variants = [v for v in VARIANTS if v in rows[0]]
        best = DEFAULT if DEFAULT in variants else variants[-1]
        head = [f"{v} tok/s" for v in variants] + [f"{best} / {variants[0]}", "vLLM 0.24", f"{best} / vLLM"]
        print("| concurrent | " + " | ".join(head) + " |")
        print("|---" * (len(variants) + 4) + "|")
        for r in rows:
            first, last, vllm = r[variants[0]], r[best], VLLM_TOK_S.get(r["concurrency"], 0)
            cells = [f"{r[v]:,.0f}" for v in variants] + [f"{last / first:.2f}×", f"{vllm:,}",
                                                           f"{last / vllm:.2f}×" if vllm else "–"]
            print(f"| {r['concurrency']} | " + " | ".join(cells) + " |")
    if rows := results.get("http"):
        print("\n| concurrent | engine alone tok/s | client → router → server tok/s | ratio | rewards/s |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['concurrency']} | {r['engine_tok_s']:,.0f} | {r['http_tok_s']:,.0f} | {r['ratio']:.3f} "
                  f"| {r['rewards_s']:.2f} |")
    if rows := results.get("sequential"):
        r = rows[0]
        print(f"\nsequential (max_batch_size 1) vs dynamic batching at {r['concurrency']} concurrent: "
              f"{r['sequential']:,.0f} vs {r['batched']:,.0f} tok/s = {r['speedup']:.1f}×")


VLLM_TOK_S = {1: 221, 8: 1654, 32: 4763, 64: 7277, 128: 9837, 256: 11686}  # ../shared/gpu/README.md, same shape


async def main_async(args) -> dict[str, Any]:
    import torch

    ensure_model(Path(args.model_dir), args.device, args.small)
    engine = TransformersEngine(ServerSettings(model=args.model_dir, device=args.device,
                                                max_batch_size=args.max_batch_size, kv_cache_len=args.kv_cache_len))
    await engine.start()
    probe = 100  # one word is one token: size the solutions so the whole judge prompt has --prompt-tokens
    words = max(8, probe + args.prompt_tokens - prompt_length(engine, make_samples(1, probe)[0]))
    samples = make_samples(max([*args.concurrency, args.sequential_concurrency]) * args.waves, words,
                           args.prompt_jitter)
    prompt_len = round(statistics.fmean(prompt_length(engine, s) for s in samples[:64]))
    results: dict[str, Any] = {"env": {
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
        "transformers": importlib.metadata.version("transformers"), "prompt_tokens": prompt_len,
        "prompt_jitter": args.prompt_jitter,
        "new_tokens": args.new_tokens, "waves": args.waves, "repeats": args.repeats,
    }}
    try:
        await closed_loop(engine_call(engine, 8), [judge_prompt(s) for s in samples[:8]], 8)  # warm-up
        for name in args.sections:
            section = {"engine": section_engine, "http": section_http, "sequential": section_sequential}[name]
            results[name] = await section(engine, samples, args)
    finally:
        await engine.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="/tmp/genrm-qwen3-4b-shaped", help="written on first use (8 GB)")
    p.add_argument("--sections", nargs="+", default=["engine", "sequential", "http"],
                   choices=["engine", "sequential", "http"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    p.add_argument("--sequential-concurrency", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--prompt-jitter", type=int, default=64, help="prompt lengths vary by up to this either way")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--max-batch-size", type=int, default=128)
    p.add_argument("--kv-cache-len", type=int, default=1024,
                   help="static KV cache tokens per slot, in-process engine and server alike (each holds "
                        "--max-batch-size slots: 19 GiB at 128 x 1,024 on this model) [default: 1024]")
    p.add_argument("--waves", type=int, default=1, help="requests per concurrent caller in each run")
    p.add_argument("--repeats", type=int, default=1, help="runs per figure (median)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true", help="a 2-layer model of the same vocabulary (smoke runs)")
    p.add_argument("--log-dir", default=os.environ.get("OUT", "/tmp") + "/gpu-bench-logs")
    p.add_argument("--json", help="write all figures here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print_tables(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
