"""What a policy may look at about one request; everything costly is computed only when asked for.

The JSON body is parsed at most once and only when a policy or the model-aware pools need it, so
round-robin traffic to a homogeneous pool never pays for it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any

REWARD_PATHS = frozenset({"/v1/reward", "/v1/reward/batch", "/get_reward", "/slime/reward"})


def stable_hash(text: str) -> int:
    """A hash every router replica agrees on (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def sample_affinity_text(sample: dict[str, Any], prefix_chars: int) -> str:
    """A reward sample's affinity key: its ``group_id``, else the first K characters of its question."""
    group = sample.get("group_id")
    if group is not None:
        return f"g:{group}"
    for name in ("question", "prompt", "problem"):
        value = sample.get(name)
        if isinstance(value, str) and value:
            return "p:" + value[:prefix_chars]
    return ""


class RequestInfo:
    __slots__ = ("__dict__", "body", "headers", "path", "prefix_chars")

    def __init__(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                 prefix_chars: int = 256):
        self.path = path
        self.body = body
        self.headers = headers or []  # (lower-case name, value) as parsed; decoded only when asked
        self.prefix_chars = prefix_chars

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None

    @cached_property
    def json(self) -> Any:
        """The parsed body, or None when it is not JSON (the worker will say why)."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply; was a 500 from the router
            return None

    @cached_property
    def model(self) -> str | None:
        body = self.json
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) and model else None

    @cached_property
    def recipe(self) -> str | None:
        """The recipe asked for; for a batch, the one all its samples share (else None: any worker)."""
        body = self.json
        if not isinstance(body, dict) or self.path not in REWARD_PATHS:
            return None
        samples = body.get("samples")
        if self.path == "/v1/reward/batch" and isinstance(samples, list):
            recipes = {s.get("recipe") if isinstance(s, dict) else None for s in samples}
            recipe = recipes.pop() if len(recipes) == 1 else None
        else:
            recipe = body.get("recipe")
        return recipe if isinstance(recipe, str) and recipe else None

    @cached_property
    def text(self) -> str:
        """The prompt as the worker will see it, roughly: chat messages concatenated, or the prompt."""
        body = self.json
        if not isinstance(body, dict):
            return ""
        messages = body.get("messages")
        if isinstance(messages, list):
            parts = []
            for m in messages:
                if isinstance(m, dict):
                    content = m.get("content")
                    parts.append(f"<{m.get('role')}>{content if isinstance(content, str) else json.dumps(content)}")
            return "".join(parts)
        for name in ("prompt", "question", "problem"):
            value = body.get(name)
            if isinstance(value, str):
                return value
            if isinstance(value, list) and value and isinstance(value[0], str):
                return value[0]
        return ""

    @cached_property
    def affinity_text(self) -> str:
        """``X-Affinity-Key`` header, else the body's ``group_id``, else the first K characters of the prompt."""
        header = self.header(b"x-affinity-key")
        if header:
            return "h:" + header
        body = self.json
        if isinstance(body, dict):
            key = sample_affinity_text(body, self.prefix_chars)
            if key.startswith("g:"):
                return key
        return "p:" + self.text[: self.prefix_chars]

    @cached_property
    def affinity_hash(self) -> int:
        return stable_hash(self.affinity_text)

    @property
    def whole_groups(self) -> bool:
        """A reward batch holds whole GRPO groups (the client's chunks and the fan-out's parts never split
        one), so no later request of its key comes to join it."""
        return self.path == "/v1/reward/batch"
