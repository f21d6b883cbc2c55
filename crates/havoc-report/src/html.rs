//! `report.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched) that
//! tells a person how a run went: the verdict, a timeline of the faults, what each probe saw,
//! what each fault measurably did, the per-phase probe verdicts, the errors and the timing.

use std::time::{Duration, UNIX_EPOCH};

use crate::charts;
use crate::markup::{bytes, millis, num, seconds, Markup};
use crate::model::{Fault, Report, Steady, Target};

const STYLE: &str = include_str!("report.css");

/// Renders a run report (the JSON of `havoc run --output json`) as a self-contained HTML page.
///
/// Never fails: fields that are missing or of the wrong type are shown as absent, so a report cut
/// short, one without steady state, or one from another version of havoc still renders. The page
/// is well-formed XHTML as well as HTML5, and all text from the report is escaped.
pub fn render_html(report: &serde_json::Value) -> String {
    let r = Report::read(report);
    let mut m = Markup::new();
    m.raw("<!DOCTYPE html>\n");
    m.open(
        "html",
        &[("xmlns", "http://www.w3.org/1999/xhtml"), ("lang", "en")],
    );
    m.open("head", &[]);
    m.empty("meta", &[("charset", "utf-8")]);
    m.empty(
        "meta",
        &[
            ("name", "viewport"),
            ("content", "width=device-width, initial-scale=1"),
        ],
    );
    let title = format!(
        "Havoc run {}: {}",
        r.experiment.as_deref().unwrap_or("(unnamed experiment)"),
        r.verdict.as_deref().unwrap_or("unknown")
    );
    m.elem("title", &[], &title);
    m.open("style", &[]).raw(STYLE).close();
    m.close(); // head
    m.open("body", &[]);
    header(&mut m, &r);
    m.open("main", &[]);
    timeline(&mut m, &r);
    probes(&mut m, &r);
    faults(&mut m, &r);
    verdicts(&mut m, &r);
    errors(&mut m, &r);
    timing(&mut m, &r);
    m.close(); // main
    m.open("footer", &[]);
    m.text(&format!(
        "Made by havoc-report {}. Times are seconds since the run started (the baseline phase first).",
        env!("CARGO_PKG_VERSION")
    ));
    m.close();
    m.close(); // body
    m.close(); // html
    let mut out = m.finish();
    out.push('\n');
    out
}

/// What a verdict means, as the engine defines it.
fn verdict_meaning(v: &str) -> &'static str {
    match v {
        "completed" => "Every fault was injected, held and recovered as planned.",
        "failed" => "Injection or recovery failed; everything that could be recovered was.",
        "interrupted" => "Stopped by a signal or a panic; everything was recovered.",
        "aborted" => "Stopped because a steady-state probe breached its abort limit; everything was recovered.",
        "deviated" => "Every fault ran and was recovered, but a steady-state probe failed its tolerance: the hypothesis did not hold.",
        _ => "This report's verdict is not one this page knows.",
    }
}

fn verdict_class(v: Option<&str>) -> &'static str {
    match v {
        Some("completed") => "verdict verdict-completed",
        Some("failed") => "verdict verdict-failed",
        Some("interrupted") => "verdict verdict-interrupted",
        Some("aborted") => "verdict verdict-aborted",
        Some("deviated") => "verdict verdict-deviated",
        _ => "verdict verdict-unknown",
    }
}

fn or_dash(s: Option<String>) -> String {
    s.unwrap_or_else(|| "—".into())
}

