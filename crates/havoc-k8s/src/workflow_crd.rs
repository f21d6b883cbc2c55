//! The `Workflow` custom resource (`havoc.dev/v1alpha1`, Chaos Mesh's field names) and the
//! replayable state of a workflow run.
//!
//! The rules that move a workflow (which node starts, when a deadline stops it, what a failed
//! step skips, which task branches run) are host mode's pure [`havoc_spec::workflow::Tree`]; this
//! module only maps the Kubernetes templates onto host mode's [`havoc_spec::workflow::WorkflowSpec`]
//! ([`WorkflowSpec::to_spec`]) and keeps what the operator needs to resume after a restart.
//!
//! Resuming: the `Tree` is rebuilt on every reconcile by replaying a journal kept in status
//! ([`Machine`]): the inputs the tree was given (an `advance` at a time that changed something,
//! a node's work ending with its outcome, an abort). The tree is a pure function of its inputs,
//! so the replay gives the very tree the previous operator had, node indices included; the
//! children's names derive from the node index ([`child_name`]), so a step started before a
//! restart is found again, never started twice. The journal is bounded: every entry changes at
//! least one of at most [`MAX_NODES`] nodes, and a task's stdout is kept to [`TASK_STDOUT_MAX`].
//!
//! Chaos templates (`PodChaos`, `NetworkChaos`, `StressChaos`, `IOChaos`, `TimeChaos`,
//! `SyscallChaos`, `DNSChaos`, `HTTPChaos`) enter the tree as fault nodes
//! whose deadline rules are host mode's (`deadline`, else `duration` + 30 s, a one-shot
//! pod-kill finishes when done); the tree reads only their duration and deadline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use havoc_spec::error::Problems;
use havoc_spec::units::HumanDuration;
use havoc_spec::workflow::{
    self as wf, Action, Branch, NodePhase, TaskContainer, TaskSpec, Template as HostTemplate,
    TemplateKind, Tree, WorkOutcome, MAX_CHILDREN, MAX_NODES, MAX_TEMPLATES,
};
use havoc_spec::FieldPath;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::crd::{
    DNSChaosSpec, HTTPChaosSpec, IOChaosSpec, NetworkChaosSpec, PodAction, PodChaosSpec,
    StressChaosSpec, SyscallChaosSpec, TimeChaosSpec,
};
use crate::statuscheck_crd::StatusCheckSpec;

/// The annotation that aborts a workflow (`"true"`): running steps are stopped (their faults
/// recovered, their pods deleted), pending ones skipped.
pub const ABORT_ANNOTATION: &str = "havoc.dev/abort";
/// How much of a task's standard output is kept (in status, for the replay) and given to the
/// branch expressions in Kubernetes (host mode gives 64 KiB).
pub const TASK_STDOUT_MAX: usize = 1024;

/// The type of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum TemplateType {
    Serial,
    Parallel,
    Suspend,
    Task,
    StatusCheck,
    Schedule,
    PodChaos,
    NetworkChaos,
    StressChaos,
    IOChaos,
    TimeChaos,
    /// Havoc's own kind (Chaos Mesh has no SyscallChaos).
    SyscallChaos,
    DNSChaos,
    HTTPChaos,
}

impl TemplateType {
    /// The kind of the child object this template creates, if any.
    pub fn child_kind(self) -> Option<&'static str> {
        match self {
            TemplateType::Task => Some("Pod"),
            TemplateType::StatusCheck => Some("StatusCheck"),
            TemplateType::Schedule => Some("Schedule"),
            TemplateType::PodChaos => Some("PodChaos"),
            TemplateType::NetworkChaos => Some("NetworkChaos"),
            TemplateType::StressChaos => Some("StressChaos"),
            TemplateType::IOChaos => Some("IOChaos"),
            TemplateType::TimeChaos => Some("TimeChaos"),
            TemplateType::SyscallChaos => Some("SyscallChaos"),
            TemplateType::DNSChaos => Some("DNSChaos"),
            TemplateType::HTTPChaos => Some("HTTPChaos"),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TemplateType::Serial => "Serial",
            TemplateType::Parallel => "Parallel",
            TemplateType::Suspend => "Suspend",
            TemplateType::Task => "Task",
            TemplateType::StatusCheck => "StatusCheck",
            TemplateType::Schedule => "Schedule",
            TemplateType::PodChaos => "PodChaos",
            TemplateType::NetworkChaos => "NetworkChaos",
            TemplateType::StressChaos => "StressChaos",
            TemplateType::IOChaos => "IOChaos",
            TemplateType::TimeChaos => "TimeChaos",
            TemplateType::SyscallChaos => "SyscallChaos",
            TemplateType::DNSChaos => "DNSChaos",
            TemplateType::HTTPChaos => "HTTPChaos",
        }
    }
}

/// The container a Task runs (a subset of a Pod's container: what a task needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskContainerSpec {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// A Task: a pod with one container; its exit code and standard output choose the branches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskTemplate {
    pub container: TaskContainerSpec,
}

/// A branch of a Task: `target` runs when the CEL `expression` over `exitCode` and `stdout` is true.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConditionalBranch {
    pub target: String,
    #[schemars(length(max = 1024))]
    pub expression: String,
}

