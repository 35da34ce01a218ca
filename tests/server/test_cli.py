"""services/cli.py: the ``genrm`` command reports a bad setting or a missing config file and exits 2, ``--help``
explains each command, and ``serve`` speaks HTTPS with a certificate (uvicorn's options)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from services.local_stack import free_port, spawn
from tests.conftest import wait_for
from tests.support.certificates import self_signed
from tests.support.genrm_cli import genrm

SAMPLE = {"recipe": "math", "solution": "so \\boxed{4}", "ground_truth": "4"}


def test_cli_reports_bad_env_setting_and_exits_2(tiny_model):
    import os

    env = {**os.environ, "GENRM_SERVER_MAX_BATCH_SIZE": "lots"}
    result = genrm("serve", "--model", str(tiny_model), env=env)
    assert result.returncode == 2
    assert "max_batch_size" in result.stderr and "GENRM_SERVER_MAX_BATCH_SIZE" in result.stderr


def test_cli_missing_config_file():
    result = genrm("route", "--config", "/nonexistent.yaml", "--workers", "http://a:1")
    assert result.returncode == 2 and "config file not found" in result.stderr


@pytest.mark.parametrize("command", ["serve", "route", "up", "tiny-model", "demo"])
def test_help_explains_each_command(command):
    result = genrm(command, "--help")
    assert result.returncode == 0
    assert "usage: genrm " + command in result.stdout
    if command in ("serve", "route"):
        assert "GENRM_" in result.stdout and "[default:" in result.stdout


def test_https_with_a_self_signed_certificate(tiny_model, logs, tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    server = spawn(f"server-tls-{port}", f"https://127.0.0.1:{port}",
                   ["serve", "--model", str(tiny_model), "--port", str(port), "--ssl-certfile", str(cert),
                    "--ssl-keyfile", str(key), "--log-level", "warning"], log_dir=logs)
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        def ready() -> bool:
            assert server.process.poll() is None, f"server exited:\n{server.log_tail()}"
            try:
                return httpx.get(server.url + "/ready", verify=trust, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "the HTTPS server", timeout_s=60, every_s=0.2)
        resp = httpx.post(server.url + "/v1/reward", json=SAMPLE, verify=trust, timeout=10)
        assert resp.status_code == 200 and resp.json()["score"] == 1.0
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port is refused
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        with pytest.raises(httpx.ConnectError):  # and an untrusted certificate is not accepted silently
            httpx.get(server.url + "/health", timeout=2)
    finally:
        server.stop()
