"""deploy/grafana: the dashboard's every PromQL expression names series that a live router, live GenRM servers and
a live sandbox server really export (scraped after real reward traffic and real programs, failures included), with
labels they really carry; every panel queries the provisioned Prometheus datasource; the layout is sound."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_router, start_script, start_server

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "genrm-platform.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
METRIC = re.compile(r"(?<![A-Za-z0-9_:$])((?:genrm_|vllm:)[A-Za-z0-9_:]+)")
TARGET_LABELS = {"instance", "job"}  # added by Prometheus at scrape time
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",), "summary": ("_count", "_sum", "_created"), "unknown": ("",)}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def _queries(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dash) for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


# -- live series ----------------------------------------------------------------------------------


# Programs for the sandbox server: one run ending each way the status label tells.
PROGRAMS = [
    {"code": "print(input())", "language": "python", "stdin": "ok"},
    {"code": "raise SystemExit(3)", "language": "python"},
    {"code": "while True: pass", "language": "python", "run_timeout": 1},
    {"code": "int main() { return }", "language": "cpp"},
]


@pytest.fixture(scope="module")
def live(stack, sandbox_server, logs) -> dict[str, Any]:
    """Reward traffic through the session stack's router (fan-out batch, judge recipe, OpenAI route, a bad
    request), through a second router that also fronts a worker dropping connections (retries, failures,
    ejections, an auth rejection) and a sandbox server (/run_code and code rewards: ok, runtime error, time limit,
    compile error), and to a FAPO server whose judge is scripted (a flawed positive, a cache hit, a judge
    timeout); then the /metrics of both routers and all five servers, parsed."""
    with httpx.Client(timeout=300) as client:
        batch = [{"recipe": "math", "question": "1+1?", "solution": f"\\boxed{{{n}}}", "ground_truth": "2",
                  "group_id": "g1"} for n in (2, 3, 2, 5)]
        assert client.post(stack.url + "/v1/reward/batch", json={"samples": batch}).status_code == 200
        fapo = {"recipe": "fapo", "question": "1+1?", "solution": "Step 0: 1 + 1 = 2. \\boxed{2}", "ground_truth": "2"}
        for _ in range(2):  # the second identical sample may be served by the judge cache
            assert client.post(stack.url + "/v1/reward", json=fapo).status_code == 200
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert client.post(stack.url + "/v1/chat/completions", json=chat).status_code == 200
        assert client.post(stack.url + "/v1/reward", json={"solution": 1}).status_code == 400  # an error series

        bad = start_script("support/bad_worker.py", "drop", log_dir=logs, name="dashboard-bad-worker")
        router = start_router([bad.url, *(s.url for s in stack.servers), sandbox_server.url], logs,
                              "--policy", "round_robin",
                              "--reward-policy", "round_robin", "--health-interval-s", "60",
                              "--breaker-failure-threshold", "1", "--api-keys", "dashboard-key")
        key = {"authorization": "Bearer dashboard-key"}
        try:
            assert client.post(router.url + "/v1/reward", json=batch[0]).status_code == 401  # a rejection
            for n in range(9):
                sample = {"recipe": "math", "solution": f"\\boxed{{{n}}}", "ground_truth": "2"}
                assert client.post(router.url + "/v1/reward", json=sample, headers=key).status_code == 200
            for program in PROGRAMS:  # /run_code reaches the sandbox server only
                ran = client.post(router.url + "/run_code", json=program, headers=key)
                assert ran.status_code == 200 and ran.json()["status"] in ("Success", "Failed"), ran.text
            code = {"recipe": "code", "solution": "```python\nprint(int(input()) + 1)\n```",
                    "ground_truth": json.dumps({"inputs": ["1\n", "2\n"], "outputs": ["2\n", "4\n"]})}
            scored = client.post(router.url + "/v1/reward", json=code, headers=key)
            assert scored.status_code == 200 and scored.json()["score"] == 0.5, scored.text
            texts = [client.get(stack.url + "/metrics").text, client.get(router.url + "/metrics", headers=key).text]
        finally:
            router.stop()
            bad.stop()
        texts += [client.get(s.url + "/metrics").text for s in (*stack.servers, sandbox_server)]

        judge = start_script("support/scripted_judge.py", log_dir=logs, name="dashboard-judge")
        fapo_server = start_server(judge.url, logs, "--engine", "openai", "--upstream-url", judge.url + "/v1",
                                   "--upstream-timeout-s", "1", "--recipe", "fapo", name="dashboard-fapo")
        try:
            for reply in ("<<reply:Step 2 is wrong. \\boxed{2}>>",) * 2 + ("<<sleep:3>>",):
                sample = {"question": "2 + 2?", "solution": f"Step 0: 2 + 2 = 4. {reply} \\boxed{{4}}",
                          "ground_truth": "4"}
                assert client.post(fapo_server.url + "/v1/reward", json=sample).status_code == 200
            texts.append(client.get(fapo_server.url + "/metrics").text)
        finally:
            fapo_server.stop()
            judge.stop()

    series: dict[str, set[str]] = defaultdict(set)  # sample name -> label names seen
    values: dict[tuple[str, str], set[str]] = defaultdict(set)  # (sample name, label) -> values seen
    declared: set[str] = set()  # names a family declares even before its first sample
    for text in texts:
        for family in text_string_to_metric_families(text):
            declared.update(family.name + s for s in SUFFIXES[family.type])
            for sample in family.samples:
                series[sample.name].update(sample.labels)
                for key, value in sample.labels.items():
                    values[(sample.name, key)].add(value)
    return {"series": series, "values": values, "declared": declared}


def test_live_traffic_produced_the_series_the_dashboard_leans_on(live):
    """The traffic above reaches the paths the panels chart: failures, fan-out, judge, batching, the sandbox."""
    series = live["series"]
    for name in ("genrm_router_requests_total", "genrm_router_request_latency_seconds_bucket",
                 "genrm_router_retries_total", "genrm_router_worker_failures_total", "genrm_router_ejections_total",
                 "genrm_router_fanout_items_total", "genrm_router_policy_decisions_total",
                 "genrm_server_batch_size_bucket", "genrm_server_generation_tokens_total",
                 "genrm_reward_samples_total", "genrm_reward_judge_latency_seconds_bucket",
                 "genrm_reward_judge_failures_total", "genrm_reward_score_bucket", "genrm_router_rejected_total",
                 "genrm_reward_flawed_positives_total", "genrm_reward_cache_hits_total",
                 "genrm_reward_judge_call_errors_total", "genrm_sandbox_executions_total",
                 "genrm_sandbox_run_seconds_bucket", "genrm_sandbox_workers", "genrm_sandbox_busy_workers",
                 "genrm_sandbox_queue", "genrm_sandbox_rejected_total", "genrm_reward_sandbox_failures_total"):
        assert name in series, f"no {name} sample after the traffic"


def test_every_metric_of_the_dashboard_is_exported(live):
    dash = _dashboard()
    names = {m for expr in _queries(dash) for m in METRIC.findall(expr)}
    assert names
    known = set(live["series"]) | live["declared"]
    missing = sorted(n for n in names if n not in known)
    assert not missing, f"the dashboard queries series nobody exports: {missing}"
    # a family with samples but without this one (e.g. a histogram with negative buckets has no _sum) is missing
    for name in names:
        base = re.sub(r"_(total|bucket|count|sum|created)$", "", name)
        if any(s.startswith(base + "_") or s == base for s in live["series"]) and name not in live["series"]:
            assert name in live["declared"] and not name.endswith(("_sum", "_count", "_bucket")), name


def test_the_dashboard_charts_every_platform_metric_family():
    used = {re.sub(r"_(total|bucket|count|sum)$", "", m) for e in _queries(_dashboard()) for m in METRIC.findall(e)}
    wanted = {
        "genrm_router_requests", "genrm_router_request_latency_seconds", "genrm_router_retries",
        "genrm_router_ejections", "genrm_router_worker_failures", "genrm_router_queue_depth", "genrm_router_rejected",
        "genrm_router_policy_decisions", "genrm_router_policy_spills", "genrm_router_affinity_spill_ratio",
        "genrm_router_fanout_items", "genrm_server_requests", "genrm_server_request_latency_seconds",
        "genrm_server_batch_size", "genrm_server_prompt_tokens", "genrm_server_generation_tokens",
        "genrm_server_aborted_sequences", "genrm_server_ready", "genrm_reward_samples", "genrm_reward_score",
        "genrm_reward_judge_failures", "genrm_reward_judge_call_errors", "genrm_reward_judge_latency_seconds",
        "genrm_reward_flawed_positives", "genrm_reward_cache_hits", "vllm:num_requests_running",
        "vllm:num_requests_waiting", "genrm_sandbox_executions", "genrm_sandbox_run_seconds", "genrm_sandbox_queue",
        "genrm_sandbox_busy_workers", "genrm_sandbox_workers", "genrm_sandbox_rejected",
        "genrm_reward_sandbox_failures",
    }
    assert wanted <= used, sorted(wanted - used)


def test_expressions_parse_and_use_labels_the_series_carry(live):
    """PromQL syntax (promql-parser, Prometheus' grammar) and, for series with samples, every label matcher,
    grouping label and `le` bound used exists on them."""
    promql = pytest.importorskip("promql_parser", reason="pip install promql-parser for the PromQL checks")
    series = live["series"]
    dash = _dashboard()
    variables = {v["name"] for v in dash["templating"]["list"]}
    for var in dash["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"])
        assert match and match.group(2) in series[match.group(1)] | TARGET_LABELS, var["query"]
    for expr in [t["expr"] for p in _panels(dash) for t in p.get("targets", [])]:
        for var in re.findall(r"\$(\w+)", expr):
            assert var == "__rate_interval" or var in variables, f"undefined variable ${var}: {expr}"
        _check_expression(promql, expr, live)


def _check_expression(promql: Any, expr: str, live: dict[str, Any]) -> None:
    series, values = live["series"], live["values"]
    tree = promql.parse(re.sub(r"\$\w+", lambda m: "1m" if m.group(0) == "$__rate_interval" else ".*", expr))

    def labels_within(node: Any) -> set[str] | None:
        """Labels of the selectors under node; None when one has no sample to learn its labels from."""
        found: set[str] = set()
        selectors: list[str] = []

        def visit(n: Any) -> None:
            if isinstance(n, promql.VectorSelector):
                selectors.append(n.name)
                found.update(series.get(n.name, ()))

        promql.walk(node, visit)
        return found if all(name in series for name in selectors) else None

    def check(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            assert node.name in series or node.name in live["declared"], node.name
            if node.name in series:
                for m in node.matchers.matchers:
                    assert m.name in series[node.name] | TARGET_LABELS, f"{node.name} has no {m.name}: {expr}"
                    if m.name == "le":
                        assert m.value in values[(node.name, "le")], f"no bucket le={m.value}: {expr}"
        if isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            grouping, known = set(node.modifier.labels), labels_within(node.expr)
            assert known is None or grouping <= known | TARGET_LABELS, f"grouping by {grouping}: {expr}"

    promql.walk(tree, check)


# -- datasource and layout ------------------------------------------------------------------------


def test_every_panel_queries_the_provisioned_datasource():
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    expected = {"type": "prometheus", "uid": source["uid"]}
    dash = _dashboard()
    for panel in _panels(dash):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == expected, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == expected, (panel["title"], target["refId"])
    for var in dash["templating"]["list"]:
        assert var["datasource"] == expected, var["name"]


def test_layout_ids_and_grid():
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    for p in panels:
        if p["type"] != "row":
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]


def test_sandbox_runs_ended_every_way_the_status_panels_chart(live):
    statuses = live["values"][("genrm_sandbox_executions_total", "status")]
    assert {"ok", "runtime_error", "timeout", "compile_error"} <= statuses, statuses
