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
from transformers.cache_utils import DynamicCache, DynamicLayer

# Spare columns a growing layer keeps: a re-allocation (and copy of the cache) every 256 decode steps.
GROW_COLUMNS = 256


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose tensors are views of a buffer with spare columns.

    ``DynamicLayer.update`` concatenates, which copies the layer's whole cache at every decode step; at
    batch 64 and 768 columns that moves about as many bytes as the model's weights. Here a step writes
    one column in place. A batch edit (``select``, ``join``) that replaces ``keys`` is noticed by
    pointer and the next update moves the new tensors into a fresh buffer.
    """

    _k_buf: torch.Tensor | None = None
    _v_buf: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        used = self.keys.shape[-2] if self.keys.numel() else 0
        new = key_states.shape[-2]
        if not self._owns_keys() or used + new > self._k_buf.shape[-2]:
            self._k_buf = _with_room(self.keys, key_states, used + new + GROW_COLUMNS)
            self._v_buf = _with_room(self.values, value_states, used + new + GROW_COLUMNS)
        self._k_buf[:, :, used : used + new] = key_states
        self._v_buf[:, :, used : used + new] = value_states
        self.keys, self.values = self._k_buf[:, :, : used + new], self._v_buf[:, :, : used + new]
        return self.keys, self.values

    def _owns_keys(self) -> bool:
        buf = self._k_buf
        return (
            buf is not None
            and self.keys.numel() > 0
            and self.keys.data_ptr() == buf.data_ptr()
            and self.keys.shape[0] == buf.shape[0]
            and self.keys.stride() == buf.stride()
            and self.values.data_ptr() == self._v_buf.data_ptr()
        )


def _with_room(old: torch.Tensor, new: torch.Tensor, columns: int) -> torch.Tensor:
    """A buffer shaped like ``new`` with ``columns`` on the sequence axis, holding ``old`` at its start."""
    shape = list(new.shape)
    shape[-2] = columns
    buf = new.new_empty(shape)
    if old.numel():
        buf[:, :, : old.shape[-2]] = old
    return buf


def new_cache(growing: bool = True) -> DynamicCache:
    """An empty cache whose layers are ``GrowingLayer`` (``growing``) or transformers' own."""
    cache = DynamicCache()
    if growing and getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        cache.layer_class_to_replicate = GrowingLayer
    return cache


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
