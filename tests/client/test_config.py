"""trainer_client/config.py and the transports' words: a URL is checked when a client is made, and a router that
cannot be reached is said in words after the retries, with both transports."""

from __future__ import annotations

import pytest

from services.local_stack import free_port
from trainer_client import GenRMClient, GenRMError, RewardClient


@pytest.mark.parametrize("url", ["127.0.0.1:39999", "localhost", "ftp://127.0.0.1:1", "http://", "http://a:port"])
@pytest.mark.parametrize("make", [RewardClient, GenRMClient])
def test_a_bad_url_is_refused_when_the_client_is_made(make, url: str) -> None:
    with pytest.raises(ValueError, match=r"base_url|port"):
        make(url)


def test_the_environment_url_is_checked_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENRM_URL", "127.0.0.1:9000")
    with pytest.raises(ValueError, match="GENRM_URL must be an http:// or https:// URL"):
        RewardClient()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_refused_connection_is_said_in_words(transport: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    with RewardClient(url, transport=transport, timeout_s=3, max_retries=2) as client, \
            pytest.raises(GenRMError) as info:
        client.score({"solution": "\\boxed{1}", "ground_truth": "1"})
    message = str(info.value)
    assert f"cannot connect to {url} (connection refused)" in message
    assert "ClientConnectorError" not in message and "ConnectionKey" not in message
    assert info.value.attempts == 3
