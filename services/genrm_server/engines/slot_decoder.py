"""Static slot KV cache with CUDA-graph decode steps (the transformers engine's fast path on CUDA).

Every running sequence owns one slot of preallocated K/V buffers (``[slots, kv_heads, max_len, head_dim]``
per layer) and writes the token at position p into column p of its slot. A decode step is then the same
kernels with the same shapes at every step: it is captured once per (batch bucket, length bucket) as a
CUDA graph and replayed, so a step costs one launch instead of ~1,800 (36 layers: a ~35 ms CPU floor for
~14 ms of GPU work at batch 1). Rows are kept compact (running rows in slots ``0..n-1``); a bucket's
padding rows decode into free slots and are ignored. Attention reads the columns ``< length bucket`` with
a mask ``column <= position``, computed inside the graph from the positions buffer.

The model's own modules run unchanged: the cache is duck-typed (attention layers call ``update``) and the
mask is handed over prepared, 4-D, which transformers' mask builders return as-is. Prefill runs eagerly,
right-padded, and writes the prompt's K/V straight into the new rows' slots.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from services.genrm_server.engines.kv_batch import cache_arg

log = logging.getLogger("genrm.engine.slots")

LEN_BUCKET = 256  # attention reads a multiple of this many columns (finer steps: more graphs, little gain)


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` cannot use slots (sliding windows, logit soft-capping, no decoder/head split), or None."""
    cfg = model.config.get_text_config()
    if not (hasattr(model, "get_decoder") and model.get_output_embeddings() is not None):
        return "no decoder / output head split"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "sliding-window or other non-full attention layers"
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "final_logit_softcapping", None):
        return "sliding window or logit soft-capping"
    return None


