"""A newcomer's mistakes with the real `genrm` process: each is one clear line naming the setting, exit 2.

Busy ports, a missing or empty model directory, a YAML syntax error, zero replicas; a settings file with one
section means defaults for the other; Ctrl-C exits 130; `genrm up` prints the router's URL, not the servers'.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.local_stack import free_port


def _genrm(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2 and a single stderr line holding every word: no traceback, no asyncio/aiohttp warnings."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_route_on_a_busy_port_is_one_line(busy_port: int) -> None:
    result = _genrm("route", "--workers", "http://127.0.0.1:1", "--port", str(busy_port))
    _one_line(result, "'port'", "--port", "GENRM_ROUTER_PORT", f"127.0.0.1:{busy_port}", "address already in use")


def test_up_on_a_busy_port_is_one_line(busy_port: int, tiny_model: Path) -> None:
    result = _genrm("up", "--model", str(tiny_model), "--port", str(busy_port))
    _one_line(result, "'port'", "--port", "address already in use")


def test_serve_on_a_busy_port_fails_before_loading_the_model(busy_port: int, tiny_model: Path) -> None:
    t0 = time.monotonic()
    result = _genrm("serve", "--model", str(tiny_model), "--port", str(busy_port))
    _one_line(result, "'port'", "GENRM_SERVER_PORT", "address already in use")
    assert time.monotonic() - t0 < 20  # no model was loaded: torch is never even imported
    assert "serving model" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["serve", "up"])
def test_a_missing_model_directory_is_one_line(command: str, tmp_path: Path) -> None:
    result = _genrm(command, "--model", str(tmp_path / "nonexistent"), "--port", str(free_port()))
    _one_line(result, "'model'", "--model", "no such directory", "nothing is downloaded")


def test_an_empty_model_directory_is_one_line(tmp_path: Path) -> None:
    result = _genrm("serve", "--model", str(tmp_path), "--port", str(free_port()))
    _one_line(result, "'model'", "not a model directory", "empty", "config.json")


def test_a_model_directory_without_a_tokenizer_is_one_line(tmp_path: Path, tiny_model: Path) -> None:
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((tiny_model / name).read_bytes())
    result = _genrm("serve", "--model", str(tmp_path), "--port", str(free_port()))
    _one_line(result, "'model'", "no tokenizer files")


@pytest.mark.skipif(importlib.util.find_spec("sentencepiece") is not None, reason="sentencepiece is installed here")
def test_a_sentencepiece_only_tokenizer_without_sentencepiece_is_one_line(tmp_path: Path, tiny_model: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_model / name).read_bytes())
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\x05hello")  # loading it would need sentencepiece
    result = _genrm("serve", "--model", str(tmp_path), "--port", str(free_port()))
    _one_line(result, "'model'", "tokenizer.model", "pip install sentencepiece")


@pytest.mark.parametrize("command", ["serve", "route"])
def test_a_yaml_syntax_error_is_one_line(command: str, tmp_path: Path, tiny_model: Path) -> None:
    config = tmp_path / "genrm.yaml"
    config.write_text("server:\n  max_batch_size: [4\nrouter: {}\n")
    extra = ["--model", str(tiny_model)] if command == "serve" else ["--workers", "http://127.0.0.1:1"]
    result = _genrm(command, "--config", str(config), *extra)
    _one_line(result, str(config), "YAML syntax error at line 3")


def test_an_unknown_section_is_named(tmp_path: Path) -> None:
    config = tmp_path / "genrm.yaml"
    config.write_text("routr:\n  port: 1\n")
    result = _genrm("route", "--config", str(config), "--workers", "http://127.0.0.1:1")
    _one_line(result, "unknown section(s) routr", "router, server")


@pytest.mark.parametrize("replicas", ["0", "-1", "two"])
def test_up_refuses_a_replica_count_below_one(replicas: str) -> None:
    result = _genrm("up", "--replicas", replicas)
    assert result.returncode == 2
    assert "--replicas" in result.stderr and "Traceback" not in result.stderr


def _wait_line(proc: subprocess.Popen, prefix: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no line starting with {prefix!r}")


def test_up_with_a_server_only_config_uses_router_defaults(tmp_path: Path, tiny_model: Path) -> None:
    """`genrm up --config` with only a `server:` section: the router takes its defaults (and the reverse for a
    router-only file given to `genrm serve`). The output names the router's URL only: no server banners, no
    readiness-poll lines."""
    config = tmp_path / "genrm.yaml"
    config.write_text("server:\n  max_batch_size: 3\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--replicas", "1", "--model",
                             str(tiny_model), "--port", str(port), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _wait_line(proc, "router ready: ")
        assert f"http://127.0.0.1:{port} (1 server; started in " in line
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        output = proc.stdout.read() + proc.stderr.read()
        assert "Uvicorn running" not in output and "HTTP Request" not in output, output
        assert "router listening" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_with_a_router_only_config_starts(tmp_path: Path, tiny_model: Path) -> None:
    config = tmp_path / "genrm.yaml"
    config.write_text("router:\n  policy: round_robin\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--model", str(tiny_model), "--port",
                             str(port), "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()


def test_route_ctrl_c_exits_130_and_sigterm_0() -> None:
    for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 0)):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "route", "--workers", "http://127.0.0.1:1",
                                 "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"})
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                time.sleep(0.1)
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == status
            assert "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize("command", ["serve", "route"])
def test_help_shows_every_settings_env_var_and_default(command: str) -> None:
    from router.settings import RouterSettings
    from services.genrm_server.settings import ServerSettings

    cls = ServerSettings if command == "serve" else RouterSettings
    prefix = cls.model_config["env_prefix"]
    text = " ".join(_genrm(command, "--help", env={**os.environ, "COLUMNS": "400"}).stdout.split())
    for name, field in cls.model_fields.items():
        assert f"env: {prefix}{name.upper()}" in text, name
        default = field.get_default(call_default_factory=True)
        if default not in (None, "", []):
            shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
            assert f"[default: {shown}; env: {prefix}{name.upper()}]" in text, name


@pytest.mark.parametrize("command", ["serve", "route", "up", "score", "demo", "tiny-model"])
def test_help_has_a_description_and_no_raw_markup(command: str) -> None:
    result = _genrm(command, "--help")
    assert result.returncode == 0
    assert "``" not in result.stdout
    _usage, _, rest = result.stdout.partition("\n\n")
    assert not rest.startswith(("options:", "positional arguments:")), f"{command} --help has no description"


def test_up_help_shows_its_defaults() -> None:
    text = " ".join(_genrm("up", "--help").stdout.split())
    for default in ("Router port; 0 = a free port [default: router.port of --config or GENRM_ROUTER_PORT, else 9000]",
                    "[default: 300]", "[default: 2]"):
        assert default in text


def test_version() -> None:
    result = _genrm("--version")
    assert result.returncode == 0 and result.stdout.startswith("genrm ") and result.stdout.split()[1][0].isdigit()


def test_up_with_sandbox_replicas_serves_code_rewards() -> None:
    """`genrm up --replicas 0 --sandbox-replicas 1`: a code-only stack (no model loaded), behind one router."""
    from tests.sandbox.conftest import needs_bwrap

    if needs_bwrap.args and needs_bwrap.args[0]:
        pytest.skip(needs_bwrap.kwargs["reason"])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--replicas", "0", "--sandbox-replicas", "1",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _wait_line(proc, "router ready: ")
        assert f"http://127.0.0.1:{port} (0 servers + 1 sandbox; started in " in line
        solution = "```python\nprint(sum(map(int, input().split())))\n```"
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/reward", json={
            "recipe": "code", "solution": solution, "ground_truth": {"inputs": ["1 2"], "outputs": ["3"]}}, timeout=60)
        assert answer.status_code == 200 and answer.json()["status"] == "passed", answer.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_takes_the_model_and_port_from_the_config_file(tmp_path: Path, tiny_model: Path) -> None:
    """`genrm up --config` with server.model and router.port: the servers load that model (not the tiny default)
    and the router listens on that port."""
    port = free_port()
    config = tmp_path / "genrm.yaml"
    config.write_text(f"server:\n  model: {tiny_model}\nrouter:\n  port: {port}\n")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--replicas", "1", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert f"http://127.0.0.1:{port} " in _wait_line(proc, "router ready: ")
        card = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"][0]
        assert Path(card["root"]) == tiny_model
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert "embedded tiny" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_sets_the_judge_servers_default_recipe(tiny_model: Path) -> None:
    """`genrm up --recipe fapo`: a reward that names no recipe is judged by FAPO (asks the judge), not math."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--replicas", "1", "--model",
                             str(tiny_model), "--recipe", "fapo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_line(proc, "router ready: ")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/recipes", timeout=10).json()["default"] == "fapo"
        sample = {"question": "1+1?", "solution": "so \\boxed{2}", "ground_truth": "2"}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/reward", json=sample, timeout=120).json()
        assert answer["judge_asked"] is True, answer  # math would not ask a judge
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(("recipe", "words"), [("fapoo", ["unknown recipe 'fapoo'", "fapo"]),
                                               ("code", ["--sandbox-replicas"])])
