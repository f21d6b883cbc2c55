//! The `StatusCheck` custom resource (`havoc.dev/v1alpha1`): Chaos Mesh's HTTP health check.
//!
//! The spec has Chaos Mesh's field names and is turned into host mode's
//! [`havoc_spec::statuscheck::StatusCheckSpec`] by [`StatusCheckSpec::to_spec`] (through serde: the
//! field names are the same), so the operator judges a check with the same pure
//! [`havoc_spec::statuscheck::Tracker`] as `havoc run` and validates it with the same rules.

use std::collections::BTreeMap;

use havoc_spec::error::Problems;
use havoc_spec::units::HumanDuration;
use havoc_spec::FieldPath;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// `Synchronous` (ends at the first threshold reached) or `Continuous` (runs until its duration,
/// fails at the failure threshold).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum CheckMode {
    #[default]
    Synchronous,
    Continuous,
}

/// The kind of probe; only `HTTP`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum CheckType {
    #[default]
    #[serde(rename = "HTTP")]
    Http,
}

/// `GET` or `POST`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
}

/// What counts as a success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCriteria {
    /// `200` or a range `200-399`.
    #[schemars(length(max = 16))]
    pub status_code: String,
}

/// The HTTP request of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpStatusCheck {
    /// `http://host:port/path` (plain HTTP).
    #[schemars(length(max = 2048))]
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Each header name maps to a list of values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    pub criteria: HttpCriteria,
}

/// An HTTP health check, run by the operator (havoc.dev).
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "StatusCheck",
    plural = "statuschecks",
    namespaced,
    status = "StatusCheckStatus",
    derive = "PartialEq",
    shortname = "hstc",
    category = "havoc",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Url", type_ = "string", json_path = ".spec.http.url"),
    printcolumn(name = "Count", type_ = "integer", json_path = ".status.count"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "An HTTP health check (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.http.url.startsWith('http://') || self.http.url.startsWith('https://')")
        .message("http.url must be an http:// or https:// URL"),
)]
pub struct StatusCheckSpec {
    #[serde(default)]
    pub mode: CheckMode,
    #[serde(default, rename = "type")]
    pub check_type: CheckType,
    /// How long a Continuous check runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Seconds one probe may take (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u32>,
    /// Seconds between probes (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: Option<u32>,
    /// Consecutive failures that fail the check (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: Option<u32>,
    /// Consecutive successes that pass a Synchronous check (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub success_threshold: Option<u32>,
    /// Probe results kept in status (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub records_history_limit: Option<u32>,
    pub http: HttpStatusCheck,
}

impl StatusCheckSpec {
    /// Host mode's spec, defaults filled in (the same field names, so through serde).
    pub fn to_spec(&self) -> Result<havoc_spec::statuscheck::StatusCheckSpec, String> {
        let v = serde_json::to_value(self).map_err(|e| e.to_string())?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// Checks the spec with host mode's rules, paths under `sp`.
    pub fn validate_spec(&self, sp: &FieldPath, p: &mut Problems) {
        match self.to_spec() {
            Ok(s) => s.validate(sp, p),
            Err(e) => p.add(sp, e),
        }
    }
}

/// One probe result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckRecord {
    pub start_time: MicroTime,
    /// `Success` or `Failure`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A condition of a check: `Completed`, `SuccessThresholdExceed`, `FailureThresholdExceed`,
/// `DurationExceed` (Chaos Mesh's types).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// Status of a StatusCheck.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCheckStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Probes run so far.
    #[serde(default)]
    pub count: u64,
    /// Consecutive successes and failures at the last probe (what the thresholds count).
    #[serde(default)]
    pub consecutive_successes: u32,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The last `recordsHistoryLimit` results, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub records: Vec<CheckRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CheckCondition>,
}

/// Condition types.
pub const COMPLETED: &str = "Completed";
pub const SUCCESS_THRESHOLD_EXCEED: &str = "SuccessThresholdExceed";
pub const FAILURE_THRESHOLD_EXCEED: &str = "FailureThresholdExceed";
pub const DURATION_EXCEED: &str = "DurationExceed";

impl StatusCheckStatus {
    /// Whether condition `type_` is `True`.
    pub fn is(&self, type_: &str) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    }

    /// Sets a condition (its transition time moves only when its status changes).
    pub fn set(&mut self, type_: &str, on: bool, reason: &str, message: String, now: &Time) {
        let status = if on { "True" } else { "False" };
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now.clone());
                }
                c.status = status.into();
                c.reason = Some(reason.into());
                c.message = Some(message);
            }
            None => self.conditions.push(CheckCondition {
                type_: type_.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: Some(now.clone()),
            }),
        }
    }

    /// Whether the check ended, and whether it passed.
    pub fn verdict(&self) -> Option<bool> {
        self.is(COMPLETED)
            .then(|| !self.is(FAILURE_THRESHOLD_EXCEED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_becomes_host_modes_spec_with_its_defaults() {
        let s: StatusCheckSpec = serde_json::from_value(serde_json::json!({
            "mode": "Continuous", "duration": "30s", "intervalSeconds": 2,
            "http": {"url": "http://127.0.0.1:1/", "criteria": {"statusCode": "200-299"}}
        }))
        .expect("spec");
        let h = s.to_spec().expect("host spec");
        assert_eq!(h.interval_seconds, 2);
        assert_eq!(h.failure_threshold, 3);
        assert_eq!(h.records_history_limit, 100);
        let mut p = Problems::new();
        s.validate_spec(&FieldPath::root().key("spec"), &mut p);
        assert!(p.is_empty(), "{:?}", p.into_vec());
    }

    #[test]
    fn a_bad_criteria_is_refused_with_its_path() {
        let s: StatusCheckSpec = serde_json::from_value(serde_json::json!({
            "http": {"url": "http://127.0.0.1:1/", "criteria": {"statusCode": "99"}}
        }))
        .expect("spec");
        let mut p = Problems::new();
        s.validate_spec(&FieldPath::root().key("spec"), &mut p);
        let e = format!("{:?}", p.into_vec());
        assert!(e.contains("statusCode"), "{e}");
    }

    #[test]
    fn verdict_reads_the_conditions() {
        let mut st = StatusCheckStatus::default();
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(st.verdict(), None);
        st.set(FAILURE_THRESHOLD_EXCEED, true, "x", "x".into(), &now);
        assert_eq!(st.verdict(), None);
        st.set(COMPLETED, true, "x", "x".into(), &now);
        assert_eq!(st.verdict(), Some(false));
    }
}