/// The `schedule` of a Schedule template: Chaos Mesh's `ChaosOnlyScheduleSpec`, a Schedule's
/// fields with an embedded chaos kind only (a Workflow would nest the Workflow schema in itself).
/// The node creates a child `Schedule` object with this spec and deletes it at its deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type != 'Workflow'")
        .message("a Schedule template embeds a chaos kind, not a Workflow"),
)]
pub struct ChaosOnlyScheduleSpec {
    /// `@every 5s`, a cron pattern (5 fields, or 6 with seconds first) or `@hourly`...; UTC.
    #[schemars(length(min = 1, max = 256))]
    pub schedule: String,
    #[serde(default)]
    pub concurrency_policy: crate::schedule_crd::ConcurrencyPolicy,
    /// Finished runs kept (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub history_limit: Option<u32>,
    /// A start later than this after its time is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub starting_deadline_seconds: Option<i64>,
    /// The chaos kind created (not Workflow).
    #[serde(rename = "type")]
    pub type_: crate::schedule_crd::ScheduleType,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall_chaos: Option<SyscallChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_chaos: Option<DNSChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_chaos: Option<HTTPChaosSpec>,
}

impl ChaosOnlyScheduleSpec {
    /// The spec of the child `Schedule` object.
    pub fn to_schedule_spec(&self) -> crate::schedule_crd::ScheduleSpec {
        crate::schedule_crd::ScheduleSpec {
            schedule: self.schedule.clone(),
            concurrency_policy: self.concurrency_policy,
            history_limit: self.history_limit,
            starting_deadline_seconds: self.starting_deadline_seconds,
            type_: self.type_,
            pod_chaos: self.pod_chaos.clone(),
            network_chaos: self.network_chaos.clone(),
            stress_chaos: self.stress_chaos.clone(),
            io_chaos: self.io_chaos.clone(),
            time_chaos: self.time_chaos.clone(),
            syscall_chaos: self.syscall_chaos.clone(),
            dns_chaos: self.dns_chaos.clone(),
            http_chaos: self.http_chaos.clone(),
            workflow: None,
        }
    }
}

/// One template of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Template {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    pub template_type: TemplateType,
    /// How long the node may run (a chaos node: how long its fault lasts when it has no duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<HumanDuration>,
    /// Serial and Parallel: the templates run, in order for Serial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub children: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskTemplate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub conditional_branches: Vec<ConditionalBranch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_check: Option<StatusCheckSpec>,
    /// A failed status check aborts the whole workflow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort_with_status_check: bool,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall_chaos: Option<SyscallChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_chaos: Option<DNSChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_chaos: Option<HTTPChaosSpec>,
    /// Schedule: the schedule run by the node until its (required) deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ChaosOnlyScheduleSpec>,
}

/// Chaos as a program: serial, parallel, suspend, task, status-check and chaos steps (havoc.dev).
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "Workflow",
    plural = "workflows",
    namespaced,
    status = "WorkflowStatus",
    derive = "PartialEq",
    shortname = "hwf",
    category = "havoc",
    printcolumn(name = "Entry", type_ = "string", json_path = ".spec.entry"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Chaos as a program: serial, parallel, suspend, task, status-check and chaos steps (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("size(self.entry) > 0")
        .message("entry must name one of the templates"),
)]
pub struct WorkflowSpec {
    /// The template the workflow starts with.
    pub entry: String,
    #[schemars(length(min = 1, max = 256))]
    pub templates: Vec<Template>,
}

/// Where a workflow is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum WorkflowPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Aborted,
}

impl WorkflowPhase {
    pub fn is_done(self) -> bool {
        matches!(
            self,
            WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Aborted
        )
    }
}

/// One node of the run's tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowNode {
    /// Template names from the entry: `main/pause`.
    pub name: String,
    pub template: String,
    pub template_type: TemplateType,
    /// Pending, Running, Succeeded, Failed, DeadlineExceeded, Aborted or Skipped.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<MicroTime>,
    /// The object this node created: `PodChaos/wf-3-kill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One input of the state machine, replayed on every reconcile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// Unix milliseconds.
    pub at: i64,
    /// `advance`, `succeeded`, `failed`, `exited` or `abort`.
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// A failure message, a task's stdout or an abort reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Status of a Workflow.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    #[serde(default)]
    pub phase: WorkflowPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The tree of nodes (at most 1000), index = position.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub nodes: Vec<WorkflowNode>,
    /// The state machine's inputs (see the module docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub journal: Vec<JournalEntry>,
}

/// An error of [`WorkflowSpec::to_spec`]: every problem with its field path.
#[derive(Debug, thiserror::Error)]
#[error("invalid workflow: {}", .0.join("; "))]
pub struct InvalidWorkflow(pub Vec<String>);

fn problems(p: Problems) -> Result<(), InvalidWorkflow> {
    if p.is_empty() {
        return Ok(());
    }
    Err(InvalidWorkflow(
        p.into_vec()
            .into_iter()
            .map(|(path, m)| format!("{path}: {m}"))
            .collect(),
    ))
}

