"""``POST /v1/reward/batch`` at the router: split a batch by affinity key across workers, gather in order.

Items of one GRPO group (same ``group_id``, else same question prefix) go to one worker, groups are
spread under the reward policy's bounded load, each worker gets one sub-batch, and the results come
back in the original order. A sub-batch that fails on every worker it tried turns into item-level
errors for its items only; the rest of the batch is unaffected.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httptools

from router.proxy.downstream import Request
from router.proxy.exchange import Exchange
from router.request_info import RequestInfo
from trainer_client.grouping import group_key
from trainer_client.protocol import error_info

if TYPE_CHECKING:
    from router.core import RouterCore
    from router.fair_queue import Tenant
    from router.proxy.downstream import ClientConnection
    from router.workers import Worker


class Collector:
    """Stands in for a client connection: keeps the worker's response instead of streaming it on."""

    closed = False
    write_paused = False

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop):
        self.active = request
        self.paused_by: Any = None
        self.chunks: list[bytes] = []
        self.result: asyncio.Future[tuple[int, bytes]] = loop.create_future()

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def finish(self, close: bool = False) -> None:
        self._settle(_parse_response(b"".join(self.chunks)))

    def send(self, status: int, body: bytes, headers: Any = None, content_type: bytes = b"") -> None:
        self._settle((status, body))

    def _settle(self, outcome: tuple[int, bytes]) -> None:
        self.active.handler = None  # break the request <-> exchange cycle, as ClientConnection.finish does
        if not self.result.done():
            self.result.set_result(outcome)

    def send_json(self, status: int, payload: Any, headers: Any = None) -> None:
        self.send(status, json.dumps(payload).encode())


class _Response:
    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _parse_response(raw: bytes) -> tuple[int, bytes]:
    sink = _Response()
    parser = httptools.HttpResponseParser(sink)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserError:
        return 502, b""
    if not sink.complete:
        return 502, b""  # the worker broke off mid-response
    return parser.get_status_code(), b"".join(sink.body)


class FanOut:
    """Handler of one fanned-out batch request (``on_gone`` aborts the sub-requests)."""

    def __init__(self, core: RouterCore, client: ClientConnection, request: Request, samples: list[Any],
                 tenant: Tenant | None = None):
        self.core, self.client, self.request, self.samples = core, client, request, samples
        self.tenant = tenant  # the caller's API key: each sub-request counts and waits under it
        self.exchanges: list[Exchange] = []
        self.task: asyncio.Task | None = None

    def start(self, workers: list[Worker]) -> None:
        loop = self.core.loop
        policy, retry = self.core.policy_for(self.request.path)
        prefix = self.core.settings.affinity_prefix_chars
        parts: list[tuple[list[int], Collector]] = []
        for (worker, recipe), indices in self._plan(workers).items():
            body = json.dumps({"samples": [self.samples[i] for i in indices]}).encode()
            sub = Request(self.request.method, self.request.path, "", self.request.headers, body, True, "1.1")
            collector = Collector(sub, loop)
            info = RequestInfo(sub.path, body, None, prefix, recipe=recipe)  # a retry stays among its recipe's workers
            exchange = Exchange(self.core, collector, sub, info, policy, sub.path, retry,  # type: ignore[arg-type]
                                self.tenant)
            exchange.preferred = worker
            sub.handler = exchange
            self.exchanges.append(exchange)
            parts.append((indices, collector))
            exchange.start()
        self.core.metrics.fanout_items.inc(len(self.samples))
        self.task = loop.create_task(self._gather(parts))

    def _plan(self, workers: list[Worker]) -> dict[tuple[Worker | None, str | None], list[int]]:
        """Group items by recipe and affinity key; place whole groups among the workers serving their
        recipe, weighting load by the items already placed. ``None`` = no worker fits (its exchange says why)."""
        prefix = self.core.settings.affinity_prefix_chars
        groups: dict[tuple[str | None, str], list[int]] = {}
        for i, sample in enumerate(self.samples):
            recipe = sample.get("recipe") if isinstance(sample, dict) else None
            recipe = recipe if isinstance(recipe, str) and recipe else None
            groups.setdefault((recipe, group_key(sample, i, prefix)), []).append(i)
        policy, _ = self.core.policy_for(self.request.path)
        mixed = not self.core.homogeneous()
        plan: dict[tuple[Worker | None, str | None], list[int]] = {}
        placed: list[tuple[Worker, int]] = []
        try:
            for (recipe, key), indices in groups.items():
                want_model, want_recipe = self.core.wanted(self.request.path, None, recipe)
                fit = [w for w in workers if w.serves(want_model, want_recipe)] if mixed else workers
                worker = None
                if fit:
                    first = self.samples[indices[0]]
                    info = RequestInfo(self.request.path, b"", None, prefix, affinity_text=key,
                                       json=first if isinstance(first, dict) else None)
                    worker = policy.select(fit, info)
                    worker.in_flight += len(indices)  # provisional, so the bounded load sees this batch too
                    placed.append((worker, len(indices)))
                plan.setdefault((worker, recipe if mixed else None), []).extend(indices)
        finally:
            for worker, n in placed:
                worker.in_flight -= n
        return plan

    async def _gather(self, parts: list[tuple[list[int], Collector]]) -> None:
        results: list[dict[str, Any] | None] = [None] * len(self.samples)
        for indices, collector in parts:
            status, body = await collector.result
            items = sub_batch_items(status, body, len(indices))
            for local, item in enumerate(items):
                item["index"] = indices[local]
                error = item.get("error")
                if isinstance(error, dict) and isinstance(error.get("param"), str):  # the worker's local index
                    error["param"] = error["param"].replace(f"samples.{local}", f"samples.{indices[local]}", 1)
                results[indices[local]] = item
        if not self.client.closed:
            self.client.send_json(200, {"results": results})

    def on_gone(self) -> None:
        for exchange in self.exchanges:
            exchange.on_gone()
        if self.task is not None:
            self.task.cancel()


def sub_batch_items(status: int, body: bytes, count: int) -> list[dict[str, Any]]:
    """The sub-batch's items, or one item-level error per item when the whole sub-batch failed (also used by
    the Ray Serve ingress, services/ray_serve.py)."""
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if status == 200 and isinstance(payload, dict) and isinstance(payload.get("results"), list):
        items = payload["results"]
        if len(items) == count:
            return [dict(item) if isinstance(item, dict) else {"error": error_info(502, "malformed item").model_dump()}
                    for item in items]
        status, payload = 502, None
    message = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        message = payload["error"].get("message")
    message = message or f"sub-batch failed with status {status}"
    return [{"result": None, "error": error_info(status, message).model_dump()} for _ in range(count)]
