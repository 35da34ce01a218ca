"""The Helm chart (helm/genrm-platform), offline: lint it, render it for the default values and every
``ci/*-values.yaml``, validate each manifest against the Kubernetes 1.30 schemas, and check that the parts fit
together (the router's DNS names are the headless Services, selectors select the right pods, the rendered commands
are settings the real ``genrm`` CLI accepts, the recipes ConfigMap loads with the server's own loader, the sandbox
servers' securityContext is the documented one)."""

from __future__ import annotations

import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from common.settings_io import overrides_from_args
from router.discovery import parse_dns_target
from router.policies import POLICIES
from router.settings import RouterSettings
from services.cli import build_parser
from services.genrm_server.recipes.custom import CustomRecipeSpec, load_custom_recipes
from services.genrm_server.settings import ServerSettings

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (pip install -e '.[deploy-test]')")

CHART = Path(__file__).resolve().parents[2] / "helm" / "genrm-platform"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "rl", "ml-team"
KUBE_VERSION = "1.30.0"
CRD_KINDS = {"ServiceMonitor"}  # not in kubernetes_validate's schemas: checked structurally below
RECIPES_MOUNT = "/etc/genrm/recipes/recipes.yaml"


# ---------------------------------------------------------------------------------------------
# Rendering


@dataclass
class Rendered:
    """One `helm template`: the effective values, the parsed manifests and NOTES.txt."""

    values: dict[str, Any]
    objects: list[dict[str, Any]]
    notes: str

    def all(self, kind: str, component: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind
                and (component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component)]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = self.all(kind, component)
        assert len(found) == 1, f"expected one {kind} ({component}), got {[o['metadata']['name'] for o in found]}"
        return found[0]

    def maybe(self, kind: str, component: str | None = None) -> dict[str, Any] | None:
        found = self.all(kind, component)
        assert len(found) <= 1
        return found[0] if found else None

    def pod(self, component: str) -> dict[str, Any]:
        return self.one("Deployment", component)["spec"]["template"]

    def container(self, component: str) -> dict[str, Any]:
        (container,) = self.pod(component)["spec"]["containers"]
        return container

    @property
    def server_headless(self) -> dict[str, Any]:
        (svc,) = [s for s in self.all("Service", "server") if s["spec"].get("clusterIP") == "None"]
        return svc

    @property
    def sandbox_on(self) -> bool:
        return bool(self.values["sandbox"]["enabled"])

    @property
    def components(self) -> tuple[str, ...]:
        """The Deployments' components: server and router, and sandbox when it is on."""
        return ("server", "router", "sandbox") if self.sandbox_on else ("server", "router")


def render(chart: Any, values: dict[str, Any] | None, name: str = RELEASE) -> Rendered:
    out = chart.render(values, name=name, namespace=NAMESPACE)
    notes = ""
    objects: list[dict[str, Any]] = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return Rendered(chart.merge_values(values or {}), objects, notes)


def load_values(path: Path | None) -> dict[str, Any] | None:
    """A values file read by Helm's own parser (`-f`), which differs from PyYAML (unquoted True keys, numbers)."""
    return helm.values_from_yaml(path.read_text()) if path else None


@pytest.fixture(scope="module")
def chart() -> Any:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module", params=[None, *CI_VALUES], ids=["default", *(p.stem for p in CI_VALUES)])
def values_file(request: pytest.FixtureRequest) -> Path | None:
    return request.param


@pytest.fixture(scope="module")
def rendered(chart: Any, values_file: Path | None) -> Rendered:
    return render(chart, load_values(values_file))


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector selects an object with these labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A Service/probe port (number or name) resolved against the container's ports."""
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in container["ports"]]
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


# ---------------------------------------------------------------------------------------------
# The chart as a whole


def test_chart_metadata(chart: Any) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta.get("appVersion")
    assert not meta.get("dependencies"), "the chart must lint and render offline: no dependencies"
    assert CI_VALUES, "ci/*-values.yaml files are missing"


