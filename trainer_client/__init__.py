"""genrm-platform trainer client: the only package a trainer imports (httpx + pydantic, no torch)."""

from trainer_client.client import AsyncGenRMClient, GenRMClient
from trainer_client.errors import GenRMError

__all__ = ["AsyncGenRMClient", "GenRMClient", "GenRMError"]
