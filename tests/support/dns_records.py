"""tests/support/dns_server.py run as a child process, with its records in a JSON file the test rewrites."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

from services.local_stack import free_port


class DnsServer:
    """tests/support/dns_server.py as a child process; ``set`` rewrites the mapping it re-reads on every query."""

    def __init__(self, mapping_file: Path, port: int = 0):
        self.mapping_file, self.port = mapping_file, port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, mapping: dict[str, list[str]]) -> None:
        tmp = self.mapping_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(mapping))
        tmp.replace(self.mapping_file)  # atomic: a query never sees half a file

    def start(self, timeout_s: float = 30.0) -> None:
        script = Path(__file__).with_name("dns_server.py")
        self.process = subprocess.Popen([sys.executable, str(script), str(self.port), str(self.mapping_file)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line = self.process.stdout.readline()
                if "listening" in line:
                    return
                if not line:
                    break
            if self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"dns_server.py on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
