//! Workflow: chaos as a program (Chaos Mesh's `Workflow` fields), and its pure state machine.
//!
//! ```yaml
//! kind: Workflow
//! spec:
//!   entry: main
//!   templates:
//!     - { name: main, templateType: Serial, deadline: 5m, children: [pause, wait, check] }
//!     - name: pause
//!       templateType: ProcessChaos      # any Havoc fault kind, embedded under its lowerCamel key
//!       deadline: 30s
//!       processChaos: { action: pause, selector: { processNames: [worker] } }
//!     - { name: wait, templateType: Suspend, deadline: 10s }
//!     - name: probe
//!       templateType: Task              # host: an argv (no shell unless you write `sh -c`)
//!       task: { command: [curl, -sf, http://127.0.0.1:8080/] }
//!       conditionalBranches:
//!         - { target: heal, expression: "exitCode != 0" }   # CEL over exitCode and stdout
//! ```
//!
//! Deadlines (every node ends):
//! - a fault node: `deadline`, else its `duration`; one of them is required, except for a one-shot
//!   fault (`action: kill`, duration 0), which finishes when it is done. With `deadline` alone the
//!   fault holds for the deadline from the moment it is in effect (Havoc's time model: injection
//!   time is not taken from the hold), and the node is stopped at deadline + [`CHAOS_GRACE`] at
//!   the latest; with `duration` alone the node's deadline is duration + [`CHAOS_GRACE`]; when
//!   both are given the fault lasts `duration` and the deadline bounds the node strictly;
//! - Suspend and Schedule nodes: `deadline` is required (they would never end otherwise);
//! - Task nodes: default [`DEFAULT_TASK_DEADLINE`] (10 minutes), the command is killed then;
//! - StatusCheck nodes: `deadline`, else the check's `duration` (Continuous), else
//!   [`DEFAULT_CHECK_DEADLINE`] (10 minutes);
//! - Serial and Parallel nodes: `deadline` if given; else they end when their children end, and
//!   every child has a deadline, so they do too.
//!
//! When a deadline passes, the node's running descendants are stopped (faults recovered, commands
//! killed), its pending ones skipped, and it ends `DeadlineExceeded`, which counts as done (as in
//! Chaos Mesh: a chaos node's deadline is how long the chaos lasts).
//!
//! Branch expressions are CEL (the language of Kubernetes' validation rules and of Havoc's CRDs),
//! where Chaos Mesh uses antonmedv/expr. They agree on `exitCode == 0`, `stdout == "ok"`, `<`,
//! `>`, parentheses; they differ in: expr `and`/`or`/`not` are CEL `&&`/`||`/`!`; expr
//! `stdout contains "x"` is CEL `stdout.contains("x")`; expr `stdout matches "re"` is CEL
//! `stdout.matches("re")`; expr `stdout startsWith "x"` is CEL `stdout.startsWith("x")`. An expr
//! form is refused with the CEL spelling. `stdout` is the task's standard output (first 64 KiB,
//! trailing newline trimmed) and `exitCode` an integer (-1 when killed by a signal).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::de::{self, from_node};
use crate::error::{Problems, SpecError, SpecErrors};
use crate::experiment::{
    load_fault, FaultEntry, FaultSpec, Metadata, API_VERSION, CHAOS_MESH_API_VERSION, FAULT_KINDS,
};
use crate::path::{FieldPath, Segment};
use crate::schedule::{load_schedule_spec, ScheduleSpec};
use crate::statuscheck::StatusCheckSpec;
use crate::units::{clip, HumanDuration};
use crate::yaml::{Node, Pos, Value};

/// The most templates a workflow may have.
pub const MAX_TEMPLATES: usize = 256;
/// The most nodes a workflow may expand to (every branch taken).
pub const MAX_NODES: usize = 1000;
/// The most children (or branches) of one template.
pub const MAX_CHILDREN: usize = 64;
/// The longest branch expression, in bytes.
pub const MAX_EXPRESSION: usize = 1024;
/// How much of a task's standard output is kept and given to branch expressions.
pub const MAX_STDOUT: usize = 64 * 1024;
/// A Task node's deadline when none is given.
pub const DEFAULT_TASK_DEADLINE: Duration = Duration::from_secs(600);
/// How long past its planned end a fault node may run (injecting and recovering) before it is
/// stopped.
pub const CHAOS_GRACE: Duration = Duration::from_secs(30);
/// A StatusCheck node's deadline when neither `deadline` nor the check's `duration` is given.
pub const DEFAULT_CHECK_DEADLINE: Duration = Duration::from_secs(600);

/// Chaos Mesh template types Havoc does not run, refused by name.
const UNSUPPORTED_TYPES: &[&str] = &[
    "PodChaos",
    "DNSChaos",
    "HTTPChaos",
    "KernelChaos",
    "JVMChaos",
    "AWSChaos",
    "GCPChaos",
    "AzureChaos",
    "BlockChaos",
    "PhysicalMachineChaos",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: WorkflowSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSpec {
    pub entry: String,
    pub templates: Vec<Template>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub deadline: Option<Duration>,
    pub kind: TemplateKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplateKind {
    Serial(Vec<String>),
    Parallel(Vec<String>),
    Suspend,
    Task {
        task: TaskSpec,
        branches: Vec<Branch>,
    },
    StatusCheck {
        check: Box<StatusCheckSpec>,
        abort: bool,
    },
    Schedule(Box<ScheduleSpec>),
    Chaos(Box<FaultEntry>),
}

impl TemplateKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            TemplateKind::Serial(_) => "Serial",
            TemplateKind::Parallel(_) => "Parallel",
            TemplateKind::Suspend => "Suspend",
            TemplateKind::Task { .. } => "Task",
            TemplateKind::StatusCheck { .. } => "StatusCheck",
            TemplateKind::Schedule(_) => "Schedule",
            TemplateKind::Chaos(f) => f.spec.kind(),
        }
    }
}

/// A Task: on a host an argv (`command`); in Kubernetes a container (`container`, Chaos Mesh's).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<TaskContainer>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskContainer {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Branch {
    pub target: String,
    pub expression: String,
}

impl Workflow {
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.spec.template(name)
    }
}

impl WorkflowSpec {
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// Branch expressions (CEL).

/// Expr (Chaos Mesh) spellings and their CEL form, for a helpful refusal.
const EXPR_HINTS: &[(&str, &str)] = &[
    (" and ", "`&&`"),
    (" or ", "`||`"),
    (" contains ", "`stdout.contains(\"x\")`"),
    (" matches ", "`stdout.matches(\"re\")`"),
    (" startsWith ", "`stdout.startsWith(\"x\")`"),
    (" endsWith ", "`stdout.endsWith(\"x\")`"),
    ("not ", "`!`"),
];

/// Checks that a branch expression compiles and uses only `exitCode` and `stdout`.
pub fn check_expression(expr: &str) -> Result<(), String> {
    if expr.len() > MAX_EXPRESSION {
        return Err(format!("is longer than {MAX_EXPRESSION} bytes"));
    }
    let hint = || {
        EXPR_HINTS
            .iter()
            .find(|(e, _)| expr.contains(e) || expr.starts_with(e.trim_start()))
            .map(|(e, c)| format!(" (Chaos Mesh's expr `{}` is written {c} in CEL)", e.trim()))
            .unwrap_or_default()
    };
    let program = cel::Program::compile(expr).map_err(|e| {
        format!(
            "`{}` is not a CEL expression{}: {}",
            clip(expr),
            hint(),
            clip(&e.to_string())
        )
    })?;
    let refs = program.references();
    for v in refs.variables() {
        if v != "exitCode" && v != "stdout" {
            return Err(format!(
                "`{}` uses `{}`: a branch expression sees only `exitCode` (an integer) and `stdout` (a string){}",
                clip(expr),
                clip(v),
                hint()
            ));
        }
    }
    Ok(())
}

/// Evaluates a branch expression; it must give a boolean.
pub fn eval_expression(expr: &str, exit_code: i64, stdout: &str) -> Result<bool, String> {
    let program = cel::Program::compile(expr).map_err(|e| format!("`{}`: {e}", clip(expr)))?;
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("exitCode", exit_code);
    ctx.add_variable_from_value("stdout", stdout.to_string());
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("`{}` gave {other:?}, not a boolean", clip(expr))),
        Err(e) => Err(format!("`{}` failed: {e}", clip(expr))),
    }
}

