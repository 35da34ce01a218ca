"""Where a decode step of the transformers engine spends its time, on CUDA (torch.profiler + wall clock).

Loads the model through the engine's own loading code (static slot KV cache), prefills B prompts of
--context tokens and times decode steps, for each variant of the captured step (one speed-up more each):
the step as the engine runs it (graph replay), the same step eagerly (no graph), sampling (the engine's
``_sample`` with Qwen3's defaults) and the whole loop (step + sampling + ``tolist``); then a torch.profiler
table of one eager step's CUDA kernels.

    python bench/gpu_step_profile.py --model-dir /tmp/genrm-qwen3-4b-shaped --batch 1 64 128
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from services.genrm_server.engines import fused_norm
from services.genrm_server.engines.base import SamplingParams
from services.genrm_server.engines.transformers_engine import TransformersEngine, _Sequence
from services.genrm_server.settings import ServerSettings

# (cuDNN attention in the captured steps, fused RMSNorm): one speed-up more per variant
VARIANTS = {"graphs": (False, False), "+cudnn-decode": (True, False), "+fused-norm": (True, True)}


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` runs, each ended by a CUDA sync."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="a local model directory (bench/gpu_bench.py writes one)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--context", type=int, default=640, help="prompt tokens per row [default: 640]")
    p.add_argument("--steps", type=int, default=20, help="timed steps per figure [default: 20]")
    p.add_argument("--kernels", type=int, default=12, help="rows of the kernel table [default: 12]")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="captured-step variants, one speed-up more each [default: all]")
    args = p.parse_args()
    slots = max(args.batch)
    engine = TransformersEngine(ServerSettings(model=args.model_dir, device="cuda", max_batch_size=slots,
                                               kv_cache="static", kv_cache_len=1024))
    engine._load()
    print(f"{'variant':>14} {'rows':>5} {'graph ms':>9} {'eager ms':>9} {'sample ms':>10} {'loop ms':>8} "
          f"{'loop tok/s':>11}")
    for variant in args.variants:
        cudnn, fused = VARIANTS[variant]
        engine._slots.cudnn_decode = cudnn
        fused_norm.fuse(engine.model) if fused else fused_norm.unfuse(engine.model)
        engine._slots.drop_graphs()  # captured again, lazily, with this variant
        for b in args.batch:
            profile_batch(engine, b, args, random.Random(0), variant)


def profile_batch(engine: TransformersEngine, b: int, args: argparse.Namespace, rng: random.Random,
                  variant: str) -> None:
    dec = engine._slots
    seqs = [_Sequence(prompt_ids=[rng.randrange(10, 150_000) for _ in range(args.context)],
                      params=SamplingParams(max_tokens=256), max_tokens=256, out=None, detok=None)
            for _ in range(b)]
    with torch.inference_mode():
        dec.clear()
        dec.feed(dec.join([s.prompt_ids for s in seqs], engine.pad_id).argmax(-1))
        # Positions stay put: each timed step rewrites the same column, so any number of them fits.
        pos = dec.pos[:b].clone()

        def graph_step():
            dec.pos[:b] = pos
            return dec.step(args.context)

        def eager_step():
            dec.pos[:b] = pos
            graphs, dec.graphs = dec.graphs, None
            try:
                return dec.step(args.context)
            finally:
                dec.graphs = graphs

        logits = graph_step()

        def sample():
            return engine._sample(logits, seqs)

        def loop():
            dec.feed(engine._sample(graph_step(), seqs))
            dec.ids[:b].tolist()

        for fn in (graph_step, eager_step, sample, loop):  # warm-up
            fn()
        g, e, s, lp = (timed(fn, args.steps) for fn in (graph_step, eager_step, sample, loop))
        print(f"{variant:>14} {b:>5} {g:>9.2f} {e:>9.2f} {s:>10.2f} {lp:>8.2f} {b / lp * 1e3:>11,.0f}", flush=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            eager_step()
            sample()
            torch.cuda.synchronize()
    if args.kernels:
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.kernels), flush=True)


if __name__ == "__main__":
    main()
