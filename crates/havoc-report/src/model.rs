//! A lenient reading of a report for rendering.
//!
//! The HTML must come out of whatever report it is given: one from an older or newer havoc, one
//! cut short by a failure, one without steady state. So nothing here fails: a field that is
//! missing or of the wrong type is read as absent, and the page says so. [`crate::validate`] is
//! where a report is judged.

use serde_json::{Map, Value};

pub(crate) struct Report {
    pub experiment: Option<String>,
    pub run_id: Option<String>,
    /// Kept as the JSON number's own text, so that a 64-bit seed is shown exactly.
    pub seed: Option<String>,
    pub verdict: Option<String>,
    pub reason: Option<String>,
    pub started_at_unix_ms: Option<u64>,
    pub duration_seconds: Option<f64>,
    pub all_recovered: Option<bool>,
    pub faults: Vec<Fault>,
    pub errors: Vec<String>,
    pub timing: Timing,
    pub steady: Option<Steady>,
}

#[derive(Default)]
pub(crate) struct Timing {
    pub apply_latency_ms: Option<f64>,
    pub max_recover_latency_ms: Option<f64>,
    pub abort_to_recovered_ms: Option<f64>,
}

pub(crate) struct Fault {
    pub name: String,
    pub kind: Option<String>,
    pub requested: Option<String>,
    pub start_offset_seconds: Option<f64>,
    pub planned_duration_seconds: Option<f64>,
    pub targets: Vec<Target>,
}

pub(crate) struct Target {
    pub label: String,
    pub injected_at: Option<f64>,
    pub recovered_at: Option<f64>,
    pub summary: Option<String>,
    /// In the report's order (alphabetical, as havoc writes them).
    pub metrics: Vec<(String, f64)>,
    pub error: Option<String>,
    /// Measured hold and its deviation from the request (reports since the per-target clock).
    pub hold_achieved: Option<f64>,
    pub hold_deviation: Option<String>,
    pub skipped: Option<String>,
}

pub(crate) struct Steady {
    pub phases: Vec<PhaseSpan>,
    pub probes: Vec<Series>,
    pub verdicts: Vec<ProbeVerdict>,
    pub breaches: Vec<Breach>,
}

pub(crate) struct PhaseSpan {
    pub phase: String,
    pub start: f64,
    pub end: Option<f64>,
}

pub(crate) struct Series {
    pub probe: String,
    pub kind: Option<String>,
    pub mode: Option<String>,
    pub interval_ms: Option<f64>,
    pub samples: Vec<Sample>,
}

pub(crate) struct Sample {
    pub t: f64,
    pub phase: Option<String>,
    pub ok: bool,
    pub latency_ms: Option<f64>,
    pub value: Option<f64>,
    pub error: Option<String>,
}

pub(crate) struct ProbeVerdict {
    pub probe: String,
    pub phase: Option<String>,
    pub pass: Option<bool>,
    pub samples: Option<u64>,
    pub success_ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub reason: Option<String>,
}

pub(crate) struct Breach {
    pub probe: String,
    pub phase: Option<String>,
    pub t: Option<f64>,
    pub reason: Option<String>,
}

