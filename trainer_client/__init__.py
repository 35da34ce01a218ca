"""genrm-platform trainer client: the only package a trainer imports (httpx + pydantic, no torch)."""

from trainer_client.client import AsyncGenRMClient, GenRMClient
from trainer_client.errors import GenRMError
from trainer_client.reward_client import AsyncRewardClient, RewardClient

__all__ = ["AsyncGenRMClient", "AsyncRewardClient", "GenRMClient", "GenRMError", "RewardClient"]
