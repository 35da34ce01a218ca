"""The router following several DNS names at once (judge servers and sandbox servers behind two Kubernetes
headless services): a real DNS server process, a real echo worker as the judge, a real sandbox server, a real
router; each name's records add and drain only that name's workers, and each request reaches its own pool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router.settings import RouterSettings
from services.local_stack import Child, free_port, spawn
from tests.conftest import start_script, wait_for
from tests.support.dns_records import DnsServer

PROGRAM = {"code": "print(int(input()) * 2)", "language": "python", "stdin": "21"}


def _port(child: Child) -> int:
    return int(child.url.rsplit(":", 1)[1])


def _workers(router: Child) -> dict[str, dict]:
    return {w["url"]: w for w in httpx.get(router.url + "/workers", timeout=5).json()["workers"]}


def _ready(router: Child, url: str) -> bool:
    assert router.process.poll() is None, f"router exited:\n{router.log_tail()}"
    try:
        entry = _workers(router).get(url)
    except httpx.HTTPError:  # not listening yet
        return False
    return bool(entry and entry["ready"] and not entry["draining"])


@pytest.fixture()
def judge(logs: Path) -> Iterator[Child]:
    child = start_script("support/echo_worker.py", "--models", "judge", "--recipes", "math,fapo", log_dir=logs,
                         name="names-judge")
    yield child
    child.stop()


@pytest.fixture()
def dns(tmp_path: Path) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path / "records.json")
    server.set({"judges.test.": ["127.0.0.1"], "sandboxes.test.": ["127.0.0.1"]})
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def router(logs: Path, dns: DnsServer, judge: Child, sandbox_server: Child) -> Iterator[Child]:
    port = free_port()
    targets = f"dns://judges.test:{_port(judge)},dns://sandboxes.test:{_port(sandbox_server)}"
    child = spawn(f"router-names-{port}", f"http://127.0.0.1:{port}",
                  ["route", "--port", str(port), "--log-level", "warning", "--discovery-dns", targets,
                   "--discovery-nameservers", dns.address, "--discovery-interval-s", "0.2",
                   "--health-interval-s", "0.2"], log_dir=logs)
    try:
        wait_for(lambda: _ready(child, judge.url) and _ready(child, sandbox_server.url), "both names' workers", 30)
        yield child
    finally:
        child.stop()


def test_each_name_feeds_its_own_pool_and_drains_only_its_own_workers(router, dns, judge, sandbox_server):
    workers = _workers(router)
    assert workers[judge.url]["source"] == f"dns:judges.test:{_port(judge)}"
    assert workers[sandbox_server.url]["source"] == f"dns:sandboxes.test:{_port(sandbox_server)}"
    with httpx.Client(base_url=router.url, timeout=30) as client:
        ran = client.post("/run_code", json=PROGRAM)
        assert ran.status_code == 200 and ran.json()["run_result"]["stdout"] == "42\n"  # the sandbox server ran it
        judged = client.post("/v1/reward", json={"recipe": "fapo", "solution": "x", "ground_truth": "1"})
        assert judged.status_code == 200 and judged.json()["worker"] == _port(judge)  # the echo judge answered

        dns.set({"judges.test.": [], "sandboxes.test.": ["127.0.0.1"]})  # the judges' service loses its pods
        wait_for(lambda: judge.url not in _workers(router), "the judge to be drained and removed", 10)
        assert _ready(router, sandbox_server.url)  # the other name's answer is untouched
        assert client.post("/run_code", json=PROGRAM).json()["run_result"]["stdout"] == "42\n"
        gone = client.post("/v1/reward", json={"recipe": "fapo", "solution": "x", "ground_truth": "1"})
        assert gone.status_code == 404 and "fapo" in gone.text  # no worker serves the judge recipe now

        dns.set({"judges.test.": ["127.0.0.1"], "sandboxes.test.": ["127.0.0.1"]})
        wait_for(lambda: _ready(router, judge.url), "the judge to come back with its record", 10)
        assert client.post("/v1/reward", json={"recipe": "fapo", "solution": "x", "ground_truth": "1"}).json()[
            "worker"] == _port(judge)


def test_several_names_from_flags_and_env(monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("GENRM_ROUTER_")]:
        monkeypatch.delenv(key)
    one = RouterSettings.load(None, discovery_dns="dns://genrm-server.ml.svc:8000")
    assert one.discovery_dns == ["dns://genrm-server.ml.svc:8000"]
    monkeypatch.setenv("GENRM_ROUTER_DISCOVERY_DNS", "dns://a.ml.svc:8000, dns+https://b.ml.svc:8443")
    assert RouterSettings.load().discovery_dns == ["dns://a.ml.svc:8000", "dns+https://b.ml.svc:8443"]
    with pytest.raises(ValueError, match="given twice"):
        RouterSettings.load(None, discovery_dns=["dns://a.ml.svc:8000", "dns://A.ml.svc.:8000"])
    with pytest.raises(ValueError, match="bad DNS discovery target"):
        RouterSettings.load(None, discovery_dns=["dns://a.ml.svc:8000", "http://b:8000"])
