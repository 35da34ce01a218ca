"""The transformers engine's speed-ups compute the same thing as the plain code they replace.

- Grouped-query decoding with packed query heads (``decode_attention``) gives the same logits as
  transformers' ``sdpa`` (which copies K/V per head) on ragged, left-padded batches with joins and leaves.
- Top-k sampling over the k candidates draws from the same distribution as masking the whole
  vocabulary, top-p included, and never returns a token outside a row's top k.
- The fused RMSNorm (``fused_norm``) gives transformers' RMSNorm output.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from services.genrm_server.engines import decode_attention
from services.genrm_server.engines.base import SamplingParams
from services.genrm_server.engines.kv_batch import DynamicRows
from services.genrm_server.engines.transformers_engine import TransformersEngine, _Sequence
from services.genrm_server.settings import ServerSettings


@pytest.fixture(scope="module")
def engine(tiny_model):
    eng = TransformersEngine(ServerSettings(model=str(tiny_model), device="cpu"))
    eng._load()  # the real loading code, without starting the scheduler
    return eng


def _decode(engine, attention: str, steps: int) -> list[torch.Tensor]:
    """Greedy decode with a join after 5 steps and a row leaving after 20; every step's logits."""
    engine.model.config._attn_implementation = attention
    rows = DynamicRows(engine.model, engine.device)
    seen = []
    with torch.inference_mode():
        logits = rows.join([[5, 6, 7, 8, 9], [10, 11]], engine.pad_id)
        for step in range(steps):
            seen.append(logits.clone())
            rows.feed(logits.argmax(-1))
            logits = rows.step(max_pos=0)  # the dynamic cache tracks positions itself
            if step == 5:
                logits = torch.cat([logits, rows.join([[12, 13, 14, 15, 16, 17, 18, 19, 20]], engine.pad_id)])
            if step == 20:
                rows.select([0, 2], columns=0)
                logits = logits[[0, 2]]
    return seen


def test_packed_gqa_decoding_matches_sdpa(engine):
    assert engine.model.config._attn_implementation == decode_attention.NAME  # what the engine loads with
    assert engine.model.config.num_attention_heads > engine.model.config.num_key_value_heads  # grouped queries
    try:
        reference = _decode(engine, "sdpa", steps=30)
        packed = _decode(engine, decode_attention.NAME, steps=30)
    finally:
        engine.model.config._attn_implementation = decode_attention.NAME
    for step, (a, b) in enumerate(zip(reference, packed, strict=True)):
        assert torch.allclose(a, b, atol=1e-4), f"logits differ at step {step}"
    assert not torch.allclose(reference[0], reference[3])  # the steps really differ: a meaningful comparison


def _seq(**params) -> _Sequence:
    return _Sequence(prompt_ids=[1], params=SamplingParams(**params), max_tokens=1, out=asyncio.Queue(), detok=None)


@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_topk_sampling_matches_the_full_vocabulary_path(engine, monkeypatch, top_p):
    vocab = engine.model.config.vocab_size
    torch.manual_seed(1)
    logits = torch.randn(1, vocab) * 3
    draws = 20_000
    rows = logits.expand(draws, vocab).clone()
    seqs = [_seq(temperature=0.8, top_k=8, top_p=top_p) for _ in range(draws)]
    counts = {}
    for fast in (True, False):
        monkeypatch.setattr(engine, "topk_sampling", fast)
        torch.manual_seed(2)
        counts[fast] = torch.bincount(engine._sample(rows, seqs), minlength=vocab).float() / draws
    top8 = set(logits[0].topk(8).indices.tolist())
    assert set(counts[True].nonzero().flatten().tolist()) <= top8
    # The same distribution: within sampling noise (~0.01 at 20k draws) on every token.
    assert (counts[True] - counts[False]).abs().max() < 0.02
    if top_p < 1.0:  # the nucleus really cut the tail
        assert (counts[True] > 0).sum() < 8


def test_topk_sampling_honours_each_rows_k_and_greedy_rows(engine):
    vocab = engine.model.config.vocab_size
    logits = torch.randn(3, vocab)
    seqs = [_seq(temperature=1.0, top_k=1), _seq(temperature=1.0, top_k=50), _seq(temperature=0.0, top_k=50)]
    for _ in range(20):
        out = engine._sample(logits.clone(), seqs)
        assert out[0] == logits[0].argmax()  # k = 1 is greedy
        assert int(out[1]) in set(logits[1].topk(50).indices.tolist())
        assert out[2] == logits[2].argmax()  # temperature 0 stays greedy


def test_fused_rms_norm_matches_transformers(engine):
    from services.genrm_server.engines import fused_norm

    norm = engine.model.model.norm
    x = torch.randn(3, 5, engine.model.config.hidden_size) * 4
    with torch.inference_mode():
        reference = norm(x)
        try:
            assert fused_norm.fuse(engine.model) == 2 * engine.model.config.num_hidden_layers + 1
            fused = norm(x)
        finally:
            fused_norm.unfuse(engine.model)
        assert torch.equal(norm(x), reference)  # unfuse restored transformers' own forward
    assert torch.allclose(fused, reference, atol=1e-5) and not torch.allclose(reference, x, atol=1e-2)
