//! StatusCheck: Chaos Mesh's HTTP health check, as a document of its own or a workflow template.
//!
//! The fields are Chaos Mesh's (`mode`, `type`, `duration`, `timeoutSeconds`, `intervalSeconds`,
//! `failureThreshold`, `successThreshold`, `recordsHistoryLimit`, `http.url/method/headers/body/
//! criteria.statusCode`). The decision of what a sequence of probe results means is the pure
//! [`Tracker`], so the host runner and the operator judge a check the same way.
//!
//! - `Synchronous` (the default): the check ends as soon as `successThreshold` consecutive
//!   successes (Succeeded) or `failureThreshold` consecutive failures (Failed) are seen.
//! - `Continuous`: the check runs until its `duration` (or its workflow node's deadline) and
//!   fails as soon as `failureThreshold` consecutive failures are seen.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::units::{clip, HumanDuration};

/// The most results a check keeps (`recordsHistoryLimit` is at most this).
pub const MAX_HISTORY: u32 = 1000;
/// The longest probe timeout and interval, in seconds.
pub const MAX_SECONDS: u32 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CheckMode {
    #[default]
    Synchronous,
    Continuous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CheckType {
    #[default]
    #[serde(rename = "HTTP")]
    Http,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusCheckSpec {
    #[serde(default)]
    pub mode: CheckMode,
    #[serde(default, rename = "type")]
    pub check_type: CheckType,
    /// How long a Continuous check runs (default: until its workflow node's deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Default 1.
    #[serde(default = "one")]
    pub timeout_seconds: u32,
    /// Default 10 (Chaos Mesh's).
    #[serde(default = "ten")]
    pub interval_seconds: u32,
    /// Default 3.
    #[serde(default = "three")]
    pub failure_threshold: u32,
    /// Default 1.
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// Default 100, at most [`MAX_HISTORY`].
    #[serde(default = "hundred")]
    pub records_history_limit: u32,
    pub http: HttpStatusCheck,
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn ten() -> u32 {
    10
}
fn hundred() -> u32 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpStatusCheck {
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Chaos Mesh's `http.Header`: each name maps to a list of values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub criteria: HttpCriteria,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCriteria {
    /// `200` or a range `200-399`.
    pub status_code: String,
}

impl HttpCriteria {
    /// The accepted status range, inclusive.
    pub fn range(&self) -> Result<(u16, u16), String> {
        parse_status_range(&self.status_code)
    }
}

/// Parses Chaos Mesh's `statusCode` criteria: one code or `LOW-HIGH`, each 100..=599.
pub fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let code = |t: &str| -> Result<u16, String> {
        match t.trim().parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(format!(
                "`{}` is not a status code: expected a code 100..=599 like `200`, or a range like `200-399`",
                clip(s)
            )),
        }
    };
    match s.split_once('-') {
        None => code(s).map(|c| (c, c)),
        Some((a, b)) => {
            let (a, b) = (code(a)?, code(b)?);
            if a > b {
                return Err(format!("range `{}` is empty: write LOW-HIGH", clip(s)));
            }
            Ok((a, b))
        }
    }
}

impl StatusCheckSpec {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.into())
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds.into())
    }

    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        for (key, v, min) in [
            ("timeoutSeconds", self.timeout_seconds, 1),
            ("intervalSeconds", self.interval_seconds, 1),
            ("failureThreshold", self.failure_threshold, 1),
            ("successThreshold", self.success_threshold, 1),
            ("recordsHistoryLimit", self.records_history_limit, 1),
        ] {
            if v < min {
                p.add(&path.key(key), format!("must be at least {min}, got {v}"));
            }
        }
        for (key, v, max) in [
            ("timeoutSeconds", self.timeout_seconds, MAX_SECONDS),
            ("intervalSeconds", self.interval_seconds, MAX_SECONDS),
            ("failureThreshold", self.failure_threshold, MAX_HISTORY),
            ("successThreshold", self.success_threshold, MAX_HISTORY),
            (
                "recordsHistoryLimit",
                self.records_history_limit,
                MAX_HISTORY,
            ),
        ] {
            if v > max {
                p.add(&path.key(key), format!("must be at most {max}, got {v}"));
            }
        }
        if let Some(d) = self.duration {
            if self.mode == CheckMode::Synchronous {
                p.add(
                    &path.key("duration"),
                    "applies to mode Continuous only: a Synchronous check ends at its thresholds",
                );
            } else if d.0.is_zero() || d.0 > crate::experiment::MAX_FAULT_DURATION {
                p.add(
                    &path.key("duration"),
                    "must be more than 0 and at most 7 days",
                );
            }
        }
        let hp = path.key("http");
        if let Err(e) = crate::probe::check_http_url(&self.http.url) {
            p.add(&hp.key("url"), e);
        }
        if let Err(e) = self.http.criteria.range() {
            p.add(&hp.key("criteria").key("statusCode"), e);
        }
        if self.http.headers.len() > 64 {
            p.add(&hp.key("headers"), "at most 64 headers");
        }
    }
}

