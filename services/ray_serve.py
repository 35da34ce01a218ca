"""The GenRM server as a Ray Serve application, with the router's group-affinity policy as a Serve ``RequestRouter``.

Two deployments, and a third for code rewards::

    Serve HTTP proxy ──▶ GenRMIngress ──DeploymentHandle──▶ GenRMServer ×N  (num_gpus, autoscaling_config)
                         (parses the request,      │        (the unchanged FastAPI app of services/genrm_server,
                          splits a batch by group) │         called in-process over ASGI)
                                   │               └─ GroupAffinityRouter picks the replica
                                   └──DeploymentHandle──▶ GenRMSandbox ×M  (sandbox_replicas; num_gpus 0)
                                     /run_code, recipe=code  (the same app as a CPU-only sandbox server:
                                                              `--engine none --recipe code`, bubblewrap)

Serve's proxy routes an HTTP request to the ingress before anything has read its body, so a router in front of
the server deployment could not see a group id. The ingress reads it (``X-Affinity-Key``, ``group_id``, else the
prompt's first characters: the router's rules, ``router.request_info``) and passes it as the ``affinity_key``
argument of the handle call, where :class:`GroupAffinityRouter` finds it in ``PendingRequest.kwargs`` and places
it with the router's own consistent hashing with bounded load (``router.policies.affinity``). A
``/v1/reward/batch`` is split by group, one sub-batch per group, and gathered back in order, like the router's
fan-out. Responses are the server's own, byte for byte (status, body, headers), plus ``x-genrm-replica``.
With sandbox replicas, ``/run_code`` and rewards asking for ``recipe=code`` go to them (a batch is split by recipe
as well as by group), everything else to the judge servers, and ``GET /v1/recipes`` lists both: the router's rules.

This module lives in the ``services`` package (not ``deploy/``) so that Ray workers can import it wherever the
platform is installed; ``deploy/ray_serve.py`` re-exports it for ``serve run deploy.ray_serve:app_builder``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from common.hashing import stable_hash
from router.core import RUN_CODE
from router.fanout import sub_batch_items
from router.policies.affinity import Affinity, AffinityConfig
from router.request_info import REWARD_PATHS, RequestInfo
from services.genrm_server.settings import ServerSettings
from trainer_client.grouping import group_key
from trainer_client.protocol import error_body

log = logging.getLogger("genrm.ray_serve")

AFFINITY_KWARG = "affinity_key"  # the handle-call argument GroupAffinityRouter reads
REPLICA_HEADER = b"x-genrm-replica"  # response: the GenRMServer replica(s) that answered
TRACE_HEADER = b"x-genrm-trace"  # request: a fanned-out batch also lists each item's replica under "replicas"
_STREAMING_PATHS = ("/v1/chat/completions", "/v1/completions")
CODE_RECIPE = "code"  # the recipe sandbox replicas serve (and the judge servers do not)
Headers = list[tuple[bytes, bytes]]


# -- routing ---------------------------------------------------------------------------------------


class _Slot:
    """What ``router.policies.affinity`` reads of a worker: a stable identity on the ring and its load."""

    __slots__ = ("in_flight", "load", "replica", "shared", "slowness", "url")

    def __init__(self, replica: RunningReplica, in_flight: int):
        self.replica, self.url, self.in_flight, self.slowness = replica, replica.replica_id.unique_id, in_flight, 1.0
        self.load, self.shared = float(in_flight), False  # Serve's queue length is the whole load already


def rank_replicas(policy: Affinity, candidates: Sequence[RunningReplica], key: str | None,
                  load: Callable[[RunningReplica], int], path: str = "") -> list[list[RunningReplica]]:
    """Serve's ranks: the replica the ring and the load bound pick for ``key``, then the rest.

    Serve takes the first rank whose replicas are below ``max_ongoing_requests`` (lowest queue first), so
    a replica Serve considers full still spills. Without a key, one rank of all: the shortest queue wins.
    ``path``: the request's route; a reward batch (whole groups) is placed by the bound alone, as in the router.
    """
    if not candidates:
        return []
    if not key:
        return [list(candidates)]
    slots = sorted((_Slot(r, load(r)) for r in candidates), key=lambda s: s.url)  # stable ring cache key
    chosen = policy.select(slots, RequestInfo(path, b"", affinity_text=key))
    rest = [s.replica for s in slots if s is not chosen]
    return [[chosen.replica], rest] if rest else [[chosen.replica]]


class GroupAffinityRouter(RequestRouter):
    """Serve request router: consistent hashing with bounded load on the ``affinity_key`` of the handle call.

    The load of a replica is Serve's cached queue length for it (requests this process sent, corrected by the
    replica's own reports), 0 when unknown.
    """

    def initialize_state(self, load_factor: float = 1.0, vnodes: int = 160, **_: Any) -> None:
        self.policy = Affinity(AffinityConfig(load_factor=load_factor, vnodes=vnodes))

    def _load(self, replica: RunningReplica) -> int:
        return self.replica_queue_len_cache.get(replica.replica_id) or 0

    def _fulfill_next_pending_request(self, replica: RunningReplica, request_metadata: Any = None) -> None:
        """Hand ``replica`` to the very request it was chosen for.

        Serve (2.60) finds that request by ``metadata.internal_request_id``, but handle calls made while serving
        one request inherit its id: the concurrent sub-batches of one batch share it, and all but the first
        would never be routed (the built-in routers escape this by serving FIFO, which would break affinity).
        So match the routed request's own metadata object, and defer to Serve if its internals ever change.
        """
        for pending in getattr(self, "_pending_requests_to_fulfill", ()):
            if pending.metadata is request_metadata and not pending.future.done():
                self._record_queue_wait_time(pending)
                pending.future.set_result(replica)
                self._remove_pending_request_from_indices(pending)
                return
        super()._fulfill_next_pending_request(replica, request_metadata)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if pending_request is None:
            return [candidate_replicas]
        # Once these ranks are all tried, Serve's retry loop must back off: without this it spins (a livelock).
        pending_request.routing_context.should_backoff = True
        args = pending_request.args  # GenRMServer.handle's: (method, path, query, headers, body)
        path = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        return rank_replicas(self.policy, candidate_replicas, pending_request.kwargs.get(AFFINITY_KWARG), self._load,
                             path)


# -- the server deployment -------------------------------------------------------------------------


async def _asgi(app: Any, method: str, path: str, query: bytes, headers: Headers,
                body: bytes) -> AsyncIterator[dict[str, Any]]:
    """Run one HTTP request through an ASGI app in-process; yield the messages it sends."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": query, "headers": headers, "client": None, "server": None}
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    finished = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()  # the client stays connected until the response is complete
        return {"type": "http.disconnect"}

    started = False

    async def send(message: dict[str, Any]) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await queue.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception:  # Starlette re-raises what its `Exception` handler has already answered
            if not started:  # else the caller answers 500
                log.exception("unhandled error in %s %s", method, path)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (message := await queue.get()) is not None:
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                break
    finally:
        finished.set()
        if not task.done():
            task.cancel()


