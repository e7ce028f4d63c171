"""The chart's alert rules and dashboard queries, checked and exercised with the real promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

FULL = "rel-tuneloop"
SCENARIO = "monitoring-values"
ENGINE = "http://rel-tuneloop-engine-0:8000"
GATEWAY = 'namespace="tl", service="rel-tuneloop-gateway"'
MONITOR = 'namespace="tl", service="rel-tuneloop-monitor"'


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail(
            "promtool is missing: install the Debian package prometheus "
            "(bash scripts/system-deps.sh does it)"
        )
    return found


@pytest.fixture(scope="module")
def rules(rendered) -> list[dict]:
    """The PrometheusRule's groups, as a Prometheus rule file would hold them."""
    (rule,) = [d for _, d in rendered[SCENARIO] if d["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool, *args], check=False, capture_output=True, text=True, timeout=120
    )


def test_alert_rules_pass_promtool_check(promtool: str, rules, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rules}))
    result = _promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in rules for r in g["rules"]}
    assert {
        "TuneloopEngineDown",
        "TuneloopHighErrorRate",
        "TuneloopDriftAlarm",
        "TuneloopRetrainFailures",
    } <= alerts


def test_alerts_fire_on_bad_series_and_stay_quiet_on_good_ones(
    promtool: str, rules, tmp_path: Path
) -> None:
    """Each alert expression, evaluated by promtool over synthetic series, finds what it should."""
    exprs = {r["alert"]: r["expr"] for g in rules for r in g["rules"]}
    # 1-minute samples: engine-0 up then down; 90 ok + 10 failed requests a minute (10% > 2%);
    # a drift alarm raised at minute 2; three failed retrains; the gateway scraped fine.
    series = [
        (f'tuneloop_engine_up{{{GATEWAY}, pod="g1", engine="{ENGINE}"}}', "1 1 0x30"),
        (f'tuneloop_engine_up{{{GATEWAY}, pod="g1", engine="e1"}}', "1x32"),
        (
            (
                f'tuneloop_requests_total{{{GATEWAY}, tenant="acme", adapter="a", route="chat", '
                'status="200"}'
            ),
            "0+90x32",
        ),
        (
            (
                f'tuneloop_requests_total{{{GATEWAY}, tenant="acme", adapter="a", route="chat", '
                'status="500"}'
            ),
            "0+10x32",
        ),
        (f'tuneloop_drift_alarm{{{MONITOR}, tenant="acme", adapter="a"}}', "0 0 1x30"),
        (f'tuneloop_drift_alarm{{{MONITOR}, tenant="acme", adapter="b"}}', "0x32"),
        (f'tuneloop_retrain_jobs_total{{{MONITOR}, outcome="failed"}}', "0 1 2 3x29"),
        (f'tuneloop_retrain_jobs_total{{{MONITOR}, outcome="succeeded"}}', "0+1x32"),
        (f"up{{{GATEWAY}}}", "1x32"),
        (f"up{{{MONITOR}}}", "1x32"),
    ]
    fired = {
        "TuneloopEngineDown": f'{{engine="{ENGINE}", namespace="tl"}}',
        "TuneloopHighErrorRate": '{namespace="tl"}',
        "TuneloopDriftAlarm": '{adapter="a", namespace="tl", tenant="acme"}',
        "TuneloopRetrainFailures": '{namespace="tl"}',
    }
    quiet = ["TuneloopGatewayDown", "TuneloopMonitorDown"]
    # `count without ()` keeps each alert's labels and makes every firing sample 1.
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [
                {
                    "expr": f"count without () ({exprs[name]})",
                    "eval_time": "20m",
                    "exp_samples": [{"labels": labels, "value": 1}],
                }
                for name, labels in fired.items()
            ]
            + [
                {"expr": f"count without () ({exprs[name]})", "eval_time": "20m", "exp_samples": []}
                for name in quiet
            ],
        },
        {
            # A healthy release: nothing fires.
            "interval": "1m",
            "input_series": [
                {"series": f'tuneloop_engine_up{{{GATEWAY}, engine="{ENGINE}"}}', "values": "1x32"},
                {
                    "series": f'tuneloop_requests_total{{{GATEWAY}, status="200"}}',
                    "values": "0+90x32",
                },
                {
                    "series": f'tuneloop_drift_alarm{{{MONITOR}, tenant="t", adapter="a"}}',
                    "values": "0x32",
                },
                {"series": f"up{{{GATEWAY}}}", "values": "1x32"},
                {"series": f"up{{{MONITOR}}}", "values": "1x32"},
            ],
            "promql_expr_test": [
                {"expr": f"count without () ({expr})", "eval_time": "20m", "exp_samples": []}
                for expr in exprs.values()
            ],
        },
        {
            # Every gateway target down: the gateway-down alert finds it.
            "interval": "1m",
            "input_series": [{"series": f"up{{{GATEWAY}}}", "values": "0x32"}],
            "promql_expr_test": [
                {
                    "expr": f"count without () ({exprs['TuneloopGatewayDown']})",
                    "eval_time": "20m",
                    "exp_samples": [
                        {"labels": '{namespace="tl", service="rel-tuneloop-gateway"}', "value": 1}
                    ],
                }
            ],
        },
        {
            # Not a single gateway target: absent() still names the service.
            "interval": "1m",
            "input_series": [{"series": f"up{{{MONITOR}}}", "values": "1x32"}],
            "promql_expr_test": [
                {
                    "expr": f"count without () ({exprs['TuneloopGatewayDown']})",
                    "eval_time": "20m",
                    "exp_samples": [
                        {"labels": '{namespace="tl", service="rel-tuneloop-gateway"}', "value": 1}
                    ],
                }
            ],
        },
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests}))
    result = _promtool(promtool, "test", "rules", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_wait_as_configured(rules) -> None:
    waits = {r["alert"]: r.get("for") for g in rules for r in g["rules"]}
    assert waits["TuneloopEngineDown"] == "5m"
    assert waits["TuneloopDriftAlarm"] == "15m"
    assert waits["TuneloopHighErrorRate"] == "10m"


def test_dashboard_queries_are_valid_promql(promtool: str, rendered, tmp_path: Path) -> None:
    (cm,) = [
        d
        for _, d in rendered[SCENARIO]
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{FULL}-dashboard"
    ]
    dashboard = json.loads(cm["data"]["tuneloop.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # promtool parses recording rules: one per panel query, with the Grafana variable filled in.
    rules = [
        {"record": f"tuneloop:dashboard_query_{i}", "expr": e.replace("$namespace", "tl")}
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
