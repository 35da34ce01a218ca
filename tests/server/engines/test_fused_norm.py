"""services/genrm_server/engines/fused_norm.py: the fused RMSNorm gives transformers' RMSNorm output."""

from __future__ import annotations

import torch


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
