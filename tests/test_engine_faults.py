"""A model error mid-run ends every sequence it touched (none waits forever), and the engine keeps serving.

The real engine and the tiny model run in-process; the fault is injected into the second prefill, the
moment a sequence joins a running batch (e.g. CUDA OOM on a long judge prompt), with the dynamic and the
static (slot) KV cache.
"""

from __future__ import annotations

import asyncio

import pytest

from services.genrm_server.engines.base import GenerationInput, SamplingParams
from services.genrm_server.engines.transformers_engine import TransformersEngine
from services.genrm_server.settings import ServerSettings


async def _finish(engine: TransformersEngine, prompt: str, tokens: int) -> str | None:
    last = None
    params = SamplingParams(max_tokens=tokens, ignore_eos=True)
    async for delta in engine.generate(GenerationInput(prompt=prompt), params):
        last = delta
    return last.finish_reason if last else None


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
async def test_a_failing_join_aborts_everyone_and_the_engine_recovers(tiny_model, kv_cache):
    engine = TransformersEngine(ServerSettings(model=str(tiny_model), max_wait_ms=0, kv_cache=kv_cache))
    await engine.start()
    try:
        real_join, calls = engine._join, []

        def failing_join(rows, seqs):
            calls.append(len(seqs))
            if len(calls) == 2:
                raise RuntimeError("CUDA out of memory (injected)")
            return real_join(rows, seqs)

        engine._join = failing_join
        running = asyncio.ensure_future(_finish(engine, "long " * 10, 3000))
        while engine.num_running == 0:
            await asyncio.sleep(0.01)
        joiner = await asyncio.wait_for(_finish(engine, "joins " * 30, 5), timeout=20)
        assert joiner == "abort" and await asyncio.wait_for(running, timeout=20) == "abort"
        assert await asyncio.wait_for(_finish(engine, "after", 4), timeout=20) == "length"  # still serving
    finally:
        await engine.stop()
