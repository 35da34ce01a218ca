"""SDPA attention that decodes grouped-query models without copying the KV cache per step.

transformers' ``sdpa`` path expands K/V to every query head (``repeat_kv``) whenever an attention mask
is present, which in a continuous batch is always (rows are left-padded to a common width): at batch
128 that copy is several times the bytes of the cache itself at every decode step. For one query
token, the query heads of a KV group can instead be packed as that group's queries, so SDPA reads
K/V once. transformers 5.23 does the same (``pack_gqa``); this keeps older 5.x installs fast too.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "genrm_sdpa"


def decode_gqa_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    shared_mask = attention_mask is None or attention_mask.shape[1] == 1
    if query.shape[2] != 1 or groups == 1 or not shared_mask or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    batch, heads, _, dim = query.shape
    # Query head h uses KV head h // groups: [b, heads, 1, d] -> [b, kv_heads, groups, d].
    packed = query.reshape(batch, heads // groups, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(
        packed, key, value, attn_mask=attention_mask, dropout_p=0.0, scale=kwargs.get("scaling"),
    )
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the function (and sdpa's mask format) with transformers; returns its ``attn_implementation``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, decode_gqa_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
