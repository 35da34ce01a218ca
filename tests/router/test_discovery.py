"""router/discovery.py: DNS discovery against a real DNS server process (tests/support/dns_server.py) on 127.0.0.1,
unit by unit on a real pool, then through a real router whose worker follows the records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router.discovery import DnsDiscovery, parse_dns_target
from router.workers import DNS, STATIC, WorkerPool
from services.local_stack import Child, free_port, spawn
from tests.conftest import wait_for
from tests.support.dns_records import DnsServer
from tests.support.router_calls import answered_by, chat, port_of, ready_status, workers_of

NAME = "workers.test."


PORT = 8000


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path / "mapping.json")
    server.set({NAME: ["127.0.0.1"]})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def discovery(pool: WorkerPool, server: DnsServer, **kwargs) -> DnsDiscovery:
    kwargs.setdefault("timeout_s", 1.0)
    return DnsDiscovery(pool, NAME, PORT, nameservers=[server.address], **kwargs)


def state(pool: WorkerPool) -> dict[str, bool]:
    """url -> draining."""
    return {w.url: w.draining for w in pool.workers}


@pytest.mark.parametrize(("value", "expected"), [
    ("dns://my-svc.ns.svc.cluster.local:8000", ("my-svc.ns.svc.cluster.local", 8000, "http")),
    ("dns+http://my-svc:80", ("my-svc", 80, "http")),
    ("dns+https://name:8443", ("name", 8443, "https")),
    ("dns://workers.test.:9000", ("workers.test.", 9000, "http")),
    ("  DNS+HTTPS://Name.Example:443/ ", ("name.example", 443, "https")),
])
def test_parse_dns_target_accepts(value: str, expected: tuple[str, int, str]) -> None:
    assert parse_dns_target(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("dns://my-svc.ns.svc.cluster.local", "missing port"),
    ("dns://my-svc:", "missing port"),
    ("http://my-svc:8000", "scheme prefix"),
    ("dns+ftp://my-svc:8000", "scheme prefix"),
    ("my-svc:8000", "scheme prefix"),
    ("", "scheme prefix"),
    ("dns://:8000", "DNS name"),
    ("dns://bad_name!:8000", "DNS name"),
    ("dns://my-svc:0", "missing port|1-65535"),
    ("dns://my-svc:70000", "1-65535"),
    ("dns://my-svc:http", "1-65535"),
    ("dns://my-svc:8000/v1", "no path"),
    ("dns://user@my-svc:8000", "user info"),
])
def test_parse_dns_target_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dns_target(value)


@pytest.mark.parametrize("nameservers", [[], ["not-an-ip"], ["127.0.0.1:dns"], ["127.0.0.1:0"], ["[::1"]])
def test_bad_nameservers_rejected(nameservers: list[str]) -> None:
    with pytest.raises(ValueError):
        DnsDiscovery(WorkerPool(), NAME, PORT, nameservers=nameservers)


def test_nameserver_forms_accepted() -> None:
    d = DnsDiscovery(WorkerPool(), NAME, PORT, nameservers=["10.0.0.10", "10.0.0.11:5353", "::1", "[::1]:5353"])
    assert [(ns.address, ns.port) for ns in d.resolver.nameservers] == [
        ("10.0.0.10", 53), ("10.0.0.11", 5353), ("::1", 53), ("::1", 5353)]


async def test_pool_follows_records(dns_server: DnsServer) -> None:
    pool = WorkerPool(["http://10.9.9.9:8000"])  # a static worker: DNS never touches it
    changes: list[tuple[list[str], list[str]]] = []
    d = discovery(pool, dns_server, on_change=lambda added, drained: changes.append((added, drained)))

    assert await d.resolve_once() == ["http://127.0.0.1:8000"]
    await d.refresh()
    assert state(pool) == {"http://10.9.9.9:8000": False, "http://127.0.0.1:8000": False}
    assert pool.by_url["http://127.0.0.1:8000"].source == DNS
    assert pool.by_url["http://10.9.9.9:8000"].source == STATIC
    assert changes == [(["http://127.0.0.1:8000"], [])]

    await d.refresh()  # no change: no callback
    assert len(changes) == 1

    dns_server.set({NAME: ["127.0.0.3", "127.0.0.2"]})
    assert await d.resolve_once() == ["http://127.0.0.2:8000", "http://127.0.0.3:8000"]  # sorted
    await d.refresh()
    assert state(pool) == {"http://10.9.9.9:8000": False, "http://127.0.0.1:8000": True,
                           "http://127.0.0.2:8000": False, "http://127.0.0.3:8000": False}
    assert changes[-1] == (["http://127.0.0.2:8000", "http://127.0.0.3:8000"], ["http://127.0.0.1:8000"])

    dns_server.set({NAME: []})  # NOERROR, no answer: the service has no endpoints
    assert await d.resolve_once() == []
    await d.refresh()
    assert state(pool) == {"http://10.9.9.9:8000": False, "http://127.0.0.1:8000": True,
                           "http://127.0.0.2:8000": True, "http://127.0.0.3:8000": True}
    assert changes[-1] == ([], ["http://127.0.0.2:8000", "http://127.0.0.3:8000"])

    assert len(pool.reap()) == 3  # nothing in flight: the drained DNS workers go
    assert list(pool.by_url) == ["http://10.9.9.9:8000"]

    dns_server.set({NAME: ["127.0.0.1"]})  # an address that comes back after its worker was reaped
    await d.refresh()
    assert state(pool) == {"http://10.9.9.9:8000": False, "http://127.0.0.1:8000": False}

    dns_server.set({})  # NXDOMAIN: also no endpoints
    assert await d.resolve_once() == []
    await d.refresh()
    assert state(pool) == {"http://10.9.9.9:8000": False, "http://127.0.0.1:8000": True}
    assert changes[-1] == ([], ["http://127.0.0.1:8000"])


async def test_https_and_ipv6(dns_server: DnsServer) -> None:
    dns_server.set({NAME: ["127.0.0.1", "::1"]})
    pool = WorkerPool()
    d = DnsDiscovery(pool, NAME, 8443, scheme="https", nameservers=[dns_server.address], timeout_s=1.0)
    assert await d.resolve_once() == ["https://127.0.0.1:8443", "https://[::1]:8443"]
    await d.refresh()
    worker = pool.by_url["https://[::1]:8443"]
    assert (worker.tls, worker.host, worker.port) == (True, "::1", 8443)
    v4_only = DnsDiscovery(pool, NAME, 8443, scheme="https", nameservers=[dns_server.address], timeout_s=1.0,
                           ipv6=False)
    assert await v4_only.resolve_once() == ["https://127.0.0.1:8443"]


async def test_resolver_error_keeps_workers(dns_server: DnsServer) -> None:
    pool = WorkerPool()
    d = discovery(pool, dns_server)
    await d.refresh()
    dns_server.stop()
    with pytest.raises(Exception):  # noqa: B017 - whatever dnspython raises for a dead server
        await d.resolve_once()
    with pytest.raises(Exception):  # noqa: B017
        await d.refresh()
    assert state(pool) == {"http://127.0.0.1:8000": False}
    assert d.urls == ["http://127.0.0.1:8000"]


async def test_loop_survives_dns_outage_and_recovers(dns_server: DnsServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="genrm.router.discovery")
    pool = WorkerPool()
    d = discovery(pool, dns_server, interval_s=0.2, timeout_s=0.5)
    await d.start()  # the first refresh is awaited
    try:
        assert state(pool) == {"http://127.0.0.1:8000": False}
        assert d.running

        dns_server.stop()
        await asyncio.sleep(1.0)
        assert d.running, "the background task must survive resolver errors"
        assert d.failures >= 1 and d.last_error
        assert state(pool) == {"http://127.0.0.1:8000": False}
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "one warning per failure streak"
        assert "resolution failed" in warnings[0].getMessage()

        dns_server.set({NAME: ["127.0.0.2"]})
        dns_server.start()  # same port: the loop picks it up again
        deadline = time.monotonic() + 10
        while "http://127.0.0.2:8000" not in pool.by_url and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert state(pool) == {"http://127.0.0.1:8000": True, "http://127.0.0.2:8000": False}
        assert d.failures == 0
        assert any("recovered" in r.getMessage() for r in caplog.records)
    finally:
        await d.stop()
    assert not d.running


async def test_start_with_dns_down_does_not_raise(tmp_path: Path) -> None:
    dead = DnsServer(tmp_path / "mapping.json")  # never started: nothing listens on its port
    pool = WorkerPool()
    d = discovery(pool, dead, interval_s=0.2, timeout_s=0.5)
    await d.start()
    try:
        assert d.running and d.failures == 1 and d.urls is None
        assert pool.workers == []
    finally:
        await d.stop()


def start_dns_router(logs: Path, *flags: str) -> Child:
    """A router without --workers (start_router always passes some): wait for /health only."""
    port = free_port()
    child = spawn(f"router-dns-{port}", f"http://127.0.0.1:{port}",
                  ["route", "--port", str(port), "--log-level", "warning", *flags], log_dir=logs)
    try:
        wait_for(lambda: _answers(child), "the router to start", 30)
    except BaseException:
        child.stop()
        raise
    return child


def _answers(child: Child) -> bool:
    assert child.process.poll() is None, f"router exited:\n{child.log_tail()}"
    try:
        return httpx.get(child.url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_dns_discovered_worker_follows_the_records(echo3, logs, tmp_path):
    worker = echo3[0]
    dns = DnsServer(tmp_path / "mapping.json")
    dns.set({"workers.test.": ["127.0.0.1"]})
    dns.start()
    r = None
    try:
        r = start_dns_router(logs, "--discovery-dns", f"dns://workers.test:{port_of(worker)}",
                             "--discovery-nameservers", dns.address, "--discovery-interval-s", "0.2",
                             "--health-interval-s", "0.2")
        wait_for(lambda: ready_status(r) == 200, "the discovered worker to be ready", 5)
        (entry,) = workers_of(r).values()
        assert entry["url"] == worker.url and entry["source"] == "dns"
        assert answered_by(chat(r)) == port_of(worker)

        dns.set({"workers.test.": []})
        t0 = time.monotonic()
        wait_for(lambda: ready_status(r) == 503, "/ready to turn 503 once the records are gone", 2)
        assert time.monotonic() - t0 < 2
        state = workers_of(r)
        assert worker.url not in state or state[worker.url]["draining"] is True
        wait_for(lambda: worker.url not in workers_of(r), "the drained worker to be removed", 3)
        assert chat(r).status_code == 503

        dns.set({"workers.test.": ["127.0.0.1"]})
        wait_for(lambda: ready_status(r) == 200, "the worker to come back with its record", 3)
        assert answered_by(chat(r)) == port_of(worker)
    finally:
        if r is not None:
            r.stop()
        dns.stop()
