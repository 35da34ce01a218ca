"""In-process transformers engine with dynamic batching (CPU or CUDA).

Continuous batching: sequences that arrive while a batch decodes are prefilled and join it at the
next step (up to ``max_batch_size``); finished or abandoned ones leave it (and its KV cache) at once.
All model work runs on one dedicated compute thread, so the event loop never waits on the model.
Each sequence keeps its own max_tokens, stop strings and sampling settings.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.genrm_server.engines.base import (
    Delta,
    Engine,
    EngineInputError,
    EngineUnavailable,
    GenerationInput,
    SamplingParams,
)
from services.genrm_server.engines.detokenizer import IncrementalDetokenizer
from services.genrm_server.engines.kv_batch import DynamicRows
from services.genrm_server.settings import ServerSettings

log = logging.getLogger("genrm.engine.transformers")


@dataclass(eq=False)
class _Sequence:
    """One sequence's state; written by the compute thread, read by the event loop via ``out``."""

    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    out: asyncio.Queue[Delta]
    detok: IncrementalDetokenizer | None  # None: no stop strings and no streaming, decode once at the end
    incremental: bool = True
    generator: Any = None  # torch.Generator when a seed is given
    ids: list[int] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # text not yet sent (non-incremental sequences)
    generated: int = 0
    done: bool = False  # its final delta has been emitted
    cancelled: bool = False  # set by the event loop when the client goes away