def _no_response() -> tuple[int, Headers, bytes]:
    return 500, [(b"content-type", b"application/json")], json.dumps(error_body(500, "no response")).encode()


@serve.deployment(name="GenRMServer", health_check_period_s=10, graceful_shutdown_timeout_s=30)
class GenRMServer:
    """One GenRM server replica: the FastAPI app of ``services.genrm_server`` with its engine, served in-process."""

    async def __init__(self, settings: dict[str, Any]):
        from services.genrm_server.app import create_app  # torch & co. only where the engine runs

        self.app = create_app(ServerSettings(**settings))
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # engine.start(): the replica is ready when its model is loaded
        self.replica = serve.get_replica_context().replica_id.unique_id

    async def check_health(self) -> None:
        if not await self.app.state.engine.check_ready():
            raise RuntimeError("engine not ready")

    async def handle(self, method: str, path: str, query: bytes, headers: Headers, body: bytes,
                     affinity_key: str | None = None) -> tuple[int, Headers, bytes, str]:
        """One request, whole response: ``(status, headers, body, replica id)``."""
        status, out, chunks = None, [], []
        async for m in _asgi(self.app, method, path, query, headers, body):
            if m["type"] == "http.response.start":
                status, out = m["status"], list(m.get("headers", []))
            elif m["type"] == "http.response.body":
                chunks.append(m.get("body", b""))
        if status is None:
            return (*_no_response(), self.replica)
        return status, out, b"".join(chunks), self.replica

    async def handle_stream(self, method: str, path: str, query: bytes, headers: Headers, body: bytes,
                            affinity_key: str | None = None) -> AsyncIterator[Any]:
        """One request, streamed: ``(status, headers, replica id)`` first, then body chunks."""
        started = False
        async for m in _asgi(self.app, method, path, query, headers, body):
            if m["type"] == "http.response.start":
                started = True
                yield m["status"], list(m.get("headers", [])), self.replica
            elif m["type"] == "http.response.body" and m.get("body"):
                yield m["body"]
        if not started:
            status, out, data = _no_response()
            yield status, out, self.replica
            yield data

    async def __del__(self) -> None:
        lifespan = getattr(self, "_lifespan", None)
        if lifespan is not None:
            await lifespan.__aexit__(None, None, None)