fn str_of(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A finite number (serde_json never holds NaN, but be explicit: the charts divide by these).
fn num_of(o: &Map<String, Value>, key: &str) -> Option<f64> {
    o.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn bool_of(o: &Map<String, Value>, key: &str) -> Option<bool> {
    o.get(key).and_then(Value::as_bool)
}

/// The objects of the array at `key`; other elements are skipped.
fn objects<'a>(
    o: &'a Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a Map<String, Value>> {
    o.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl Report {
    pub fn read(v: &Value) -> Report {
        let o = v.as_object().unwrap_or(&EMPTY);
        let timing = o
            .get("timing")
            .and_then(Value::as_object)
            .map(|t| Timing {
                apply_latency_ms: num_of(t, "applyLatencyMs"),
                max_recover_latency_ms: num_of(t, "maxRecoverLatencyMs"),
                abort_to_recovered_ms: num_of(t, "abortToRecoveredMs"),
            })
            .unwrap_or_default();
        Report {
            experiment: str_of(o, "experiment"),
            run_id: str_of(o, "runId"),
            seed: o
                .get("seed")
                .filter(|s| s.is_number())
                .map(Value::to_string),
            verdict: str_of(o, "verdict"),
            reason: str_of(o, "reason"),
            started_at_unix_ms: o.get("startedAtUnixMs").and_then(Value::as_u64),
            duration_seconds: num_of(o, "durationSeconds"),
            all_recovered: bool_of(o, "allRecovered"),
            faults: objects(o, "faults").map(Fault::read).collect(),
            errors: o
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            timing,
            steady: o
                .get("steadyState")
                .and_then(Value::as_object)
                .map(Steady::read),
        }
    }

    /// The end of the time axis: the last moment anything in the report happened (at least 1 s
    /// after the start, so an empty report still gets an axis).
    pub fn time_span(&self) -> f64 {
        let mut end = self.duration_seconds.unwrap_or(0.0);
        for f in &self.faults {
            if let (Some(s), Some(d)) = (f.start_offset_seconds, f.planned_duration_seconds) {
                end = end.max(s + d);
            }
            for t in &f.targets {
                end = end.max(t.injected_at.unwrap_or(0.0));
                end = end.max(t.recovered_at.unwrap_or(0.0));
            }
        }
        if let Some(s) = &self.steady {
            for p in &s.phases {
                end = end.max(p.end.unwrap_or(p.start));
            }
            for series in &s.probes {
                for smp in &series.samples {
                    end = end.max(smp.t + smp.latency_ms.unwrap_or(0.0) / 1000.0);
                }
            }
            for b in &s.breaches {
                end = end.max(b.t.unwrap_or(0.0));
            }
        }
        end.max(1.0)
    }
}

impl Fault {
    fn read(o: &Map<String, Value>) -> Fault {
        Fault {
            name: str_of(o, "name").unwrap_or_else(|| "(unnamed)".into()),
            kind: str_of(o, "kind"),
            requested: str_of(o, "requested"),
            start_offset_seconds: num_of(o, "startOffsetSeconds"),
            planned_duration_seconds: num_of(o, "plannedDurationSeconds"),
            targets: objects(o, "targets").map(Target::read).collect(),
        }
    }
}

impl Target {
    fn read(o: &Map<String, Value>) -> Target {
        let effect = o.get("effect").and_then(Value::as_object);
        let label = str_of(o, "label")
            .or_else(|| o.get("target").map(Value::to_string))
            .unwrap_or_else(|| "(unknown target)".into());
        Target {
            label,
            injected_at: num_of(o, "injectedAtSeconds"),
            recovered_at: num_of(o, "recoveredAtSeconds"),
            summary: effect.and_then(|e| str_of(e, "summary")),
            metrics: effect
                .and_then(|e| e.get("metrics"))
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64().filter(|x| x.is_finite())?)))
                .collect(),
            error: str_of(o, "error"),
            hold_achieved: num_of(o, "holdAchievedSeconds"),
            hold_deviation: str_of(o, "holdDeviation"),
            skipped: str_of(o, "skipped"),
        }
    }
}

impl Steady {
    fn read(o: &Map<String, Value>) -> Steady {
        Steady {
            phases: objects(o, "phases")
                .filter_map(|p| {
                    Some(PhaseSpan {
                        phase: str_of(p, "phase")?,
                        start: num_of(p, "startSeconds")?,
                        end: num_of(p, "endSeconds"),
                    })
                })
                .collect(),
            probes: objects(o, "probes")
                .map(|p| Series {
                    probe: str_of(p, "probe").unwrap_or_else(|| "(unnamed)".into()),
                    kind: str_of(p, "kind"),
                    mode: str_of(p, "mode"),
                    interval_ms: num_of(p, "intervalMs"),
                    samples: objects(p, "samples")
                        .filter_map(|s| {
                            Some(Sample {
                                t: num_of(s, "tSeconds")?,
                                phase: str_of(s, "phase"),
                                ok: bool_of(s, "ok").unwrap_or(false),
                                latency_ms: num_of(s, "latencyMs"),
                                value: num_of(s, "value"),
                                error: str_of(s, "error"),
                            })
                        })
                        .collect(),
                })
                .collect(),
            verdicts: objects(o, "verdicts")
                .map(|v| ProbeVerdict {
                    probe: str_of(v, "probe").unwrap_or_else(|| "(unnamed)".into()),
                    phase: str_of(v, "phase"),
                    pass: bool_of(v, "pass"),
                    samples: v.get("samples").and_then(Value::as_u64),
                    success_ratio: num_of(v, "successRatio"),
                    p50_ms: num_of(v, "latencyP50Ms"),
                    p99_ms: num_of(v, "latencyP99Ms"),
                    value_min: num_of(v, "valueMin"),
                    value_max: num_of(v, "valueMax"),
                    reason: str_of(v, "reason"),
                })
                .collect(),
            breaches: objects(o, "breaches")
                .map(|b| Breach {
                    probe: str_of(b, "probe").unwrap_or_else(|| "(unnamed)".into()),
                    phase: str_of(b, "phase"),
                    t: num_of(b, "tSeconds"),
                    reason: str_of(b, "reason"),
                })
                .collect(),
        }
    }
}