/// A lowercase RFC 1123 label (what a template name must be: it goes into object names).
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A stand-in for the fault of a chaos node: the tree reads a fault node's duration (and its
/// template's deadline) only.
fn stand_in_fault(
    name: &str,
    duration: Option<HumanDuration>,
) -> havoc_spec::experiment::FaultEntry {
    havoc_spec::experiment::FaultEntry {
        name: name.into(),
        after: None,
        duration,
        spec: havoc_spec::FaultSpec::ProcessChaos(
            serde_json::from_value(serde_json::json!({"action": "kill", "selector": {}}))
                .expect("a kill of no process is a ProcessChaos"),
        ),
    }
}

impl WorkflowSpec {
    /// Validates the workflow and maps it onto host mode's spec, which drives the [`Tree`].
    /// Paths are under `sp` (`spec`).
    pub fn to_spec(&self, sp: &FieldPath) -> Result<wf::WorkflowSpec, InvalidWorkflow> {
        let mut p = Problems::new();
        let tp = sp.key("templates");
        if self.templates.len() > MAX_TEMPLATES {
            p.add(&tp, format!("at most {MAX_TEMPLATES} templates"));
        }
        let mut names = HashSet::new();
        for (i, t) in self.templates.iter().enumerate() {
            let p_i = tp.index(i);
            if !is_label(&t.name) {
                p.add(
                    &p_i.key("name"),
                    format!(
                        "`{}` must be a lowercase RFC 1123 label (a-z, 0-9, -; at most 63)",
                        t.name
                    ),
                );
            }
            if !names.insert(t.name.as_str()) {
                p.add(&p_i.key("name"), format!("`{}` is defined twice", t.name));
            }
        }
        if !names.contains(self.entry.as_str()) {
            p.add(
                &sp.key("entry"),
                format!("`{}` is not a template", self.entry),
            );
        }
        let mut host = Vec::new();
        for (i, t) in self.templates.iter().enumerate() {
            let p_i = tp.index(i);
            if let Some(k) = self.check_template(t, &p_i, &names, &mut p) {
                host.push(HostTemplate {
                    name: t.name.clone(),
                    deadline: t.deadline.map(|d| d.0),
                    kind: k,
                });
            }
        }
        problems(p)?;
        let spec = wf::WorkflowSpec {
            entry: self.entry.clone(),
            templates: host,
        };
        let mut p = Problems::new();
        match expansion(&spec) {
            Err(cycle) => p.add(
                &tp,
                format!("templates refer to each other in a cycle: {cycle}"),
            ),
            Ok(n) if n > MAX_NODES => p.add(
                &tp,
                format!(
                    "the workflow expands to {n} nodes (every branch taken); at most {MAX_NODES}"
                ),
            ),
            Ok(_) => {}
        }
        problems(p)?;
        Ok(spec)
    }

