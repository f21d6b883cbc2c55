//! The `Schedule` custom resource (`havoc.dev/v1alpha1`, Chaos Mesh's field names): a chaos
//! object or a workflow created on a cron schedule.
//!
//! The decisions (which start time is due, at most one catch-up run after an outage, whether a
//! run may start under `concurrencyPolicy`) are host mode's pure [`havoc_spec::schedule::due`] and
//! [`havoc_spec::schedule::admit`]; this module holds the resource and maps it onto them.

use std::time::Duration;

use havoc_spec::error::Problems;
use havoc_spec::schedule::{ConcurrencyPolicy as HostPolicy, CronSchedule, MAX_HISTORY_LIMIT};
use havoc_spec::FieldPath;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::crd::{
    DNSChaosSpec, HTTPChaosSpec, IOChaosSpec, NetworkChaosSpec, PodChaosSpec, StressChaosSpec,
    SyscallChaosSpec, TimeChaosSpec,
};
use crate::workflow_crd::WorkflowSpec;

/// What a schedule does when a run is due while an earlier one still runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ConcurrencyPolicy {
    /// Skip the run (the default).
    #[default]
    Forbid,
    /// Start it anyway.
    Allow,
}

/// What a schedule creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ScheduleType {
    PodChaos,
    NetworkChaos,
    StressChaos,
    IOChaos,
    TimeChaos,
    SyscallChaos,
    DNSChaos,
    HTTPChaos,
    Workflow,
}

impl ScheduleType {
    pub fn name(self) -> &'static str {
        match self {
            ScheduleType::PodChaos => "PodChaos",
            ScheduleType::NetworkChaos => "NetworkChaos",
            ScheduleType::StressChaos => "StressChaos",
            ScheduleType::IOChaos => "IOChaos",
            ScheduleType::TimeChaos => "TimeChaos",
            ScheduleType::SyscallChaos => "SyscallChaos",
            ScheduleType::DNSChaos => "DNSChaos",
            ScheduleType::HTTPChaos => "HTTPChaos",
            ScheduleType::Workflow => "Workflow",
        }
    }
}

/// Runs a chaos object or a workflow on a cron schedule (havoc.dev).
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "Schedule",
    plural = "schedules",
    namespaced,
    status = "ScheduleStatus",
    derive = "PartialEq",
    shortname = "hsch",
    category = "havoc",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Runs a chaos object or a workflow on a cron schedule (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type != 'PodChaos' || has(self.podChaos)")
        .message("type PodChaos needs podChaos"),
    validation = Rule::new("self.type != 'NetworkChaos' || has(self.networkChaos)")
        .message("type NetworkChaos needs networkChaos"),
    validation = Rule::new("self.type != 'StressChaos' || has(self.stressChaos)")
        .message("type StressChaos needs stressChaos"),
    validation = Rule::new("self.type != 'IOChaos' || has(self.ioChaos)")
        .message("type IOChaos needs ioChaos"),
    validation = Rule::new("self.type != 'TimeChaos' || has(self.timeChaos)")
        .message("type TimeChaos needs timeChaos"),
    validation = Rule::new("self.type != 'SyscallChaos' || has(self.syscallChaos)")
        .message("type SyscallChaos needs syscallChaos"),
    validation = Rule::new("self.type != 'DNSChaos' || has(self.dnsChaos)")
        .message("type DNSChaos needs dnsChaos"),
    validation = Rule::new("self.type != 'HTTPChaos' || has(self.httpChaos)")
        .message("type HTTPChaos needs httpChaos"),
    validation = Rule::new("self.type != 'Workflow' || has(self.workflow)")
        .message("type Workflow needs workflow"),
)]
pub struct ScheduleSpec {
    /// `@every 5s`, a cron pattern (5 fields, or 6 with seconds first) or `@hourly`...; UTC.
    #[schemars(length(min = 1, max = 256))]
    pub schedule: String,
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Finished runs kept (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub history_limit: Option<u32>,
    /// A start later than this after its time is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub starting_deadline_seconds: Option<i64>,
    /// The kind created.
    #[serde(rename = "type")]
    pub type_: ScheduleType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_chaos: Option<PodChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_chaos: Option<NetworkChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stress_chaos: Option<StressChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_chaos: Option<IOChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_chaos: Option<TimeChaosSpec>,
    /// Havoc's own kind (Chaos Mesh has no SyscallChaos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall_chaos: Option<SyscallChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_chaos: Option<DNSChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_chaos: Option<HTTPChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowSpec>,
}

/// Status of a Schedule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The last start time considered (run, or skipped under Forbid or a starting deadline):
    /// never run twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The runs still running (object names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub active: Vec<String>,
    /// Paused by annotation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Runs started, and start times skipped (Forbid, starting deadline) or missed (outage).
    #[serde(default)]
    pub runs: u64,
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub missed: u64,
}

/// The pure parameters of a schedule, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub schedule: CronSchedule,
    pub policy: HostPolicy,
    pub history_limit: u32,
    pub starting_deadline: Option<Duration>,
}

