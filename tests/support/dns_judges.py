"""Judges behind a headless Service, on loopback, as the router sees them in Kubernetes.

GenRM servers (the openai engine in front of the scripted judge, FAPO recipe) listen on 127.0.0.2, 127.0.0.3, ...,
all on one port; a test DNS server (``dns_server.py``) answers the Service's name with the addresses a test
publishes; a real ``genrm route`` discovers them with ``--discovery-dns``. Tests change the records and signal the
servers as Kubernetes does when the HPA changes the Deployment's replicas. Every part is a real process.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from services.local_stack import Child, free_port, spawn, wait_ready
from tests.support.dns_records import DnsServer

NAME = "judges.test"


def fapo_sample(question: str, group_id: int, sleep_s: float = 0.0) -> dict[str, Any]:
    """A correct answer, so the FAPO recipe asks the judge; the scripted judge sleeps ``sleep_s`` first."""
    marker = f" <<sleep:{sleep_s}>>" if sleep_s else ""
    return {"recipe": "fapo", "question": question + marker, "solution": "\\boxed{2}", "ground_truth": "2",
            "group_id": group_id}


class DnsJudges:
    """The servers, the DNS zone and the router of one test; ``stop`` ends every process it started."""

    def __init__(self, judge_url: str, logs: Path, workdir: Path):
        self.judge_url, self.logs = judge_url, logs
        self.port = free_port()  # every server listens on it, each on its own loopback address
        self.dns = DnsServer(workdir / "zone.json")
        self.servers: dict[str, Child] = {}
        self.router: Child | None = None
        self.pool = ThreadPoolExecutor(64)
        self.publish()

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    # --- DNS --------------------------------------------------------------------------------------------------

    def publish(self, *hosts: str) -> None:
        """Make the Service's name resolve to ``hosts`` (what the endpoints controller does for ready pods)."""
        self.dns.set({NAME + ".": list(hosts)})

    def start_dns(self, timeout_s: float = 30.0) -> None:
        self.dns.start(timeout_s)

    # --- processes --------------------------------------------------------------------------------------------

    def start_server(self, host: str, *flags: str) -> Child:
        args = ["serve", "--engine", "openai", "--upstream-url", self.judge_url + "/v1", "--recipe", "fapo",
                "--host", host, "--port", str(self.port), "--log-level", "info", *flags]
        child = spawn(f"judge-server-{host}-{self.port}", self.url(host), args, log_dir=self.logs)
        self.servers[host] = child
        wait_ready(child, time.monotonic() + 60)
        return child

    def start_router(self, *flags: str) -> Child:
        port = free_port()
        args = ["route", "--port", str(port), "--log-level", "warning",
                "--discovery-dns", f"dns://{NAME}:{self.port}", "--discovery-nameservers", self.dns.address,
                "--discovery-interval-s", "0.2", "--health-interval-s", "0.2", *flags]
        self.router = spawn(f"dns-router-{port}", f"http://127.0.0.1:{port}", args, log_dir=self.logs)
        wait_ready(self.router, time.monotonic() + 60)  # /ready: at least one discovered server is ready
        return self.router

    def sigterm(self, host: str) -> None:
        """What the kubelet sends a pod the ReplicaSet deletes (there is no preStop hook: the server waits itself)."""
        os.kill(self.servers[host].process.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for child in [*([self.router] if self.router else []), *self.servers.values()]:
            if child.process.poll() is None:
                child.process.kill()
            child.wait_or_kill(10)
        self.dns.stop()

    # --- the router's view ------------------------------------------------------------------------------------

    def workers(self) -> dict[str, dict[str, Any]]:
        assert self.router is not None
        return {w["url"]: w for w in httpx.get(self.router.url + "/workers", timeout=5).json()["workers"]}

    def routable(self) -> set[str]:
        """Hosts the router may send a new request to now."""
        return {url.split("//")[1].split(":")[0] for url, w in self.workers().items() if w["available"]}

    def in_flight(self) -> dict[str, int]:
        return {url.split("//")[1].split(":")[0]: w["in_flight"] for url, w in self.workers().items()}

    def reward(self, body: dict[str, Any], timeout_s: float = 60.0) -> httpx.Response:
        assert self.router is not None
        return httpx.post(self.router.url + "/v1/reward", json=body, timeout=timeout_s)

    def submit(self, body: dict[str, Any]) -> Future[httpx.Response]:
        return self.pool.submit(self.reward, body)

    def submit_and_see(self, body: dict[str, Any], timeout_s: float = 10.0) -> tuple[Future[httpx.Response], str]:
        """Send one slow call and return it with the host it was placed on (the one whose in-flight count rose).
        Only valid while no other call starts or ends: the tests' other calls sleep well past this."""
        before = self.in_flight()
        future = self.submit(body)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            after = self.in_flight()
            grew = [h for h, n in after.items() if n > before.get(h, 0)]
            if grew:
                assert len(grew) == 1 and sum(after.values()) == sum(before.values()) + 1, (before, after)
                return future, grew[0]
            assert not future.done(), f"the call ended before it was seen in flight: {future.result().text}"
            time.sleep(0.01)
        raise AssertionError(f"the call never showed in the router's in-flight counts: {before}")

    def router_metric(self, name: str, **labels: str) -> float:
        """Sum of a router metric's samples whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        assert self.router is not None
        text = httpx.get(self.router.url + "/metrics", timeout=5).text
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name in (name, name + "_total") and all(s.labels.get(k) == v for k, v in labels.items()))
