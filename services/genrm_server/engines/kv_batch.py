"""A running decode batch whose rows can join and leave between steps (continuous batching).

Rows are left-padded so every row's newest token sits in the last column. Joining two batches pads
the shorter KV cache on the left to the longer one's length and concatenates along the batch axis;
leaving selects rows and trims columns that have become padding for every remaining row. The cache
tensors are transformers' ``DynamicCache`` layers (``layer.keys`` / ``layer.values``:
``[batch, heads, seq, head_dim]``).
"""

from __future__ import annotations

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