# -- the ingress -----------------------------------------------------------------------------------


def _response(status: int, headers: Headers, body: bytes, replicas: str) -> Response:
    response = Response(body, status_code=status)
    response.raw_headers = [*(h for h in headers if h[0].lower() not in (b"content-length", REPLICA_HEADER)),
                            (b"content-length", str(len(body)).encode()), (REPLICA_HEADER, replicas.encode())]
    return response


def _error(status: int, message: str) -> Response:
    return Response(json.dumps(error_body(status, message)), status_code=status, media_type="application/json")


@serve.deployment(name="GenRMIngress")
class GenRMIngress:
    """HTTP entry: every route of the server, with the affinity key read here and handed to the router."""

    def __init__(self, server: DeploymentHandle, prefix_chars: int = 256, max_body_bytes: int = 16 * 1024 * 1024,
                 max_sub_batches: int = 128, sandbox: DeploymentHandle | None = None):
        self.server, self.sandbox, self.prefix_chars = server, sandbox, prefix_chars
        self.max_body_bytes, self.max_sub_batches = max_body_bytes, max_sub_batches

    def _to_sandbox(self, path: str, recipe: str | None) -> bool:
        """The router's rule: /run_code and rewards asking for the code recipe go to the sandbox servers."""
        return self.sandbox is not None and (path == RUN_CODE or (path in REWARD_PATHS and recipe == CODE_RECIPE))

    async def __call__(self, request: Request) -> Response:
        scope = request.scope
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):  # a route prefix other than "/"
            path = path[len(root):] or "/"
        method, query = scope["method"], scope.get("query_string", b"")
        body = await request.body()
        headers = [h for h in scope["headers"] if h[0] != b"content-length"]
        call = (method, path, query, [*headers, (b"content-length", str(len(body)).encode())], body)

        info = RequestInfo(path, body, headers, self.prefix_chars, query=query.decode("latin-1"))  # ?recipe=
        if method == "GET" and path == "/v1/recipes" and self.sandbox is not None:
            return await self._recipes(call)
        key: str | None = None
        to_sandbox = False
        if method == "POST" and len(body) <= self.max_body_bytes:  # else the server answers 413 itself
            if path == "/v1/reward/batch":
                groups = self._groups(info.json)
                if groups is not None and len(groups) > 1:
                    trace = any(k == TRACE_HEADER for k, _ in headers)
                    return await self._fan_out(call, info.json["samples"], groups, trace)
                to_sandbox, key = next(iter(groups)) if groups else (self._to_sandbox(path, info.recipe), None)
            else:
                text = info.affinity_text
                key = text if text not in ("p:", "h:") else None  # nothing to go by: least loaded
                to_sandbox = self._to_sandbox(path, info.recipe)
        else:
            to_sandbox = self._to_sandbox(path, info.recipe if method == "POST" else None)
        target = self.sandbox if to_sandbox else self.server
        try:
            if path in _STREAMING_PATHS and isinstance(info.json, dict) and info.json.get("stream"):
                return await self._stream(call, key)
            status, out, data, replica = await target.handle.remote(*call, **{AFFINITY_KWARG: key})
        except BackPressureError as exc:
            return _error(503, f"GenRM servers are at capacity: {exc}")
        except Exception as exc:
            return _error(502, f"GenRM server replica failed: {type(exc).__name__}: {exc}")
        return _response(status, out, data, replica)

    def _groups(self, body: Any) -> dict[tuple[bool, str], list[int]] | None:
        """Sample indices by (to the sandbox servers, affinity key), or None when the body is not a plain batch
        (the server says why)."""
        if not isinstance(body, dict) or body.keys() != {"samples"} or not isinstance(body["samples"], list):
            return None
        samples = body["samples"]
        if len(samples) > 16384:  # over the API's limit: one call, so the server's 400 comes back as is
            return None
        groups: dict[tuple[bool, str], list[int]] = {}
        for i, sample in enumerate(samples):
            recipe = sample.get("recipe") if isinstance(sample, dict) else None
            code = self._to_sandbox("/v1/reward/batch", recipe if isinstance(recipe, str) else None)
            groups.setdefault((code, group_key(sample, i, self.prefix_chars)), []).append(i)
        if len(groups) > self.max_sub_batches:  # bound the calls per batch: whole groups share a bucket
            buckets: dict[tuple[bool, str], list[int]] = {}
            for (code, key), indices in groups.items():
                buckets.setdefault((code, f"b:{stable_hash(key) % self.max_sub_batches}"), []).extend(indices)
            groups = {k: sorted(v) for k, v in buckets.items()}
        return groups

    async def _recipes(self, call: tuple) -> Response:
        """Both deployments' recipes, the judge servers' default first (a sandbox server's default is code)."""
        try:
            (status, out, data, replica), (code_status, _, code_data, _) = await asyncio.gather(
                self.server.handle.remote(*call), self.sandbox.handle.remote(*call))
        except Exception as exc:
            return _error(502, f"GenRM server replica failed: {type(exc).__name__}: {exc}")
        if status != 200:
            return _response(status, out, data, replica)
        merged = json.loads(data)
        names = {r["name"] for r in merged["recipes"]}
        if code_status == 200:  # else the judges' list alone: a sandbox error body is no recipe list
            merged["recipes"] += [r for r in json.loads(code_data).get("recipes", []) if r["name"] not in names]
        return _response(200, [(b"content-type", b"application/json")], json.dumps(merged).encode(), replica)

    async def _fan_out(self, call: tuple, samples: list[Any], groups: dict[tuple[bool, str], list[int]],
                       trace: bool) -> Response:
        method, path, query, headers, _ = call
        headers = [h for h in headers if h[0] != b"content-length"]

        async def one(target: tuple[bool, str], indices: list[int]) -> tuple[list[int], list[dict[str, Any]],
                                                                             str | None]:
            to_sandbox, key = target
            sub = json.dumps({"samples": [samples[i] for i in indices]}).encode()
            sub_headers = [*headers, (b"content-length", str(len(sub)).encode())]
            handle = self.sandbox if to_sandbox else self.server
            try:
                status, _, data, replica = await handle.handle.remote(
                    method, path, query, sub_headers, sub, **{AFFINITY_KWARG: key})
            except Exception as exc:
                message = f"GenRM server replica failed: {type(exc).__name__}: {exc}"
                status, data, replica = 502, json.dumps(error_body(502, message)).encode(), None
            return indices, sub_batch_items(status, data, len(indices)), replica

        parts = await asyncio.gather(*(one(k, v) for k, v in groups.items()))
        results: list[Any] = [None] * len(samples)
        replicas: list[str | None] = [None] * len(samples)
        for indices, items, replica in parts:
            for local, item in enumerate(items):
                index = indices[local]
                item["index"] = index
                error = item.get("error")
                param = error.get("param") if isinstance(error, dict) else None
                old = f"samples.{local}"
                if isinstance(param, str) and (param == old or param.startswith(old + ".")):  # sub-batch numbering
                    error["param"] = f"samples.{index}" + param[len(old):]
                results[index], replicas[index] = item, replica
        payload: dict[str, Any] = {"results": results}
        if trace:
            payload["replicas"] = replicas
        used = ",".join(dict.fromkeys(r for r in replicas if r))
        return _response(200, [(b"content-type", b"application/json")], json.dumps(payload).encode(), used)

    async def _stream(self, call: tuple, key: str | None) -> Response:
        stream = self.server.options(stream=True).handle_stream.remote(*call, **{AFFINITY_KWARG: key})
        status, headers, replica = await stream.__anext__()

        async def body() -> AsyncIterator[bytes]:
            async for chunk in stream:
                yield chunk

        response = StreamingResponse(body(), status_code=status)
        response.raw_headers = [*(h for h in headers if h[0].lower() not in (b"content-length", REPLICA_HEADER)),
                                (REPLICA_HEADER, replica.encode())]
        return response


