"""DNS discovery: make the pool's DNS-sourced workers follow a name's A/AAAA records.

Meant for a Kubernetes headless service, whose name resolves to one address per ready pod. Every
``interval_s`` the name is resolved and ``WorkerPool.sync(source, urls)`` adds new workers and drains the
ones whose address vanished; each name followed has its own ``source``, so that one name's answer never
drains another's workers (judge servers and sandbox servers behind two services). NXDOMAIN or an empty
answer means the service has no endpoints, so all its workers drain; a resolver error or timeout changes
nothing (a DNS hiccup must never drop every worker) and is logged once per failure streak.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from router.workers import DNS, WorkerPool

log = logging.getLogger("genrm.router.discovery")

_SCHEMES = {"dns": "http", "dns+http": "http", "dns+https": "https"}
_NAME_RE = re.compile(r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                      r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$")


def parse_dns_target(value: str) -> tuple[str, int, str]:
    """``dns://NAME:PORT``, ``dns+http://NAME:PORT`` or ``dns+https://NAME:PORT`` → (name, port, scheme)."""
    example = "expected dns://NAME:PORT or dns+https://NAME:PORT, e.g. dns://my-svc.ns.svc.cluster.local:8000"
    raw = value.strip()
    prefix, sep, _ = raw.partition("://")
    if not sep or prefix.lower() not in _SCHEMES:
        raise ValueError(f"bad DNS discovery target {value!r}: unknown scheme prefix {prefix!r} ({example})")
    parts = urlsplit(raw)
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"bad DNS discovery target {value!r}: no user info allowed ({example})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"bad DNS discovery target {value!r}: no path, query or fragment allowed ({example})")
    name = parts.hostname or ""
    if not name or not _NAME_RE.match(name):
        raise ValueError(f"bad DNS discovery target {value!r}: missing or invalid DNS name ({example})")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad DNS discovery target {value!r}: port must be 1-65535 ({example})") from None
    if port is None or not 0 < port < 65536:
        raise ValueError(f"bad DNS discovery target {value!r}: missing port ({example})")
    return name, port, _SCHEMES[prefix.lower()]


def _nameserver(entry: str) -> dns.nameserver.Do53Nameserver:
    """``IP``, ``IP:PORT``, ``IPv6`` or ``[IPv6]:PORT`` → a plain DNS (UDP/TCP) nameserver."""
    host, port = entry.strip(), "53"
    if host.startswith("["):
        host, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad nameserver {entry!r}: expected IP, IP:PORT or [IPv6]:PORT")
        port = rest[1:] or port
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        ipaddress.ip_address(host)
        port_n = int(port)
    except ValueError:
        raise ValueError(f"bad nameserver {entry!r}: expected IP, IP:PORT or [IPv6]:PORT") from None
    if not 0 < port_n < 65536:
        raise ValueError(f"bad nameserver {entry!r}: port must be 1-65535")
    return dns.nameserver.Do53Nameserver(host, port_n)


class DnsDiscovery:
    """Resolve ``name`` every ``interval_s`` and sync the pool's DNS-sourced workers to the answers."""

    def __init__(self, pool: WorkerPool, name: str, port: int, scheme: str = "http", interval_s: float = 5.0,
                 nameservers: list[str] | None = None,
                 on_change: Callable[[list[str], list[str]], None] | None = None,
                 *, timeout_s: float = 3.0, ipv6: bool = True, source: str = DNS):
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be 'http' or 'https', not {scheme!r}")
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1-65535, not {port}")
        self.pool, self.name, self.port, self.scheme, self.source = pool, name, port, scheme, source
        self.interval_s, self.timeout_s, self.ipv6 = interval_s, timeout_s, ipv6
        self.on_change = on_change
        if nameservers is None:  # /etc/resolv.conf, search domains and ndots included (as in a pod)
            self.resolver = dns.asyncresolver.Resolver()
        else:
            if not nameservers:
                raise ValueError("nameservers must not be empty (use None for the system resolver)")
            self.resolver = dns.asyncresolver.Resolver(configure=False)
            self.resolver.nameservers = [_nameserver(ns) for ns in nameservers]
        self.resolver.timeout = self.resolver.lifetime = timeout_s
        self.urls: list[str] | None = None  # last successful answer
        self.failures = 0  # consecutive failed refreshes
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _query(self, rdtype: str) -> list[str]:
        try:
            answer = await self.resolver.resolve(self.name, rdtype, search=True, lifetime=self.timeout_s)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []  # the name exists with no endpoints, or not at all: nothing to route to
        return [rdata.address for rdata in answer]

    async def resolve_once(self) -> list[str]:
        """Sorted worker URLs for the name's addresses; raise on a resolver error or timeout."""
        rdtypes = ["A", "AAAA"] if self.ipv6 else ["A"]
        answers = await asyncio.gather(*(self._query(t) for t in rdtypes))
        urls = set()
        for address in (a for addrs in answers for a in addrs):
            host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
            urls.add(f"{self.scheme}://{host}:{self.port}")
        return sorted(urls)

    async def refresh(self) -> None:
        """Resolve once and sync the pool; a failure raises and leaves the pool as it was."""
        urls = await self.resolve_once()
        self.urls = urls
        added, drained = self.pool.sync(self.source, urls)
        if added:
            log.info("DNS %s: added %d worker(s): %s", self.name, len(added), ", ".join(added))
        if drained:
            log.info("DNS %s: draining %d worker(s): %s", self.name, len(drained), ", ".join(drained))
        if not urls and (added or drained):
            log.info("DNS %s: no addresses; all its workers drain", self.name)
        if (added or drained) and self.on_change is not None:
            try:
                self.on_change(added, drained)
            except Exception:
                log.exception("DNS %s: on_change callback failed", self.name)

    async def _refresh_guarded(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # keep the previous set; the loop must survive anything
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.failures == 1:
                log.warning("DNS %s: resolution failed (%s); keeping %d current worker(s) until it recovers",
                            self.name, self.last_error, len(self.urls or []))
            return
        if self.failures:
            log.info("DNS %s: resolution recovered after %d failure(s)", self.name, self.failures)
        self.failures, self.last_error = 0, None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._refresh_guarded()

    async def start(self) -> None:
        """Refresh once (awaited; a failure is logged, not raised), then keep refreshing in the background."""
        if self.running:
            return
        await self._refresh_guarded()
        self._task = asyncio.create_task(self._run(), name=f"genrm-router-dns-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