    fn check_template(
        &self,
        t: &Template,
        pt: &FieldPath,
        names: &HashSet<&str>,
        p: &mut Problems,
    ) -> Option<TemplateKind> {
        let ty = t.template_type;
        let unused = |key: &str, present: bool, p: &mut Problems| {
            if present {
                p.add(
                    &pt.key(key),
                    format!("does not apply to templateType {}", ty.name()),
                );
            }
        };
        unused(
            "children",
            !t.children.is_empty() && !matches!(ty, TemplateType::Serial | TemplateType::Parallel),
            p,
        );
        unused("task", t.task.is_some() && ty != TemplateType::Task, p);
        unused(
            "conditionalBranches",
            !t.conditional_branches.is_empty() && ty != TemplateType::Task,
            p,
        );
        unused(
            "statusCheck",
            t.status_check.is_some() && ty != TemplateType::StatusCheck,
            p,
        );
        unused(
            "schedule",
            t.schedule.is_some() && ty != TemplateType::Schedule,
            p,
        );
        unused(
            "abortWithStatusCheck",
            t.abort_with_status_check && ty != TemplateType::StatusCheck,
            p,
        );
        for (key, present, kind) in [
            ("podChaos", t.pod_chaos.is_some(), TemplateType::PodChaos),
            (
                "networkChaos",
                t.network_chaos.is_some(),
                TemplateType::NetworkChaos,
            ),
            (
                "stressChaos",
                t.stress_chaos.is_some(),
                TemplateType::StressChaos,
            ),
            ("ioChaos", t.io_chaos.is_some(), TemplateType::IOChaos),
            ("timeChaos", t.time_chaos.is_some(), TemplateType::TimeChaos),
            (
                "syscallChaos",
                t.syscall_chaos.is_some(),
                TemplateType::SyscallChaos,
            ),
            ("dnsChaos", t.dns_chaos.is_some(), TemplateType::DNSChaos),
            ("httpChaos", t.http_chaos.is_some(), TemplateType::HTTPChaos),
        ] {
            unused(key, present && ty != kind, p);
        }
        let refs = |list: &[&str], key: &str, p: &mut Problems| {
            for (j, c) in list.iter().enumerate() {
                if !names.contains(c) {
                    p.add(
                        &pt.key(key).index(j),
                        format!("`{c}` is not a template of this workflow"),
                    );
                }
            }
        };
        if let Some(d) = t.deadline {
            if d.0.is_zero() || d.0 > crate::crd::MAX_DURATION {
                p.add(
                    &pt.key("deadline"),
                    "must be more than 0 and at most 7 days",
                );
            }
        }
        let missing = |key: &str, p: &mut Problems| {
            p.add(
                &pt.key(key),
                format!("is required with templateType {}", ty.name()),
            );
            None
        };
        match ty {
            TemplateType::Serial | TemplateType::Parallel => {
                if t.children.is_empty() {
                    return missing("children", p);
                }
                if t.children.len() > MAX_CHILDREN {
                    p.add(
                        &pt.key("children"),
                        format!("at most {MAX_CHILDREN} children"),
                    );
                }
                let c: Vec<&str> = t.children.iter().map(String::as_str).collect();
                refs(&c, "children", p);
                Some(if ty == TemplateType::Serial {
                    TemplateKind::Serial(t.children.clone())
                } else {
                    TemplateKind::Parallel(t.children.clone())
                })
            }
            TemplateType::Suspend => {
                if t.deadline.is_none() {
                    return missing("deadline", p);
                }
                Some(TemplateKind::Suspend)
            }
            TemplateType::Task => {
                let Some(task) = &t.task else {
                    return missing("task", p);
                };
                for (j, b) in t.conditional_branches.iter().enumerate() {
                    if let Err(e) = wf::check_expression(&b.expression) {
                        p.add(&pt.key("conditionalBranches").index(j).key("expression"), e);
                    }
                }
                let targets: Vec<&str> = t
                    .conditional_branches
                    .iter()
                    .map(|b| b.target.as_str())
                    .collect();
                for (j, c) in targets.iter().enumerate() {
                    if !names.contains(c) {
                        p.add(
                            &pt.key("conditionalBranches").index(j).key("target"),
                            format!("`{c}` is not a template of this workflow"),
                        );
                    }
                }
                Some(TemplateKind::Task {
                    task: TaskSpec {
                        command: None,
                        container: Some(TaskContainer {
                            name: task.container.name.clone(),
                            image: task.container.image.clone(),
                            command: task.container.command.clone(),
                            args: task.container.args.clone(),
                        }),
                    },
                    branches: t
                        .conditional_branches
                        .iter()
                        .map(|b| Branch {
                            target: b.target.clone(),
                            expression: b.expression.clone(),
                        })
                        .collect(),
                })
            }
            TemplateType::StatusCheck => {
                let Some(c) = &t.status_check else {
                    return missing("statusCheck", p);
                };
                c.validate_spec(&pt.key("statusCheck"), p);
                let check = c.to_spec().ok()?;
                Some(TemplateKind::StatusCheck {
                    check: Box::new(check),
                    abort: t.abort_with_status_check,
                })
            }
            TemplateType::Schedule => {
                // As in host mode: a schedule never ends by itself, so its node needs a deadline.
                if t.deadline.is_none() {
                    p.add(
                        &pt.key("deadline"),
                        "is required with templateType Schedule: the schedule runs until its \
                         deadline, e.g. `10m`",
                    );
                }
                let Some(s) = &t.schedule else {
                    return missing("schedule", p);
                };
                let sp = pt.key("schedule");
                if s.type_ == crate::schedule_crd::ScheduleType::Workflow {
                    p.add(
                        &sp.key("type"),
                        "a Schedule template embeds a chaos kind (Chaos Mesh's \
                         ChaosOnlyScheduleSpec), not a Workflow",
                    );
                    return None;
                }
                match s.to_schedule_spec().plan(&sp) {
                    Ok(plan) => Some(TemplateKind::Schedule(Box::new(
                        havoc_spec::schedule::ScheduleSpec {
                            schedule: plan.schedule,
                            schedule_text: s.schedule.clone(),
                            concurrency_policy: plan.policy,
                            history_limit: plan.history_limit,
                            starting_deadline: plan.starting_deadline,
                            target: havoc_spec::schedule::ScheduleTarget::Fault(Box::new(
                                stand_in_fault(&t.name, None),
                            )),
                        },
                    ))),
                    Err(e) => {
                        for line in e.0 {
                            // `spec.templates[1].schedule.x: message`
                            match line.split_once(": ") {
                                Some((path, m)) => p.add(&FieldPath::parse(path), m.to_string()),
                                None => p.add(&sp, line),
                            }
                        }
                        None
                    }
                }
            }
            TemplateType::PodChaos => {
                let Some(s) = &t.pod_chaos else {
                    return missing("podChaos", p);
                };
                s.validate_spec(&pt.key("podChaos"), p);
                let one_shot = matches!(s.action, PodAction::PodKill | PodAction::ContainerKill);
                self.chaos(t, s.duration, one_shot, pt, p)
            }
            TemplateType::NetworkChaos => {
                let Some(s) = &t.network_chaos else {
                    return missing("networkChaos", p);
                };
                s.validate_spec(&pt.key("networkChaos"), p);
                self.chaos(t, s.duration, false, pt, p)
            }
            TemplateType::StressChaos => {
                let Some(s) = &t.stress_chaos else {
                    return missing("stressChaos", p);
                };
                s.validate_spec(&pt.key("stressChaos"), p);
                self.chaos(t, s.duration, false, pt, p)
            }
            TemplateType::IOChaos => {
                let Some(s) = &t.io_chaos else {
                    return missing("ioChaos", p);
                };
                s.validate_spec(&pt.key("ioChaos"), p);
                self.chaos(t, s.duration, false, pt, p)
            }
            TemplateType::TimeChaos => {
                let Some(s) = &t.time_chaos else {
                    return missing("timeChaos", p);
                };
                s.validate_spec(&pt.key("timeChaos"), p);
                self.chaos(t, s.duration, false, pt, p)
            }
            TemplateType::SyscallChaos => {
                let Some(s) = &t.syscall_chaos else {
                    return missing("syscallChaos", p);
                };
                s.validate_spec(&pt.key("syscallChaos"), p);
                self.chaos(t, s.duration, false, pt, p)
            }
            TemplateType::DNSChaos => {
                let Some(s) = &t.dns_chaos else {
                    return missing("dnsChaos", p);
                };
                s.validate_spec(&pt.key("dnsChaos"), p);
                self.chaos(t, s.duration, false, pt, p)
            }
            TemplateType::HTTPChaos => {
                let Some(s) = &t.http_chaos else {
                    return missing("httpChaos", p);
                };
                s.validate_spec(&pt.key("httpChaos"), p);
                self.chaos(t, s.duration, false, pt, p)
            }
        }
    }