# -- the application -------------------------------------------------------------------------------


class RayServeArgs(BaseModel):
    """Arguments of :func:`app_builder` (``serve run services.ray_serve:app_builder key=value ...``).

    Any other key is a GenRM server setting (``model=``, ``engine=``, ``max_batch_size=``...; see ``genrm serve
    --help``), validated here, before anything is deployed. ``GENRM_SERVER_*`` variables of the shell running
    ``serve run`` and the ``server:`` section of ``config=`` apply too, as for ``genrm serve``.
    """

    model_config = ConfigDict(extra="allow")

    config: str | None = Field(None, description="genrm YAML config file (its `server:` section).")
    num_replicas: int = Field(1, ge=1, description="Server replicas (fixed; ignored when max_replicas is set).")
    min_replicas: int = Field(1, ge=0, description="Autoscaling: fewest replicas (0 = scale to zero).")
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling: set to autoscale up to this many.")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="Autoscaling: requests (groups, for batches) in flight per replica to aim at.")
    max_ongoing_requests: int = Field(
        128, ge=1, description="Requests a replica takes at once; beyond it the router spills to another.")
    num_gpus: float = Field(0, ge=0, description="GPUs per server replica (0 on CPU).")
    num_cpus: float = Field(1, ge=0, description="CPUs per server replica (also its torch threads on CPU).")
    ingress_replicas: int = Field(1, ge=1, description="Ingress replicas (HTTP parsing and batch fan-out).")
    ingress_num_cpus: float = Field(0.5, ge=0, description="CPUs per ingress replica.")
    affinity_load_factor: float = Field(1.0, ge=1, description="Bounded load: a replica above this × mean spills.")
    affinity_vnodes: int = Field(160, ge=1, description="Virtual nodes per replica on the hash ring.")
    affinity_prefix_chars: int = Field(256, ge=1, description="Prompt characters keying a sample with no group_id.")
    max_sub_batches: int = Field(128, ge=1, description="A batch is split into at most this many server calls.")
    sandbox_replicas: int = Field(
        0, ge=0, description="Sandbox server replicas (CPU only, no GPU): /run_code and recipe=code go to them; "
        "0 = none. Their code_*, sandbox_* and math settings are the server settings given here.")
    sandbox_num_cpus: float = Field(2, ge=1, description="CPUs per sandbox replica; also its sandbox workers.")
    sandbox_max_ongoing_requests: int = Field(
        64, ge=1, description="Requests a sandbox replica takes at once (its own queue bounds the runs).")