def batch_bucket(n: int, slots: int) -> int:
    """Rows a step runs for ``n`` live rows: 1, 2, 4, 8, then multiples of 8 to 64, then of 16."""
    if n <= 8:
        b = 1 << (n - 1).bit_length()
    else:
        step = 8 if n <= 64 else 16
        b = -(-n // step) * step
    return min(b, slots)


def length_bucket(n: int, max_len: int) -> int:
    """Columns a step reads for positions ``< n``: multiples of 256 up to 1,024, then 4 steps per doubling."""
    step = max(LEN_BUCKET, (1 << (n - 1).bit_length()) // 4)
    return min(max_len, -(-n // step) * step)


def buckets(limit: int, bucket) -> list[int]:
    """Every value ``bucket`` returns for 1..limit, ascending."""
    seen: list[int] = []
    n = 1
    while n <= limit:
        b = bucket(n)
        seen.append(b)
        n = b + 1
    return seen


class SlotKV:
    """Per-layer K/V slot buffers; attention layers call ``update`` as they would on a transformers Cache."""

    def __init__(self, layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.write: Any = None  # (layer, keys, values) -> the K/V attention reads; set per forward

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        return self.write(layer_idx, key, value)

    def get_seq_length(self, *args: Any, **kwargs: Any) -> int:  # asked by some decoders; positions are given
        return 0

    def move(self, dst: torch.Tensor, src: torch.Tensor, columns: int) -> None:
        for buf in (*self.keys, *self.values):
            buf[dst, :, :columns] = buf[src, :, :columns]


class SlotDecoder:
    """Running rows in slots ``0..n-1``: ``join`` prefills new rows, ``step`` decodes one token for all."""

    # Captured decode steps run cuDNN's attention where it takes the shape: its per-shape plan is built once, at
    # capture, not at every step (why the engine keeps cuDNN off otherwise). 1.0-1.15x a step, measured.
    cudnn_decode = True

    def __init__(self, model: Any, slots: int, max_len: int, *, graphs: bool):
        self.model = model
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        cfg = model.config.get_text_config()
        param = next(model.parameters())
        self.device, dtype = param.device, param.dtype
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.slots, self.max_len = slots, max_len
        self.kv = SlotKV(cfg.num_hidden_layers, slots, cfg.num_key_value_heads, max_len, head_dim, dtype, self.device)
        self.ids = torch.zeros(slots, dtype=torch.long, device=self.device)  # each row's next input token
        self.pos = torch.zeros(slots, dtype=torch.long, device=self.device)  # ... and its position (= column)
        self.rows = torch.arange(slots, device=self.device)
        self.columns = torch.arange(max_len, device=self.device)
        self.logits = torch.empty(slots, self.head.weight.shape[0], dtype=dtype, device=self.device)
        self.n = 0
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] | None = {} if graphs else None
        self.pool = torch.cuda.graph_pool_handle() if graphs else None
        self.cache_arg = cache_arg(self.decoder.forward)

    @staticmethod
    def bytes_per_token(model: Any) -> int:
        cfg = model.config.get_text_config()
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        itemsize = next(model.parameters()).element_size()
        return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * itemsize

    # -- rows ---------------------------------------------------------------------------------------

    def join(self, prompts: list[list[int]], pad_id: int) -> torch.Tensor:
        """Prefill ``prompts`` into the next free slots; returns their last-token logits."""
        m, start = len(prompts), self.n
        if start + m > self.slots:
            raise RuntimeError(f"{start + m} rows exceed the {self.slots} KV slots")
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        width = max(len(p) for p in prompts)
        ids = torch.full((m, width), pad_id, dtype=torch.long)
        for i, p in enumerate(prompts):  # right padding: row i's token j sits in column j, as in its slot
            ids[i, : len(p)] = torch.tensor(p)
        ids = ids.to(self.device)
        cols = self.columns[:width]
        real = cols < lengths[:, None]  # [m, width]
        mask = (cols[None, :, None] >= cols[None, None, :]) & real[:, None, :]  # causal, padding keys hidden
        keys, values = self.kv.keys, self.kv.values

        def write(layer: int, k: torch.Tensor, v: torch.Tensor):
            keys[layer][start : start + m, :, :width] = k
            values[layer][start : start + m, :, :width] = v
            return k, v

        hidden = self._run(ids, cols.expand(m, width), mask[:, None], write)
        last = hidden[torch.arange(m, device=self.device), lengths - 1]
        self.pos[start : start + m] = lengths
        self.n = start + m
        return self.head(last)

    def feed(self, tokens: torch.Tensor) -> None:
        """The sampled tokens (one per row, device tensor) become the rows' next inputs."""
        self.ids[: self.n].copy_(tokens)

    def select(self, keep: list[int], columns: int) -> None:
        """Keep rows ``keep`` (ascending) in this order, moving them down into slots ``0..len(keep)-1``."""
        moves = [(i, k) for i, k in enumerate(keep) if i != k]
        if moves:
            dst = torch.tensor([i for i, _ in moves], device=self.device)
            src = torch.tensor([k for _, k in moves], device=self.device)
            self.kv.move(dst, src, min(columns, self.max_len))
            self.ids[dst] = self.ids[src]
            self.pos[dst] = self.pos[src]
        self.n = len(keep)

    def clear(self) -> None:
        self.n = 0

    # -- decode -------------------------------------------------------------------------------------

    def step(self, max_pos: int) -> torch.Tensor:
        """Decode one token for rows ``0..n-1`` (``max_pos``: the largest input position); returns logits."""
        n = self.n
        b = batch_bucket(n, self.slots)
        length = length_bucket(max_pos + 1, self.max_len)
        if b > n:  # padding rows decode into free slots at column 0 (rewritten when a slot is prefilled)
            self.ids[n:b] = 0
            self.pos[n:b] = 0
        if self.graphs is None:
            self._decode(b, length)
        else:
            graph = self.graphs.get((b, length))
            if graph is None:
                graph = self.graphs[(b, length)] = self._capture(b, length)
            graph.replay()
        self.pos[:n] += 1
        return self.logits[:n]

    def _decode(self, b: int, length: int) -> None:
        pos = self.pos[:b]
        rows = self.rows[:b]
        mask = (self.columns[:length] <= pos[:, None])[:, None, None, :]  # [b, 1, 1, length]
        keys, values = self.kv.keys, self.kv.values

        def write(layer: int, k: torch.Tensor, v: torch.Tensor):
            keys[layer][rows, :, pos] = k[:, :, 0]
            values[layer][rows, :, pos] = v[:, :, 0]
            return keys[layer][:b, :, :length], values[layer][:b, :, :length]

        hidden = self._run(self.ids[:b, None], pos[:, None], mask, write)
        self.logits[:b].copy_(self.head(hidden[:, -1]))

    def drop_graphs(self) -> None:
        """Forget the captured graphs (they are captured again on use, into a new memory pool)."""
        self.graphs = {}
        self.pool = torch.cuda.graph_pool_handle()  # the old pool went with its graphs

    def capture_all(self) -> None:
        """Capture every (batch, length) bucket's step now, largest first, before any request is served.

        Capturing while serving would stall the batch and could meet another thread's CUDA call.
        """
        assert self.graphs is not None
        self.n = 0
        with torch.inference_mode():
            for length in reversed(buckets(self.max_len, lambda n: length_bucket(n, self.max_len))):
                for b in reversed(buckets(self.slots, lambda n: batch_bucket(n, self.slots))):
                    self.ids[:b] = 0  # free slots: the captured runs write column 0 of each, rewritten on use
                    self.pos[:b] = 0
                    self.graphs[(b, length)] = self._capture(b, length)

    def _capture(self, b: int, length: int) -> torch.cuda.CUDAGraph:
        # The inputs hold this step's real values, so the warm-up and capture runs write exactly the K/V the
        # step itself writes: capturing a missing bucket mid-run is safe too.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), self._attention():
            self._decode(b, length)  # warm-up: lazy initialisations must not happen during capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # One pool: graphs never run concurrently. thread_local: the event loop's thread may use CUDA meanwhile.
        with self._attention(), torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            self._decode(b, length)
        log.debug("captured a decode graph for %d rows x %d columns (%d graphs)", b, length, len(self.graphs) + 1)
        return graph

    def _attention(self) -> Any:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        rest = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        if not self.cudnn_decode:
            return sdpa_kernel(rest)
        return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, *rest], set_priority=True)

    def _run(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, write) -> torch.Tensor:
        self.kv.write = write
        try:
            out = self.decoder(input_ids=ids, position_ids=positions, attention_mask=mask,
                               use_cache=True, **{self.cache_arg: self.kv})
        finally:
            self.kv.write = None
        return out.last_hidden_state