    fn chaos(
        &self,
        t: &Template,
        duration: Option<HumanDuration>,
        one_shot: bool,
        pt: &FieldPath,
        p: &mut Problems,
    ) -> Option<TemplateKind> {
        if t.deadline.is_none() && duration.is_none() && !one_shot {
            p.add(
                &pt.key("deadline"),
                "a chaos node needs deadline (or its fault's duration): it would never end",
            );
        }
        Some(TemplateKind::Chaos(Box::new(stand_in_fault(
            &t.name, duration,
        ))))
    }

    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.name == name)
    }
}

/// How many nodes the workflow expands to with every branch taken, or the cycle found.
fn expansion(spec: &wf::WorkflowSpec) -> Result<usize, String> {
    fn kids(t: &HostTemplate) -> Vec<&str> {
        match &t.kind {
            TemplateKind::Serial(c) | TemplateKind::Parallel(c) => {
                c.iter().map(String::as_str).collect()
            }
            TemplateKind::Task { branches, .. } => {
                branches.iter().map(|b| b.target.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }
    fn count<'a>(
        spec: &'a wf::WorkflowSpec,
        name: &'a str,
        stack: &mut Vec<&'a str>,
        memo: &mut HashMap<&'a str, usize>,
    ) -> Result<usize, String> {
        if let Some(n) = memo.get(name) {
            return Ok(*n);
        }
        if stack.contains(&name) {
            let mut c: Vec<&str> = stack.clone();
            c.push(name);
            return Err(c.join(" -> "));
        }
        let Some(t) = spec.template(name) else {
            return Ok(1);
        };
        stack.push(name);
        let mut n = 1usize;
        for k in kids(t) {
            n = n.saturating_add(count(spec, k, stack, memo)?);
            if n > MAX_NODES * 10 {
                break;
            }
        }
        stack.pop();
        memo.insert(name, n);
        Ok(n)
    }
    count(spec, &spec.entry, &mut Vec::new(), &mut HashMap::new())
}

/// The name of the object a node creates: `<workflow>-<node index>-<template>`, made short with
/// a hash when it would pass 63 characters (a pod's hostname). Deterministic: the same node of
/// the same workflow always has the same child, so a restart finds it instead of starting it again.
pub fn child_name(workflow: &str, node: usize, template: &str) -> String {
    let full = format!("{workflow}-{node}-{template}");
    if full.len() <= 63 {
        return full;
    }
    let h = crate::stable_seed(&full);
    let keep: String = workflow.chars().take(40).collect();
    format!(
        "{}-{node}-{:08x}",
        keep.trim_end_matches(['-', '.']),
        h as u32
    )
}

/// The state machine of one workflow run, rebuilt from its journal.
#[derive(Debug, Clone)]
pub struct Machine {
    pub spec: wf::WorkflowSpec,
    pub tree: Tree,
    pub journal: Vec<JournalEntry>,
}

impl Machine {
    /// Replays `journal` into a fresh tree. Actions of the replay are not returned: they were
    /// carried out by whoever wrote the journal (and carrying them out is idempotent anyway).
    pub fn replay(spec: wf::WorkflowSpec, journal: &[JournalEntry]) -> Machine {
        let mut tree = Tree::new(&spec);
        for e in journal {
            let at = e.at.max(0) as u64;
            let node = e.node.map(|n| n as usize).filter(|&n| n < tree.nodes.len());
            match (e.op.as_str(), node) {
                ("advance", _) => {
                    tree.advance(&spec, at);
                }
                ("abort", _) => tree.abort(e.text.clone().unwrap_or_default()),
                ("succeeded", Some(n)) => tree.work_finished(&spec, n, WorkOutcome::Succeeded, at),
                ("failed", Some(n)) => tree.work_finished(
                    &spec,
                    n,
                    WorkOutcome::Failed(e.text.clone().unwrap_or_default()),
                    at,
                ),
                ("exited", Some(n)) => tree.work_finished(
                    &spec,
                    n,
                    WorkOutcome::TaskExited {
                        exit_code: e.exit_code.unwrap_or(-1),
                        stdout: e.text.clone().unwrap_or_default(),
                    },
                    at,
                ),
                _ => {}
            }
        }
        Machine {
            spec,
            tree,
            journal: journal.to_vec(),
        }
    }

    /// Moves the tree at `now_ms`; journals the step when it changed anything.
    pub fn advance(&mut self, now_ms: u64) -> Vec<Action> {
        let before = self.tree.nodes.clone();
        let actions = self.tree.advance(&self.spec, now_ms);
        if !actions.is_empty() || before != self.tree.nodes {
            self.journal.push(JournalEntry {
                at: now_ms as i64,
                op: "advance".into(),
                node: None,
                exit_code: None,
                text: None,
            });
        }
        actions
    }

    /// A leaf's work ended.
    pub fn work_finished(&mut self, node: usize, outcome: WorkOutcome, now_ms: u64) {
        let outcome = match outcome {
            WorkOutcome::TaskExited { exit_code, stdout } => WorkOutcome::TaskExited {
                exit_code,
                stdout: clip_utf8(&stdout, TASK_STDOUT_MAX).to_string(),
            },
            WorkOutcome::Failed(m) => WorkOutcome::Failed(clip_utf8(&m, 512).to_string()),
            o => o,
        };
        let (op, exit_code, text) = match &outcome {
            WorkOutcome::Succeeded => ("succeeded", None, None),
            WorkOutcome::Failed(m) => ("failed", None, Some(m.clone())),
            WorkOutcome::TaskExited { exit_code, stdout } => {
                ("exited", Some(*exit_code), Some(stdout.clone()))
            }
        };
        self.journal.push(JournalEntry {
            at: now_ms as i64,
            op: op.into(),
            node: Some(node as u32),
            exit_code,
            text,
        });
        self.tree.work_finished(&self.spec, node, outcome, now_ms);
    }

    /// Aborts the run (once).
    pub fn abort(&mut self, reason: &str, now_ms: u64) {
        if self.tree.abort_reason().is_some() {
            return;
        }
        self.journal.push(JournalEntry {
            at: now_ms as i64,
            op: "abort".into(),
            node: None,
            exit_code: None,
            text: Some(clip_utf8(reason, 512).to_string()),
        });
        self.tree.abort(reason);
    }

    /// The workflow's phase from its entry node.
    pub fn phase(&self) -> WorkflowPhase {
        match self.tree.nodes[0].phase {
            NodePhase::Pending => WorkflowPhase::Pending,
            NodePhase::Running => WorkflowPhase::Running,
            NodePhase::Succeeded | NodePhase::DeadlineExceeded => WorkflowPhase::Succeeded,
            NodePhase::Failed | NodePhase::Skipped => WorkflowPhase::Failed,
            NodePhase::Aborted => WorkflowPhase::Aborted,
        }
    }

    /// The nodes as status shows them (`workflow` names the children).
    pub fn nodes(&self, k8s: &WorkflowSpec, workflow: &str) -> Vec<WorkflowNode> {
        let t = |ms: Option<u64>| ms.map(|m| time_ms(m as i64));
        self.tree
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let ty = k8s
                    .template(&n.template)
                    .map_or(TemplateType::Suspend, |t| t.template_type);
                WorkflowNode {
                    name: n.path.clone(),
                    template: n.template.clone(),
                    template_type: ty,
                    phase: format!("{:?}", n.phase),
                    parent: n.parent.map(|p| p as u32),
                    start_time: t(n.started_ms),
                    end_time: t(n.finished_ms),
                    deadline: t(n.deadline_ms),
                    child: (n.started_ms.is_some())
                        .then(|| ty.child_kind())
                        .flatten()
                        .map(|k| format!("{k}/{}", child_name(workflow, i, &n.template))),
                    message: n.message.clone(),
                }
            })
            .collect()
    }
}