def test_up_checks_its_recipe_up_front(recipe: str, words: list[str]) -> None:
    _one_line(_genrm("up", "--recipe", recipe, "--port", str(free_port())), "'recipe'", "--recipe", *words)


def test_up_checks_a_router_port_from_the_environment() -> None:
    result = _genrm("up", env={**os.environ, "GENRM_ROUTER_PORT": "abc"})
    _one_line(result, "'port'", "GENRM_ROUTER_PORT", "'abc'")


def test_up_checks_the_config_and_the_engine_up_front(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [\n")
    _one_line(_genrm("up", "--config", str(bad)), "YAML syntax error")
    _one_line(_genrm("up", "--engine", "openai", "--port", str(free_port())), "'upstream_url'", "--upstream-url")


@pytest.mark.parametrize(("args", "words"), [
    (["route", "--workers", "http://127.0.0.1:1", "--log-level", "verbose"], ["'log_level'", "'debug'"]),
    (["demo", "--replicas", "0"], ["'replicas'", "at least 1"]),
    (["demo", "--model", "/nonexistent"], ["'model'", "no such directory"]),
    (["serve", "--engine", "openai", "--upstream-url", "localhost:8000"], ["'upstream_url'", "http://"]),
])
def test_more_mistakes_are_one_line(args: list[str], words: list[str]) -> None:
    _one_line(_genrm(*args), *words)


def test_a_typo_in_the_config_is_named_with_a_guess(tmp_path: Path, tiny_model: Path) -> None:
    config = tmp_path / "genrm.yaml"
    config.write_text("server:\n  modle: /x\n")
    _one_line(_genrm("serve", "--config", str(config)), "unknown setting 'modle'", "server: section",
              "did you mean 'model'?")


def test_serve_says_where_it_listens() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--recipe", "math", "--engine", "none",
                             "--code-sandbox", "off", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "serving no model" in line:
                url = line.rsplit(" on ", 1)[1].strip()
                assert httpx.get(url + "/health", timeout=5).status_code == 200
                break
        else:
            raise AssertionError("genrm serve never said where it listens")
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_client_only_install_says_what_it_can_do(tmp_path: Path) -> None:
    """`pip install genrm-platform` (the trainer client, no YAML library): `genrm score` works, the rest says
    which extra to install instead of a traceback."""
    (tmp_path / "yaml.py").write_text("raise ModuleNotFoundError(\"No module named 'yaml'\", name='yaml')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    _one_line(_genrm("serve", "--help", env=env), "trainer client only", "genrm-platform[all]")
    scored = subprocess.run([sys.executable, "-m", "services.cli", "score", "-", "--url", "http://127.0.0.1:1",
                             "--timeout-s", "1"], input='{"solution": "x"}\n', capture_output=True, text=True,
                            env=env, timeout=60)
    assert scored.returncode == 1 and "cannot connect to http://127.0.0.1:1" in scored.stderr
