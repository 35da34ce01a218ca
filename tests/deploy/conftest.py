"""One Ray cluster (with Serve's HTTP proxy on 127.0.0.1) for the whole test session, started on first use."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from services.local_stack import free_port


@pytest.fixture(scope="session")
def ray_serve_url() -> Iterator[str]:
    """Base URL of Serve's HTTP proxy on a local Ray cluster shared by every test that asks for it."""
    pytest.importorskip("ray.serve")
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
