"""A running decode batch whose rows can join and leave between steps (continuous batching).

Rows are left-padded so every row's newest token sits in the last column. Joining two batches pads
the shorter KV cache on the left to the longer one's length and concatenates along the batch axis;
leaving selects rows and trims columns that have become padding for every remaining row. The cache
tensors are transformers' ``DynamicCache`` layers (``layer.keys`` / ``layer.values``:
``[batch, heads, seq, head_dim]``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class KVBatch:
    cache: Any  # transformers.DynamicCache
    mask: torch.Tensor  # [rows, seq] 1 = real token, 0 = left padding
    next_pos: torch.Tensor  # [rows] position id of each row's next token

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def select(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in this order) and drop columns that are padding in all of them."""
        index = torch.tensor(rows, device=self.mask.device)
        self.mask = self.mask[index]
        self.next_pos = self.next_pos[index]
        self.cache.batch_select_indices(index)
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else self.width
        if start > 0:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]

    def join(self, other: KVBatch) -> None:
        """Append ``other``'s rows after this batch's rows."""
        width = max(self.width, other.width)
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)])
            mine.values = torch.cat([_pad_left(mine.values, width), _pad_left(theirs.values, width)])
        self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(other.mask, width)])
        self.next_pos = torch.cat([self.next_pos, other.next_pos])

    def extend_mask(self) -> None:
        """One more real column per row: the token about to be decoded."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the sequence axis (dim 2 of KV tensors, dim 1 of masks) on the left up to ``width``."""
    seq_dim = 2 if t.dim() == 4 else 1
    missing = width - t.shape[seq_dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[seq_dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=seq_dim)


def cache_arg(forward: Any) -> str:
    """The name a model's forward takes the KV cache by: `cache` (transformers >= 5.2x) or `past_key_values`."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


class DynamicRows:
    """Running rows in a left-padded ``KVBatch`` (transformers' DynamicCache): the engine's path on CPU.

    Same interface as ``slot_decoder.SlotDecoder``: ``join`` prefills new rows, ``step`` decodes one token
    for every row from the tokens last ``feed``-ed, ``select`` keeps some rows.
    """

    def __init__(self, model: Any, device: torch.device):
        self.model, self.device = model, device
        self.cache_arg = cache_arg(model.forward)
        self.batch: KVBatch | None = None
        self.next_ids: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return 0 if self.batch is None else self.batch.mask.shape[0]

    def join(self, prompts: list[list[int]], pad_id: int) -> torch.Tensor:
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's last token is at column -1
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        # logits_to_keep=1: only the last column's logits (a 128 x 512 prefill would otherwise write 20 GB of them)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1,
                         **{self.cache_arg: cache})
        joined = KVBatch(cache, mask, positions[:, -1] + 1)
        if self.batch is None:
            self.batch = joined
        else:
            self.batch.join(joined)
        return out.logits[:, -1, :]

    def step(self, max_pos: int) -> torch.Tensor:
        batch = self.batch
        assert batch is not None and self.next_ids is not None
        batch.extend_mask()
        logits = self.model(
            input_ids=self.next_ids.unsqueeze(1), attention_mask=batch.mask, position_ids=batch.next_pos.unsqueeze(1),
            **{self.cache_arg: batch.cache},
        ).logits[:, -1, :]
        batch.next_pos += 1
        return logits

    def feed(self, tokens: torch.Tensor) -> None:
        self.next_ids = tokens

    def select(self, keep: list[int], columns: int) -> None:
        assert self.batch is not None and self.next_ids is not None
        self.batch.select(keep)
        self.next_ids = self.next_ids[torch.tensor(keep, device=self.next_ids.device)]

    def clear(self) -> None:
        self.batch, self.next_ids = None, None
