"""One Ray cluster (with Serve's HTTP proxy on 127.0.0.1) for the whole test session, started on first use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.local_stack import free_port


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

