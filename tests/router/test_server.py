"""router/server.py: the router speaks HTTPS with a certificate (and nothing else on that port)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from services.local_stack import free_port, spawn
from tests.conftest import wait_for
from tests.support.certificates import self_signed
from tests.support.router_calls import (
    CHAT,
    CHAT_PATH,
    port_of,
)


def test_tls(procs, logs, tmp_path):
    cert, key = self_signed(tmp_path)
    worker = procs.echo("tls")
    port = free_port()
    router = spawn(f"router-tls-{port}", f"https://127.0.0.1:{port}",
                   ["route", "--port", str(port), "--workers", worker.url, "--ssl-certfile", str(cert),
                    "--ssl-keyfile", str(key), "--health-interval-s", "0.2", "--log-level", "warning"], log_dir=logs)
    procs.children.append(router)
    trust = ssl.create_default_context(cafile=str(cert))

    def ready() -> bool:
        assert router.process.poll() is None, f"router exited:\n{router.log_tail()}"
        try:
            return httpx.get(router.url + "/ready", verify=trust, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, "the TLS router to be ready", 30, every_s=0.1)
    with httpx.Client(verify=trust, timeout=10) as c:
        resp = c.post(router.url + CHAT_PATH, json=CHAT)
        assert resp.status_code == 200 and resp.json()["worker"] == port_of(worker)
        assert c.get(router.url + "/workers").json()["workers"][0]["url"] == worker.url
    with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
        httpx.get(router.url + "/health", timeout=5)
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
