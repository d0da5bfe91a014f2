"""deploy/grafana/jobrl-async.json against the code: every metric it queries is one the run
exports (the exporter's own registry, and a real run's scrape, which `promtool check metrics`
accepts), it asks for its datasource, and the compose profile "monitoring" wires Prometheus to
the trainer and Grafana to both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobrl_async.config import JudgeConfig
from jobrl_async.ops.metrics import RunMetrics

from .support.dry_run import DryRunLogs, dry_run_logs

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "jobrl-async.json"
METRIC = re.compile(r"\bjobrl_[a-z0-9_]+\b")
# What the issue asks the dashboard to show, by the series that carry it.
REQUIRED = {
    "reward": "jobrl_reward_mean",
    "validation": "jobrl_validation_best_score",
    "judge rate": "jobrl_judge_requests_total",
    "judge tokens": "jobrl_judge_tokens_total",
    "429s": "jobrl_judge_http_429_total",
    "queue depths": "jobrl_queue_depth",
    "busy fractions": "jobrl_stage_busy_fraction",
    "seconds since progress": "jobrl_seconds_since_progress",
    "checkpoint uploads": "jobrl_checkpoint_uploads_total",
}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def queried_metrics() -> set[str]:
    return {name for expr in expressions() for name in METRIC.findall(expr)}


def exported_series(exposition: str) -> set[str]:
    """Every series name an exposition holds (`_total`, `_bucket`, `_sum`, `_count` included)."""
    return {s.name for family in text_string_to_metric_families(exposition) for s in family.samples}


def exporter_exposition() -> str:
    """The exporter's registry once every labelled family has a series."""
    m = RunMetrics(stall_timeout_s=600)
    m.on_step({"step": 1, "epoch": 0, "reward_mean": 4.0, "reward_std": 1.0, "loss": 0.1, "policy_lag": 0,
               "device_idle_fraction": 0.1, "judge_rpm": 500.0, "validation_score": 4.2, "best_score": 4.2,
               "skipped_groups": 1, "step_s": 12.0, "trajectories": {"scored": 100},
               "queue_depths": {"judge": 3}, "busy": {"generator": 0.5}})
    m.on_judge(10, 1000, 1, 0, 2, False)
    m.on_checkpoint("best", True)
    return m.exposition().decode()


# ---------------------------------------------------------------- the dashboard against the exporter


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exported = exported_series(exporter_exposition())
    unknown = queried_metrics() - exported
    assert unknown == set(), f"the dashboard queries metrics the exporter does not serve: {sorted(unknown)}"


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    queried = queried_metrics()
    missing = {topic: name for topic, name in REQUIRED.items() if name not in queried}
    assert missing == {}
    # the judge rate is drawn against the quota, which the dashboard holds as variables
    judge_panel = next(p for p in panels() if "quota" in p["title"])
    exprs = [t["expr"] for t in judge_panel["targets"]]
    assert "vector($quota_rpm)" in exprs and "vector($quota_tpm)" in exprs


def test_the_dashboard_asks_for_its_datasource_and_every_query_uses_it() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            names = METRIC.findall(target["expr"])
            # every series is filtered by the run picker, so two runs never mix on one panel
            assert all(f'{name}{{instance=~"$instance"' in target["expr"] for name in names), target["expr"]


def test_the_quota_variables_default_to_the_configs_quota() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert int(variables["quota_rpm"]["query"]) == JudgeConfig().rpm
    assert int(variables["quota_tpm"]["query"]) == JudgeConfig().tpm


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard()["panels"]:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, p["title"]


# ---------------------------------------------------------------- a real run's scrape


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> DryRunLogs:
    return dry_run_logs(tmp_path_factory)


@pytest.mark.slow
def test_a_real_runs_scrape_passes_promtool_and_serves_what_the_dashboard_queries(logs: DryRunLogs) -> None:
    scrape = logs.scrape.read_text()
    missing = queried_metrics() - exported_series(scrape)
    assert missing == set(), f"a real run's /metrics lacks {sorted(missing)}"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus package)")
    r = subprocess.run([promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- docker compose, profile "monitoring"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's bind mounts and volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_compose_monitoring_profile_scrapes_the_trainer_and_provisions_the_dashboard() -> None:
    services = compose()["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == ["monitoring"] and grafana["profiles"] == ["monitoring"]
    assert "profiles" not in services["trainer"]  # monitoring is optional, training is not
    for service in (prometheus, grafana):
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])

    # Prometheus scrapes the trainer's metrics port inside the compose network
    config_target = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    scrape_config = yaml.safe_load((DEPLOY / mounts(prometheus)[config_target]).read_text())
    (job,) = scrape_config["scrape_configs"]
    trainer_args = [str(a) for a in services["trainer"]["command"]]
    port = trainer_args[trainer_args.index("--metrics-port") + 1]
    assert job["static_configs"][0]["targets"] == [f"trainer:{port}"] and job["metrics_path"] == "/metrics"

    # Grafana: the datasource points at that Prometheus; the dashboard file is the one tested here
    provisioning = DEPLOY / mounts(grafana)["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    prometheus_port = prometheus["ports"][0].rsplit(":", 1)[1]
    assert source["type"] == "prometheus" and source["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "jobrl-async.yml").read_text())["providers"]
    dashboards_dir = provider["options"]["path"]
    mounted = {t: s for t, s in mounts(grafana).items() if t.startswith(dashboards_dir + "/")}
    assert [(DEPLOY / s).resolve() for s in mounted.values()] == [DASHBOARD.resolve()]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in mounted