def test_lint_is_clean(values_file: Path | None) -> None:
    report = helm.lint(CHART, load_values(values_file), strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error; 1 is info
    assert not problems and not report["errors"], report


def test_manifests_are_valid_kubernetes_1_30(rendered: Rendered) -> None:
    names: set[tuple[str, str]] = set()
    for obj in rendered.objects:
        meta = obj["metadata"]
        key = (obj["kind"], meta["name"])
        assert key not in names, f"duplicate {key}"
        names.add(key)
        assert len(meta["name"]) <= 63
        assert meta["namespace"] == (rendered.values["serviceMonitor"]["namespace"] or NAMESPACE
                                     if obj["kind"] == "ServiceMonitor" else NAMESPACE)
        labels = meta["labels"]
        for label in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                      "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert labels.get(label), f"{key} lacks label {label}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_long_release_names_stay_valid_and_distinct(chart: Any) -> None:
    release = "a-very-long-release-name-that-is-fifty-three-chars-x"[:53]
    helm.validate_release_name(release)
    out = render(chart, load_values(CHART / "ci" / "all-on-values.yaml"), name=release)
    names = [(o["kind"], o["metadata"]["name"]) for o in out.objects]
    assert len(set(names)) == len(names)
    assert all(len(name) <= 63 and not name.endswith("-") for _, name in names)
    args = out.container("router")["args"]
    assert flag(args, "--discovery-dns").startswith(f"dns://{out.server_headless['metadata']['name']}.")


# ---------------------------------------------------------------------------------------------
# Wiring: DNS discovery, services, selectors


def test_router_discovers_the_headless_services(rendered: Rendered) -> None:
    """One DNS name per headless Service (servers, and sandbox servers when on), each selecting its pods only."""
    targets = flag(rendered.container("router")["args"], "--discovery-dns").split(",")
    services = [rendered.server_headless]
    if rendered.sandbox_on:
        (sandbox,) = [s for s in rendered.all("Service", "sandbox") if s["spec"].get("clusterIP") == "None"]
        services.append(sandbox)
    else:
        assert not rendered.all("Service", "sandbox")
    assert len(targets) == len(services)
    for target, svc, component in zip(targets, services, ("server", "sandbox"), strict=False):
        assert svc["spec"].get("publishNotReadyAddresses") is not True  # DNS lists only pods that passed /ready
        name, port, scheme = parse_dns_target(target)
        assert name == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
        assert scheme == "http"
        (svc_port,) = svc["spec"]["ports"]
        assert port == svc_port["port"] == 8000
        # The Service selects its component's pods (and only them); its target port is their port 8000.
        for other in rendered.components:
            assert selects(svc["spec"]["selector"], rendered.pod(other)["metadata"]["labels"]) == (other == component)
        assert container_port(rendered.container(component), svc_port["targetPort"]) == 8000


def test_router_service_reaches_the_router(rendered: Rendered) -> None:
    svc = rendered.one("Service", "router")
    assert svc["spec"].get("clusterIP") != "None"
    assert selects(svc["spec"]["selector"], rendered.pod("router")["metadata"]["labels"])
    assert not selects(svc["spec"]["selector"], rendered.pod("server")["metadata"]["labels"])
    (port,) = svc["spec"]["ports"]
    assert port["port"] == rendered.values["router"]["service"]["port"]
    assert container_port(rendered.container("router"), port["targetPort"]) == 9000
    assert flag(rendered.container("router")["args"], "--port") == "9000"
    assert flag(rendered.container("server")["args"], "--port") == "8000"


def test_deployment_selectors_and_pdbs_select_their_pods(rendered: Rendered) -> None:
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in rendered.all("Deployment")} == set(
        rendered.components)
    for component in rendered.components:
        deployment = rendered.one("Deployment", component)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
        pdb = rendered.maybe("PodDisruptionBudget", component)
        assert (pdb is not None) == rendered.values[component]["pdb"]["enabled"]
        if pdb:
            assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
            for other in set(rendered.components) - {component}:
                assert not selects(pdb["spec"]["selector"]["matchLabels"], rendered.pod(other)["metadata"]["labels"])
    if not rendered.sandbox_on:
        assert not rendered.all("PodDisruptionBudget", "sandbox") and not rendered.all("HorizontalPodAutoscaler",
                                                                                        "sandbox")


