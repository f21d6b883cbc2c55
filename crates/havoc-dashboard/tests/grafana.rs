//! deploy/grafana/havoc.json uses only metrics and labels the operator and the agent export.
//!
//! The exported names come from the real registries, rendered in the Prometheus text format after
//! every family has one sample; the dashboard's names from every PromQL expression in it.

use std::collections::{BTreeMap, BTreeSet};

const DASHBOARD: &str = include_str!("../../../deploy/grafana/havoc.json");

/// Labels Prometheus adds to every scraped sample, and `le` of histogram buckets.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Sample name -> label names, from a text exposition.
fn exported(text: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).expect("a sample line");
        let labels = into.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let close = line.find('}').expect("closing brace");
            for pair in line[end + 1..close].split(',').filter(|p| !p.is_empty()) {
                labels.insert(pair.split('=').next().expect("label").to_string());
            }
        }
    }
}

fn exported_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let agent = havoc_agent::metrics::Metrics::new();
    agent.count("PodChaos", "inject", "ok");
    agent
        .active
        .get_or_create(&havoc_agent::metrics::KindLabels {
            kind: "NetworkChaos".into(),
        })
        .set(1);
    agent.lease_expirations.inc();
    agent
        .effects
        .get_or_create(&havoc_agent::metrics::EffectLabels {
            injection_id: "7".into(),
            kind: "NetworkChaos".into(),
            metric: "packets_dropped".into(),
        })
        .set(3.0);
    agent.observe("Inject", 0.01);
    let operator = havoc_operator::metrics::Metrics::new();
    operator.reconciled("PodChaos", false);
    operator.phase_changed("PodChaos", None, Some("Running"));
    operator.injected(std::time::Duration::from_millis(20));
    let mut out = BTreeMap::new();
    exported(&agent.encode(), &mut out);
    exported(&operator.render(), &mut out);
    out
}

fn ident_at(s: &str, at: usize) -> &str {
    let end = s[at..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(s.len(), |e| at + e);
    &s[at..end]
}

/// Metric names (`havoc_…`) and label names (in `by (…)` and `{…}` matchers) of one expression.
fn used(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for (at, _) in expr.match_indices("havoc_") {
        if at == 0
            || !expr.as_bytes()[at - 1].is_ascii_alphanumeric() && expr.as_bytes()[at - 1] != b'_'
        {
            metrics.insert(ident_at(expr, at).to_string());
        }
    }
    for (open, close) in [("by (", ')'), ("{", '}')] {
        for (at, _) in expr.match_indices(open) {
            let from = at + open.len();
            let inner = &expr[from..from + expr[from..].find(close).expect("closed")];
            for part in inner.split(',') {
                let name = part.trim();
                let name = ident_at(name, 0);
                if !name.is_empty() {
                    labels.insert(name.to_string());
                }
            }
        }
    }
    (metrics, labels)
}

/// Every problem of the dashboard's expressions against the exported metrics.
fn problems(exprs: &[String], exported: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for e in exprs {
        let (metrics, labels) = used(e);
        if metrics.is_empty() {
            out.push(format!("{e}: uses no havoc metric"));
        }
        let mut known: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
        for m in &metrics {
            match exported.get(m) {
                Some(l) => known.extend(l.iter().map(String::as_str)),
                None => out.push(format!("{e}: {m} is not exported")),
            }
        }
        for l in &labels {
            if !known.contains(l.as_str()) {
                out.push(format!("{e}: label {l} is on none of its metrics"));
            }
        }
    }
    out
}

fn dashboard_exprs() -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(DASHBOARD).expect("havoc.json is JSON");
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for p in v["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {}",
                p["title"]
            );
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

#[test]
fn every_metric_and_label_the_dashboard_uses_is_exported() {
    let exported = exported_metrics();
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let found = problems(&exprs, &exported);
    assert!(found.is_empty(), "{found:#?}\nexported: {exported:#?}");
    // The four things the dashboard is for are all on it.
    let all: BTreeSet<String> = exprs.iter().flat_map(|e| used(e).0).collect();
    for m in [
        "havoc_operator_experiments",
        "havoc_injections_total",
        "havoc_lease_expirations_total",
        "havoc_injection_effect",
    ] {
        assert!(all.contains(m), "{m} is not on the dashboard");
    }
}

#[test]
fn the_check_catches_a_misspelt_metric_or_label() {
    let exported = exported_metrics();
    let bad = vec![
        "sum(rate(havoc_injection_total[5m]))".to_string(),
        "sum by (knd) (havoc_injections_active)".to_string(),
        "sum(havoc_operator_experiments{phse=\"Running\"})".to_string(),
    ];
    let found = problems(&bad, &exported);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("havoc_injection_total is not exported"));
    assert!(found[1].contains("label knd"));
    assert!(found[2].contains("label phse"));
}
