"""Hostile programs against the real bubblewrap sandbox (specs/code-rule.md §5-§6): each gets the spec's status,
nothing escapes, other sessions keep working meanwhile, and nothing of it remains on the host afterwards."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.sandbox import Limits, RawRun, Sandbox
from tests.sandbox.conftest import needs_bwrap
from tests.support.sandbox_attacks import ATTACKS, Attack, AttackContext

pytestmark = needs_bwrap

PROJECT_FILE = Path(__file__).resolve().parents[2] / "pyproject.toml"
SECRET_VAR = "GENRM_TEST_API_KEY"


class LoopbackServer:
    """A TCP server on the host's 127.0.0.1 that counts the connections it accepts (a sandbox must make none)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackContext]:
    server = LoopbackServer()
    secret = "sk-" + secrets.token_hex(16)
    os.environ[SECRET_VAR] = secret  # in the server's (this process's) environment, as an API key would be
    models = tmp_path_factory.mktemp("model-dir")
    model_file = models / "weights.safetensors"
    model_file.write_text(f"weights {secret}")
    for path in (model_file, *model_file.parents):  # readable by anyone on the host: only the sandbox hides it
        if str(path) in ("/", "/tmp"):
            break
        path.chmod(0o755 if path.is_dir() else 0o644)
    host_dir = tmp_path_factory.mktemp("host-dir")
    host_dir.chmod(0o777)  # writable by anyone on the host: only the read-only root keeps it clean
    ctx = AttackContext(port=server.port, secret=secret, project_file=str(PROJECT_FILE), model_file=str(model_file),
                        host_dir=str(host_dir), marker="genrm-attack-" + secrets.token_hex(6))
    try:
        yield ctx
        assert server.accepted == 0, "a sandboxed program reached the host's loopback server"
    finally:
        server.close()
        os.environ.pop(SECRET_VAR, None)


def host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_contained(attack: Attack, ctx: AttackContext, raw: RawRun) -> None:
    detail = (f"{attack.name}: {raw.status} rc={raw.return_code}\n"
              f"stdout={raw.stdout[-2000:]}\nstderr={raw.stderr[-2000:]}")
    assert raw.status == attack.status, detail
    for text in attack.expect:
        assert text in raw.stdout, f"{attack.name}: {text!r} missing; {detail}"
    for text in attack.forbidden_texts(ctx):
        assert text not in raw.stdout and text not in raw.stderr, f"{attack.name}: {text!r} leaked; {detail}"
    assert not list(Path(ctx.host_dir).iterdir()), f"{attack.name} wrote into a host directory"
    assert not list(Path("/").glob(f"{ctx.marker}*")) and not list(Path("/tmp").glob(f"{ctx.marker}*"))


BENIGN = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"


async def benign_runs(sandbox: Sandbox, stop: asyncio.Event) -> int:
    """A well-behaved sample running beside the attacks: every run must pass."""
    done = 0
    while not stop.is_set():
        async with sandbox.open("python", BENIGN, Limits(wall_s=5)) as session:
            for i in range(3):
                raw = await session.run(f"{i} 40 2")
                assert (raw.status, raw.stdout) == ("ok", f"{42 + i}\n"), raw
                done += 1
    return done


async def run_attack(sandbox: Sandbox, attack: Attack, ctx: AttackContext) -> None:
    limits = Limits().with_(**attack.limits)
    async with sandbox.open(attack.language, attack.program(ctx), limits) as session:  # type: ignore[arg-type]
        failed = await session.prepare()
        raw = failed or await session.run(attack.stdin)
        assert_contained(attack, ctx, raw)
        if attack.daemon_marker:  # the run is over: its daemon must be gone already, not just at session end
            assert host_processes_with(ctx.marker) == [], f"{attack.name}: a daemon outlived its run"
        if failed is None:  # the sandbox still serves the session's next test normally
            again = await session.run(attack.stdin)
            assert again.status == attack.status, again
    assert host_processes_with(ctx.marker) == []


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_attack_is_contained(sandbox: Sandbox, context: AttackContext, attack: Attack) -> None:
    if attack.language == "cpp" and shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH: C++ cannot be compiled")
    stop = asyncio.Event()
    neighbour = asyncio.create_task(benign_runs(sandbox, stop))
    try:
        await run_attack(sandbox, attack, context)
    finally:
        stop.set()
    assert await neighbour >= 3
    assert sandbox.stats.failures == 0


async def test_all_attacks_at_once(make_sandbox, context: AttackContext) -> None:
    """Every attack concurrently on 4 workers (the queue holds the rest) beside well-behaved samples."""
    sandbox = make_sandbox(workers=4, queue_size=64)
    info = await sandbox.check()
    attacks = [a for a in ATTACKS if a.language in info.languages]
    stop = asyncio.Event()
    neighbours = [asyncio.create_task(benign_runs(sandbox, stop)) for _ in range(2)]
    try:
        await asyncio.gather(*(run_attack(sandbox, attack, context) for attack in attacks))
    finally:
        stop.set()
    assert all(n >= 3 for n in await asyncio.gather(*neighbours))
    assert sandbox.stats.failures == 0
    assert sandbox.stats.in_flight == 0 and sandbox.stats.sessions == 0 and sandbox.stats.queued == 0
