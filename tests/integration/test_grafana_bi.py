"""deploy/grafana/bi-dashboard.json: every panel's SQL runs on PostgreSQL with the views.

Grafana's macros are replaced as its PostgreSQL datasource expands them
(``$__timeFilter``, ``$__timeGroupAlias``, a multi-value ``$source``), then
each query runs against the BI test data set and must return rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from tests.integration.test_bi_views import load

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "bi-dashboard.json"
FROM, TO = "2026-01-01T00:00:00Z", "2026-12-31T23:59:59Z"


def expand(sql: str, sources: str = "'sto','nyc'") -> str:
    """What Grafana sends for ``sql`` with the time range FROM..TO and both sources picked."""
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{FROM}' AND '{TO}'", sql)

    def group(match: re.Match[str]) -> str:
        column, interval = match.group(1).strip(), match.group(2).strip()
        seconds = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}[interval]
        return f'floor(extract(epoch from {column})/{seconds})*{seconds} AS "time"'

    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", group, sql)
    sql = sql.replace("$source", sources)
    assert "$" not in sql, f"a Grafana macro the test does not expand: {sql}"
    return sql


def panels() -> list[dict[str, Any]]:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_dashboard_covers_the_questions_through_the_bi_datasource() -> None:
    sql = " ".join(t["rawSql"] for p in panels() for t in p["targets"])
    for view in (
        "door_activity_daily",
        "denied_access",
        "repeated_denials",
        "after_hours_access",
        "door_state_latest",
        "sync_health",
    ):
        assert view in sql
    for panel in panels():
        assert panel["datasource"]["uid"] == "syncd-postgres"
        assert all(t["datasource"]["uid"] == "syncd-postgres" for t in panel["targets"])


@pytest.mark.postgres
def test_every_panel_query_runs_and_returns_rows(pg_engine: sa.Engine) -> None:
    load(pg_engine)
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    with pg_engine.connect() as conn:
        for variable in dashboard["templating"]["list"]:
            values = conn.exec_driver_sql(variable["query"]).scalars().all()
            assert set(values) == {"sto", "nyc"}
        for panel in panels():
            for target in panel["targets"]:
                result = conn.exec_driver_sql(expand(target["rawSql"])).all()
                assert result, panel["title"]
