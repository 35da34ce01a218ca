"""The chart's judge autoscaling and drain, offline: the servers' HPA (autoscaling/v2 on a custom metric, off by
default) renders for each form and validates against the Kubernetes 1.30 schemas, the values are schema-checked,
the documented prometheus-adapter rule serves the gauge the server exports, and a pod being removed gets the
server's own drain (the rendered settings as the real ``genrm serve`` reads them) within its grace period."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.genrm_server.engines import create_engine
from services.genrm_server.metrics import ServerMetrics
from services.genrm_server.settings import ServerSettings
from tests.deploy.test_helm import (
    CHART,
    CI_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RECIPES_MOUNT,
    RELEASE,
    Rendered,
    _env,
    _secrets,
    _settings,
    load_values,
    render,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (pip install -e '.[deploy-test]')")

JUDGE_TIMEOUT_DEFAULT = ServerSettings.model_fields["judge_timeout_s"].default


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def _server_hpa(out: Rendered) -> dict[str, Any] | None:
    return out.maybe("HorizontalPodAutoscaler", "server")


def _validate(out: Rendered) -> None:
    for obj in out.objects:
        if obj["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_off_by_default(chart: Any) -> None:
    out = render(chart, None)
    assert chart.values["server"]["autoscaling"]["enabled"] is False
    assert _server_hpa(out) is None
    assert out.one("Deployment", "server")["spec"]["replicas"] == chart.values["server"]["replicas"]
    assert "autoscaled" not in out.notes


SCALING = {
    "pods-default": {"enabled": True},
    "pods-tuned": {"enabled": True, "minReplicas": 2, "maxReplicas": 32,
                   "metric": {"type": "Pods", "name": "vllm_num_requests_waiting", "averageValue": "500m"},
                   "scaleUp": {"stabilizationWindowSeconds": 30, "pods": 4, "periodSeconds": 120},
                   "scaleDown": {"stabilizationWindowSeconds": 1800, "pods": 2, "periodSeconds": 900}},
    "object-on-the-service": {"enabled": True, "maxReplicas": 4,
                              "metric": {"type": "Object", "name": "genrm_waiting_total", "averageValue": 12}},
}


@pytest.mark.parametrize("scaling", SCALING.values(), ids=SCALING.keys())
def test_server_hpa_renders_validates_and_follows_values(chart: Any, scaling: dict[str, Any]) -> None:
    out = render(chart, {"server": {"autoscaling": scaling}})
    _validate(out)
    want = out.values["server"]["autoscaling"]
    hpa = _server_hpa(out)
    assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
    deployment = out.one("Deployment", "server")
    assert "replicas" not in deployment["spec"]  # else every upgrade resets what the HPA chose
    spec = hpa["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", "Deployment", deployment["metadata"]["name"])
    assert (spec["minReplicas"], spec["maxReplicas"]) == (want["minReplicas"], want["maxReplicas"])
    (metric,) = spec["metrics"]
    metric_type = want["metric"]["type"]
    assert metric["type"] == metric_type
    source = metric[metric_type.lower()]
    assert source["metric"] == {"name": want["metric"]["name"]}
    assert source["target"] == {"type": "AverageValue", "averageValue": str(want["metric"]["averageValue"])}
    if metric_type == "Object":  # one value for the servers' headless Service, divided over its pods
        described = source["describedObject"]
        assert (described["kind"], described["name"]) == ("Service", out.server_headless["metadata"]["name"])
    for direction, select in (("scaleUp", "Max"), ("scaleDown", "Min")):
        behavior, values = spec["behavior"][direction], want[direction]
        assert behavior["stabilizationWindowSeconds"] == values["stabilizationWindowSeconds"]
        assert behavior["selectPolicy"] == select
        assert behavior["policies"] == [{"type": "Pods", "value": values["pods"],
                                         "periodSeconds": values["periodSeconds"]}]
    # RL traffic is one burst per step: scale-down must look back over more than a step and go gently.
    if scaling is SCALING["pods-default"]:
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
        assert spec["behavior"]["scaleDown"]["policies"][0]["value"] == 1
    assert f"{want['minReplicas']}-{want['maxReplicas']} (autoscaled)" in out.notes
    assert f"/namespaces/{NAMESPACE}/pods/*/{want['metric']['name']}" in out.notes


def test_the_documented_adapter_rule_serves_the_servers_queue_gauge(chart: Any) -> None:
    """values.yaml's prometheus-adapter rule (commented YAML) selects the gauge the server exports, keeps the pod
    and Service it came from, and names it as the HPA asks for it."""
    text = (CHART / "values.yaml").read_text()
    block = re.search(r"^  #   rules:\n((?:  #     .*\n)+)", text, re.M)
    assert block, "the adapter rule is missing from values.yaml"
    rule_text = "rules:\n" + "".join(line[5:] + "\n" for line in block.group(1).splitlines())
    (rule,) = yaml.safe_load(rule_text)["rules"]["custom"]
    series = re.match(r"^([A-Za-z_:][\w:]*)\{", rule["seriesQuery"]).group(1)
    assert {"namespace", "pod", "service"} <= set(rule["resources"]["overrides"])
    assert rule["name"]["as"] == chart.values["server"]["autoscaling"]["metric"]["name"]
    assert re.match(rule["name"]["matches"], series)
    assert "<<.GroupBy>>" in rule["metricsQuery"]
    settings = ServerSettings(engine="openai", upstream_url="http://127.0.0.1:1/v1")  # never started: no connection
    exported = ServerMetrics(create_engine(settings)).render().decode()
    assert re.search(rf"^{re.escape(series)}\{{[^}}]*\}} 0\.0$", exported, re.M), exported


@pytest.mark.parametrize("values_file", [None, *CI_VALUES], ids=["default", *(p.stem for p in CI_VALUES)])
def test_a_pod_being_removed_drains_within_its_grace_period(chart: Any, values_file: Path | None, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = render(chart, load_values(values_file))
    shutdown = out.values["server"]["shutdown"]
    container = out.container("server")
    args = list(container["args"])
    if RECIPES_MOUNT in args:  # the server reads the ConfigMap's file: give it the rendered one
        recipes = tmp_path / "recipes.yaml"
        recipes.write_text(out.one("ConfigMap")["data"]["recipes.yaml"])
        args[args.index(RECIPES_MOUNT)] = str(recipes)
    settings = _settings(ServerSettings, args, _env(container, _secrets(out)), monkeypatch)
    assert settings.shutdown_delay_s == shutdown["delaySeconds"] > 0  # /ready 503 while routers let go
    assert settings.shutdown_timeout_s == shutdown["timeoutSeconds"] >= settings.judge_timeout_s
    grace = out.pod("server")["spec"]["terminationGracePeriodSeconds"]
    assert grace >= settings.shutdown_delay_s + settings.shutdown_timeout_s + 10  # room for the engine to stop
    assert "lifecycle" not in container  # no preStop sleep: the server's own delay does its job
    # The router finds the servers through the headless Service, which lists ready pods only.
    assert out.server_headless["spec"].get("publishNotReadyAddresses") is not True


@pytest.mark.parametrize(("judge_env", "timeout", "refused"), [
    (None, JUDGE_TIMEOUT_DEFAULT, False),
    (None, JUDGE_TIMEOUT_DEFAULT - 1, True),
    ("600", 600, False),
    ("600.5", 600, True),
    ("3600", 1800, True),
], ids=["default", "below-the-default-judge-timeout", "both-lowered", "fraction-above", "judge-raised"])
def test_the_chart_refuses_a_drain_shorter_than_the_judge_timeout(chart: Any, judge_env: str | None, timeout: int,
                                                                   refused: bool) -> None:
    server: dict[str, Any] = {"shutdown": {"delaySeconds": 15, "timeoutSeconds": int(timeout)}}
    if judge_env is not None:
        server["extraEnv"] = [{"name": "GENRM_SERVER_JUDGE_TIMEOUT_S", "value": judge_env}]
    if refused:
        with pytest.raises(helm.HelmRenderError, match="below the judge timeout"):
            chart.render({"server": server}, name=RELEASE, namespace=NAMESPACE)
    else:
        assert render(chart, {"server": server}).pod("server")["spec"]["terminationGracePeriodSeconds"] > timeout


def test_min_above_max_is_refused(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="minReplicas"):
        chart.render({"server": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
                     name=RELEASE, namespace=NAMESPACE)


BAD = {
    "metric-type": ({"autoscaling": {"enabled": True, "metric": {"type": "External"}}},
                    "/server/autoscaling/metric/type"),
    "target-not-a-quantity": ({"autoscaling": {"metric": {"averageValue": "lots"}}},
                              "/server/autoscaling/metric/averageValue"),
    "target-zero": ({"autoscaling": {"metric": {"averageValue": 0}}}, "/server/autoscaling/metric/averageValue"),
    "metric-name-with-slash": ({"autoscaling": {"metric": {"name": "a/b"}}}, "/server/autoscaling/metric/name"),
    "min-zero": ({"autoscaling": {"minReplicas": 0}}, "/server/autoscaling/minReplicas"),
    "scale-down-no-pods": ({"autoscaling": {"scaleDown": {"pods": 0}}}, "/server/autoscaling/scaleDown/pods"),
    "unknown-key": ({"autoscaling": {"targetCPUUtilizationPercentage": 70}}, "targetCPUUtilizationPercentage"),
    "on-without-metric": ({"autoscaling": {"enabled": True, "metric": None}}, "metric"),
    "negative-delay": ({"shutdown": {"delaySeconds": -1}}, "/server/shutdown/delaySeconds"),
}


@pytest.mark.parametrize(("server", "where"), BAD.values(), ids=BAD.keys())
def test_schema_rejects_bad_scaling_values(chart: Any, server: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.render({"server": server}, name=RELEASE, namespace=NAMESPACE)
