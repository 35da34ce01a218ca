"""Fixtures of the deploy tests: Serve's HTTP proxy on the session's Ray cluster, and a live sandbox server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.local_stack import Child, free_port
from tests.conftest import _start


@pytest.fixture(scope="session")
def ray_serve_url(ray_cluster: None) -> Iterator[str]:
    """Base URL of Serve's HTTP proxy on the session's Ray cluster (tests/conftest.py), started on first use."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.fixture(scope="session")
def sandbox_server(logs: Path) -> Iterator[Child]:
    """The CPU-only sandbox server as the images run it (`genrm serve --recipe code`), two sandbox workers."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap; scripts/setup.sh does as root)")
    child = _start("sandbox", ["serve", "--recipe", "code", "--sandbox-workers", "2", "--log-level", "warning"],
                   logs, free_port(), timeout_s=60)
    yield child
    child.stop()