/// A k8s `MicroTime` (microseconds on the wire; `Time` has whole seconds) from unix milliseconds.
pub fn time_ms(ms: i64) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn clip_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// How long a chaos child of a template lasts: its duration, else the node's deadline (host
/// mode's rule), `None` for a one-shot.
pub fn chaos_duration(t: &Template, duration: Option<HumanDuration>) -> Option<Duration> {
    duration.map(|d| d.0).or(t.deadline.map(|d| d.0))
}

/// Labels put on every child of a workflow.
pub fn child_labels(workflow: &str, node: usize) -> BTreeMap<String, String> {
    [
        ("havoc.dev/workflow".to_string(), workflow.to_string()),
        ("havoc.dev/workflow-node".to_string(), node.to_string()),
    ]
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> WorkflowSpec {
        serde_json::from_value(v).expect("workflow spec")
    }

    fn serial() -> WorkflowSpec {
        spec(serde_json::json!({
            "entry": "main",
            "templates": [
                {"name": "main", "templateType": "Serial", "children": ["a", "b"]},
                {"name": "a", "templateType": "Suspend", "deadline": "2s"},
                {"name": "b", "templateType": "PodChaos", "podChaos": {
                    "action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "x"}}}}
            ]
        }))
    }

    #[test]
    fn a_replayed_journal_gives_the_same_tree() {
        let k = serial();
        let s = k.to_spec(&FieldPath::root().key("spec")).expect("valid");
        let mut m = Machine::replay(s.clone(), &[]);
        assert!(m.advance(1_000).is_empty(), "a suspend starts no work");
        assert!(m.advance(1_500).is_empty());
        let a = m.advance(3_000);
        assert_eq!(a, vec![Action::Start(2)], "b starts after a's deadline");
        m.work_finished(2, WorkOutcome::Succeeded, 3_200);
        let a = m.advance(3_200);
        assert_eq!(a, vec![Action::Finished(NodePhase::Succeeded)]);
        // Only the advances that changed something were journaled.
        assert_eq!(m.journal.len(), 4, "{:?}", m.journal);
        let r = Machine::replay(s, &m.journal);
        assert_eq!(r.tree.nodes, m.tree.nodes);
        assert_eq!(r.phase(), WorkflowPhase::Succeeded);
        let nodes = r.nodes(&k, "wf");
        assert_eq!(nodes[2].child.as_deref(), Some("PodChaos/wf-2-b"));
        assert_eq!(nodes[1].end_time, Some(time_ms(3_000)));
    }

    #[test]
    fn an_abort_is_replayed() {
        let s = serial().to_spec(&FieldPath::root()).expect("valid");
        let mut m = Machine::replay(s.clone(), &[]);
        m.advance(0);
        m.abort("asked", 500);
        m.advance(500);
        let r = Machine::replay(s, &m.journal);
        assert_eq!(r.phase(), WorkflowPhase::Aborted);
        assert_eq!(r.tree.abort_reason(), Some("asked"));
    }

    #[test]
    fn task_stdout_is_kept_short_and_branches_replay() {
        let k = spec(serde_json::json!({
            "entry": "t",
            "templates": [
                {"name": "t", "templateType": "Task",
                 "task": {"container": {"name": "c", "image": "busybox"}},
                 "conditionalBranches": [
                    {"target": "ok", "expression": "exitCode == 0"},
                    {"target": "bad", "expression": "exitCode != 0"}]},
                {"name": "ok", "templateType": "Suspend", "deadline": "1s"},
                {"name": "bad", "templateType": "Suspend", "deadline": "1s"}
            ]
        }));
        let s = k.to_spec(&FieldPath::root()).expect("valid");
        let mut m = Machine::replay(s.clone(), &[]);
        assert_eq!(m.advance(0), vec![Action::Start(0)]);
        m.work_finished(
            0,
            WorkOutcome::TaskExited {
                exit_code: 3,
                stdout: "x".repeat(5000),
            },
            10,
        );
        m.advance(10);
        assert_eq!(m.tree.nodes[1].template, "bad");
        assert_eq!(
            m.journal[1].text.as_ref().map(String::len),
            Some(TASK_STDOUT_MAX)
        );
        let r = Machine::replay(s, &m.journal);
        assert_eq!(r.tree.nodes, m.tree.nodes);
    }

    #[test]
    fn invalid_workflows_are_refused_with_paths() {
        let k = spec(serde_json::json!({
            "entry": "main",
            "templates": [
                {"name": "main", "templateType": "Serial", "children": ["main2", "nope"]},
                {"name": "main2", "templateType": "Parallel", "children": ["main"]},
                {"name": "s", "templateType": "Suspend"},
                {"name": "n", "templateType": "NetworkChaos", "networkChaos": {
                    "action": "loss", "loss": {"loss": "10"}, "selector": {}}},
                {"name": "t", "templateType": "Task", "task": {"container": {"name": "c", "image": "i"}},
                 "conditionalBranches": [{"target": "s", "expression": "exitCode == 0 and true"}]}
            ]
        }));
        let e = k
            .to_spec(&FieldPath::root().key("spec"))
            .expect_err("refused")
            .to_string();
        for want in [
            "spec.templates[0].children[1]: `nope` is not a template",
            "spec.templates[2].deadline: is required with templateType Suspend",
            "spec.templates[3].deadline: a chaos node needs deadline",
            "spec.templates[4].conditionalBranches[0].expression",
            "`&&`",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
        let cyc = spec(serde_json::json!({
            "entry": "a",
            "templates": [
                {"name": "a", "templateType": "Serial", "children": ["b"]},
                {"name": "b", "templateType": "Parallel", "children": ["a"]}
            ]
        }));
        let e = cyc
            .to_spec(&FieldPath::root())
            .expect_err("cycle")
            .to_string();
        assert!(e.contains("a -> b -> a"), "{e}");
    }

    fn with_schedule(deadline: Option<&str>, ty: &str) -> WorkflowSpec {
        let mut s = serde_json::json!({"name": "s", "templateType": "Schedule",
            "schedule": {"schedule": "@every 5s", "type": ty, "historyLimit": 2,
                "podChaos": {"action": "pod-kill", "mode": "one",
                    "selector": {"labelSelectors": {"app": "x"}}}}});
        if let Some(d) = deadline {
            s["deadline"] = d.into();
        }
        spec(serde_json::json!({
            "entry": "main",
            "templates": [
                {"name": "main", "templateType": "Serial", "children": ["s", "after"]},
                s,
                {"name": "after", "templateType": "Suspend", "deadline": "1s"}
            ]
        }))
    }

    #[test]
    fn a_schedule_node_runs_its_child_schedule_until_its_deadline() {
        let k = with_schedule(Some("12s"), "PodChaos");
        let s = k.to_spec(&FieldPath::root().key("spec")).expect("valid");
        let mut m = Machine::replay(s.clone(), &[]);
        assert_eq!(
            m.advance(1_000),
            vec![Action::Start(1)],
            "the schedule starts"
        );
        assert_eq!(m.tree.nodes[1].deadline_ms, Some(13_000));
        // A schedule never finishes by itself: nothing happens before the deadline.
        assert!(m.advance(12_999).is_empty());
        assert_eq!(m.tree.nodes[1].phase, NodePhase::Running);
        let a = m.advance(13_000);
        assert_eq!(
            a,
            vec![Action::Stop(1, wf::StopCause::Deadline)],
            "the deadline stops it (its child is deleted)"
        );
        // Its child is gone: the node ends as a deadline (done), the next step starts.
        m.work_finished(1, WorkOutcome::Succeeded, 13_400);
        m.advance(13_400);
        assert_eq!(m.tree.nodes[1].phase, NodePhase::DeadlineExceeded);
        assert_eq!(m.tree.nodes[2].template, "after");
        let r = Machine::replay(s, &m.journal);
        assert_eq!(r.tree.nodes, m.tree.nodes);
        let nodes = r.nodes(&k, "wf");
        assert_eq!(nodes[1].child.as_deref(), Some("Schedule/wf-1-s"));
        assert_eq!(nodes[1].template_type, TemplateType::Schedule);
        // The child's spec is the template's, with no workflow.
        let cs = k.templates[1]
            .schedule
            .as_ref()
            .expect("schedule")
            .to_schedule_spec();
        assert_eq!(cs.schedule, "@every 5s");
        assert_eq!(cs.history_limit, Some(2));
        assert!(cs.pod_chaos.is_some() && cs.workflow.is_none());
        cs.plan(&FieldPath::root())
            .expect("the child Schedule is valid");
    }

    #[test]
    fn an_aborted_schedule_node_stops_its_child() {
        let s = with_schedule(Some("1h"), "PodChaos")
            .to_spec(&FieldPath::root())
            .expect("valid");
        let mut m = Machine::replay(s.clone(), &[]);
        m.advance(0);
        m.abort("asked", 500);
        let a = m.advance(500);
        assert!(
            matches!(a.as_slice(), [Action::Stop(1, _)]),
            "the running schedule is stopped: {a:?}"
        );
        m.work_finished(1, WorkOutcome::Succeeded, 600);
        m.advance(600);
        assert_eq!(m.tree.nodes[1].phase, NodePhase::Aborted);
        assert_eq!(m.phase(), WorkflowPhase::Aborted);
        assert_eq!(Machine::replay(s, &m.journal).tree.nodes, m.tree.nodes);
    }

    #[test]
    fn schedule_templates_are_checked() {
        let e = with_schedule(None, "PodChaos")
            .to_spec(&FieldPath::root().key("spec"))
            .expect_err("no deadline")
            .to_string();
        assert!(
            e.contains("spec.templates[1].deadline: is required with templateType Schedule"),
            "{e}"
        );
        let e = with_schedule(Some("1m"), "Workflow")
            .to_spec(&FieldPath::root().key("spec"))
            .expect_err("a nested workflow")
            .to_string();
        assert!(e.contains("spec.templates[1].schedule.type"), "{e}");
        let e = with_schedule(Some("1m"), "NetworkChaos")
            .to_spec(&FieldPath::root().key("spec"))
            .expect_err("kind mismatch")
            .to_string();
        assert!(
            e.contains("spec.templates[1].schedule.networkChaos: is required with type"),
            "{e}"
        );
        let mut bad = with_schedule(Some("1m"), "PodChaos");
        bad.templates[1].schedule.as_mut().expect("s").schedule = "61 * * * *".into();
        let e = bad
            .to_spec(&FieldPath::root().key("spec"))
            .expect_err("bad cron")
            .to_string();
        assert!(e.contains("spec.templates[1].schedule.schedule"), "{e}");
        let mut stray = with_schedule(Some("1m"), "PodChaos");
        stray.templates[2].schedule = stray.templates[1].schedule.clone();
        let e = stray
            .to_spec(&FieldPath::root().key("spec"))
            .expect_err("schedule on a suspend")
            .to_string();
        assert!(
            e.contains("spec.templates[2].schedule: does not apply to templateType Suspend"),
            "{e}"
        );
    }

    #[test]
    fn child_names_are_deterministic_and_short() {
        assert_eq!(child_name("wf", 3, "kill"), "wf-3-kill");
        let long = child_name(&"w".repeat(60), 12, "a-long-template-name");
        assert!(long.len() <= 63, "{long}");
        assert_eq!(
            long,
            child_name(&"w".repeat(60), 12, "a-long-template-name")
        );
        assert_ne!(
            long,
            child_name(&"w".repeat(60), 13, "a-long-template-name")
        );
    }
}
