//! The Grafana dashboard and the alert rules shipped with the chart: valid JSON / YAML, and
//! every metric they query is one a running herald-server (its /metrics) or herald-operator
//! exports — a renamed metric fails here, not on someone's dashboard.

use std::collections::BTreeSet;

use herald_e2e::workspace_root;
use herald_testkit::start_default;

/// Metric names a Prometheus text exposition offers, from its `# TYPE` lines (counters as
/// `_total`, histograms as `_bucket`, `_sum`, `_count`), so families with no sample yet count.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some("#") || parts.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// `herald_...` identifiers in a PromQL expression.
fn queried(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("herald_") {
        let start = i + pos;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            out.push(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

fn exprs_in_json(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs_in_json(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs_in_json(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let chart = workspace_root().join("charts/herald-operator");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart.join("dashboards/herald.json")).expect("dashboard"),
    )
    .expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    exprs_in_json(&dashboard, &mut exprs);
    let panels = dashboard["panels"].as_array().map_or(0, Vec::len);
    assert!(panels >= 10 && exprs.len() >= 15, "{panels} panels, {} queries", exprs.len());

    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart.join("alerts/herald.rules.yaml")).expect("rules"),
    )
    .expect("the alert rules are valid YAML");
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            assert!(rule["alert"].as_str().is_some_and(|a| !a.is_empty()), "{rule:?}");
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "every alert says what happened: {rule:?}"
            );
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
            alerts += 1;
        }
    }
    assert!(alerts >= 8);

    let server = start_default().await;
    let text = reqwest::get(format!("http://{}/metrics", server.ops))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let mut available = exported(&text);
    available.extend(exported(&herald_operator::metrics::Metrics::default().encode()));
    let mut missing = BTreeSet::new();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in queried(expr) {
            if !available.contains(&name) {
                missing.insert(name.clone());
            }
            used.insert(name);
        }
    }
    assert!(missing.is_empty(), "queried but not exported: {missing:?}\nexported: {available:?}");
    for wanted in [
        "herald_connected",
        "herald_webhooks_failed_total",
        "herald_cleanups_total",
        "herald_redis_errors_total",
        "herald_operator_reconcile_failures_total",
    ] {
        assert!(used.contains(wanted), "the dashboard and alerts cover {wanted}");
    }
}

#[test]
fn promql_names_are_found_whole() {
    assert_eq!(
        queried("sum by (le) (rate(herald_redis_latency_seconds_bucket[5m])) > 0 and xherald_no"),
        vec!["herald_redis_latency_seconds_bucket"]
    );
}
