//! Schedule: run a fault or a workflow on a cron schedule, with Chaos Mesh's fields.
//!
//! ```yaml
//! kind: Schedule
//! spec:
//!   schedule: "@every 5s"          # or "*/30 * * * * *" (seconds optional), "@hourly", ...
//!   concurrencyPolicy: Forbid      # Forbid (default) | Allow
//!   historyLimit: 3                # finished runs kept (default 1)
//!   startingDeadlineSeconds: 60    # a start later than this after its time is skipped
//!   type: ProcessChaos             # any Havoc fault kind, or Workflow
//!   processChaos: { ... }          # the embedded spec, keyed by the kind in lowerCamelCase
//! ```
//!
//! Times are UTC (no daylight-saving jumps). The pure decision [`due`] says which start time is
//! due given the last one, now and `startingDeadlineSeconds`: after an outage it is at most ONE
//! catch-up run (the latest missed time), with the number of missed times counted (capped) for an
//! event; a schedule never stops for having missed too many (Chaos Mesh's and Kubernetes'
//! "too many missed start times (> 100)").

use std::str::FromStr as _;
use std::time::Duration;

use chrono::TimeDelta;
pub use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::error::{Problems, SpecError, SpecErrors};
use crate::experiment::FaultEntry;
use crate::path::FieldPath;
use crate::units::clip;
use crate::workflow::{self, WorkflowSpec};
use crate::yaml::Node;

/// The shortest `@every` interval.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
/// The most finished runs a schedule keeps.
pub const MAX_HISTORY_LIMIT: u32 = 1000;
/// How many missed start times [`due`] counts before saying "more than".
pub const MISSED_COUNT_CAP: u32 = 100;

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum CronSchedule {
    /// `@every 5s`: a fixed interval from the previous start.
    Every(Duration),
    /// A cron pattern (5 or 6 fields, seconds first when 6) or a nickname (`@hourly`...), in UTC.
    Cron(Box<Cron>),
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CronSchedule::Every(a), CronSchedule::Every(b)) => a == b,
            (CronSchedule::Cron(a), CronSchedule::Cron(b)) => {
                a.pattern.to_string() == b.pattern.to_string()
            }
            _ => false,
        }
    }
}

impl CronSchedule {
    /// Parses `@every DURATION`, a nickname, or a cron pattern with optional seconds.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(rest) = t.strip_prefix("@every") {
            let d = humantime::parse_duration(rest.trim()).map_err(|e| {
                format!(
                    "`{}`: `@every` takes a duration like `5s` or `1m30s` ({e})",
                    clip(s)
                )
            })?;
            if d < MIN_EVERY {
                return Err(format!("`{}`: `@every` must be at least 1s", clip(s)));
            }
            if d > crate::units::MAX_DURATION {
                return Err(format!("`{}`: `@every` must be at most 365 days", clip(s)));
            }
            return Ok(CronSchedule::Every(d));
        }
        if t.len() > 256 {
            return Err("a cron pattern is at most 256 characters".into());
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(t).map_err(|e| {
            format!(
                "`{}` is not a cron schedule ({e}): expected 5 fields (minute hour day month weekday), 6 with seconds first, `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`, or `@every 5s`",
                clip(s)
            )
        })?;
        // A pattern that never fires (`0 0 30 2 *`) would make a schedule that silently never runs.
        let probe = DateTime::<Utc>::from_str("2000-01-01T00:00:00Z").expect("a fixed date");
        if cron.find_next_occurrence(&probe, false).is_err() {
            return Err(format!("`{}` never fires", clip(s)));
        }
        Ok(CronSchedule::Cron(Box::new(cron)))
    }

    /// The first start time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            CronSchedule::Every(d) => t.checked_add_signed(TimeDelta::from_std(*d).ok()?),
            CronSchedule::Cron(c) => c.find_next_occurrence(&t, false).ok(),
        }
    }

    /// The first start time strictly after `now`, counting `@every` from `last`.
    pub fn next_from(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            CronSchedule::Every(d) if now >= last => {
                let step = TimeDelta::from_std(*d).ok()?;
                let n = (now - last).num_milliseconds() / step.num_milliseconds().max(1);
                last.checked_add_signed(step * i32::try_from(n + 1).ok()?)
            }
            _ => self.next_after(now.max(last)),
        }
    }

    /// The latest start time in `(since, now]`, if any, with how many fell in that window
    /// (counted up to [`MISSED_COUNT_CAP`] + 1).
    pub fn latest_in(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, u32)> {
        if now <= since {
            return None;
        }
        match self {
            CronSchedule::Every(d) => {
                let step = TimeDelta::from_std(*d).ok()?;
                let gap = now - since;
                let n = gap.num_milliseconds() / step.num_milliseconds().max(1);
                if n < 1 {
                    return None;
                }
                let latest = since + step * i32::try_from(n).ok()?;
                Some((latest, n.min(i64::from(MISSED_COUNT_CAP) + 1) as u32))
            }
            CronSchedule::Cron(c) => {
                let latest = c.find_previous_occurrence(&now, true).ok()?;
                if latest <= since {
                    return None;
                }
                let mut count = 0u32;
                let mut t = since;
                while count <= MISSED_COUNT_CAP {
                    match c.find_next_occurrence(&t, false) {
                        Ok(n) if n <= now => {
                            count += 1;
                            t = n;
                        }
                        _ => break,
                    }
                }
                Some((latest, count))
            }
        }
    }
}

