"""services/genrm_server/engines/decode_attention.py: grouped-query decoding with packed query heads gives the
logits of transformers' ``sdpa`` (which copies K/V per head) on ragged, left-padded batches with joins and leaves."""

from __future__ import annotations

import torch

from services.genrm_server.engines import decode_attention
from services.genrm_server.engines.kv_batch import DynamicRows


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