/// `2026-11-23 03:08:03.903 UTC`; the raw number past year 9999, which RFC 3339 cannot write.
fn start_time(ms: u64) -> String {
    const YEAR_10000_MS: u64 = 253_402_300_800_000;
    if ms >= YEAR_10000_MS {
        return format!("{ms} ms since the Unix epoch");
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    let s = humantime::format_rfc3339_millis(t).to_string();
    format!("{} UTC", s.trim_end_matches('Z').replacen('T', " ", 1))
}

fn header(m: &mut Markup, r: &Report) {
    let verdict = r.verdict.as_deref();
    m.open("header", &[("class", verdict_class(verdict))]);
    m.open("h1", &[]);
    m.elem(
        "span",
        &[("class", "experiment")],
        r.experiment.as_deref().unwrap_or("(unnamed experiment)"),
    );
    m.text(" ");
    m.elem(
        "span",
        &[
            ("class", "verdict-badge"),
            ("data-verdict", verdict.unwrap_or("unknown")),
        ],
        &verdict.unwrap_or("unknown").to_uppercase(),
    );
    m.close();
    m.elem(
        "p",
        &[("class", "verdict-meaning")],
        verdict_meaning(verdict.unwrap_or("")),
    );
    if let Some(reason) = &r.reason {
        m.open("p", &[("class", "reason")]);
        m.elem("strong", &[], "Reason: ");
        m.text(reason);
        m.close();
    }
    m.open("dl", &[("class", "facts")]);
    let recovered = match r.all_recovered {
        Some(true) => (
            "recovered yes",
            "yes: nothing injected by this run remains in effect".to_string(),
        ),
        Some(false) => (
            "recovered no",
            "NO: some faults may still be in effect; run `havoc recover`".to_string(),
        ),
        None => (
            "recovered unknown",
            "unknown (not in the report)".to_string(),
        ),
    };
    let facts: [(&str, &str, String); 6] = [
        ("Seed", "seed", or_dash(r.seed.clone())),
        ("Run id", "run-id", or_dash(r.run_id.clone())),
        (
            "Started",
            "started",
            or_dash(r.started_at_unix_ms.map(start_time)),
        ),
        (
            "Duration",
            "duration",
            or_dash(r.duration_seconds.map(seconds)),
        ),
        ("All recovered", recovered.0, recovered.1),
        (
            "Faults",
            "fault-count",
            format!(
                "{} ({} targets)",
                r.faults.len(),
                r.faults.iter().map(|f| f.targets.len()).sum::<usize>()
            ),
        ),
    ];
    for (term, class, value) in &facts {
        m.open("div", &[]);
        m.elem("dt", &[], term);
        m.elem("dd", &[("class", class)], value);
        m.close();
    }
    m.close(); // dl
    m.close(); // header
}

fn section(m: &mut Markup, id: &'static str, title: &str) {
    m.open("section", &[("id", id)]);
    m.elem("h2", &[], title);
}

fn swatch(m: &mut Markup, class: &str, colour: Option<&str>, label: &str) {
    m.open("span", &[("class", "key")]);
    match colour {
        Some(c) => m.elem(
            "span",
            &[("class", class), ("style", &format!("background:{c}"))],
            "",
        ),
        None => m.elem("span", &[("class", class)], ""),
    };
    m.text(label);
    m.close();
}

fn legend(m: &mut Markup, r: &Report, with_samples: bool) {
    m.open("p", &[("class", "legend")]);
    if r.steady.is_some() {
        swatch(m, "swatch phase-baseline", None, "baseline");
        swatch(m, "swatch phase-chaos", None, "chaos");
        swatch(m, "swatch phase-recovery", None, "recovery");
    }
    if !with_samples {
        swatch(m, "swatch planned", None, "planned window");
    }
    for (idx, f) in r.faults.iter().enumerate() {
        swatch(
            m,
            "swatch",
            Some(charts::fault_colour(idx)),
            &format!("{} in effect", f.name),
        );
    }
    if with_samples {
        swatch(m, "swatch dot ok", None, "ok sample");
        swatch(m, "swatch dot fail", None, "failed sample");
    }
    if r.steady
        .as_ref()
        .is_some_and(|s| s.breaches.iter().any(|b| b.t.is_some()))
    {
        swatch(m, "swatch abort", None, "abort");
    }
    m.close();
}

fn timeline(m: &mut Markup, r: &Report) {
    section(m, "timeline", "Timeline");
    legend(m, r, false);
    m.open("div", &[("class", "chart")]);
    charts::timeline(m, r);
    m.close();
    m.close();
}

fn probes(m: &mut Markup, r: &Report) {
    section(m, "probes", "Steady-state probes");
    let Some(steady) = &r.steady else {
        m.elem(
            "p",
            &[("class", "note")],
            "No steady-state probes: the experiment has no steadyState.",
        );
        m.close();
        return;
    };
    if steady.probes.is_empty() {
        m.elem("p", &[("class", "note")], "The steady state has no probes.");
    } else {
        legend(m, r, true);
    }
    for series in &steady.probes {
        m.open(
            "figure",
            &[("class", "probe"), ("data-probe", &series.probe)],
        );
        m.open("figcaption", &[]);
        m.elem("strong", &[], &series.probe);
        let failed = series.samples.iter().filter(|s| !s.ok).count();
        let mut facts = vec![];
        if let Some(k) = &series.kind {
            facts.push(k.clone());
        }
        if let Some(mode) = &series.mode {
            facts.push(mode.clone());
        }
        if let Some(i) = series.interval_ms {
            facts.push(format!("every {}", millis(i)));
        }
        facts.push(format!("{} samples, {failed} failed", series.samples.len()));
        let values: Vec<f64> = series.samples.iter().filter_map(|s| s.value).collect();
        if !values.is_empty() {
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            facts.push(if lo == hi {
                format!("value {}", num(lo))
            } else {
                format!("values {} to {}", num(lo), num(hi))
            });
        }
        m.text(&format!(" — {}", facts.join(" · ")));
        m.close();
        m.open("div", &[("class", "chart")]);
        charts::probe_chart(m, r, steady, series);
        m.close();
        m.close();
    }
    m.close();
}

/// One row of a target's metrics: what was asked, what was measured.
struct MetricRow {
    name: String,
    requested: Option<String>,
    measured: Option<String>,
    /// What share the measure is of what it could have been (packet counters).
    achieved: Option<String>,
}

/// A metric's value in its unit, told by its name.
fn metric_value(name: &str, v: f64) -> String {
    if name.ends_with("_seconds") {
        seconds(v)
    } else if name.ends_with("_ms") {
        millis(v)
    } else if name.starts_with("bytes") {
        bytes(v)
    } else if name.contains("percent") {
        format!("{}%", num(v))
    } else {
        num(v)
    }
}

/// For packet counters, the share of the packets they could have counted: a drop count means
/// little without the number of packets the fault matched, and it is what a requested
/// percentage is held against.
fn share(name: &str, v: f64, metrics: &[(String, f64)]) -> Option<String> {
    let get = |k: &str| metrics.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let (base, what) = match name {
        "packets_dropped" | "packets_corrupted" | "packets_duplicated" | "packets_reordered" => {
            (get("packets_matched")?, "of matched")
        }
        "packets_delayed" | "packets_bypassed" => get("delay_packets_matched")
            .map(|b| (b, "of those matching the delay rule"))
            .or_else(|| get("delay_packets_seen").map(|b| (b, "of those seen by the delay engine")))
            .or_else(|| get("packets_matched").map(|b| (b, "of matched")))?,
        "packets_matched" => (get("packets_seen")?, "of seen"),
        _ => return None,
    };
    (base > 0.0).then(|| format!("{:.1}% {what}", v / base * 100.0))
}

/// Pairs each `X_requested` metric with the measured metric `X` itself (`hold_seconds` and
/// `hold_seconds_requested`, `loss_percent` and `loss_percent_requested`: the achieved column then
/// says achieved/requested) or with those named `X_…` (`cpu_load_requested` with
/// `cpu_load_percent_per_worker`, `bytes_requested` with `bytes_held`); paired rows come first,
/// then the others in the report's order.
fn metric_rows(metrics: &[(String, f64)]) -> Vec<MetricRow> {
    let requested: Vec<(&str, f64)> = metrics
        .iter()
        .filter_map(|(k, v)| Some((k.strip_suffix("_requested")?, *v)))
        .collect();
    let mut paired = Vec::new();
    let mut others = Vec::new();
    let mut used = vec![false; requested.len()];
    for (k, v) in metrics {
        if k.ends_with("_requested") {
            continue;
        }
        // The longest requested prefix that names this metric.
        let pair = requested
            .iter()
            .enumerate()
            .filter(|(_, (p, _))| {
                k.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
            })
            .max_by_key(|(_, (p, _))| p.len());
        match pair {
            Some((i, (p, req))) => {
                used[i] = true;
                let ratio = (k == p && *req != 0.0)
                    .then(|| format!("{:.1}% of requested", v / req * 100.0));
                paired.push(MetricRow {
                    name: k.clone(),
                    requested: Some(metric_value(k, *req)),
                    measured: Some(metric_value(k, *v)),
                    achieved: share(k, *v, metrics).or(ratio),
                });
            }
            None => others.push(MetricRow {
                name: k.clone(),
                requested: None,
                measured: Some(metric_value(k, *v)),
                achieved: share(k, *v, metrics),
            }),
        }
    }
    for ((p, v), used) in requested.iter().zip(used) {
        if !used {
            paired.push(MetricRow {
                name: format!("{p}_requested"),
                requested: Some(num(*v)),
                measured: None,
                achieved: None,
            });
        }
    }
    paired.extend(others);
    paired
}

fn effect_cell(m: &mut Markup, t: &Target) {
    m.open("td", &[("class", "effect")]);
    if let Some(e) = &t.error {
        m.open("p", &[("class", "error")]);
        m.elem("strong", &[], "error: ");
        m.text(e);
        m.close();
    }
    m.elem(
        "p",
        &[("class", "summary")],
        t.summary.as_deref().unwrap_or("—"),
    );
    let rows = metric_rows(&t.metrics);
    // The "achieved" column only for counters that have a share (network faults).
    let achieved = rows.iter().any(|r| r.achieved.is_some());
    if !rows.is_empty() {
        m.open("table", &[("class", "metrics")]);
        m.open("thead", &[]).open("tr", &[]);
        m.elem("th", &[], "metric")
            .elem("th", &[], "requested")
            .elem("th", &[], "measured");
        if achieved {
            m.elem("th", &[], "achieved");
        }
        m.close().close();
        m.open("tbody", &[]);
        for row in rows {
            m.open("tr", &[("data-metric", &row.name)]);
            m.elem("td", &[("class", "metric-name")], &row.name);
            m.elem(
                "td",
                &[("class", "num requested")],
                row.requested.as_deref().unwrap_or("—"),
            );
            m.elem(
                "td",
                &[("class", "num measured")],
                row.measured.as_deref().unwrap_or("—"),
            );
            if achieved {
                m.elem(
                    "td",
                    &[("class", "achieved")],
                    row.achieved.as_deref().unwrap_or(""),
                );
            }
            m.close();
        }
        m.close().close();
    }
    m.close();
}

/// How long the fault was held on a recovered target, against the request: the measured hold
/// when the report has it (older reports: recovered − injected).
fn held(f: &Fault, t: &crate::model::Target, from: f64, to: f64) -> String {
    let planned = f
        .planned_duration_seconds
        .map(|p| format!(" of {} requested", seconds(p)))
        .unwrap_or_default();
    format!(
        "held {}{planned}",
        seconds(t.hold_achieved.unwrap_or(to - from))
    )
}

fn faults(m: &mut Markup, r: &Report) {
    section(m, "faults", "Faults");
    if r.faults.is_empty() {
        m.elem("p", &[("class", "note")], "No faults in this report.");
        m.close();
        return;
    }
    m.open("div", &[("class", "scroll")]);
    m.open("table", &[("class", "faults")]);
    m.open("thead", &[]).open("tr", &[]);
    for h in [
        "Fault",
        "Kind",
        "Requested",
        "Target",
        "Injected at",
        "Recovered at",
        "Measured effect (and error)",
    ] {
        m.elem("th", &[], h);
    }
    m.close().close();
    m.open("tbody", &[]);
    for f in &r.faults {
        let span = f.targets.len().max(1).to_string();
        let planned = match (f.start_offset_seconds, f.planned_duration_seconds) {
            (Some(s), Some(d)) => format!("planned {} s → {} s", num(s), num(s + d)),
            _ => String::new(),
        };
        let mut first = true;
        let lead = |m: &mut Markup| {
            m.elem(
                "td",
                &[("rowspan", &span), ("class", "fault-name")],
                &f.name,
            );
            m.elem(
                "td",
                &[("rowspan", &span)],
                f.kind.as_deref().unwrap_or("—"),
            );
            m.open("td", &[("rowspan", &span)]);
            m.text(f.requested.as_deref().unwrap_or("—"));
            m.elem("span", &[("class", "planned")], &planned);
            m.close();
        };
        if f.targets.is_empty() {
            m.open("tr", &[("data-fault", &f.name)]);
            lead(m);
            m.elem(
                "td",
                &[("colspan", "4"), ("class", "note")],
                "no target matched",
            );
            m.close();
        }
        for t in &f.targets {
            let class = if t.error.is_some()
                || t.hold_deviation.is_some()
                || t.skipped.is_some()
                || (t.injected_at.is_some() && t.recovered_at.is_none())
            {
                "bad"
            } else {
                ""
            };
            m.open(
                "tr",
                &[
                    ("data-fault", &f.name),
                    ("data-target", &t.label),
                    ("class", class),
                ],
            );
            if first {
                lead(m);
                first = false;
            }
            m.elem("td", &[("class", "target")], &t.label);
            m.elem(
                "td",
                &[("class", "num")],
                &or_dash(t.injected_at.map(|x| format!("{x:.3} s"))),
            );
            m.open("td", &[("class", "num")]);
            m.text(&match (&t.skipped, t.injected_at, t.recovered_at) {
                (Some(_), _, _) => "skipped".into(),
                (None, None, _) => "not injected".into(),
                (None, Some(_), None) => "not recovered".into(),
                (None, Some(_), Some(x)) => format!("{x:.3} s"),
            });
            if let (Some(from), Some(to)) = (t.injected_at, t.recovered_at) {
                m.elem("span", &[("class", "held")], &held(f, t, from, to));
            }
            for note in [&t.hold_deviation, &t.skipped].into_iter().flatten() {
                m.elem("span", &[("class", "held bad")], note);
            }
            m.close();
            effect_cell(m, t);
            m.close();
        }
    }
    m.close().close();
    m.close(); // div.scroll
    m.close();
}

fn opt_ms(x: Option<f64>) -> String {
    or_dash(x.map(millis))
}

fn verdict_rows(steady: &Steady) -> Vec<&crate::model::ProbeVerdict> {
    // Grouped by probe in the order of the series, then as reported (phase order).
    let order = |name: &str| {
        steady
            .probes
            .iter()
            .position(|p| p.probe == name)
            .unwrap_or(usize::MAX)
    };
    let mut rows: Vec<_> = steady.verdicts.iter().collect();
    rows.sort_by_key(|v| order(&v.probe));
    rows
}

fn verdicts(m: &mut Markup, r: &Report) {
    section(m, "verdicts", "Probe verdicts per phase");
    let Some(steady) = &r.steady else {
        m.elem(
            "p",
            &[("class", "note")],
            "No steady-state probes, so no verdicts.",
        );
        m.close();
        return;
    };
    if steady.verdicts.is_empty() {
        m.elem("p", &[("class", "note")], "No verdicts in this report.");
    } else {
        m.open("table", &[("class", "verdicts")]);
        m.open("thead", &[]).open("tr", &[]);
        for h in [
            "Probe",
            "Phase",
            "Result",
            "Samples",
            "Success ratio",
            "p50",
            "p99",
            "Values",
            "Reason",
        ] {
            m.elem("th", &[], h);
        }
        m.close().close();
        m.open("tbody", &[]);
        for v in verdict_rows(steady) {
            let (class, text) = match v.pass {
                Some(true) => ("pass", "pass"),
                Some(false) => ("fail", "FAIL"),
                None => ("unknown", "?"),
            };
            let phase = v.phase.as_deref().unwrap_or("—");
            m.open(
                "tr",
                &[
                    ("data-probe", &v.probe),
                    ("data-phase", phase),
                    ("class", class),
                ],
            );
            m.elem("td", &[], &v.probe);
            m.elem("td", &[], phase);
            m.elem("td", &[("class", &format!("result {class}"))], text);
            m.elem(
                "td",
                &[("class", "num")],
                &or_dash(v.samples.map(|n| n.to_string())),
            );
            m.elem(
                "td",
                &[("class", "num")],
                &or_dash(v.success_ratio.map(|x| format!("{:.1}%", x * 100.0))),
            );
            m.elem("td", &[("class", "num")], &opt_ms(v.p50_ms));
            m.elem("td", &[("class", "num")], &opt_ms(v.p99_ms));
            let values = match (v.value_min, v.value_max) {
                (Some(a), Some(b)) if a == b => num(a),
                (Some(a), Some(b)) => format!("{} to {}", num(a), num(b)),
                _ => "—".into(),
            };
            m.elem("td", &[("class", "num")], &values);
            m.elem(
                "td",
                &[("class", "reason")],
                v.reason.as_deref().unwrap_or(""),
            );
            m.close();
        }
        m.close().close();
    }
    m.elem("h3", &[], "Abort");
    if steady.breaches.is_empty() {
        m.elem(
            "p",
            &[("class", "note")],
            "No probe breached an abort limit.",
        );
    } else {
        m.open("ul", &[("class", "breaches")]);
        for b in &steady.breaches {
            m.open("li", &[("data-probe", &b.probe)]);
            m.text(&format!(
                "{}: probe {} breached in the {} phase: {}",
                b.t.map_or_else(|| "—".into(), |t| format!("{t:.3} s")),
                b.probe,
                b.phase.as_deref().unwrap_or("?"),
                b.reason.as_deref().unwrap_or("")
            ));
            m.close();
        }
        m.close();
    }
    m.close();
}

fn errors(m: &mut Markup, r: &Report) {
    section(m, "errors", "Errors");
    if r.errors.is_empty() {
        m.elem("p", &[("class", "note")], "No errors.");
    } else {
        m.open("ul", &[("class", "errors")]);
        for e in &r.errors {
            m.elem("li", &[], e);
        }
        m.close();
    }
    m.close();
}

fn timing(m: &mut Markup, r: &Report) {
    section(m, "timing", "Timing");
    m.open("table", &[("class", "timing")]).open("tbody", &[]);
    let rows = [
        (
            "applyLatencyMs",
            "From the command's start to the first fault in effect (less the baseline)",
            r.timing.apply_latency_ms,
            "no fault was injected",
        ),
        (
            "maxRecoverLatencyMs",
            "The longest single recovery",
            r.timing.max_recover_latency_ms,
            "nothing was recovered",
        ),
        (
            "abortToRecoveredMs",
            "From the abort to every fault recovered",
            r.timing.abort_to_recovered_ms,
            "no abort",
        ),
    ];
    for (key, what, value, absent) in rows {
        m.open("tr", &[("data-timing", key)]);
        m.elem("th", &[], what);
        m.elem(
            "td",
            &[("class", "num")],
            &value.map_or_else(|| format!("— ({absent})"), millis),
        );
        m.close();
    }
    m.close().close();
    m.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(metrics: &[(&str, f64)]) -> Vec<(String, String, String, String)> {
        let metrics: Vec<(String, f64)> =
            metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        metric_rows(&metrics)
            .into_iter()
            .map(|r| {
                (
                    r.name,
                    r.requested.unwrap_or_default(),
                    r.measured.unwrap_or_default(),
                    r.achieved.unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn requested_metrics_sit_beside_what_was_measured() {
        let r = rows(&[
            ("cpu_load_percent_per_worker", 29.87),
            ("cpu_load_requested", 30.0),
            ("cpu_seconds", 0.59),
        ]);
        assert_eq!(
            r[0],
            (
                "cpu_load_percent_per_worker".into(),
                "30%".into(),
                "29.87%".into(),
                String::new()
            )
        );
        assert_eq!(r[1].0, "cpu_seconds");
        assert_eq!(r.len(), 2);
        let r = rows(&[
            ("bytes_held", 268435456.0),
            ("bytes_requested", 268435456.0),
        ]);
        assert_eq!(r[0].1, r[0].2);
        assert!(r[0].2.starts_with("256.0 MiB"), "{:?}", r[0]);
    }

    #[test]
    fn style_sheet_is_plain_text_in_xml() {
        // It is written raw into <style>: markup characters would break the XHTML reading.
        assert!(!STYLE.contains('<') && !STYLE.contains('&'));
    }

    #[test]
    fn start_times_are_utc_and_never_panic() {
        assert_eq!(start_time(1795403283903), "2026-11-23 03:08:03.903 UTC");
        assert_eq!(start_time(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(
            start_time(253_402_300_799_999),
            "9999-12-31 23:59:59.999 UTC"
        );
        assert!(start_time(u64::MAX).ends_with("since the Unix epoch"));
    }

    #[test]
    fn packet_counters_show_the_share_achieved() {
        let r = rows(&[
            ("packets_dropped", 100.0),
            ("packets_matched", 1000.0),
            ("packets_seen", 4000.0),
        ]);
        assert_eq!((&*r[0].2, &*r[0].3), ("100", "10.0% of matched"));
        assert_eq!((&*r[1].2, &*r[1].3), ("1000", "25.0% of seen"));
        assert_eq!((&*r[2].2, &*r[2].3), ("4000", ""));
    }

    #[test]
    fn a_requested_metric_without_a_measure_is_still_shown() {
        let r = rows(&[("loss_requested", 10.0)]);
        assert_eq!(
            r,
            vec![(
                "loss_requested".into(),
                "10".into(),
                String::new(),
                String::new()
            )]
        );
    }

    #[test]
    fn a_metric_pairs_with_its_own_request_and_shows_the_ratio() {
        let r = rows(&[
            ("hold_seconds", 2.97),
            ("hold_seconds_requested", 3.0),
            ("loss_percent", 9.87),
            ("loss_percent_requested", 10.0),
        ]);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].0, "hold_seconds");
        assert_eq!(r[0].3, "99.0% of requested");
        assert_eq!(r[1].0, "loss_percent");
        assert_eq!(r[1].1, "10%");
        assert_eq!(r[1].3, "98.7% of requested");
    }
}