/// The branches a finished task takes: every branch whose expression is true, in order.
/// An expression that fails to evaluate is an error of the task node (named in its message).
pub fn choose_branches(
    branches: &[Branch],
    exit_code: i64,
    stdout: &str,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for b in branches {
        if eval_expression(&b.expression, exit_code, stdout)? {
            out.push(b.target.clone());
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Loading.

pub(crate) fn push(
    errors: &mut Vec<SpecError>,
    pos: Pos,
    path: FieldPath,
    message: impl Into<String>,
) {
    errors.push(SpecError {
        path,
        pos,
        message: message.into(),
    });
}

/// The position of `fp` (an absolute path) inside `node`, which sits at `base`.
pub fn pos_under(node: &Node, base: &FieldPath, fp: &FieldPath) -> Pos {
    let segs = fp.segments();
    let rest = if segs.starts_with(base.segments()) {
        &segs[base.segments().len()..]
    } else {
        segs
    };
    let mut cur = node;
    for seg in rest {
        let next = match (seg, &cur.value) {
            (Segment::Key(k), Value::Map(_)) => cur.get(k),
            (Segment::Index(i), Value::Seq(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    cur.pos
}

/// A string field, if present (a non-string is an error).
pub(crate) fn str_key(
    node: &Node,
    key: &str,
    path: &FieldPath,
    errors: &mut Vec<SpecError>,
) -> Option<String> {
    let n = node.get(key)?;
    match n.as_scalar() {
        Some(s) => Some(s.to_string()),
        None => {
            push(
                errors,
                n.pos,
                path.key(key),
                format!("expected a string, got {}", n.describe()),
            );
            None
        }
    }
}

/// Refuses keys outside `allowed`; `refused` names Chaos Mesh fields Havoc does not support,
/// with why.
pub(crate) fn check_keys(
    node: &Node,
    path: &FieldPath,
    allowed: &[&str],
    refused: &[(&str, &str)],
    errors: &mut Vec<SpecError>,
) {
    let Value::Map(entries) = &node.value else {
        push(
            errors,
            node.pos,
            path.clone(),
            format!("expected a mapping, got {}", node.describe()),
        );
        return;
    };
    for (k, _) in entries {
        let name = k.as_scalar().unwrap_or_default();
        if allowed.contains(&name) {
            continue;
        }
        if let Some((_, why)) = refused.iter().find(|(r, _)| *r == name) {
            push(
                errors,
                k.pos,
                path.key(name),
                format!("Chaos Mesh's `{name}` is not supported: {why}"),
            );
            continue;
        }
        let close = de::closest(name, allowed)
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        push(
            errors,
            k.pos,
            path.key(name),
            format!(
                "unknown field `{}`: {close}expected one of {}",
                clip(name),
                allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}

/// The key under which a kind's spec is embedded: `ProcessChaos` -> `processChaos`,
/// `IOChaos` -> `ioChaos`, `Workflow` -> `workflow`.
pub fn embedded_key(kind: &str) -> String {
    let upper = kind.chars().take_while(|c| c.is_ascii_uppercase()).count();
    let cut = if upper > 1 && upper < kind.len() {
        upper - 1
    } else {
        upper.max(1)
    };
    let (head, tail) = kind.split_at(cut.min(kind.len()));
    format!("{}{tail}", head.to_ascii_lowercase())
}

/// Loads a fault embedded in a workflow template or a schedule. `type_path` is where its kind
/// was written.
pub(crate) fn load_chaos(
    node: &Node,
    path: &FieldPath,
    type_path: &FieldPath,
    kind: &str,
    name: &str,
    errors: &mut Vec<SpecError>,
) -> Option<FaultEntry> {
    if !FAULT_KINDS.contains(&kind) {
        return None;
    }
    if node.get("after").is_some() {
        push(
            errors,
            node.pos,
            path.key("after"),
            "a workflow orders its steps with Serial: `after` is not allowed here",
        );
        return None;
    }
    let _ = type_path;
    match load_fault(node, path, Some((kind, name.to_string()))) {
        Ok(f) => {
            let mut p = Problems::new();
            f.spec.validate(path, &mut p);
            if let Some(d) = f.duration {
                if d.0 > crate::experiment::MAX_FAULT_DURATION {
                    p.add(&path.key("duration"), "must be at most 7 days");
                }
            }
            let before = errors.len();
            for (fp, m) in p.into_vec() {
                errors.push(SpecError {
                    pos: pos_under(node, path, &fp),
                    path: fp,
                    message: m,
                });
            }
            (errors.len() == before).then_some(f)
        }
        Err(e) => {
            errors.extend(e);
            None
        }
    }
}

fn unknown_type(kind: &str) -> String {
    if UNSUPPORTED_TYPES.contains(&kind) {
        return format!(
            "Chaos Mesh's `{kind}` is not supported by Havoc workflows yet: use one of Serial, Parallel, Suspend, Task, StatusCheck, Schedule, {}",
            FAULT_KINDS.join(", ")
        );
    }
    let mut all = vec![
        "Serial",
        "Parallel",
        "Suspend",
        "Task",
        "StatusCheck",
        "Schedule",
    ];
    all.extend(FAULT_KINDS);
    let hint = de::closest(kind, &all)
        .map(|c| format!("did you mean `{c}`? "))
        .unwrap_or_default();
    format!(
        "unknown templateType `{}`: {hint}expected one of {}",
        clip(kind),
        all.join(", ")
    )
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

const TEMPLATE_KEYS: &[&str] = &[
    "name",
    "templateType",
    "deadline",
    "children",
    "conditionalBranches",
    "abortWithStatusCheck",
    "task",
    "statusCheck",
    "schedule",
];

fn load_template(node: &Node, path: &FieldPath, errors: &mut Vec<SpecError>) -> Option<Template> {
    let before = errors.len();
    let name = str_key(node, "name", path, errors);
    let ttype = str_key(node, "templateType", path, errors);
    if node.get("name").is_none() {
        push(errors, node.pos, path.key("name"), "is required: the template's name, referenced by `entry`, `children` and branch targets");
    }
    if node.get("templateType").is_none() {
        push(
            errors,
            node.pos,
            path.key("templateType"),
            "is required: Serial, Parallel, Suspend, Task, StatusCheck, Schedule or a fault kind",
        );
    }
    let mut allowed = TEMPLATE_KEYS.to_vec();
    let key = ttype.as_deref().map(embedded_key);
    if let Some(k) = key.as_deref() {
        if FAULT_KINDS.contains(&ttype.as_deref().unwrap_or_default()) {
            allowed.push(k);
        }
    }
    check_keys(node, path, &allowed, &[], errors);
    if let Some(n) = &name {
        if !valid_name(n) {
            push(
                errors,
                node.get("name").map_or(node.pos, |x| x.pos),
                path.key("name"),
                format!(
                    "`{}` is not a valid name: use 1..=63 lowercase letters, digits, `-` or `.`",
                    clip(n)
                ),
            );
        }
    }
    let deadline: Option<HumanDuration> = node.get("deadline").and_then(|n| {
        from_node::<HumanDuration>(n, &path.key("deadline"))
            .map_err(|e| errors.push(e))
            .ok()
    });
    if let Some(d) = deadline {
        if d.0.is_zero() || d.0 > crate::experiment::MAX_FAULT_DURATION {
            push(
                errors,
                node.get("deadline").map_or(node.pos, |x| x.pos),
                path.key("deadline"),
                format!("must be more than 0 and at most 7 days, got {d}"),
            );
        }
    }
    let only_for = |key: &str, types: &[&str], errors: &mut Vec<SpecError>| {
        if let (Some(k), Some(t)) = (node.key_node(key), ttype.as_deref()) {
            if !types.contains(&t) {
                push(
                    errors,
                    k.pos,
                    path.key(key),
                    format!(
                        "applies to templateType {} only, not {t}",
                        types.join(" or ")
                    ),
                );
            }
        }
    };
    only_for("children", &["Serial", "Parallel"], errors);
    only_for("conditionalBranches", &["Task"], errors);
    only_for("task", &["Task"], errors);
    only_for("abortWithStatusCheck", &["StatusCheck"], errors);
    only_for("statusCheck", &["StatusCheck"], errors);
    only_for("schedule", &["Schedule"], errors);
    let required = |key: &str, errors: &mut Vec<SpecError>| -> Option<&Node> {
        let n = node.get(key);
        if n.is_none() {
            push(
                errors,
                node.pos,
                path.key(key),
                format!(
                    "is required for templateType {}",
                    ttype.as_deref().unwrap_or_default()
                ),
            );
        }
        n
    };
    let need_deadline = |why: &str, errors: &mut Vec<SpecError>| {
        if deadline.is_none() {
            push(
                errors,
                node.pos,
                path.key("deadline"),
                format!("is required: {why}"),
            );
        }
    };
    let kind = match ttype.as_deref() {
        None => None,
        Some(t @ ("Serial" | "Parallel")) => {
            let children: Option<Vec<String>> = required("children", errors).and_then(|n| {
                from_node(n, &path.key("children"))
                    .map_err(|e| errors.push(e))
                    .ok()
            });
            children.and_then(|c| {
                if c.is_empty() || c.len() > MAX_CHILDREN {
                    push(
                        errors,
                        node.get("children").map_or(node.pos, |x| x.pos),
                        path.key("children"),
                        format!("must list 1..={MAX_CHILDREN} template names"),
                    );
                    return None;
                }
                Some(if t == "Serial" {
                    TemplateKind::Serial(c)
                } else {
                    TemplateKind::Parallel(c)
                })
            })
        }
        Some("Suspend") => {
            need_deadline("how long to suspend, e.g. `30s`", errors);
            Some(TemplateKind::Suspend)
        }
        Some("Task") => {
            let task: Option<TaskSpec> = required("task", errors).and_then(|n| {
                from_node(n, &path.key("task"))
                    .map_err(|e| errors.push(e))
                    .ok()
            });
            let branches: Vec<Branch> = node
                .get("conditionalBranches")
                .and_then(|n| {
                    from_node(n, &path.key("conditionalBranches"))
                        .map_err(|e| errors.push(e))
                        .ok()
                })
                .unwrap_or_default();
            if branches.len() > MAX_CHILDREN {
                push(
                    errors,
                    node.pos,
                    path.key("conditionalBranches"),
                    format!("at most {MAX_CHILDREN} branches"),
                );
            }
            for (i, b) in branches.iter().enumerate() {
                if let Err(e) = check_expression(&b.expression) {
                    let bp = path.key("conditionalBranches").index(i).key("expression");
                    push(errors, pos_under(node, path, &bp), bp, e);
                }
            }
            if let Some(t) = &task {
                let tp = path.key("task");
                match (&t.command, &t.container) {
                    (None, None) => push(errors, node.get("task").map_or(node.pos, |x| x.pos), tp.key("command"), "is required: the argv to run, e.g. [curl, -sf, http://127.0.0.1/] (no shell: write [sh, -c, '...'] for one)"),
                    (Some(_), Some(_)) => push(errors, node.get("task").map_or(node.pos, |x| x.pos), tp.clone(), "give `command` (a host argv) or `container` (a Kubernetes pod), not both"),
                    (Some(c), None) if c.is_empty() || c[0].is_empty() => push(errors, pos_under(node, path, &tp.key("command")), tp.key("command"), "must start with the program to run"),
                    _ => {}
                }
            }
            task.map(|task| TemplateKind::Task { task, branches })
        }
        Some("StatusCheck") => {
            let sp = path.key("statusCheck");
            let check: Option<StatusCheckSpec> = required("statusCheck", errors)
                .and_then(|n| from_node(n, &sp).map_err(|e| errors.push(e)).ok());
            let abort: bool = node
                .get("abortWithStatusCheck")
                .and_then(|n| {
                    from_node(n, &path.key("abortWithStatusCheck"))
                        .map_err(|e| errors.push(e))
                        .ok()
                })
                .unwrap_or(false);
            check.map(|c| {
                let mut p = Problems::new();
                c.validate(&sp, &mut p);
                for (fp, m) in p.into_vec() {
                    errors.push(SpecError {
                        pos: pos_under(node, path, &fp),
                        path: fp,
                        message: m,
                    });
                }
                TemplateKind::StatusCheck {
                    check: Box::new(c),
                    abort,
                }
            })
        }
        Some("Schedule") => {
            need_deadline(
                "a schedule in a workflow runs until its deadline, e.g. `10m`",
                errors,
            );
            required("schedule", errors)
                .and_then(|n| load_schedule_spec(n, &path.key("schedule"), false, errors))
                .map(|s| TemplateKind::Schedule(Box::new(s)))
        }
        Some(t) if FAULT_KINDS.contains(&t) => {
            let k = key.clone().unwrap_or_default();
            required(&k, errors)
                .and_then(|n| load_chaos(n, &path.key(&k), &path.key("templateType"), t, name.as_deref().unwrap_or("fault"), errors))
                .and_then(|f| {
                    let one_shot = matches!(&f.spec, FaultSpec::ProcessChaos(pc) if pc.action == crate::process::ProcessAction::Kill)
                        || matches!(&f.spec, FaultSpec::ProcessChaos(pc) if pc.action == crate::process::ProcessAction::Signal && pc.interval.is_none());
                    if f.duration.is_none() && deadline.is_none() && !one_shot {
                        push(errors, node.pos, path.key("deadline"), format!("is required (or {k}.duration): how long the fault lasts, e.g. `30s`"));
                        return None;
                    }
                    Some(TemplateKind::Chaos(Box::new(f)))
                })
        }
        Some(t) => {
            push(
                errors,
                node.get("templateType").map_or(node.pos, |x| x.pos),
                path.key("templateType"),
                unknown_type(t),
            );
            None
        }
    };
    match (name, kind) {
        (Some(name), Some(kind)) if errors.len() == before => Some(Template {
            name,
            deadline: deadline.map(|d| d.0),
            kind,
        }),
        _ => None,
    }
}

/// Loads a workflow spec (`entry`, `templates`) and checks references, cycles and size.
pub fn load_workflow_spec(
    node: &Node,
    path: &FieldPath,
    errors: &mut Vec<SpecError>,
) -> Option<WorkflowSpec> {
    let before = errors.len();
    check_keys(node, path, &["entry", "templates"], &[], errors);
    let entry = str_key(node, "entry", path, errors);
    if node.get("entry").is_none() {
        push(
            errors,
            node.pos,
            path.key("entry"),
            "is required: the name of the template to start with",
        );
    }
    let mut templates = Vec::new();
    let mut positions: Vec<(FieldPath, &Node)> = Vec::new();
    match node.get("templates") {
        None => push(
            errors,
            node.pos,
            path.key("templates"),
            "is required: list the workflow's templates",
        ),
        Some(tn) => match &tn.value {
            Value::Seq(items) if items.is_empty() || items.len() > MAX_TEMPLATES => push(
                errors,
                tn.pos,
                path.key("templates"),
                format!("must list 1..={MAX_TEMPLATES} templates"),
            ),
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let tp = path.key("templates").index(i);
                    if let Some(t) = load_template(item, &tp, errors) {
                        templates.push(t);
                        positions.push((tp, item));
                    }
                }
            }
            _ => push(
                errors,
                tn.pos,
                path.key("templates"),
                format!("expected a list of templates, got {}", tn.describe()),
            ),
        },
    }
    if errors.len() != before {
        return None;
    }
    let entry = entry?;
    let spec = WorkflowSpec { entry, templates };
    let mut seen = HashSet::new();
    for (t, (tp, item)) in spec.templates.iter().zip(&positions) {
        if !seen.insert(t.name.as_str()) {
            push(
                errors,
                item.get("name").map_or(item.pos, |n| n.pos),
                tp.key("name"),
                format!(
                    "`{}` is used by another template: names must be unique",
                    t.name
                ),
            );
        }
        let refs: Vec<(FieldPath, &str)> = match &t.kind {
            TemplateKind::Serial(c) | TemplateKind::Parallel(c) => c
                .iter()
                .enumerate()
                .map(|(i, c)| (tp.key("children").index(i), c.as_str()))
                .collect(),
            TemplateKind::Task { branches, .. } => branches
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    (
                        tp.key("conditionalBranches").index(i).key("target"),
                        b.target.as_str(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        for (rp, r) in refs {
            if spec.template(r).is_none() {
                push(
                    errors,
                    pos_under(item, tp, &rp),
                    rp,
                    format!("no template is named `{}`", clip(r)),
                );
            }
        }
    }
    if spec.template(&spec.entry).is_none() {
        push(
            errors,
            node.get("entry").map_or(node.pos, |n| n.pos),
            path.key("entry"),
            format!("no template is named `{}`", clip(&spec.entry)),
        );
    }
    if errors.len() != before {
        return None;
    }
    // Cycles, and the size of the expanded tree (every branch taken).
    let mut memo: BTreeMap<&str, usize> = BTreeMap::new();
    let mut stack: Vec<&str> = Vec::new();
    match expanded_size(&spec, &spec.entry, &mut stack, &mut memo) {
        Err(cycle) => {
            let at = cycle.first().copied().unwrap_or_default();
            let i = spec
                .templates
                .iter()
                .position(|t| t.name == at)
                .unwrap_or(0);
            let (tp, item) = &positions[i];
            push(
                errors,
                item.pos,
                tp.clone(),
                format!("templates form a cycle: {}", cycle.join(" -> ")),
            );
            None
        }
        Ok(n) if n > MAX_NODES => {
            push(
                errors,
                node.pos,
                path.key("templates"),
                format!("the workflow expands to {n} nodes, more than {MAX_NODES}"),
            );
            None
        }
        Ok(_) => Some(spec),
    }
}

fn expanded_size<'a>(
    spec: &'a WorkflowSpec,
    name: &'a str,
    stack: &mut Vec<&'a str>,
    memo: &mut BTreeMap<&'a str, usize>,
) -> Result<usize, Vec<&'a str>> {
    if let Some(i) = stack.iter().position(|s| *s == name) {
        let mut c: Vec<&str> = stack[i..].to_vec();
        c.push(name);
        return Err(c);
    }
    if let Some(n) = memo.get(name) {
        return Ok(*n);
    }
    let t = spec.template(name).expect("references were checked");
    stack.push(name);
    let children: Vec<&str> = match &t.kind {
        TemplateKind::Serial(c) | TemplateKind::Parallel(c) => {
            c.iter().map(String::as_str).collect()
        }
        TemplateKind::Task { branches, .. } => branches.iter().map(|b| b.target.as_str()).collect(),
        _ => Vec::new(),
    };
    let mut n = 1usize;
    for c in children {
        n = n.saturating_add(expanded_size(spec, c, stack, memo)?);
    }
    stack.pop();
    memo.insert(name, n.min(MAX_NODES + 1));
    Ok(n.min(MAX_NODES + 1))
}

/// Reads a document of the given kind: parses, checks apiVersion, kind, metadata, spec.
pub(crate) fn document(src: &str, kind: &str) -> Result<(Node, String, Metadata), SpecErrors> {
    let one = |pos: Pos, path: FieldPath, m: String| {
        SpecErrors(vec![SpecError {
            path,
            pos,
            message: m,
        }])
    };
    let docs = crate::yaml::parse_documents(src).map_err(|e| {
        one(
            e.pos,
            FieldPath::root(),
            format!("invalid YAML: {}", e.message),
        )
    })?;
    let root = match docs.len() {
        1 => docs.into_iter().next().expect("one document"),
        0 => {
            return Err(one(
                Pos { line: 1, col: 1 },
                FieldPath::root(),
                format!("the file is empty: expected a {kind}"),
            ))
        }
        n => {
            return Err(one(
                docs[1].pos,
                FieldPath::root(),
                format!("expected one YAML document, found {n}"),
            ))
        }
    };
    let top = FieldPath::root();
    let mut errors = Vec::new();
    check_keys(
        &root,
        &top,
        &["apiVersion", "kind", "metadata", "spec"],
        &[("status", "a status is written by Havoc, not read")],
        &mut errors,
    );
    if !errors.is_empty() && !matches!(root.value, Value::Map(_)) {
        return Err(SpecErrors(errors));
    }
    let av = str_key(&root, "apiVersion", &top, &mut errors);
    match &av {
        None => push(&mut errors, root.pos, top.key("apiVersion"), format!("is required: `{API_VERSION}`")),
        Some(a) if a != API_VERSION && a != CHAOS_MESH_API_VERSION => push(
            &mut errors,
            root.get("apiVersion").map_or(root.pos, |n| n.pos),
            top.key("apiVersion"),
            format!("unsupported apiVersion `{}`: expected `{API_VERSION}` (or `{CHAOS_MESH_API_VERSION}`)", clip(a)),
        ),
        _ => {}
    }
    match str_key(&root, "kind", &top, &mut errors) {
        Some(k) if k == kind => {}
        Some(k) => push(
            &mut errors,
            root.get("kind").map_or(root.pos, |n| n.pos),
            top.key("kind"),
            format!("expected kind `{kind}`, got `{}`", clip(&k)),
        ),
        None => push(
            &mut errors,
            root.pos,
            top.key("kind"),
            format!("is required: `{kind}`"),
        ),
    }
    let metadata: Option<Metadata> = match root.get("metadata") {
        Some(n) => from_node(n, &top.key("metadata"))
            .map_err(|e| errors.push(e))
            .ok(),
        None => {
            push(
                &mut errors,
                root.pos,
                top.key("metadata"),
                "is required (at least metadata.name)",
            );
            None
        }
    };
    if let Some(m) = &metadata {
        if !valid_name(&m.name) {
            push(
                &mut errors,
                pos_under(&root, &top, &top.key("metadata").key("name")),
                top.key("metadata").key("name"),
                format!(
                    "`{}` is not a valid name: use 1..=63 lowercase letters, digits, `-` or `.`",
                    clip(&m.name)
                ),
            );
        }
    }
    if root.get("spec").is_none() {
        push(&mut errors, root.pos, top.key("spec"), "is required");
    }
    if errors.is_empty() {
        Ok((
            root,
            av.unwrap_or_default(),
            metadata.expect("metadata when no errors"),
        ))
    } else {
        Err(SpecErrors(errors))
    }
}

pub(crate) fn finish_doc<T>(mut errors: Vec<SpecError>, value: Option<T>) -> Result<T, SpecErrors> {
    match value {
        Some(v) if errors.is_empty() => Ok(v),
        _ => {
            if errors.is_empty() {
                errors.push(SpecError {
                    path: FieldPath::root(),
                    pos: Pos { line: 1, col: 1 },
                    message: "invalid document".into(),
                });
            }
            errors.sort_by_key(|a| (a.pos, a.path.to_string()));
            errors.dedup();
            Err(SpecErrors(errors))
        }
    }
}

/// Parses and validates a `kind: Workflow` document.
pub fn parse_workflow(src: &str) -> Result<Workflow, SpecErrors> {
    let (root, api_version, metadata) = document(src, "Workflow")?;
    let mut errors = Vec::new();
    let spec = load_workflow_spec(
        root.get("spec").expect("document() checked spec"),
        &FieldPath::root().key("spec"),
        &mut errors,
    );
    finish_doc(
        errors,
        spec.map(|spec| Workflow {
            api_version,
            metadata,
            spec,
        }),
    )
}

/// The `kind` of a document, read without validating it (to choose a parser).
pub fn document_kind(src: &str) -> Option<String> {
    let docs = crate::yaml::parse_documents(src).ok()?;
    docs.first()?.get("kind")?.as_scalar().map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// The state machine.

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum NodePhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Its deadline passed; counts as done (a chaos node's deadline is how long it lasts).
    DeadlineExceeded,
    /// Stopped because the workflow was aborted (a status check, a signal, a request).
    Aborted,
    /// Never started: an earlier step failed, the workflow was aborted or a deadline passed.
    Skipped,
}

impl NodePhase {
    pub fn is_done(self) -> bool {
        !matches!(self, NodePhase::Pending | NodePhase::Running)
    }
    fn counts_as_success(self) -> bool {
        matches!(self, NodePhase::Succeeded | NodePhase::DeadlineExceeded)
    }
}

/// One node of a workflow run: an instance of a template in the tree.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// `main/pause`, `main/probe/heal`: template names from the entry.
    pub path: String,
    pub template: String,
    pub template_type: &'static str,
    pub phase: NodePhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// When it must end (from its start and its deadline or default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A leaf's work finished (a task's command exited); for a Task its branches then run.
    #[serde(skip)]
    pub work_done: bool,
    /// A stop was asked of this leaf's work (deadline or abort), and why.
    #[serde(skip)]
    pub stopping: Option<StopCause>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    Deadline,
    Abort,
}

/// What the executor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the work of a leaf node (a fault, a task's command, a status check, a schedule).
    Start(usize),
    /// Stop a leaf's work (recover its fault, kill its command); then report with [`Tree::work_finished`].
    Stop(usize, StopCause),
    /// The workflow ended (its entry node is done).
    Finished(NodePhase),
}

/// How a leaf's work ended, reported by the executor.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkOutcome {
    Succeeded,
    Failed(String),
    /// A task's command exited (or could not start: exit code -1 and the error as stdout is NOT
    /// done; that is `Failed`).
    TaskExited {
        exit_code: i64,
        stdout: String,
    },
}

/// A workflow run's nodes, and the rules that move them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tree {
    pub nodes: Vec<NodeState>,
    #[serde(skip)]
    aborting: Option<String>,
    #[serde(skip)]
    finished: bool,
}

impl Tree {
    pub fn new(spec: &WorkflowSpec) -> Tree {
        let t = spec
            .template(&spec.entry)
            .expect("a validated workflow has its entry");
        Tree {
            nodes: vec![new_node(t, spec.entry.clone(), None)],
            aborting: None,
            finished: false,
        }
    }

    /// Aborts the workflow: running work is stopped, pending nodes skipped.
    pub fn abort(&mut self, reason: impl Into<String>) {
        if self.aborting.is_none() {
            self.aborting = Some(reason.into());
        }
    }

    pub fn abort_reason(&self) -> Option<&str> {
        self.aborting.as_deref()
    }

    /// The executor reports that a leaf's work ended.
    pub fn work_finished(
        &mut self,
        spec: &WorkflowSpec,
        i: usize,
        outcome: WorkOutcome,
        now_ms: u64,
    ) {
        let n = &mut self.nodes[i];
        if n.phase != NodePhase::Running || n.work_done {
            return;
        }
        n.work_done = true;
        let stopping = n.stopping;
        match outcome {
            WorkOutcome::TaskExited { exit_code, stdout } => {
                let t = spec.template(&n.template).expect("node of a template");
                let TemplateKind::Task { branches, .. } = &t.kind else {
                    return finish(n, NodePhase::Succeeded, None, now_ms);
                };
                if stopping.is_some() {
                    let phase = if stopping == Some(StopCause::Abort) {
                        NodePhase::Aborted
                    } else {
                        NodePhase::Failed
                    };
                    return finish(
                        n,
                        phase,
                        Some(format!("the command was stopped (exit code {exit_code})")),
                        now_ms,
                    );
                }
                match choose_branches(branches, exit_code, &stdout) {
                    Err(e) => finish(n, NodePhase::Failed, Some(e), now_ms),
                    Ok(chosen) => {
                        n.message = Some(format!(
                            "exit code {exit_code}; branches taken: {}",
                            if chosen.is_empty() {
                                "none".to_string()
                            } else {
                                chosen.join(", ")
                            }
                        ));
                        let parent_path = n.path.clone();
                        let mut kids = Vec::new();
                        for c in chosen {
                            let ct = spec.template(&c).expect("references were checked");
                            kids.push(self.nodes.len());
                            self.nodes
                                .push(new_node(ct, format!("{parent_path}/{c}"), Some(i)));
                        }
                        self.nodes[i].children = kids;
                    }
                }
            }
            WorkOutcome::Succeeded => {
                let phase = match stopping {
                    Some(StopCause::Deadline) => NodePhase::DeadlineExceeded,
                    Some(StopCause::Abort) => NodePhase::Aborted,
                    None => NodePhase::Succeeded,
                };
                finish(n, phase, None, now_ms)
            }
            WorkOutcome::Failed(m) => {
                let phase = match stopping {
                    Some(StopCause::Abort) => NodePhase::Aborted,
                    _ => NodePhase::Failed,
                };
                let abort = matches!(
                    &spec.template(&n.template).map(|t| &t.kind),
                    Some(TemplateKind::StatusCheck { abort: true, .. })
                );
                let path = n.path.clone();
                finish(n, phase, Some(m.clone()), now_ms);
                if abort && phase == NodePhase::Failed {
                    self.abort(format!("status check `{path}` failed: {m}"));
                }
            }
        }
    }

    /// Moves every node as far as the rules allow at `now_ms`; returns what the executor must do.
    /// Pure: the same tree and time give the same actions.
    pub fn advance(&mut self, spec: &WorkflowSpec, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.finished {
            return actions;
        }
        // Bounded: each pass changes at least one node's phase or stops, and there are at most
        // MAX_NODES nodes with a handful of states each.
        for _ in 0..(8 * MAX_NODES) {
            if !self.pass(spec, now_ms, &mut actions) {
                break;
            }
        }
        if self.nodes[0].phase.is_done() && !self.finished {
            self.finished = true;
            actions.push(Action::Finished(self.nodes[0].phase));
        }
        actions
    }

    fn pass(&mut self, spec: &WorkflowSpec, now: u64, actions: &mut Vec<Action>) -> bool {
        let aborting = self.aborting.is_some();
        for i in 0..self.nodes.len() {
            let phase = self.nodes[i].phase;
            let parent_running = self.nodes[i]
                .parent
                .is_none_or(|p| self.nodes[p].phase == NodePhase::Running);
            if phase == NodePhase::Pending {
                if aborting || !parent_running {
                    let n = &mut self.nodes[i];
                    finish(n, NodePhase::Skipped, None, now);
                    return true;
                }
                if self.may_start(i) {
                    let t = spec
                        .template(&self.nodes[i].template)
                        .expect("node of a template")
                        .clone();
                    self.start(spec, i, &t, now, actions);
                    return true;
                }
                continue;
            }
            if phase != NodePhase::Running {
                continue;
            }
            let t = spec
                .template(&self.nodes[i].template)
                .expect("node of a template");
            let n = &self.nodes[i];
            let past_deadline = n.deadline_ms.is_some_and(|d| now >= d);
            let is_leaf_work = !matches!(
                t.kind,
                TemplateKind::Serial(_) | TemplateKind::Parallel(_) | TemplateKind::Suspend
            ) && !n.work_done;
            if is_leaf_work {
                let cause = if aborting {
                    Some(StopCause::Abort)
                } else if past_deadline {
                    Some(StopCause::Deadline)
                } else {
                    None
                };
                if let (Some(c), None) = (cause, n.stopping) {
                    self.nodes[i].stopping = Some(c);
                    actions.push(Action::Stop(i, c));
                    return true;
                }
                continue;
            }
            if matches!(t.kind, TemplateKind::Suspend) {
                if aborting {
                    finish(&mut self.nodes[i], NodePhase::Aborted, None, now);
                    return true;
                }
                if past_deadline {
                    finish(
                        &mut self.nodes[i],
                        NodePhase::Succeeded,
                        Some("suspended until its deadline".into()),
                        now,
                    );
                    return true;
                }
                continue;
            }
            // A composite (Serial, Parallel, or a Task whose branches run).
            if (aborting || past_deadline) && n.stopping.is_none() {
                self.nodes[i].stopping = Some(if aborting {
                    StopCause::Abort
                } else {
                    StopCause::Deadline
                });
                // Descendants: pending ones are skipped when their parent stops running; running
                // leaves are stopped by their own deadline check, so give them this deadline.
                self.propagate_deadline(i, now);
                return true;
            }
            let kids: Vec<usize> = self.nodes[i].children.clone();
            if kids.iter().all(|&k| self.nodes[k].phase.is_done()) {
                let any_failed = kids
                    .iter()
                    .any(|&k| matches!(self.nodes[k].phase, NodePhase::Failed));
                let any_aborted = kids
                    .iter()
                    .any(|&k| matches!(self.nodes[k].phase, NodePhase::Aborted));
                let phase = match self.nodes[i].stopping {
                    Some(StopCause::Abort) => NodePhase::Aborted,
                    _ if any_failed => NodePhase::Failed,
                    _ if any_aborted || aborting => NodePhase::Aborted,
                    Some(StopCause::Deadline) => NodePhase::DeadlineExceeded,
                    None => NodePhase::Succeeded,
                };
                finish(&mut self.nodes[i], phase, None, now);
                return true;
            }
            if matches!(t.kind, TemplateKind::Serial(_)) {
                // A failed step ends the serial: the rest are skipped.
                if kids
                    .iter()
                    .any(|&k| matches!(self.nodes[k].phase, NodePhase::Failed | NodePhase::Aborted))
                {
                    if let Some(&k) = kids
                        .iter()
                        .find(|&&k| self.nodes[k].phase == NodePhase::Pending)
                    {
                        finish(
                            &mut self.nodes[k],
                            NodePhase::Skipped,
                            Some("an earlier step did not succeed".into()),
                            now,
                        );
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Serial children start one after another; everything else starts when its parent runs.
    fn may_start(&self, i: usize) -> bool {
        let Some(p) = self.nodes[i].parent else {
            return true;
        };
        if self.nodes[p].template_type != "Serial" {
            return true;
        }
        let kids = &self.nodes[p].children;
        let pos = kids.iter().position(|&k| k == i).unwrap_or(0);
        kids[..pos]
            .iter()
            .all(|&k| self.nodes[k].phase.counts_as_success())
    }

    fn start(
        &mut self,
        spec: &WorkflowSpec,
        i: usize,
        t: &Template,
        now: u64,
        actions: &mut Vec<Action>,
    ) {
        let deadline = node_deadline(t).map(|d| now.saturating_add(d.as_millis() as u64));
        // A parent's deadline bounds its children.
        let parent_deadline = self.nodes[i].parent.and_then(|p| self.nodes[p].deadline_ms);
        let n = &mut self.nodes[i];
        n.phase = NodePhase::Running;
        n.started_ms = Some(now);
        n.deadline_ms = match (deadline, parent_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let path = n.path.clone();
        match &t.kind {
            TemplateKind::Serial(c) | TemplateKind::Parallel(c) => {
                let mut kids = Vec::new();
                for name in c {
                    let ct = spec.template(name).expect("references were checked");
                    kids.push(self.nodes.len());
                    self.nodes
                        .push(new_node(ct, format!("{path}/{name}"), Some(i)));
                }
                self.nodes[i].children = kids;
            }
            TemplateKind::Suspend => {}
            _ => actions.push(Action::Start(i)),
        }
    }

    fn propagate_deadline(&mut self, i: usize, now: u64) {
        let mut stack = self.nodes[i].children.clone();
        while let Some(k) = stack.pop() {
            let n = &mut self.nodes[k];
            n.deadline_ms = Some(n.deadline_ms.map_or(now, |d| d.min(now)));
            stack.extend(n.children.iter().copied());
        }
    }

    /// The earliest deadline of a running node, for the executor's sleep.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|n| n.phase == NodePhase::Running)
            .filter_map(|n| n.deadline_ms)
            .min()
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

fn new_node(t: &Template, path: String, parent: Option<usize>) -> NodeState {
    NodeState {
        path,
        template: t.name.clone(),
        template_type: t.kind.type_name(),
        phase: NodePhase::Pending,
        parent,
        children: Vec::new(),
        started_ms: None,
        finished_ms: None,
        deadline_ms: None,
        message: None,
        work_done: false,
        stopping: None,
    }
}

fn finish(n: &mut NodeState, phase: NodePhase, message: Option<String>, now: u64) {
    n.phase = phase;
    n.finished_ms = Some(now);
    if message.is_some() {
        n.message = message;
    }
}

/// A node's own deadline: `deadline`, else the documented default of its type (module docs).
/// A fault node with a duration and no deadline gets duration + 30 s for injection and recovery.
pub fn node_deadline(t: &Template) -> Option<Duration> {
    // A fault that lasts its node's deadline holds it from the moment it is in effect (Havoc's
    // time model), so the node is only stopped if it overruns by the recovery grace.
    if let (TemplateKind::Chaos(f), Some(d)) = (&t.kind, t.deadline) {
        if f.duration.is_none() {
            return Some(d + CHAOS_GRACE);
        }
    }
    if let Some(d) = t.deadline {
        return Some(d);
    }
    match &t.kind {
        TemplateKind::Serial(_) | TemplateKind::Parallel(_) => None,
        TemplateKind::Suspend | TemplateKind::Schedule(_) => None,
        TemplateKind::Task { .. } => Some(DEFAULT_TASK_DEADLINE),
        TemplateKind::StatusCheck { check, .. } => {
            Some(check.duration.map_or(DEFAULT_CHECK_DEADLINE, |d| d.0))
        }
        TemplateKind::Chaos(f) => {
            Some(f.duration.map_or(Duration::ZERO, |d| d.0) + Duration::from_secs(30))
        }
    }
}

/// How long a fault node's fault lasts: its duration, else its deadline (0 for a one-shot).
pub fn fault_duration(t: &Template, f: &FaultEntry) -> Duration {
    f.duration.map(|d| d.0).or(t.deadline).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "apiVersion: havoc.dev/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\nspec:\n";

    fn wf(body: &str) -> Result<Workflow, SpecErrors> {
        parse_workflow(&format!("{BASE}{body}"))
    }

    fn rendered(body: &str) -> String {
        wf(body).expect_err("must be refused").render("wf.yaml")
    }

    const PAUSE: &str = "processChaos: {action: pause, selector: {processNames: [sleep]}}";

    #[test]
    fn parses_serial_parallel_suspend_task_check() {
        let w = wf(&format!(
            "  entry: main\n  templates:\n  - {{name: main, templateType: Serial, children: [a, p, s, t]}}\n  - {{name: a, templateType: ProcessChaos, deadline: 2s, {PAUSE}}}\n  - {{name: p, templateType: Parallel, children: [a, s]}}\n  - {{name: s, templateType: Suspend, deadline: 1s}}\n  - name: t\n    templateType: Task\n    task: {{command: [sh, -c, 'exit 3']}}\n    conditionalBranches:\n    - {{target: s, expression: 'exitCode == 3 && stdout == \"\"'}}\n"
        ))
        .expect("valid");
        assert_eq!(w.spec.templates.len(), 5);
        assert!(matches!(
            w.spec.template("a").map(|t| &t.kind),
            Some(TemplateKind::Chaos(_))
        ));
    }

    #[test]
    fn wrong_inputs_are_positioned() {
        let r = rendered("  entry: main\n  templates:\n  - {name: main, templateType: Serial, children: [nope]}\n");
        assert!(
            r.contains("wf.yaml:7:")
                && r.contains("spec.templates[0].children[0]: no template is named `nope`"),
            "{r}"
        );
        let r = rendered("  entry: main\n  templates:\n  - {name: main, templateType: Serial, children: [b]}\n  - {name: b, templateType: Serial, children: [main]}\n");
        assert!(r.contains("cycle: main -> b -> main"), "{r}");
        let r = rendered("  entry: main\n  templates:\n  - {name: main, templateType: Suspend}\n");
        assert!(r.contains("spec.templates[0].deadline: is required"), "{r}");
        let r = rendered(
            "  entry: main\n  templates:\n  - {name: main, templateType: PodChaos, deadline: 1s}\n",
        );
        assert!(
            r.contains("Chaos Mesh's `PodChaos` is not supported"),
            "{r}"
        );
        let r = rendered("  entry: main\n  templates:\n  - {name: main, templateType: Serail, children: [main]}\n");
        assert!(r.contains("did you mean `Serial`"), "{r}");
        let r = rendered(&format!("  entry: main\n  templates:\n  - {{name: main, templateType: ProcessChaos, {PAUSE}}}\n"));
        assert!(
            r.contains("spec.templates[0].deadline: is required (or processChaos.duration)"),
            "{r}"
        );
        let r = rendered("  entry: t\n  templates:\n  - name: t\n    templateType: Task\n    task: {command: [true]}\n    conditionalBranches:\n    - {target: t2, expression: 'exitCode == 0 and stdout == \"x\"'}\n  - {name: t2, templateType: Suspend, deadline: 1s}\n");
        assert!(
            r.contains("wf.yaml:11:") && r.contains("`&&` in CEL"),
            "{r}"
        );
        let r = rendered("  entry: t\n  templates:\n  - name: t\n    templateType: Task\n    task: {command: [true]}\n    conditionalBranches:\n    - {target: t, expression: 'exitCod == 0'}\n");
        assert!(r.contains("uses `exitCod`"), "{r}");
        let r = rendered("  entry: main\n  templates:\n  - {name: main, templateType: Suspend, deadline: 1s, children: [x]}\n");
        assert!(
            r.contains("children: applies to templateType Serial or Parallel only"),
            "{r}"
        );
        let r = rendered("  entry: main\n  templates:\n  - {name: main, templateType: Suspend, deadline: 1s, accessMode: x}\n");
        assert!(r.contains("unknown field `accessMode`"), "{r}");
    }

    #[test]
    fn cel_branches() {
        assert_eq!(eval_expression("exitCode == 0", 0, ""), Ok(true));
        assert_eq!(
            eval_expression(
                "exitCode != 0 || stdout.contains(\"degraded\")",
                0,
                "all degraded"
            ),
            Ok(true)
        );
        assert_eq!(
            eval_expression("stdout.matches(\"^ok[0-9]+$\")", 0, "ok42"),
            Ok(true)
        );
        assert!(
            eval_expression("stdout", 0, "x").is_err(),
            "a non-boolean is an error"
        );
        let b = vec![
            Branch {
                target: "a".into(),
                expression: "exitCode == 0".into(),
            },
            Branch {
                target: "b".into(),
                expression: "exitCode > 0".into(),
            },
            Branch {
                target: "c".into(),
                expression: "true".into(),
            },
        ];
        assert_eq!(
            choose_branches(&b, 2, ""),
            Ok(vec!["b".to_string(), "c".to_string()])
        );
    }

    fn spec(body: &str) -> WorkflowSpec {
        wf(body).expect("valid").spec
    }

    fn started(actions: &[Action]) -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| {
                if let Action::Start(i) = a {
                    Some(*i)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn serial_runs_in_order_and_parallel_together() {
        let s = spec(&format!("  entry: main\n  templates:\n  - {{name: main, templateType: Serial, children: [a, par]}}\n  - {{name: a, templateType: ProcessChaos, deadline: 2s, {PAUSE}}}\n  - {{name: b, templateType: ProcessChaos, deadline: 2s, {PAUSE}}}\n  - {{name: par, templateType: Parallel, children: [a, b]}}\n"));
        let mut t = Tree::new(&s);
        let a = t.advance(&s, 0);
        assert_eq!(
            started(&a).len(),
            1,
            "only the first step of a serial: {a:?}"
        );
        let first = started(&a)[0];
        assert_eq!(t.nodes[first].path, "main/a");
        assert!(t.advance(&s, 100).is_empty());
        t.work_finished(&s, first, WorkOutcome::Succeeded, 2000);
        let a = t.advance(&s, 2000);
        let kids = started(&a);
        assert_eq!(
            kids.len(),
            2,
            "both children of the parallel at once: {a:?}"
        );
        t.work_finished(&s, kids[0], WorkOutcome::Succeeded, 4000);
        assert!(!t
            .advance(&s, 4000)
            .iter()
            .any(|a| matches!(a, Action::Finished(_))));
        t.work_finished(&s, kids[1], WorkOutcome::Succeeded, 4010);
        assert_eq!(
            t.advance(&s, 4010),
            vec![Action::Finished(NodePhase::Succeeded)]
        );
    }

    #[test]
    fn deadline_stops_a_leaf_and_counts_as_done() {
        let s = spec("  entry: main\n  templates:\n  - {name: main, templateType: Serial, children: [t, w]}\n  - {name: t, templateType: Task, deadline: 1s, task: {command: [sleep, '9']}}\n  - {name: w, templateType: Suspend, deadline: 1s}\n");
        let mut t = Tree::new(&s);
        let task = started(&t.advance(&s, 0))[0];
        assert_eq!(t.advance(&s, 999), vec![]);
        assert_eq!(
            t.advance(&s, 1000),
            vec![Action::Stop(task, StopCause::Deadline)]
        );
        t.work_finished(
            &s,
            task,
            WorkOutcome::TaskExited {
                exit_code: -1,
                stdout: String::new(),
            },
            1010,
        );
        let a = t.advance(&s, 1010);
        assert_eq!(t.nodes[task].phase, NodePhase::Failed);
        assert_eq!(
            a,
            vec![Action::Finished(NodePhase::Failed)],
            "a killed task fails the serial; the suspend is skipped"
        );
        assert_eq!(
            t.nodes.iter().find(|n| n.template == "w").map(|n| n.phase),
            Some(NodePhase::Skipped)
        );
    }

    #[test]
    fn task_branch_by_exit_code() {
        let s = spec("  entry: t\n  templates:\n  - name: t\n    templateType: Task\n    task: {command: ['false']}\n    conditionalBranches:\n    - {target: ok, expression: 'exitCode == 0'}\n    - {target: bad, expression: 'exitCode == 1'}\n  - {name: ok, templateType: Suspend, deadline: 1s}\n  - {name: bad, templateType: Suspend, deadline: 2s}\n");
        let mut t = Tree::new(&s);
        let task = started(&t.advance(&s, 0))[0];
        t.work_finished(
            &s,
            task,
            WorkOutcome::TaskExited {
                exit_code: 1,
                stdout: String::new(),
            },
            10,
        );
        t.advance(&s, 10);
        let paths: Vec<&str> = t.nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(paths, vec!["t", "t/bad"]);
        assert_eq!(
            t.advance(&s, 2010),
            vec![Action::Finished(NodePhase::Succeeded)]
        );
    }

    #[test]
    fn failed_status_check_aborts_everything() {
        let s = spec(&format!("  entry: main\n  templates:\n  - {{name: main, templateType: Parallel, children: [a, c, later]}}\n  - {{name: a, templateType: ProcessChaos, deadline: 60s, {PAUSE}}}\n  - {{name: later, templateType: Serial, children: [w, a]}}\n  - {{name: w, templateType: Suspend, deadline: 30s}}\n  - name: c\n    templateType: StatusCheck\n    abortWithStatusCheck: true\n    statusCheck: {{mode: Continuous, intervalSeconds: 1, http: {{url: 'http://127.0.0.1:9/', criteria: {{statusCode: '200'}}}}}}\n"));
        let mut t = Tree::new(&s);
        let a = t.advance(&s, 0);
        let st = started(&a);
        assert_eq!(st.len(), 2, "fault and check: {a:?}");
        let check = *st
            .iter()
            .find(|&&i| t.nodes[i].template == "c")
            .expect("check started");
        let fault = *st
            .iter()
            .find(|&&i| t.nodes[i].template == "a")
            .expect("fault started");
        t.work_finished(&s, check, WorkOutcome::Failed("3 failures".into()), 3000);
        let a = t.advance(&s, 3000);
        assert_eq!(a, vec![Action::Stop(fault, StopCause::Abort)]);
        t.work_finished(&s, fault, WorkOutcome::Succeeded, 3050);
        let a = t.advance(&s, 3050);
        assert_eq!(a, vec![Action::Finished(NodePhase::Aborted)]);
        assert_eq!(t.nodes[check].phase, NodePhase::Failed);
        assert_eq!(t.nodes[fault].phase, NodePhase::Aborted);
        assert!(t
            .nodes
            .iter()
            .filter(|n| n.template == "w")
            .all(|n| n.phase == NodePhase::Aborted || n.phase == NodePhase::Skipped));
        assert!(t
            .abort_reason()
            .is_some_and(|r| r.contains("status check `main/c` failed")));
    }

    #[test]
    fn a_parent_deadline_bounds_its_children() {
        let s = spec("  entry: main\n  templates:\n  - {name: main, templateType: Serial, deadline: 1s, children: [par, never]}\n  - {name: par, templateType: Parallel, children: [t, w]}\n  - {name: t, templateType: Task, task: {command: [sleep, '9']}}\n  - {name: w, templateType: Suspend, deadline: 10s}\n  - {name: never, templateType: Suspend, deadline: 1s}\n");
        let mut t = Tree::new(&s);
        let task = started(&t.advance(&s, 0))[0];
        let w = t
            .nodes
            .iter()
            .position(|n| n.path == "main/par/w")
            .expect("w");
        assert_eq!(
            t.nodes[task].deadline_ms,
            Some(1000),
            "the task's default 10 min is cut to the serial's 1 s"
        );
        assert_eq!(t.nodes[w].deadline_ms, Some(1000));
        assert_eq!(
            t.advance(&s, 1000),
            vec![Action::Stop(task, StopCause::Deadline)]
        );
        t.work_finished(
            &s,
            task,
            WorkOutcome::TaskExited {
                exit_code: -1,
                stdout: String::new(),
            },
            1020,
        );
        let a = t.advance(&s, 1020);
        assert_eq!(
            a,
            vec![Action::Finished(NodePhase::Failed)],
            "the killed task failed"
        );
        let never = t
            .nodes
            .iter()
            .find(|n| n.path == "main/never")
            .expect("never");
        assert_eq!(never.phase, NodePhase::Skipped);
        assert!(
            t.nodes.iter().all(|n| n.phase.is_done()),
            "every node ended: {:?}",
            t.nodes
        );
    }

    #[test]
    fn document_kind_chooses_the_parser() {
        assert_eq!(
            document_kind("kind: Workflow\n").as_deref(),
            Some("Workflow")
        );
        assert_eq!(document_kind("kind: [x]\n"), None);
        assert_eq!(document_kind(": : :"), None);
    }

    #[test]
    fn embedded_keys() {
        assert_eq!(embedded_key("ProcessChaos"), "processChaos");
        assert_eq!(embedded_key("IOChaos"), "ioChaos");
        assert_eq!(embedded_key("Workflow"), "workflow");
    }
}
