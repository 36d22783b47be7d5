"""deploy/prometheus and deploy/grafana are well formed, and the manifests scrape the ports the
processes serve their metrics on. That every metric they name is exported is checked against a
running API and worker (tests/e2e/test_operations.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from app.config import Settings
from tests.deploy.test_kubernetes import DEPLOY, by_kind, environment, main_container
from tests.support.kustomize import Resource

ROOT = DEPLOY.parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "foley.json"


def test_every_alert_has_an_expression_a_severity_and_words() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) >= 10
    for rule in rules:
        assert rule["expr"].strip() and "foley_" in rule["expr"], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_dashboard_is_grafana_json_on_a_prometheus_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Foley"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 20
    for panel in graphs:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all("foley_" in t["expr"] for t in panel["targets"])
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"


def test_prometheus_scrapes_the_ports_the_metrics_are_served_on(
    production: list[Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = main_container(production, "worker")
    with monkeypatch.context() as env:
        for name, value in environment(production, worker).items():
            env.setenv(name, value)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
    port = settings.worker_metrics_port
    assert port is not None
    assert [p["containerPort"] for p in worker["ports"] if p["name"] == "metrics"] == [port]
    deployments = by_kind(production, "Deployment")
    for component, expected in (("worker", port), ("api", 8000)):
        annotations = deployments[f"foley-{component}"]["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(expected)
        assert annotations["prometheus.io/path"] == "/metrics"
    policy = by_kind(production, "NetworkPolicy")["foley-metrics"]
    (rule,) = policy["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [8000, port]
    assert rule["from"]  # narrowed in production


def test_the_metrics_port_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOLEY_WORKER_METRICS_PORT", raising=False)
    assert Settings(_env_file=None).worker_metrics_port is None  # type: ignore[call-arg]
