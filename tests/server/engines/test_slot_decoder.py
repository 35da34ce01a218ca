"""services/genrm_server/engines/slot_decoder.py: the static slot KV cache (the engine's CUDA path) computes what
the dynamic cache computes.

On CPU the slot decoder runs the same code eagerly (CUDA graphs only replay it): the same logits as
``DynamicRows`` step by step through joins, leaves (rows moving down into freed slots) and a join into a
slot that held an earlier sequence; and the engine on ``--kv-cache static`` gives the same greedy text as on
``dynamic`` for staggered concurrent requests, with the context capped at ``--kv-cache-len``.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from services.genrm_server.engines.base import EngineInputError, GenerationInput, SamplingParams
from services.genrm_server.engines.kv_batch import DynamicRows
from services.genrm_server.engines.slot_decoder import SlotDecoder, batch_bucket, unsupported_reason
from services.genrm_server.engines.transformers_engine import TransformersEngine
from services.genrm_server.settings import ServerSettings

# CUDA runs the same checks with the decode steps replayed as CUDA graphs (skipped where there is no GPU).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.fixture(scope="module", params=DEVICES)
def engine(request, tiny_model):
    eng = TransformersEngine(ServerSettings(model=str(tiny_model), device=request.param, kv_cache="dynamic"))
    eng._load()  # the real loading code, without starting the scheduler
    return eng


def _script(rows, engine, steps: int = 40) -> list[torch.Tensor]:
    """Greedy decoding with a join at step 5, a row leaving at 12, and a join into the freed slot at 13."""
    seen = []
    with torch.inference_mode():
        logits = rows.join([[5, 6, 7, 8, 9], [10, 11]], engine.pad_id)
        for step in range(steps):
            tokens = logits.argmax(-1)
            seen.append(logits.float().clone())
            rows.feed(tokens)
            if step == 12:  # row 0 leaves: rows 1 and 2 move down (slots) / are selected (dynamic)
                rows.select([1, 2], columns=64)
                tokens = tokens[[1, 2]]
            logits = rows.step(max_pos=63)  # any bound at or above the rows' positions
            if step == 5:
                logits = torch.cat([logits, rows.join([[12, 13, 14, 15, 16, 17, 18, 19, 20]], engine.pad_id)])
            if step == 13:
                logits = torch.cat([logits, rows.join([[21, 22, 23]], engine.pad_id)])
    return seen


def test_slots_give_the_dynamic_cache_logits_through_joins_and_leaves(engine):
    assert unsupported_reason(engine.model) is None
    reference = _script(DynamicRows(engine.model, engine.device), engine)
    cuda = engine.device.type == "cuda"
    slots = SlotDecoder(engine.model, slots=4, max_len=64, graphs=cuda)
    if cuda:
        slots.capture_all()
        assert len(slots.graphs) == 3  # batch buckets 1, 2, 4 (4 slots) x one length bucket (64)
    static = _script(slots, engine)
    for step, (a, b) in enumerate(zip(reference, static, strict=True)):
        assert a.shape == b.shape, f"rows differ at step {step}"
        assert torch.allclose(a, b, atol=1e-3 if cuda else 1e-4), f"logits differ at step {step}: {(a - b).abs().max()}"
    assert slots.n == 3 and reference[0].shape[0] == 2 and reference[-1].shape[0] == 3
    assert not torch.allclose(reference[20][0], reference[21][0])  # the steps really differ


def test_batch_buckets():
    assert [batch_bucket(n, 128) for n in (1, 2, 3, 5, 8, 9, 17, 64, 65, 100, 128)] == [
        1, 2, 4, 8, 8, 16, 24, 64, 80, 112, 128]
    assert batch_bucket(100, 96) == 96  # never more rows than slots


def _generate_all(settings: ServerSettings, jobs: list[tuple[float, str, int]]) -> list[str]:
    async def run() -> list[str]:
        eng = TransformersEngine(settings)
        await eng.start()
        assert (eng._slots is not None) == (settings.kv_cache == "static")

        async def one(delay: float, prompt: str, max_tokens: int) -> str:
            await asyncio.sleep(delay)
            text = ""
            async for delta in eng.generate(GenerationInput(prompt=prompt, incremental=False),
                                            SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)):
                text += delta.text
            return text

        try:
            return await asyncio.gather(*(one(*job) for job in jobs))
        finally:
            await eng.stop()

    return asyncio.run(run())


@pytest.mark.parametrize("device", DEVICES)
def test_engine_static_kv_cache_generates_what_the_dynamic_one_does(tiny_model, device):
    # Staggered arrivals join a running batch; different lengths leave it at different steps.
    jobs = [(0.0, "two plus two", 24), (0.0, "the answer is four because", 9), (0.05, "step one", 30),
            (0.1, "a much longer question about numbers and words and more words", 5), (0.3, "late", 12)]
    common = dict(model=str(tiny_model), device=device, max_batch_size=4, max_wait_ms=0)
    dynamic = _generate_all(ServerSettings(**common, kv_cache="dynamic"), jobs)
    static = _generate_all(ServerSettings(**common, kv_cache="static", kv_cache_len=128), jobs)
    assert static == dynamic
    assert len(set(dynamic)) > 1 and all(dynamic)


def test_static_kv_cache_caps_the_context(tiny_model):
    async def run() -> None:
        eng = TransformersEngine(ServerSettings(model=str(tiny_model), device="cpu", kv_cache="static",
                                                kv_cache_len=40))
        await eng.start()
        try:
            assert eng.max_model_len == 40
            with pytest.raises(EngineInputError) as err:
                async for _ in eng.generate(GenerationInput(prompt="two plus two"), SamplingParams(max_tokens=39)):
                    pass
            assert err.value.param == "max_tokens" and "40 tokens" in str(err.value)
        finally:
            await eng.stop()

    asyncio.run(run())