impl ScheduleSpec {
    /// Validates the spec (paths under `sp`) and gives the parameters of the pure decisions.
    pub fn plan(&self, sp: &FieldPath) -> Result<Plan, crate::workflow_crd::InvalidWorkflow> {
        let mut p = Problems::new();
        let schedule = CronSchedule::parse(&self.schedule)
            .map_err(|e| p.add(&sp.key("schedule"), e))
            .ok();
        let history_limit = self.history_limit.unwrap_or(1);
        if history_limit == 0 || history_limit > MAX_HISTORY_LIMIT {
            p.add(
                &sp.key("historyLimit"),
                format!("must be 1..={MAX_HISTORY_LIMIT}, got {history_limit}"),
            );
        }
        if self.starting_deadline_seconds.is_some_and(|s| s < 0) {
            p.add(&sp.key("startingDeadlineSeconds"), "must be at least 0");
        }
        let embedded = [
            ("podChaos", self.pod_chaos.is_some(), ScheduleType::PodChaos),
            (
                "networkChaos",
                self.network_chaos.is_some(),
                ScheduleType::NetworkChaos,
            ),
            (
                "stressChaos",
                self.stress_chaos.is_some(),
                ScheduleType::StressChaos,
            ),
            ("ioChaos", self.io_chaos.is_some(), ScheduleType::IOChaos),
            (
                "timeChaos",
                self.time_chaos.is_some(),
                ScheduleType::TimeChaos,
            ),
            (
                "syscallChaos",
                self.syscall_chaos.is_some(),
                ScheduleType::SyscallChaos,
            ),
            ("dnsChaos", self.dns_chaos.is_some(), ScheduleType::DNSChaos),
            (
                "httpChaos",
                self.http_chaos.is_some(),
                ScheduleType::HTTPChaos,
            ),
            ("workflow", self.workflow.is_some(), ScheduleType::Workflow),
        ];
        for (key, present, ty) in embedded {
            if present && ty != self.type_ {
                p.add(
                    &sp.key(key),
                    format!("does not apply to type {}", self.type_.name()),
                );
            }
            if !present && ty == self.type_ {
                p.add(&sp.key(key), format!("is required with type {}", ty.name()));
            }
        }
        if let Some(s) = &self.pod_chaos {
            s.validate_spec(&sp.key("podChaos"), &mut p);
        }
        if let Some(s) = &self.network_chaos {
            s.validate_spec(&sp.key("networkChaos"), &mut p);
        }
        if let Some(s) = &self.stress_chaos {
            s.validate_spec(&sp.key("stressChaos"), &mut p);
        }
        if let Some(s) = &self.io_chaos {
            s.validate_spec(&sp.key("ioChaos"), &mut p);
        }
        if let Some(s) = &self.time_chaos {
            s.validate_spec(&sp.key("timeChaos"), &mut p);
        }
        if let Some(s) = &self.syscall_chaos {
            s.validate_spec(&sp.key("syscallChaos"), &mut p);
        }
        if let Some(s) = &self.dns_chaos {
            s.validate_spec(&sp.key("dnsChaos"), &mut p);
        }
        if let Some(s) = &self.http_chaos {
            s.validate_spec(&sp.key("httpChaos"), &mut p);
        }
        let mut wf_err = None;
        if let Some(w) = &self.workflow {
            wf_err = w.to_spec(&sp.key("workflow")).err();
        }
        let mut lines: Vec<String> = p
            .into_vec()
            .into_iter()
            .map(|(path, m)| format!("{path}: {m}"))
            .collect();
        if let Some(e) = wf_err {
            lines.extend(e.0);
        }
        match schedule {
            Some(schedule) if lines.is_empty() => Ok(Plan {
                schedule,
                policy: match self.concurrency_policy {
                    ConcurrencyPolicy::Forbid => HostPolicy::Forbid,
                    ConcurrencyPolicy::Allow => HostPolicy::Allow,
                },
                history_limit,
                starting_deadline: self
                    .starting_deadline_seconds
                    .map(|s| Duration::from_secs(s.max(0) as u64)),
            }),
            _ => Err(crate::workflow_crd::InvalidWorkflow(lines)),
        }
    }
}

/// The name of the run of `schedule` for the start time `unix_secs`: deterministic, so two
/// operators (or one restarted between creating a run and writing `lastScheduleTime`) that decide
/// the same run create the same object, and the second create fails with AlreadyExists.
pub fn run_name(schedule: &str, unix_secs: i64) -> String {
    let suffix = format!("-{unix_secs}");
    let keep: String = schedule.chars().take(253 - suffix.len()).collect();
    format!("{keep}{suffix}")
}

/// The label every run carries: the schedule's name.
pub const SCHEDULE_LABEL: &str = "havoc.dev/schedule";

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> ScheduleSpec {
        serde_json::from_value(v).expect("schedule spec")
    }

    #[test]
    fn a_schedule_plans_with_defaults() {
        let s = spec(serde_json::json!({
            "schedule": "@every 5s", "type": "PodChaos",
            "podChaos": {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "a"}}}
        }));
        let p = s.plan(&FieldPath::root().key("spec")).expect("valid");
        assert_eq!(p.history_limit, 1);
        assert_eq!(p.policy, HostPolicy::Forbid);
        assert!(matches!(p.schedule, CronSchedule::Every(d) if d == Duration::from_secs(5)));
    }

    #[test]
    fn bad_schedules_say_where() {
        let s = spec(serde_json::json!({
            "schedule": "61 * * * *", "type": "Workflow", "historyLimit": 0,
            "podChaos": {"action": "pod-kill", "selector": {}}
        }));
        let e = s
            .plan(&FieldPath::root().key("spec"))
            .expect_err("refused")
            .0
            .join("\n");
        for want in [
            "spec.schedule: `61 * * * *` is not a cron schedule",
            "spec.historyLimit: must be 1..=1000, got 0",
            "spec.podChaos: does not apply to type Workflow",
            "spec.workflow: is required with type Workflow",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
    }

    #[test]
    fn run_names_are_deterministic() {
        assert_eq!(run_name("every5", 1_700_000_000), "every5-1700000000");
        assert!(run_name(&"s".repeat(300), 1_700_000_000).len() <= 253);
    }
}