/// A `kind: StatusCheck` document.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusCheck {
    pub api_version: String,
    pub metadata: crate::experiment::Metadata,
    pub spec: StatusCheckSpec,
}

/// Parses and validates a `kind: StatusCheck` document.
pub fn parse_status_check(src: &str) -> Result<StatusCheck, crate::error::SpecErrors> {
    let (root, api_version, metadata) = crate::workflow::document(src, "StatusCheck")?;
    let sp = FieldPath::root().key("spec");
    let node = root.get("spec").expect("document() checked spec");
    let mut errors = Vec::new();
    let spec = match crate::de::from_node::<StatusCheckSpec>(node, &sp) {
        Ok(s) => {
            let mut p = Problems::new();
            s.validate(&sp, &mut p);
            for (fp, message) in p.into_vec() {
                errors.push(crate::error::SpecError {
                    pos: fp.locate(&root),
                    path: fp,
                    message,
                });
            }
            Some(s)
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    crate::workflow::finish_doc(
        errors,
        spec.map(|spec| StatusCheck {
            api_version,
            metadata,
            spec,
        }),
    )
}

/// One probe result kept in a check's bounded history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub at_unix_ms: u64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CheckVerdict {
    Succeeded,
    Failed,
}

/// The pure judge of a check: consecutive counts and a bounded history.
#[derive(Debug, Clone)]
pub struct Tracker {
    mode: CheckMode,
    success_threshold: u32,
    failure_threshold: u32,
    limit: usize,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
    pub history: VecDeque<Record>,
}

impl Tracker {
    pub fn new(spec: &StatusCheckSpec) -> Self {
        Tracker {
            mode: spec.mode,
            success_threshold: spec.success_threshold.max(1),
            failure_threshold: spec.failure_threshold.max(1),
            limit: spec.records_history_limit.clamp(1, MAX_HISTORY) as usize,
            consecutive_ok: 0,
            consecutive_failed: 0,
            history: VecDeque::new(),
        }
    }

    /// Records one probe result; returns the verdict when this result decides the check.
    pub fn record(&mut self, rec: Record) -> Option<CheckVerdict> {
        if rec.ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_failed = 0;
        } else {
            self.consecutive_failed = self.consecutive_failed.saturating_add(1);
            self.consecutive_ok = 0;
        }
        if self.history.len() == self.limit {
            self.history.pop_front();
        }
        self.history.push_back(rec);
        if self.consecutive_failed >= self.failure_threshold {
            Some(CheckVerdict::Failed)
        } else if self.mode == CheckMode::Synchronous
            && self.consecutive_ok >= self.success_threshold
        {
            Some(CheckVerdict::Succeeded)
        } else {
            None
        }
    }

    /// The verdict when the check's time is over without a deciding result: a Continuous check
    /// that never failed succeeded; a Synchronous one that never reached a threshold failed.
    pub fn at_deadline(&self) -> CheckVerdict {
        match self.mode {
            CheckMode::Continuous => CheckVerdict::Succeeded,
            CheckMode::Synchronous => CheckVerdict::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: CheckMode, ok: u32, fail: u32, limit: u32) -> StatusCheckSpec {
        StatusCheckSpec {
            mode,
            check_type: CheckType::Http,
            duration: None,
            timeout_seconds: 1,
            interval_seconds: 1,
            failure_threshold: fail,
            success_threshold: ok,
            records_history_limit: limit,
            http: HttpStatusCheck {
                url: "http://127.0.0.1:1/".into(),
                method: HttpMethod::Get,
                headers: BTreeMap::new(),
                body: None,
                criteria: HttpCriteria {
                    status_code: "200".into(),
                },
            },
        }
    }

    fn rec(ok: bool) -> Record {
        Record {
            at_unix_ms: 0,
            ok,
            message: None,
        }
    }

    #[test]
    fn synchronous_ends_at_either_threshold() {
        let mut t = Tracker::new(&spec(CheckMode::Synchronous, 2, 2, 10));
        assert_eq!(t.record(rec(true)), None);
        assert_eq!(t.record(rec(false)), None);
        assert_eq!(t.record(rec(true)), None);
        assert_eq!(t.record(rec(true)), Some(CheckVerdict::Succeeded));
        let mut t = Tracker::new(&spec(CheckMode::Synchronous, 2, 2, 10));
        assert_eq!(t.record(rec(false)), None);
        assert_eq!(t.record(rec(false)), Some(CheckVerdict::Failed));
    }

    #[test]
    fn continuous_only_fails_and_succeeds_at_deadline() {
        let mut t = Tracker::new(&spec(CheckMode::Continuous, 1, 3, 10));
        for _ in 0..20 {
            assert_eq!(t.record(rec(true)), None);
        }
        assert_eq!(t.at_deadline(), CheckVerdict::Succeeded);
        t.record(rec(false));
        t.record(rec(false));
        assert_eq!(t.record(rec(false)), Some(CheckVerdict::Failed));
    }

    #[test]
    fn history_is_bounded() {
        let mut t = Tracker::new(&spec(CheckMode::Continuous, 1, 1000, 5));
        for i in 0..50 {
            t.record(Record {
                at_unix_ms: i,
                ok: true,
                message: None,
            });
        }
        assert_eq!(t.history.len(), 5);
        assert_eq!(t.history.front().map(|r| r.at_unix_ms), Some(45));
    }

    #[test]
    fn documents_parse_and_wrong_fields_are_positioned() {
        let head =
            "apiVersion: chaos-mesh.org/v1alpha1\nkind: StatusCheck\nmetadata: {name: c}\nspec:\n";
        let ok = parse_status_check(&format!(
            "{head}  mode: Continuous\n  type: HTTP\n  intervalSeconds: 2\n  http:\n    url: http://127.0.0.1:8080/\n    criteria: {{statusCode: '200-399'}}\n"
        ))
        .expect("valid");
        assert_eq!(ok.spec.mode, CheckMode::Continuous);
        assert_eq!(ok.spec.http.criteria.range(), Ok((200, 399)));
        let e = parse_status_check(&format!(
            "{head}  failureThreshold: 0\n  http:\n    url: http://127.0.0.1:8080/\n    criteria: {{statusCode: '2xx'}}\n"
        ))
        .expect_err("invalid")
        .render("c.yaml");
        assert!(
            e.contains("c.yaml:5:21: spec.failureThreshold: must be at least 1"),
            "{e}"
        );
        assert!(
            e.contains("c.yaml:8:28: spec.http.criteria.statusCode: `2xx` is not a status code"),
            "{e}"
        );
        let e = parse_status_check(&format!(
            "{head}  type: TCP\n  http: {{url: 'http://x/', criteria: {{statusCode: '200'}}}}\n"
        ))
        .expect_err("TCP")
        .render("c.yaml");
        assert!(e.contains("spec.type: unknown value `TCP`"), "{e}");
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200"), Ok((200, 200)));
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("2xx").is_err());
        assert!(parse_status_range("700").is_err());
    }
}
