"""What a policy may look at about one request; everything costly is computed only when asked for.

The JSON body is parsed at most once and only when a policy or the model-aware pools need it, so
round-robin traffic to a homogeneous pool never pays for it.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs

from common.hashing import stable_hash
from trainer_client.grouping import QUESTION_FIELDS, group_key

REWARD_PATHS = frozenset({"/v1/reward", "/v1/reward/batch", "/get_reward", "/slime/reward"})
QUERY_RECIPE_PATHS = frozenset({"/get_reward", "/slime/reward"})  # the trainers' routes take ?recipe=NAME


_UNSET: Any = object()


class RequestInfo:
    __slots__ = ("__dict__", "body", "headers", "path", "prefix_chars", "query")

    def __init__(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                 prefix_chars: int = 256, *, json: Any = _UNSET, recipe: str | None = _UNSET,
                 affinity_text: str | None = None, query: str = ""):
        """``json``, ``recipe``, ``affinity_text``: values already known (a fanned-out part of a batch, a Ray
        Serve handle call), taken as they are instead of being read from the body."""
        self.path = path
        self.body = body
        self.headers = headers or []  # (lower-case name, value) as parsed; decoded only when asked
        self.prefix_chars = prefix_chars
        self.query = query
        known = self.__dict__  # where cached_property keeps a computed value
        if json is not _UNSET:
            known["json"] = json
        if recipe is not _UNSET:
            known["recipe"] = recipe
        if affinity_text is not None:
            known["affinity_text"] = affinity_text

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
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            return None

    @cached_property
    def model(self) -> str | None:
        body = self.json
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) and model else None

    @cached_property
    def recipe(self) -> str | None:
        """The recipe asked for; for a batch, the one all its samples share (else None: any worker)."""
        if self.path in QUERY_RECIPE_PATHS and self.query:
            named = parse_qs(self.query).get("recipe")
            return named[-1] if named and named[-1] else None
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
        for name in QUESTION_FIELDS:
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
        if isinstance(body, dict) and body.get("group_id") is not None:
            return group_key(body)
        return "p:" + self.text[: self.prefix_chars]

    @cached_property
    def affinity_hash(self) -> int:
        return stable_hash(self.affinity_text)

    @property
    def whole_groups(self) -> bool:
        """A reward batch holds whole GRPO groups (the client's chunks and the fan-out's parts never split
        one), so no later request of its key comes to join it."""
        return self.path == "/v1/reward/batch"
