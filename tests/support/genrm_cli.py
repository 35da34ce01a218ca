"""Running the ``genrm`` command as a real process (``python -m services.cli``) in tests."""

from __future__ import annotations

import subprocess
import sys


def genrm(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