_SHARED_WITH_SANDBOX = ("code_", "sandbox_", "math_")  # settings prefixes a sandbox replica takes from the judges'


def sandbox_settings(settings: ServerSettings, workers: int) -> ServerSettings:
    """A sandbox replica's settings: no engine, the code recipe, bubblewrap unless `none` was asked for, and the
    given code, sandbox and math settings (math too: recipe=math may be answered by either kind of replica)."""
    shared = {name: value for name, value in settings.model_dump().items()
              if name.startswith(_SHARED_WITH_SANDBOX) or name in ("api_keys", "log_level")}
    if shared["code_sandbox"] in ("auto", "off"):  # auto/off are about the judges; a sandbox replica sandboxes
        shared["code_sandbox"] = "bwrap"
    shared["sandbox_workers"] = shared["sandbox_workers"] or workers
    return ServerSettings(engine="none", recipe=CODE_RECIPE, **shared)


def build_app(args: RayServeArgs | dict[str, Any]) -> Application:
    """The Serve application: ingress → GenRM server replicas behind the group-affinity request router."""
    args = args if isinstance(args, RayServeArgs) else RayServeArgs.model_validate(args)
    overrides = dict(args.model_extra or {})
    settings = ServerSettings.load(args.config, **overrides)
    if settings.torch_threads == 0 and args.num_gpus == 0:  # replicas sharing a host must not oversubscribe
        settings = settings.model_copy(update={"torch_threads": max(1, int(args.num_cpus))})
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        "max_ongoing_requests": args.max_ongoing_requests,
        "request_router_config": RequestRouterConfig(
            request_router_class=GroupAffinityRouter,
            request_router_kwargs={"load_factor": args.affinity_load_factor, "vnodes": args.affinity_vnodes}),
    }
    if args.max_replicas is not None:
        options["autoscaling_config"] = {
            "min_replicas": args.min_replicas, "max_replicas": max(args.max_replicas, args.min_replicas),
            "initial_replicas": max(args.min_replicas, 1), "target_ongoing_requests": args.target_ongoing_requests}
    else:
        options["num_replicas"] = args.num_replicas
    server = GenRMServer.options(**options).bind(settings.model_dump(mode="json"))
    sandbox, max_body_bytes = None, settings.max_body_bytes
    if args.sandbox_replicas:
        code = sandbox_settings(settings, max(1, int(args.sandbox_num_cpus)))
        sandbox = GenRMServer.options(
            name="GenRMSandbox", num_replicas=args.sandbox_replicas,
            max_ongoing_requests=args.sandbox_max_ongoing_requests,
            ray_actor_options={"num_cpus": args.sandbox_num_cpus, "num_gpus": 0},
        ).bind(code.model_dump(mode="json"))
        max_body_bytes = max(max_body_bytes, code.max_body_bytes)  # programs and their files may be larger
    return GenRMIngress.options(
        num_replicas=args.ingress_replicas, max_ongoing_requests=4096,
        ray_actor_options={"num_cpus": args.ingress_num_cpus},
    ).bind(server, prefix_chars=args.affinity_prefix_chars, max_body_bytes=max_body_bytes,
           max_sub_batches=args.max_sub_batches, sandbox=sandbox)


def app_builder(args: dict[str, Any]) -> Application:
    """``serve run services.ray_serve:app_builder model=/models/judge num_gpus=1 num_replicas=2``."""
    return build_app(args)
