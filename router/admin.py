"""The admin API (admin key only): list, add, drain and remove workers.

- ``GET /admin/workers``: every worker's state, in-flight count, breaker and latency EWMA.
- ``POST /admin/workers`` ``{"url": ...}``: add (or take back a draining one).
- ``POST /admin/workers/drain`` ``{"url": ...}``: no new requests; in-flight ones finish.
- ``DELETE /admin/workers?url=...``: remove; 409 while requests are in flight unless ``force=true``.

Worker URLs are validated (http/https, a host, no path or credentials) and refused when they point
at the router itself, which would make every request loop through it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from common.api_keys import ADMIN
from trainer_client.protocol import error_body

if TYPE_CHECKING:
    from router.app import RouterApp
    from router.proxy.downstream import ClientConnection, Request

log = logging.getLogger("genrm.router.admin")


class WorkerRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str


def validate_worker_url(url: str, router_addr: tuple[str, int] | None) -> str:
    """The normalised URL, or ValueError saying what is wrong with it."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError("url must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("url has no host")
    if parts.username or parts.password:
        raise ValueError("url must not carry credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("url must be a base URL (no path, query or fragment)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"url has a bad port: {exc}") from None
    if router_addr is not None and port == router_addr[1] and _is_local(parts.hostname, router_addr[0]):
        raise ValueError("url points at the router itself")
    return f"{parts.scheme}://{parts.netloc}"


def _is_local(host: str, bound: str) -> bool:
    """Does ``host`` reach this machine's listening address (loopback, the bound address or our name)?"""
    names = {bound, "localhost", socket.gethostname()}
    if host in names:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified or (bound in ("0.0.0.0", "::") and str(ip) == _own_ip())


def _own_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return ""


class AdminApi:
    def __init__(self, app: RouterApp):
        self.app = app

    def handle(self, client: ClientConnection, request: Request, role: str | None) -> None:
        if not self.app.settings.admin_api_keys:
            return client.send_json(403, error_body(403, "the admin API is off: configure admin_api_keys"))
        if role != ADMIN:
            status = 401 if role is None else 403
            return client.send_json(status, error_body(status, "the admin API needs an admin key",
                                                       param="authorization"))
        route = (request.method, request.path.rstrip("/"))
        pool = self.app.core.pool
        if route == ("GET", "/admin/workers"):
            return client.send_json(200, self.app.workers_payload())
        if route == ("DELETE", "/admin/workers"):
            query = parse_qs(request.query)
            url = (query.get("url") or [""])[0].rstrip("/")
            worker = pool.by_url.get(url)
            if worker is None:
                return client.send_json(404, error_body(404, f"no worker {url!r}", param="url"))
            if worker.in_flight and (query.get("force") or [""])[0] != "true":
                return client.send_json(409, error_body(409, f"worker {url} has {worker.in_flight} requests in "
                                                             "flight: drain it first, or force=true", param="url"))
            pool.remove(url)
            log.info("admin removed worker %s", url)
            return client.send_json(200, {"removed": url})
        if request.method == "POST" and route[1] in ("/admin/workers", "/admin/workers/drain"):
            try:  # a bad body is named as such, a too deeply nested one too
                body = json.loads(request.body or b"null")
            except (ValueError, RecursionError) as exc:
                why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                return client.send_json(400, error_body(400, f"malformed JSON body: {why}", param="body"))
            try:
                ref = WorkerRef.model_validate(body)
                url = validate_worker_url(ref.url, self.app.bound)
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err["loc"]) or "body"
                return client.send_json(422, error_body(422, f"{field}: {err['msg']}", param=field))
            except ValueError as exc:
                return client.send_json(422, error_body(422, str(exc), param="url"))
            if route[1] == "/admin/workers":
                worker = pool.add(url)
                self.app.core.wake_all()
                log.info("admin added worker %s", url)
                if self.app.health is not None:  # probe it now rather than at the next round
                    self.app.core.loop.create_task(self.app.health.probe(worker))
                return client.send_json(201, worker.describe())
            worker = pool.drain(url)
            if worker is None:
                return client.send_json(404, error_body(404, f"no worker {url!r}", param="url"))
            log.info("admin drains worker %s (%d in flight)", url, worker.in_flight)
            return client.send_json(200, worker.describe())
        return client.send_json(404, error_body(404, f"no admin route {request.method} {request.path}"))