class TransformersEngine(Engine):
    # Both measured in bench/gpu_bench.py (docs/benchmarks.md); the switches exist for that ablation.
    topk_sampling = True  # top-k rows sample among their k candidates instead of sorting the whole vocabulary
    # cuDNN attention builds an execution plan for every new (batch, KV width) shape: about 1.5 ms of CPU per
    # layer and step while a batch decodes, since the width grows each step. SDPA's other kernels need none.
    cudnn_attention = False
    switch_interval_s = 0.0005  # sys.setswitchinterval on CUDA (see _load)
    fused_rms_norm = True  # with the static KV cache on CUDA: one kernel per RMSNorm (fused_norm.py)

    def __init__(self, settings: ServerSettings):
        super().__init__()
        self.settings = settings
        self.model_root = settings.model
        self.model_name = settings.served_model_name or _dir_name(settings.model)
        self._ready = False
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._wakeup = asyncio.Event()
        self._running = 0
        self._classifier: Any = None  # a ClassifierBatcher when the model is a sequence-classification RM
        self._stopping = False
        self._scheduler: asyncio.Task | None = None
        # One thread owns the model: torch releases the GIL inside kernels, the loop stays free.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="genrm-compute")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: Any = None  # a SlotDecoder (static KV cache), when in use
        self.use_slots = False  # switched off by bench/gpu_bench.py's ablation only

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(self._executor, self._load)
        self._scheduler = asyncio.create_task(self._schedule(), name="genrm-batch-scheduler")
        self._ready = True

    async def stop(self) -> None:
        self._ready = False
        self._stopping = True
        if self._classifier is not None:
            await self._classifier.stop()
        if self._scheduler:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        while self._waiting:
            seq = self._waiting.popleft()
            seq.out.put_nowait(Delta("", finish_reason="abort"))
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def num_running(self) -> int:
        return self._classifier.running if self._classifier is not None else self._running

    @property
    def num_waiting(self) -> int:
        return self._classifier.waiting if self._classifier is not None else len(self._waiting)

    def _load(self) -> None:
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
            GenerationConfig,
        )

        from services.genrm_server.engines import decode_attention
        from services.genrm_server.engines.classifier import ClassifierBatcher

        s = self.settings
        if s.torch_threads:
            torch.set_num_threads(s.torch_threads)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if s.device == "auto" else s.device
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
            s.dtype, torch.bfloat16 if device == "cuda" else torch.float32
        )
        if device == "cuda":
            torch.backends.cuda.enable_cudnn_sdp(self.cudnn_attention)
            # The compute thread holds the GIL while it launches kernels; at Python's default 5 ms switch
            # interval, requests arriving during a decode wait up to 5 ms per GIL hand-off to be admitted.
            sys.setswitchinterval(self.switch_interval_s)
        t0 = time.perf_counter()
        # local_files_only: a model hub is never contacted, at test time or in production.
        self.tokenizer = AutoTokenizer.from_pretrained(s.model, local_files_only=True)
        # A second instance for the compute thread: fast tokenizers must not be shared across threads.
        self._detok_tokenizer = AutoTokenizer.from_pretrained(s.model, local_files_only=True)
        # A `*ForSequenceClassification` checkpoint is a discriminative reward model: scored, never sampled.
        archs = AutoConfig.from_pretrained(s.model, local_files_only=True).architectures or []
        is_classifier = any(a.endswith("ForSequenceClassification") for a in archs)
        auto_cls = AutoModelForSequenceClassification if is_classifier else AutoModelForCausalLM
        try:  # grouped-query decoding without a KV copy per step (decode_attention.py); plain sdpa otherwise
            self.model = auto_cls.from_pretrained(s.model, dtype=dtype, local_files_only=True,
                                                  attn_implementation=decode_attention.register())
        except (ValueError, ImportError) as exc:
            log.info("attention %s unavailable for %s (%s); using the default", decode_attention.NAME, s.model, exc)
            self.model = auto_cls.from_pretrained(s.model, dtype=dtype, local_files_only=True)
        self.model.to(device).eval()
        self.device = torch.device(device)
        cfg = self.model.config
        self.max_model_len = s.max_model_len or getattr(cfg, "max_position_embeddings", None) or 2048
        if not is_classifier:
            self._init_slots()
        try:
            gen_cfg = GenerationConfig.from_pretrained(s.model, local_files_only=True)
        except OSError:
            gen_cfg = GenerationConfig()
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        # Like vLLM, unset sampling fields fall back to the values *written* in generation_config.json
        # (GenerationConfig's own defaults, e.g. top_k=50, are not the model's choice). Qwen3 judges: 0.6/0.95/20.
        written = _written_generation_config(s.model)
        self.default_temperature = float(written.get("temperature", 1.0))
        self.default_top_p = float(written.get("top_p", 1.0))
        self.default_top_k = int(written.get("top_k", 0))
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = next(iter(self.eos_ids), 0)
        if is_classifier:
            text_cfg = cfg.get_text_config()
            if text_cfg.pad_token_id is None:  # HF pools each row's last non-pad token: padding must be known
                log.warning("%s sets no pad_token_id; padding with token %d", s.model, self.pad_id)
                text_cfg.pad_token_id = self.pad_id
            self._classifier = ClassifierBatcher(
                self.model, self._detok_tokenizer, self._executor, device=self.device,
                pad_id=int(text_cfg.pad_token_id), max_len=self.max_model_len, max_batch_size=s.max_batch_size,
                max_wait_ms=s.max_wait_ms, model_name=self.model_name,
                on_batch=lambda n: self.on_batch(n) if self.on_batch else None,
            )
        log.info(
            "loaded %s%s from %s on %s (%s) in %.1fs; context %d tokens",
            self.model_name, " (reward model)" if is_classifier else "", s.model, device, dtype,
            time.perf_counter() - t0, self.max_model_len,
        )

    def _init_slots(self) -> None:
        """The static slot KV cache (slot_decoder.py) when --kv-cache asks for it or `auto` picks it (CUDA)."""
        import torch

        from services.genrm_server.engines import fused_norm
        from services.genrm_server.engines.slot_decoder import LEN_BUCKET, SlotDecoder, unsupported_reason

        s = self.settings
        if s.kv_cache == "dynamic" or (s.kv_cache == "auto" and self.device.type != "cuda"):
            return
        reason = unsupported_reason(self.model)
        if reason is not None:
            if s.kv_cache == "static":
                raise ValueError(f"--kv-cache static does not support {s.model}: {reason}")
            log.info("static KV cache off for %s: %s", self.model_name, reason)
            return
        length = min(s.kv_cache_len or self.max_model_len, self.max_model_len)
        if self.device.type == "cuda":
            per_slot = s.max_batch_size * SlotDecoder.bytes_per_token(self.model)
            fits = int(torch.cuda.mem_get_info(self.device)[0] * s.kv_cache_memory) // per_slot
            if fits < length:
                length = fits // LEN_BUCKET * LEN_BUCKET
                if length < LEN_BUCKET:
                    raise ValueError(
                        f"the static KV cache for {s.max_batch_size} sequences does not fit in "
                        f"{s.kv_cache_memory:.0%} of the free GPU memory; lower --max-batch-size, raise "
                        "--kv-cache-memory, or use --kv-cache dynamic")
        graphs = self.device.type == "cuda" and s.cuda_graphs
        if self.device.type == "cuda" and self.fused_rms_norm:
            fused_norm.fuse(self.model)
        self._slots = SlotDecoder(self.model, s.max_batch_size, length, graphs=graphs)
        self.use_slots = True
        if graphs:
            t0 = time.perf_counter()
            try:
                self._slots.capture_all()
            except Exception:  # a model whose forward cannot be captured still runs, eagerly
                log.exception("CUDA graph capture failed; static KV cache without graphs")
                self._slots.graphs = None
            else:
                log.info("captured %d decode CUDA graphs in %.1f s", len(self._slots.graphs), time.perf_counter() - t0)
        if length < self.max_model_len:
            log.info("context length %d -> %d tokens: what the static KV cache holds per sequence",
                     self.max_model_len, length)
            self.max_model_len = length
        log.info("static KV cache: %d slots x %d tokens (%.1f GiB)%s", s.max_batch_size, length,
                 s.max_batch_size * length * SlotDecoder.bytes_per_token(self.model) / 2**30,
                 ", CUDA graphs" if graphs else "")

    async def classify(self, texts: list[str]) -> list[float]:
        """Scalar rewards of a sequence-classification model; concurrent calls share forwards."""
        if not self._ready:
            raise EngineUnavailable("model is not loaded yet")
        if self._classifier is None:
            return await super().classify(texts)  # a generative model: rejected
        return await self._classifier.classify(texts)

    # -- request path (event loop) ------------------------------------------------------------

    def _encode(self, inp: GenerationInput) -> list[int]:
        if inp.messages is not None:
            if not getattr(self.tokenizer, "chat_template", None):
                raise EngineInputError(
                    f"model '{self.model_name}' has no chat template; use /v1/completions", param="messages"
                )
            text = self.tokenizer.apply_chat_template(
                inp.messages, tokenize=False, add_generation_prompt=inp.add_generation_prompt
            )
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(inp.prompt or "", add_special_tokens=True)

    async def generate(self, inp: GenerationInput, params: SamplingParams) -> AsyncIterator[Delta]:
        if not self._ready:
            raise EngineUnavailable("model is not loaded yet")
        if self._classifier is not None:
            raise EngineInputError(
                f"model '{self.model_name}' is a reward model (sequence classification) and does not generate "
                "text; use the disrm recipe of /v1/reward",
                param="model",
            )
        prompt_ids = self._encode(inp)
        param = "messages" if inp.messages is not None else "prompt"
        if not prompt_ids:
            raise EngineInputError("prompt is empty after tokenization", param=param)
        room = self.max_model_len - len(prompt_ids)
        if room <= 0:
            raise EngineInputError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your "
                f"prompt has {len(prompt_ids)} tokens; shorten the {param}.",
                param=param,
            )
        if params.max_tokens is not None and params.max_tokens > room:
            raise EngineInputError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                f"requested {len(prompt_ids) + params.max_tokens} tokens ({len(prompt_ids)} in the "
                f"{param}, {params.max_tokens} in the completion). Reduce max_tokens or the {param}.",
                param="max_tokens",
            )
        seq = _Sequence(
            prompt_ids=prompt_ids,
            params=params,
            max_tokens=params.max_tokens or room,
            out=asyncio.Queue(),
            detok=IncrementalDetokenizer(self._detok_tokenizer, params.stop)
            if inp.incremental or params.stop
            else None,
            incremental=inp.incremental,
        )
        if params.seed is not None:
            import torch

            seq.generator = torch.Generator(device=self.device).manual_seed(params.seed)
        self._waiting.append(seq)
        self._wakeup.set()
        try:
            while True:
                delta = await seq.out.get()
                if delta.finish_reason is not None:
                    delta.prompt_tokens = len(prompt_ids)
                    delta.completion_tokens = seq.generated
                    yield delta
                    return
                yield delta
        finally:
            # Client gone or iterator closed: the compute thread drops the row at its next step.
            seq.cancelled = True

    async def _schedule(self) -> None:
        """Start a decode run when sequences wait; the run itself admits later arrivals every step."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            max_bs, max_wait = self.settings.max_batch_size, self.settings.max_wait_ms / 1000
            # A short gathering window lets a burst (a GRPO group) start as one prefill.
            deadline = loop.time() + max_wait
            while len(self._waiting) < max_bs and (left := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            first = self._admit(max_bs)
            if not first:
                continue
            try:
                await loop.run_in_executor(self._executor, self._run, first)
            except Exception:  # _run has ended its sequences; a model error never takes the server down
                log.exception("decode run failed")
            finally:
                self._running = 0

    # -- compute thread -------------------------------------------------------------------------

    def _admit(self, room: int) -> list[_Sequence]:
        """Take up to ``room`` live sequences from the queue (deque pops are thread-safe)."""
        taken: list[_Sequence] = []
        while len(taken) < room:
            try:
                seq = self._waiting.popleft()
            except IndexError:
                break
            if not seq.cancelled:
                taken.append(seq)
        return taken

    def _emit(self, items: list[tuple[_Sequence, Delta]]) -> None:
        """Hand one step's deltas to the event loop in a single thread-safe callback."""
        assert self._loop is not None

        def deliver() -> None:
            for seq, delta in items:
                seq.out.put_nowait(delta)

        self._loop.call_soon_threadsafe(deliver)

    def _run(self, first: list[_Sequence]) -> None:
        """Decode until no sequence is left; on a model error, end every sequence this run took in."""
        admitted = list(first)
        try:
            self._decode(first, admitted)
        except Exception as exc:
            reason = f"engine error: {type(exc).__name__}: {exc}"
            self._emit([(s, Delta("", finish_reason="abort", stop_reason=reason)) for s in admitted if not s.done])
            raise

    def _rows(self) -> Any:
        """The running rows' KV store for one decode run: the static slots, or a fresh dynamic batch."""
        if self.use_slots and self._slots is not None:
            self._slots.clear()
            return self._slots
        return DynamicRows(self.model, self.device)

    def _join(self, rows: Any, seqs: list[_Sequence]) -> Any:
        """Prefill ``seqs`` into the running rows; returns their first logits."""
        return rows.join([s.prompt_ids for s in seqs], self.pad_id)

    def _decode(self, first: list[_Sequence], admitted: list[_Sequence]) -> None:
        """Decode until no sequence is left, admitting waiting ones between steps (recorded in ``admitted``)."""
        import torch

        rows = self._rows()
        room = min(self.settings.max_batch_size, getattr(rows, "slots", self.settings.max_batch_size))
        active: list[_Sequence] = []
        pending = first
        with torch.inference_mode():
            while active or pending:
                logits = None
                if active:  # the position of each row's input token is len(prompt) + generated - 1
                    logits = rows.step(max(len(s.prompt_ids) + s.generated for s in active) - 1)
                if pending:
                    new_logits = self._join(rows, pending)
                    logits = new_logits if logits is None else torch.cat([logits, new_logits])
                    active = active + pending
                self._running = len(active)
                if self.on_batch:
                    self.on_batch(len(active))
                sampled = self._sample(logits, active)
                rows.feed(sampled)
                tokens = sampled.tolist()
                keep: list[int] = []
                emitted: list[tuple[_Sequence, Delta]] = []
                for row, (seq, tok) in enumerate(zip(active, tokens, strict=True)):
                    delta = self._advance(seq, tok)
                    if delta is not None:
                        emitted.append((seq, delta))
                        seq.done = delta.finish_reason is not None
                    if not seq.done:
                        keep.append(row)
                if emitted:
                    self._emit(emitted)
                if not keep:
                    active = []
                    rows.clear()
                elif len(keep) < len(active):  # finished rows leave the batch and the KV cache
                    active = [active[i] for i in keep]
                    rows.select(keep, columns=max(len(s.prompt_ids) + s.generated for s in active))
                pending = [] if self._stopping else self._admit(room - len(active))
                admitted.extend(pending)

    def _advance(self, seq: _Sequence, token: int) -> Delta | None:
        """Record one sampled token; return the delta to send (``None``: nothing to send yet)."""
        if seq.cancelled or self._stopping:
            if seq.cancelled and self.on_abort:
                self.on_abort()
            return Delta("", finish_reason="abort")
        seq.generated += 1
        if token in self.eos_ids and not seq.params.ignore_eos:
            return self._finish(seq, "stop")
        seq.ids.append(token)
        piece, stop = seq.detok.add(token) if seq.detok else ("", None)
        if stop is not None:
            return self._finish(seq, "stop", piece, stop)
        if seq.generated >= seq.max_tokens:
            return self._finish(seq, "length", piece)
        if seq.incremental:
            return Delta(piece) if piece else None
        if piece:
            seq.held.append(piece)
        return None

    def _finish(self, seq: _Sequence, reason: str, piece: str = "", stop: str | None = None) -> Delta:
        if seq.detok is None:
            text = self._detok_tokenizer.decode(seq.ids, skip_special_tokens=True)
        else:
            text = "".join(seq.held) + piece + ("" if stop is not None else seq.detok.flush())
        return Delta(text, finish_reason=reason, stop_reason=stop)

    def _sample(self, logits: Any, seqs: list[_Sequence]) -> Any:
        import torch

        logits = logits.float()
        for row, seq in enumerate(seqs):  # min_tokens: EOS is not allowed yet
            if seq.generated < seq.params.min_tokens and self.eos_ids:
                logits[row, list(self.eos_ids)] = float("-inf")
        temps = [self._temperature(s) for s in seqs]
        greedy = logits.argmax(dim=-1)
        if all(t == 0 for t in temps):
            return greedy
        top_ks = [self.default_top_k if s.params.top_k is None else s.params.top_k for s in seqs]
        top_ps = [self.default_top_p if s.params.top_p is None else s.params.top_p for s in seqs]
        t = torch.tensor([max(x, 1e-5) for x in temps], device=logits.device).unsqueeze(1)
        vocab = logits.shape[-1]
        if self.topk_sampling and all(0 < k < vocab for k in top_ks):
            # Every row keeps at most max(k) tokens: sort those candidates only (topk), not the vocabulary.
            logits, candidates = logits.topk(max(top_ks), dim=-1)  # sorted, descending
            ranks = torch.arange(logits.shape[-1], device=logits.device)
            ks = torch.tensor(top_ks, device=logits.device).unsqueeze(1)
            logits = logits.masked_fill(ranks >= ks, float("-inf"))
            probs = _top_p(torch.softmax(logits / t, dim=-1), top_ps, presorted=True)
        else:
            candidates = None
            if any(k > 0 for k in top_ks):  # keep each row's k likeliest tokens (k <= 0: all)
                ks = torch.tensor([min(k, vocab) if k > 0 else vocab for k in top_ks], device=logits.device)
                kth = logits.sort(dim=-1, descending=True).values.gather(-1, (ks - 1).unsqueeze(1))
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = _top_p(torch.softmax(logits / t, dim=-1), top_ps, presorted=False)
        sampled = torch.multinomial(probs, 1).squeeze(1)
        for row, seq in enumerate(seqs):  # seeded rows draw from their own generator: reproducible
            if seq.generator is not None and temps[row] > 0:
                sampled[row] = torch.multinomial(probs[row], 1, generator=seq.generator)[0]
        if candidates is not None:
            sampled = candidates.gather(-1, sampled.unsqueeze(1)).squeeze(1)
        is_greedy = torch.tensor([x == 0 for x in temps], device=logits.device)
        return torch.where(is_greedy, greedy, sampled)

    def _temperature(self, seq: _Sequence) -> float:
        t = seq.params.temperature
        return self.default_temperature if t is None else t


def _top_p(probs: Any, top_ps: list[float], *, presorted: bool) -> Any:
    """Zero each row's tail beyond its top-p nucleus (the smallest set of likeliest tokens reaching p)."""
    import torch

    if all(p >= 1.0 for p in top_ps):
        return probs
    limit = torch.tensor(top_ps, device=probs.device).unsqueeze(1)
    if presorted:
        return probs.masked_fill((probs.cumsum(-1) - probs) > limit, 0.0)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    sorted_p = sorted_p.masked_fill((sorted_p.cumsum(-1) - sorted_p) > limit, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)


def _written_generation_config(model_dir: str | None) -> dict[str, Any]:
    import json
    from pathlib import Path

    path = Path(str(model_dir)) / "generation_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _dir_name(path: str | None) -> str:
    from pathlib import Path

    return Path(path).resolve().name if path else "model"