/// What [`due`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// Start a run for this scheduled time now.
    pub run: Option<DateTime<Utc>>,
    /// The scheduled time to remember as considered (ran or skipped), so it is never run twice.
    pub mark: Option<DateTime<Utc>>,
    /// Start times missed besides the one run (capped at [`MISSED_COUNT_CAP`]; `> cap` shows as
    /// cap + 1): say it in an event, never stop for it.
    pub missed: u32,
    /// The latest start time was later than `startingDeadlineSeconds`: skipped.
    pub skipped_late: bool,
    /// When to look again.
    pub next: Option<DateTime<Utc>>,
}

/// Which start time is due. `last` is the last scheduled time considered (run or skipped; the
/// schedule's creation time before the first run), `now` the current time.
pub fn due(
    schedule: &CronSchedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    starting_deadline: Option<Duration>,
) -> Due {
    let next = schedule.next_from(last, now);
    match schedule.latest_in(last, now) {
        None => Due {
            run: None,
            mark: None,
            missed: 0,
            skipped_late: false,
            next,
        },
        Some((latest, count)) => {
            let late = match (starting_deadline, (now - latest).to_std()) {
                (Some(dl), Ok(lateness)) => lateness > dl,
                _ => false,
            };
            Due {
                run: (!late).then_some(latest),
                mark: Some(latest),
                missed: count.saturating_sub(u32::from(!late)),
                skipped_late: late,
                next,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ConcurrencyPolicy {
    #[default]
    Forbid,
    Allow,
}

/// Whether a due run may start, given how many runs of the schedule are still running.
pub fn admit(policy: ConcurrencyPolicy, running: usize) -> bool {
    policy == ConcurrencyPolicy::Allow || running == 0
}

/// What a schedule runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleTarget {
    Fault(Box<FaultEntry>),
    Workflow(Box<WorkflowSpec>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub schedule: CronSchedule,
    /// The pattern as written.
    pub schedule_text: String,
    pub concurrency_policy: ConcurrencyPolicy,
    pub history_limit: u32,
    pub starting_deadline: Option<Duration>,
    pub target: ScheduleTarget,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub api_version: String,
    pub metadata: crate::experiment::Metadata,
    pub spec: ScheduleSpec,
}

const SCHEDULE_KEYS: &[&str] = &[
    "schedule",
    "concurrencyPolicy",
    "historyLimit",
    "startingDeadlineSeconds",
    "type",
];

/// Loads a schedule spec (a document's `spec`, or a workflow template's `schedule`).
/// `allow_workflow` is false inside a workflow (a schedule there runs a fault, which keeps the
/// expansion of a workflow finite).
pub fn load_schedule_spec(
    node: &Node,
    path: &FieldPath,
    allow_workflow: bool,
    errors: &mut Vec<SpecError>,
) -> Option<ScheduleSpec> {
    let start = errors.len();
    let mut ok = true;
    let mut p = Problems::new();
    let kind = workflow::str_key(node, "type", path, errors);
    let embedded_key = kind.as_deref().map(workflow::embedded_key);
    let mut allowed: Vec<&str> = SCHEDULE_KEYS.to_vec();
    if let Some(k) = embedded_key.as_deref() {
        allowed.push(k);
    }
    workflow::check_keys(node, path, &allowed, &[], errors);
    let schedule_text = workflow::str_key(node, "schedule", path, errors);
    let schedule = match &schedule_text {
        None => {
            if node.get("schedule").is_none() {
                p.add(
                    &path.key("schedule"),
                    "is required: a cron pattern like `*/5 * * * *`, `@hourly` or `@every 30s`",
                );
            }
            ok = false;
            None
        }
        Some(s) => match CronSchedule::parse(s) {
            Ok(c) => Some(c),
            Err(e) => {
                p.add(&path.key("schedule"), e);
                None
            }
        },
    };
    let concurrency_policy = node
        .get("concurrencyPolicy")
        .and_then(|n| {
            crate::de::from_node(n, &path.key("concurrencyPolicy"))
                .map_err(|e| errors.push(e))
                .ok()
        })
        .unwrap_or_default();
    let history_limit: u32 = node
        .get("historyLimit")
        .and_then(|n| {
            crate::de::from_node(n, &path.key("historyLimit"))
                .map_err(|e| errors.push(e))
                .ok()
        })
        .unwrap_or(1);
    if history_limit == 0 || history_limit > MAX_HISTORY_LIMIT {
        p.add(
            &path.key("historyLimit"),
            format!("must be 1..={MAX_HISTORY_LIMIT}, got {history_limit}"),
        );
    }
    let starting_deadline: Option<u64> = node.get("startingDeadlineSeconds").and_then(|n| {
        crate::de::from_node(n, &path.key("startingDeadlineSeconds"))
            .map_err(|e| errors.push(e))
            .ok()
    });
    if let Some(s) = starting_deadline {
        if s > crate::units::MAX_DURATION.as_secs() {
            p.add(
                &path.key("startingDeadlineSeconds"),
                "must be at most 365 days",
            );
        }
    }
    let target = match kind.as_deref() {
        None => {
            if node.get("type").is_none() {
                p.add(
                    &path.key("type"),
                    format!(
                        "is required: a fault kind ({}) or Workflow",
                        crate::experiment::FAULT_KINDS.join(", ")
                    ),
                );
            }
            None
        }
        Some(k) => {
            let key = embedded_key.clone().unwrap_or_default();
            let tp = path.key(&key);
            match node.get(&key) {
                None => {
                    p.add(&tp, format!("is required for type {k}: the {k} spec"));
                    None
                }
                Some(inner) if k == "Workflow" => {
                    if !allow_workflow {
                        p.add(
                            &path.key("type"),
                            "a schedule inside a workflow runs a fault, not a Workflow",
                        );
                        None
                    } else {
                        workflow::load_workflow_spec(inner, &tp, errors)
                            .map(|w| ScheduleTarget::Workflow(Box::new(w)))
                    }
                }
                Some(inner) if crate::experiment::FAULT_KINDS.contains(&k) => {
                    workflow::load_chaos(inner, &tp, &path.key("type"), k, "scheduled", errors)
                        .map(|f| ScheduleTarget::Fault(Box::new(f)))
                }
                Some(_) => {
                    p.add(
                        &path.key("type"),
                        format!(
                            "unknown type `{}`: expected Workflow or a fault kind ({})",
                            clip(k),
                            crate::experiment::FAULT_KINDS.join(", ")
                        ),
                    );
                    None
                }
            }
        }
    };
    for (fp, message) in p.into_vec() {
        errors.push(SpecError {
            pos: workflow::pos_under(node, path, &fp),
            path: fp,
            message,
        });
    }
    ok &= errors.len() == start;
    match (schedule, schedule_text, target) {
        (Some(schedule), Some(schedule_text), Some(target)) if ok => Some(ScheduleSpec {
            schedule,
            schedule_text,
            concurrency_policy,
            history_limit,
            starting_deadline: starting_deadline.map(Duration::from_secs),
            target,
        }),
        _ => None,
    }
}

/// Parses and validates a `kind: Schedule` document.
pub fn parse_schedule(src: &str) -> Result<Schedule, SpecErrors> {
    let (root, api_version, metadata) = workflow::document(src, "Schedule")?;
    let mut errors = Vec::new();
    let spec = load_schedule_spec(
        root.get("spec").expect("document() checked spec"),
        &FieldPath::root().key("spec"),
        true,
        &mut errors,
    );
    workflow::finish_doc(
        errors,
        spec.map(|spec| Schedule {
            api_version,
            metadata,
            spec,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::<Utc>::from_str(s).expect("a test time")
    }

    #[test]
    fn every_runs_once_per_interval() {
        let s = CronSchedule::parse("@every 5s").expect("parses");
        let created = t("2026-01-01T00:00:00Z");
        let d = due(&s, created, t("2026-01-01T00:00:04Z"), None);
        assert_eq!(d.run, None);
        assert_eq!(d.next, Some(t("2026-01-01T00:00:05Z")));
        let d = due(&s, created, t("2026-01-01T00:00:05.200Z"), None);
        assert_eq!(d.run, Some(t("2026-01-01T00:00:05Z")));
        assert_eq!(d.missed, 0);
        // Asking again with the mark remembered: nothing is due twice.
        let d2 = due(
            &s,
            d.mark.expect("mark"),
            t("2026-01-01T00:00:05.900Z"),
            None,
        );
        assert_eq!(d2.run, None);
    }

    #[test]
    fn outage_gives_one_catch_up_run_never_a_stop() {
        let s = CronSchedule::parse("* * * * * *").expect("every second");
        let last = t("2026-01-01T00:00:00Z");
        // Three hours down: 10,800 missed seconds.
        let d = due(&s, last, t("2026-01-01T03:00:00.5Z"), None);
        assert_eq!(d.run, Some(t("2026-01-01T03:00:00Z")));
        assert_eq!(
            d.missed, MISSED_COUNT_CAP,
            "counted up to the cap, then 'more than'"
        );
        let d2 = due(&s, d.mark.expect("mark"), t("2026-01-01T03:00:00.9Z"), None);
        assert_eq!(d2.run, None);
        assert_eq!(d2.next, Some(t("2026-01-01T03:00:01Z")));
    }

    #[test]
    fn starting_deadline_skips_a_late_start_and_marks_it() {
        let s = CronSchedule::parse("@hourly").expect("hourly");
        let last = t("2026-01-01T00:00:00Z");
        let d = due(
            &s,
            last,
            t("2026-01-01T01:02:00Z"),
            Some(Duration::from_secs(60)),
        );
        assert_eq!(d.run, None);
        assert!(d.skipped_late);
        assert_eq!(d.mark, Some(t("2026-01-01T01:00:00Z")));
        assert_eq!(d.next, Some(t("2026-01-01T02:00:00Z")));
        let d = due(
            &s,
            last,
            t("2026-01-01T01:00:30Z"),
            Some(Duration::from_secs(60)),
        );
        assert_eq!(d.run, Some(t("2026-01-01T01:00:00Z")));
    }

    #[test]
    fn cron_edge_cases() {
        // Five fields: minutes; six: seconds first.
        let s = CronSchedule::parse("*/15 * * * *").expect("5 fields");
        assert_eq!(
            s.next_after(t("2026-01-01T00:14:59Z")),
            Some(t("2026-01-01T00:15:00Z"))
        );
        let s = CronSchedule::parse("30 * * * * *").expect("6 fields");
        assert_eq!(
            s.next_after(t("2026-01-01T00:00:31Z")),
            Some(t("2026-01-01T00:01:30Z"))
        );
        // Leap day, end of month, year end in UTC.
        let s = CronSchedule::parse("0 0 29 2 *").expect("leap day");
        assert_eq!(
            s.next_after(t("2026-03-01T00:00:00Z")),
            Some(t("2028-02-29T00:00:00Z"))
        );
        let s = CronSchedule::parse("@yearly").expect("yearly");
        assert_eq!(
            s.next_after(t("2026-12-31T23:59:59Z")),
            Some(t("2027-01-01T00:00:00Z"))
        );
        // DST-free: 02:30 exists every day in UTC (it does not in Europe on the last Sunday of March).
        let s = CronSchedule::parse("30 2 * * *").expect("daily");
        assert_eq!(
            s.next_after(t("2026-03-29T00:00:00Z")),
            Some(t("2026-03-29T02:30:00Z"))
        );
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "@every",
            "@every 0s",
            "@every 10ms",
            "@sometimes",
            "0 0 30 2 *",
            "* * * * * * 2026",
        ] {
            assert!(CronSchedule::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn schedule_documents() {
        let head =
            "apiVersion: chaos-mesh.org/v1alpha1\nkind: Schedule\nmetadata: {name: s}\nspec:\n";
        let s = parse_schedule(&format!("{head}  schedule: '@every 5s'\n  type: ProcessChaos\n  processChaos: {{action: pause, selector: {{pids: [1]}}, duration: 1s}}\n")).expect("valid");
        assert_eq!(s.spec.concurrency_policy, ConcurrencyPolicy::Forbid);
        assert_eq!(s.spec.history_limit, 1);
        let s = parse_schedule(&format!("{head}  schedule: '0 * * * *'\n  concurrencyPolicy: Allow\n  type: Workflow\n  workflow: {{entry: w, templates: [{{name: w, templateType: Suspend, deadline: 1s}}]}}\n")).expect("valid");
        assert!(matches!(s.spec.target, ScheduleTarget::Workflow(_)));
        for (body, want) in [
            ("  schedule: '@every 5s'\n  type: PodChaos\n  podChaos: {}\n", "s.yaml:6:9: spec.type: unknown type `PodChaos`"),
            ("  schedule: '@every 5s'\n  type: ProcessChaos\n", "spec.processChaos: is required for type ProcessChaos"),
            ("  schedule: '@every 5s'\n  historyLimit: 0\n  type: ProcessChaos\n  processChaos: {action: pause, selector: {pids: [1]}, duration: 1s}\n", "s.yaml:6:17: spec.historyLimit: must be 1..=1000, got 0"),
            ("  schedule: '@every 5s'\n  concurrencyPolicy: Replace\n  type: ProcessChaos\n  processChaos: {action: pause, selector: {pids: [1]}, duration: 1s}\n", "spec.concurrencyPolicy: unknown value `Replace`"),
            ("  schedule: '@every 5s'\n  suspend: true\n  type: ProcessChaos\n  processChaos: {action: pause, selector: {pids: [1]}, duration: 1s}\n", "unknown field `suspend`"),
        ] {
            let e = parse_schedule(&format!("{head}{body}")).expect_err(body).render("s.yaml");
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn forbid_admits_only_when_idle() {
        assert!(admit(ConcurrencyPolicy::Forbid, 0));
        assert!(!admit(ConcurrencyPolicy::Forbid, 1));
        assert!(admit(ConcurrencyPolicy::Allow, 3));
    }
}
