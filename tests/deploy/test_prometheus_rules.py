"""Alerts and dashboard queries: promtool parses every expression and runs the alert tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploytools import (
    ALERTS,
    DASHBOARD,
    alert_expressions,
    dashboard_expressions,
    metric_names,
    require_tool,
)

# DESIGN.md "Daemon (contract)": the metric names syncd exports.
CONTRACT_METRICS = {
    "syncd_events_written_total",
    "syncd_events_rejected_total",
    "syncd_passes_total",
    "syncd_pass_duration_seconds",
    "syncd_vendor_requests_total",
    "syncd_retries_total",
    "syncd_last_success_timestamp_seconds",
    "syncd_newest_event_timestamp_seconds",
    "syncd_consecutive_failures",
    "syncd_webhook_requests_total",
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool", "Debian package prometheus")
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=120
    )


def test_the_alert_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_expressions())} rules found" in result.stdout


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", "alerts.test.yml", cwd=ALERTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load((ALERTS.parent / "alerts.test.yml").read_text())
    firing = {
        case["alertname"]
        for group in tests["tests"]
        for case in group["alert_rule_test"]
        if case.get("exp_alerts")
    }
    silent = {
        case["alertname"]
        for group in tests["tests"]
        for case in group["alert_rule_test"]
        if not case.get("exp_alerts")
    }
    names = {name for name, _ in alert_expressions()}
    assert firing == names
    assert silent == names


def dashboard_rules_file(tmp_path: Path, expressions: list[tuple[str, str]]) -> Path:
    """Each dashboard query as a recording rule, so promtool parses and type-checks it."""
    rules = [{"record": f"dashboard:query_{n}", "expr": e} for n, (_, e) in enumerate(expressions)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


def test_every_dashboard_query_parses_with_promtool(tmp_path: Path) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 12
    result = promtool("check", "rules", str(dashboard_rules_file(tmp_path, expressions)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


def test_the_dashboard_check_catches_a_broken_query(tmp_path: Path) -> None:
    broken = [("bad", "sum by (source) (rate(syncd_passes_total[5m])")]  # unclosed paren
    result = promtool("check", "rules", str(dashboard_rules_file(tmp_path, broken)))
    assert result.returncode != 0


def test_the_dashboard_covers_every_contract_metric() -> None:
    used = set().union(*(metric_names(e) for _, e in dashboard_expressions()))
    # the histogram is queried through its _bucket series
    used = {n.removesuffix("_bucket") for n in used}
    assert used >= CONTRACT_METRICS, CONTRACT_METRICS - used
    titles = {t for t, _ in dashboard_expressions()}
    for wanted in (
        "Events written per source",
        "Passes by result",
        "Pass duration quantiles",
        "Vendor requests by status",
        "Retries by reason",
        "Seconds since last successful pass",
        "Event lag",
        "Webhook answers",
    ):
        assert wanted in titles
    quantiles = [e for t, e in dashboard_expressions() if t == "Pass duration quantiles"]
    assert all("histogram_quantile(" in e and "_bucket" in e for e in quantiles)
    lag = [e for t, e in dashboard_expressions() if t == "Event lag"]
    assert lag
    assert all("time() - " in e and "syncd_newest_event_timestamp_seconds" in e for e in lag)


def test_the_dashboard_uses_only_the_provisioned_datasource_and_its_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "syncd-overview"
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "source"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            per_source = "source" in target["expr"] and "up{" not in target["expr"]
            if per_source and "_bucket" not in target["expr"]:
                assert 'source=~"$source"' in target["expr"], target["expr"]


@pytest.mark.parametrize(
    ("alert", "wants"),
    [
        ("SyncdSourceNotSucceeding", "syncd_last_success_timestamp_seconds"),
        ("SyncdSourceFailingRepeatedly", "syncd_consecutive_failures"),
        ("SyncdEventLagHigh", "syncd_newest_event_timestamp_seconds"),
        ("SyncdRejectedRecordsRising", "syncd_events_rejected_total"),
        ("SyncdMetricsAbsent", 'absent(up{job="syncd"}'),
        ("SyncdSourcePausedLong", "syncd_source_paused"),
    ],
)
def test_each_required_alert_exists(alert: str, wants: str) -> None:
    assert wants in dict(alert_expressions())[alert]


@pytest.mark.parametrize(
    "alert", ["SyncdSourceNotSucceeding", "SyncdSourceFailingRepeatedly", "SyncdEventLagHigh"]
)
def test_a_paused_source_does_not_fire(alert: str) -> None:
    assert "unless on (source)" in dict(alert_expressions())[alert]
    assert "syncd_source_paused" in dict(alert_expressions())[alert]


def test_the_dashboard_shows_paused_sources() -> None:
    titles = dict(dashboard_expressions())
    assert "syncd_source_paused" in titles["Paused sources"]
    # A paused source is not counted as "not succeeding" there either.
    assert "unless on (source)" in titles["Seconds since last successful pass"]
