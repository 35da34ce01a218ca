"""The clients clean up after themselves: no "unclosed event loop", "Unclosed client session" or "Unclosed
connector" warning, whether closed, never closed, or used through ``asyncio.run`` (TRL's ``RemoteReward``).

Each case runs in a fresh interpreter with ResourceWarnings shown, against the session's real stack, so
connections really were opened when the process ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

SAMPLE = "{'recipe': 'math', 'solution': '\\\\boxed{4}', 'ground_truth': '4'}"
CASES = {
    "sync-closed": f"c = RewardClient(URL, transport=T)\nassert c.score({SAMPLE})['score'] == 1.0\nc.close()",
    "sync-with": f"with RewardClient(URL, transport=T) as c:\n    assert c.score({SAMPLE})['score'] == 1.0",
    "sync-never-closed": f"c = RewardClient(URL, transport=T)\nassert c.score({SAMPLE})['score'] == 1.0",
    "openai-never-closed": "c = GenRMClient(URL, transport=T)\nassert c.models().data",
    "async-never-closed": (f"async def main():\n    c = AsyncRewardClient(URL, transport=T)\n"
                           f"    assert (await c.score({SAMPLE}))['score'] == 1.0\nasyncio.run(main())"),
    "trl-asyncio-run": ("async def main():\n    r = RemoteReward(URL, recipe='math')\n"
                        "    assert await r(['q'], ['\\\\boxed{4}'], answer=['4']) == [1.0]\nasyncio.run(main())"),
}
PRELUDE = ("import asyncio, gc\nfrom trainer_client import AsyncRewardClient, GenRMClient, RewardClient\n"
           "from trainer_client.adapters.trl import RemoteReward\n")


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("case", CASES)
def test_no_resource_warning(case: str, transport: str, stack) -> None:
    code = f"{PRELUDE}URL, T = {stack.url!r}, {transport!r}\n{CASES[case]}\ngc.collect()\nprint('ok')\n"
    result = subprocess.run([sys.executable, "-X", "dev", "-W", "default", "-c", code], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    for sign in ("ResourceWarning", "Unclosed", "unclosed", "Exception ignored", "Task was destroyed"):
        assert sign not in result.stderr, result.stderr