def test_probes(rendered: Rendered) -> None:
    server, router = rendered.container("server"), rendered.container("router")
    for probe, path in (("startupProbe", "/ready"), ("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = server[probe]["httpGet"]
        assert (get["path"], container_port(server, get["port"])) == (path, 8000), probe
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= rendered.values["server"]["startupTimeoutSeconds"]
    assert "startupProbe" not in router
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = router[probe]["httpGet"]
        assert (get["path"], container_port(router, get["port"])) == (path, 9000), probe


def test_gpu_requests_follow_values(rendered: Rendered) -> None:
    gpus = rendered.values["server"]["gpu"]
    resources = rendered.container("server")["resources"]
    if gpus > 0:
        assert resources["limits"]["nvidia.com/gpu"] == gpus
        assert resources["requests"]["nvidia.com/gpu"] == gpus  # extended resources: requests == limits
    else:
        assert "nvidia.com/gpu" not in str(rendered.objects)
    for key, value in rendered.values["server"]["resources"].get("limits", {}).items():
        assert resources["limits"][key] == value  # the GPU is added, nothing of the user's is lost


def test_pods_run_as_non_root(rendered: Rendered) -> None:
    for component in ("server", "router"):
        spec = rendered.pod(component)["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False  # GENRM_ROUTER_PORT=tcp://... would be read as a setting
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        volumes = {v["name"] for v in spec["volumes"]}
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert set(mounts.values()) <= volumes
            if ctx.get("readOnlyRootFilesystem"):
                assert "/tmp" in mounts  # the one place Python, torch and friends always write


def test_images(rendered: Rendered, chart: Any) -> None:
    app = chart.metadata["appVersion"]
    server = rendered.values["server"]["image"]
    tag = server["tag"] or f"{app}-{server['variant']}"
    expected = f"{server['repository']}:{tag}"
    assert rendered.container("server")["image"] == expected
    assert expected.startswith("ghcr.io/genrm-platform/genrm-server:")
    router = rendered.values["router"]["image"]
    assert rendered.container("router")["image"] == f"{router['repository']}:{router['tag'] or app}"
    if rendered.sandbox_on:  # the slim sandbox image (deploy/Dockerfile.sandbox), no variant
        sandbox = rendered.values["sandbox"]["image"]
        assert rendered.container("sandbox")["image"] == f"{sandbox['repository']}:{sandbox['tag'] or app}"
        assert sandbox["repository"].endswith("/genrm-sandbox")


# ---------------------------------------------------------------------------------------------
# The rendered commands are settings the real CLI accepts


def _env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """A container's env as the process would see it (secret refs looked up; an existing Secret gets stand-ins)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        secret = secrets.get(ref["name"])
        if secret is None:
            env[var["name"]] = f"stand-in-{ref['key']}"  # a Secret made outside the chart
        elif ref["key"] in secret:
            env[var["name"]] = secret[ref["key"]]
        else:
            assert ref.get("optional"), f"{var['name']}: Secret {ref['name']} has no key {ref['key']}"
    return env


def _settings(cls: type, args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    prefix = cls.model_config["env_prefix"]
    for name in [n for n in os.environ if n.startswith("GENRM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(prefix):  # pydantic-settings ignores unknown prefixed names: a typo would pass silently
            assert name.removeprefix(prefix).lower() in cls.model_fields, f"{name} is no setting"
        monkeypatch.setenv(name, value)
    parsed = build_parser().parse_args(args)
    return cls.load(None, **overrides_from_args(parsed, cls))


def _secrets(rendered: Rendered) -> dict[str, dict[str, str]]:
    return {s["metadata"]["name"]: s["stringData"] for s in rendered.all("Secret")}


def test_server_command_is_valid(rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    container = rendered.container("server")
    values = rendered.values["server"]
    assert container["command"] == ["genrm"]
    args = list(container["args"])
    if RECIPES_MOUNT in args:  # the server reads the ConfigMap's file: give it the rendered one
        recipes = tmp_path / "recipes.yaml"
        recipes.write_text(rendered.one("ConfigMap")["data"]["recipes.yaml"])
        args[args.index(RECIPES_MOUNT)] = str(recipes)
    settings = _settings(ServerSettings, args, _env(container, _secrets(rendered)), monkeypatch)
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.engine == values["engine"]
    assert settings.recipe == values["recipe"]
    if values.get("maxBatchSize") is None:  # the engine's own: vLLM keeps its max_num_seqs only when this is unset
        assert "max_batch_size" not in settings.model_fields_set
    else:
        assert settings.max_batch_size == values["maxBatchSize"]
    if settings.engine == "vllm":
        assert settings.gpu_memory_utilization == values["gpuMemoryUtilization"]
    if settings.engine == "openai":
        assert settings.upstream_url == values["upstreamUrl"]
        assert settings.model is None
    else:  # the model directory is on the volume mounted at /models
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert settings.model.startswith(mounts["model"]["mountPath"] + "/")
        assert mounts["model"].get("readOnly") is True
    for init in rendered.pod("server")["spec"].get("initContainers", []):
        parsed = build_parser().parse_args(init["args"])  # the tiny-model writer's flags exist too
        assert Path(parsed.dir) == Path(settings.model)


def test_router_command_is_valid(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    container = rendered.container("router")
    assert container["command"] == ["genrm"]
    settings = _settings(RouterSettings, container["args"], _env(container, _secrets(rendered)), monkeypatch)
    router, auth = rendered.values["router"], rendered.values["auth"]
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert (settings.policy, settings.reward_policy) == (router["policy"], router["rewardPolicy"])
    assert settings.discovery_dns and not settings.workers
    assert settings.max_in_flight_per_worker == router["maxInFlightPerWorker"]
    assert settings.key_weights == router["keyWeights"]
    if not auth["existingSecret"]:
        assert settings.api_keys == auth["apiKeys"]
        assert settings.admin_api_keys == auth["adminApiKeys"]


# ---------------------------------------------------------------------------------------------
# The sandbox servers


README = CHART.parents[1] / "README.md"


def _documented_sandbox_pod() -> dict[str, Any]:
    """The pod settings README's "Sandbox requirements" gives for Kubernetes (its yaml block with hostUsers)."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "hostUsers:" in b]
    return yaml.safe_load(block)


def test_sandbox_is_off_by_default_and_on_adds_its_objects(chart: Any) -> None:
    off = render(chart, None)
    assert not any(o["metadata"]["labels"].get("app.kubernetes.io/component") == "sandbox" for o in off.objects)
    assert "," not in flag(off.container("router")["args"], "--discovery-dns")
    on = render(chart, {"sandbox": {"enabled": True}, "networkPolicy": {"enabled": True},
                        "serviceMonitor": {"enabled": True}})
    kinds = sorted(o["kind"] for o in on.objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "sandbox")
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget", "Service",
                     "ServiceMonitor"]
    assert "sandbox server(s)" in on.notes and "/run_code" in on.notes


def test_sandbox_security_context_is_the_documented_one(chart: Any) -> None:
    """The chart's default sandbox pod is README's, item by item; nothing privileged, no host namespace."""
    pod = render(chart, {"sandbox": {"enabled": True}}).pod("sandbox")["spec"]
    (container,) = pod["containers"]
    documented = _documented_sandbox_pod()
    assert pod["hostUsers"] is documented["hostUsers"] is False
    assert pod["securityContext"] == documented["securityContext"]
    assert container["securityContext"] == documented["containers"][0]["securityContext"]
    assert container["securityContext"]["procMount"] == "Unmasked"
    assert set(container["securityContext"]["capabilities"]["add"]) <= {"SETUID", "SETGID", "KILL"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    assert not container["securityContext"].get("privileged")
    assert all("hostPath" not in v for v in pod["volumes"])


def test_sandbox_command_is_valid(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    if not rendered.sandbox_on:
        return
    container = rendered.container("sandbox")
    values = rendered.values["sandbox"]
    assert container["command"] == ["genrm"]
    settings = _settings(ServerSettings, container["args"], _env(container, {}), monkeypatch)
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.engine == "none" and not settings.has_model and settings.recipe == "code"
    assert settings.sandbox_isolation == "bwrap"  # never unsandboxed
    assert settings.sandbox_workers == values["workers"] and settings.sandbox_queue_size == values["queueSize"]
    # one program per CPU: more workers than the CPU limit would have programs time out on a busy pod
    assert values["workers"] <= _cpus(values["resources"]["limits"]["cpu"])
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = container[probe]["httpGet"]
        assert (get["path"], container_port(container, get["port"])) == (path, 8000), probe
    spec = rendered.pod("sandbox")["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}  # read-only root: the server's /tmp


def _cpus(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_model_volume_follows_source(rendered: Rendered) -> None:
    model = rendered.values["server"]["model"]
    spec = rendered.pod("server")["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    args = rendered.container("server")["args"]
    if model["source"] == "none":
        assert "model" not in volumes and "--model" not in args
        return
    volume = volumes["model"]
    if model["source"] == "pvc":
        assert volume["persistentVolumeClaim"] == {"claimName": model["existingClaim"], "readOnly": True}
    elif model["source"] == "hostPath":
        assert volume["hostPath"]["path"] == model["hostPath"]
    else:  # tiny: generated into an emptyDir by an init container before the server starts
        assert "emptyDir" in volume
        assert flag(args, "--model") == "/models/tiny"
        assert [c["name"] for c in spec["initContainers"]] == ["tiny-model"]
        return
    assert flag(args, "--model") == f"/models/{model['path']}"


# ---------------------------------------------------------------------------------------------
# Optional parts


def test_recipes_configmap_loads_with_the_server_loader(rendered: Rendered, tmp_path: Path) -> None:
    recipes = rendered.values["recipes"]
    configmap = rendered.maybe("ConfigMap")
    args = rendered.container("server")["args"]
    if not recipes:
        assert configmap is None and "--recipes-file" not in args
        return
    text = configmap["data"]["recipes.yaml"]
    assert list(yaml.safe_load(text)) == ["recipes"]
    path = tmp_path / "recipes.yaml"
    path.write_text(text)
    loaded = load_custom_recipes(path)  # exactly what `genrm serve --recipes-file` does at start-up
    assert [r.name for r in loaded] == [r["name"] for r in recipes]
    # The file the server is told to read is the ConfigMap's key, in the directory the ConfigMap is mounted at.
    (volume,) = [v for v in rendered.pod("server")["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (mount,) = [m for m in rendered.container("server")["volumeMounts"] if m["name"] == volume["name"]]
    assert flag(args, "--recipes-file") == f"{mount['mountPath']}/recipes.yaml"
    assert rendered.pod("server")["metadata"]["annotations"]["checksum/recipes"]  # edits roll the servers


def test_unquoted_boolean_table_keys_are_refused(chart: Any) -> None:
    """Helm turns an unquoted `True:` key into "true", which \\boxed{True} never matches: every sample would get
    the default score. The chart refuses it instead of shipping a silently wrong reward."""
    values = helm.values_from_yaml(
        "recipes:\n"
        "  - {name: v, description: d, template: '{solution}', parser: {type: last_boxed},\n"
        "     mapping: {type: table, values: {True: 1.0, False: 0.0}}}\n"
    )
    assert values["recipes"][0]["mapping"]["values"] == {"true": 1, "false": 0}
    with pytest.raises(helm.HelmRenderError, match="quote the keys"):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    values["recipes"][0]["mapping"]["values"] = {"True": 1.0, "False": 0.0}
    assert render(chart, values).one("ConfigMap")


@pytest.mark.parametrize("component", ["server", "sandbox"])
def test_network_policy_admits_only_routers(rendered: Rendered, component: str) -> None:
    policy = rendered.maybe("NetworkPolicy", component)
    on = rendered.values["networkPolicy"]["enabled"] and component in rendered.components
    assert (policy is not None) == on
    if policy is None:
        return
    labels = {c: rendered.pod(c)["metadata"]["labels"] for c in rendered.components}
    spec = policy["spec"]
    for other, pod_labels in labels.items():
        assert selects(spec["podSelector"]["matchLabels"], pod_labels) == (other == component)
    (rule,) = spec["ingress"]
    peers = rule["from"]
    for other, pod_labels in labels.items():
        assert selects(peers[0]["podSelector"]["matchLabels"], pod_labels) == (other == "router")
    assert "namespaceSelector" not in peers[0]  # the router's own namespace only
    monitoring = rendered.values["networkPolicy"]["monitoringNamespaceSelector"]
    if monitoring:
        assert peers[1]["namespaceSelector"] == monitoring
        assert peers[1].get("podSelector", {}) == rendered.values["networkPolicy"]["monitoringPodSelector"]
    assert len(peers) == 1 + bool(monitoring)
    assert [container_port(rendered.container(component), p["port"]) for p in rule["ports"]] == [8000]
    if component == "sandbox":  # nothing leaves a sandbox pod: an escaped program would reach nothing
        assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["egress"] == []
    else:
        assert spec["policyTypes"] == ["Ingress"]


def test_service_monitors_scrape_metrics(rendered: Rendered) -> None:
    monitors = rendered.all("ServiceMonitor")
    if not rendered.values["serviceMonitor"]["enabled"]:
        assert not monitors
        return
    auth = bool(rendered.values["auth"]["existingSecret"] or rendered.values["auth"]["apiKeys"]
                or rendered.values["auth"]["adminApiKeys"])
    assert sorted(m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors) == sorted(
        rendered.components)
    services = rendered.all("Service")
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        for key, value in rendered.values["serviceMonitor"]["labels"].items():
            assert monitor["metadata"]["labels"][key] == value  # what Prometheus selects ServiceMonitors by
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (target,) = [s for s in services if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
        (endpoint,) = spec["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in [p["name"] for p in target["spec"]["ports"]]
        component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "router" and auth:  # the router's /metrics is behind the API keys
            creds = endpoint["authorization"]["credentials"]
            assert endpoint["authorization"]["type"] == "Bearer"
            secret = _secrets(rendered).get(creds["name"])
            assert secret is not None or creds["name"] == rendered.values["auth"]["existingSecret"]
            if secret is not None:
                keys = rendered.values["auth"]["apiKeys"] + rendered.values["auth"]["adminApiKeys"]
                assert secret[creds["key"]] in keys
        else:
            assert "authorization" not in endpoint


@pytest.mark.parametrize("component", ["router", "sandbox"])
def test_hpa_scales_on_cpu(rendered: Rendered, component: str) -> None:
    if component not in rendered.components:
        return
    scaling = rendered.values[component]["autoscaling"]
    hpa = rendered.maybe("HorizontalPodAutoscaler", component)
    deployment = rendered.one("Deployment", component)
    if not scaling["enabled"]:
        assert hpa is None
        assert deployment["spec"]["replicas"] == rendered.values[component]["replicas"]
        return
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # else every upgrade resets what the HPA chose
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (scaling["minReplicas"], scaling["maxReplicas"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == scaling["targetCPUUtilizationPercentage"]
    assert rendered.container(component)["resources"]["requests"]["cpu"]  # utilization is relative to the request


def test_notes_print_the_router_url(rendered: Rendered) -> None:
    svc = rendered.one("Service", "router")
    port = svc["spec"]["ports"][0]["port"]
    assert f"http://{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{port}" in rendered.notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/{svc['metadata']['name']} 9000:{port}" in rendered.notes


# ---------------------------------------------------------------------------------------------
# Auth: chart-made Secret, existing Secret, none


@pytest.mark.parametrize("auth", [
    {"apiKeys": ["k1", "k2"], "adminApiKeys": ["adm"]},
    {"apiKeys": [], "adminApiKeys": ["adm"]},
    {"existingSecret": "team-keys"},
    {"existingSecret": "team-keys", "apiKeys": ["ignored"]},
    {},
], ids=["keys", "admin-only", "existing", "existing-wins", "none"])
def test_auth_secret_switch(chart: Any, auth: dict[str, Any]) -> None:
    out = render(chart, {"auth": auth, "serviceMonitor": {"enabled": True}})
    secret = out.maybe("Secret")
    env = {e["name"]: e for e in out.container("router").get("env", [])}
    monitor = out.one("ServiceMonitor", "router")["spec"]["endpoints"][0]
    if not auth:
        assert secret is None and not env and "authorization" not in monitor
        assert "Auth is off" in out.notes
        return
    refs = {name: env[name]["valueFrom"]["secretKeyRef"] for name in
            ("GENRM_ROUTER_API_KEYS", "GENRM_ROUTER_ADMIN_API_KEYS")}
    names = {ref["name"] for ref in refs.values()} | {monitor["authorization"]["credentials"]["name"]}
    if auth.get("existingSecret"):
        assert secret is None
        assert names == {"team-keys"}
        assert all(ref["optional"] for ref in refs.values())
        return
    assert names == {secret["metadata"]["name"]}
    data = secret["stringData"]
    assert data.get("api-keys") == (",".join(auth["apiKeys"]) or None)
    assert data["admin-api-keys"] == ",".join(auth["adminApiKeys"])
    assert data[monitor["authorization"]["credentials"]["key"]] == (auth["apiKeys"] + auth["adminApiKeys"])[0]
    assert out.pod("router")["metadata"]["annotations"]["checksum/auth"]  # rotated keys roll the routers


# ---------------------------------------------------------------------------------------------
# values.schema.json


def _with(path: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} from "a.b"."""
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


_RECIPE = {"name": "ok", "description": "d", "template": "{solution}", "parser": {"type": "last_boxed"},
           "mapping": {"type": "number"}}

BAD_VALUES = {
    "engine": (_with("server.engine", "foo"), "/server/engine"),
    "replicas-string": (_with("server.replicas", "two"), "/server/replicas"),
    "policy": (_with("router.rewardPolicy", "random"), "/router/rewardPolicy"),
    "unknown-top-level": ({"sever": {"replicas": 2}}, "sever"),
    "unknown-nested": (_with("server.gpus", 1), "gpus"),
    "openai-needs-upstream": (_with("server.engine", "openai"), "/server/upstreamUrl"),
    "vllm-needs-model": (_with("server.model.source", "none"), "/server/model/source"),
    "api-key-with-comma": (_with("auth.apiKeys", ["a,b"]), "/auth/apiKeys/0"),
    "key-weight-by-key": (_with("router.keyWeights", {"trainer-key-1": 2}), "trainer-key-1"),
    "key-weight-zero": (_with("router.keyWeights", {"anonymous": 0}), "/router/keyWeights/anonymous"),
    "recipe-without-mapping": ({"recipes": [{k: v for k, v in _RECIPE.items() if k != "mapping"}]}, "/recipes/0"),
    "recipe-bad-name": ({"recipes": [{**_RECIPE, "name": "my-judge"}]}, "/recipes/0/name"),
    "recipe-unknown-field": ({"recipes": [{**_RECIPE, "temprature": 0.5}]}, "temprature"),
    "server-engine-none": (_with("server.engine", "none"), "/server/engine"),
    "sandbox-unknown-key": (_with("sandbox.worker", 4), "worker"),
    "sandbox-workers-zero": (_with("sandbox.workers", 0), "/sandbox/workers"),
    "sandbox-runtime-default-seccomp": (_with("sandbox.podSecurityContext.seccompProfile", {"type": "RuntimeDefault"}),
                                        "/sandbox/podSecurityContext/seccompProfile/type"),
    "sandbox-localhost-without-profile": (_with("sandbox.podSecurityContext.seccompProfile", {"type": "Localhost"}),
                                          "/sandbox/podSecurityContext/seccompProfile"),
    "sandbox-runtime-default-apparmor": (_with("sandbox.podSecurityContext.appArmorProfile",
                                               {"type": "RuntimeDefault"}),
                                         "/sandbox/podSecurityContext/appArmorProfile/type"),
    "sandbox-masked-proc": (_with("sandbox.securityContext.procMount", "Default"),
                            "/sandbox/securityContext/procMount"),
    "sandbox-privilege-escalation": (_with("sandbox.securityContext.allowPrivilegeEscalation", True),
                                     "/sandbox/securityContext/allowPrivilegeEscalation"),
    "sandbox-sys-admin": (_with("sandbox.securityContext.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
                          "/sandbox/securityContext/capabilities/add/0"),
    "sandbox-keeps-capabilities": (_with("sandbox.securityContext.capabilities", {"drop": ["NET_RAW"]}),
                                   "/sandbox/securityContext/capabilities/drop"),
}


@pytest.mark.parametrize("values,where", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_rejects_bad_values(chart: Any, values: dict[str, Any], where: str) -> None:
    report = helm.lint(CHART, values, namespace=NAMESPACE)
    errors = [m["error"] for m in report["messages"] if m["severity"] == 3]
    assert errors and where in errors[0], report
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)  # what `helm install/template` runs into


def test_schema_matches_the_code(chart: Any) -> None:
    """Enums in the schema are the code's: a new engine or policy must reach the chart (and vice versa)."""
    schema = chart.schema
    assert schema["$schema"].startswith("http://json-schema.org/draft-07/")
    assert schema["additionalProperties"] is False
    server, router = schema["properties"]["server"]["properties"], schema["properties"]["router"]["properties"]
    # Every engine but `none`: a model-less server is a sandbox server, the `sandbox` Deployment's (which gives it
    # the securityContext bubblewrap needs and its own headless Service), never a `server` replica.
    engines = set(typing.get_args(ServerSettings.model_fields["engine"].annotation))
    assert "none" in engines and set(server["engine"]["enum"]) == engines - {"none"}
    assert set(router["policy"]["enum"]) == set(router["rewardPolicy"]["enum"]) == set(POLICIES)
    recipe = schema["properties"]["recipes"]["items"]
    assert set(recipe["properties"]) == set(CustomRecipeSpec.model_fields)
    assert set(recipe["required"]) == {n for n, f in CustomRecipeSpec.model_fields.items() if f.is_required()}


def test_policy_settings_are_the_policies_own(chart: Any, rendered: Rendered,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every policy setting is a Helm value with the code's default, and reaches the router as that setting."""
    expected = {f"{p.settings_prefix}{n}": f.default
                for p in POLICIES.values() for n, f in p.Config.model_fields.items()}
    values = chart.values["router"]["policySettings"]
    schema = chart.schema["properties"]["router"]["properties"]["policySettings"]["properties"]
    as_names = {_snake(k): v for k, v in values.items()}
    assert as_names == expected
    assert {_snake(k) for k in schema} == set(expected)
    container = rendered.container("router")
    settings = _settings(RouterSettings, container["args"], _env(container, _secrets(rendered)), monkeypatch)
    for camel, value in rendered.values["router"]["policySettings"].items():
        assert getattr(settings, _snake(camel)) == value


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
