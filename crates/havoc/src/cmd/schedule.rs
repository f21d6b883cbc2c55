//! `havoc schedule FILE`: run a Schedule in the foreground; and `havoc run` of a Workflow.
//!
//! Both are thin: the decisions are `havoc_spec::schedule` / `havoc_spec::workflow` (shared with
//! the operator), the running is `havoc_engine::workflow`. SIGTERM, SIGINT and SIGHUP stop a
//! schedule cleanly: running runs are stopped and recovered, their reports written.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use havoc_engine::workflow::{run_schedule, run_workflow, ScheduleEvent};
use havoc_engine::{RunConfig, StopFlag};
use havoc_spec::workflow::NodePhase;

#[derive(clap::Args)]
pub struct Args {
    /// The Schedule manifest (`kind: Schedule`).
    pub file: PathBuf,
    /// Where each run's report directory goes (default: <state dir>/reports/<schedule name>).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Validate and print the next start times; run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn read(path: &Path) -> anyhow::Result<Result<String, u8>> {
    match havoc_spec::source::read_file(path) {
        Ok(t) => Ok(Ok(t)),
        Err(havoc_spec::source::SourceError::Invalid(errs)) => {
            eprintln!("{}", errs.render(&path.display().to_string()));
            Ok(Err(super::EXIT_INVALID))
        }
        Err(e) => Err(anyhow::Error::new(e)),
    }
}

fn run_config(
    state_dir: &Path,
    started: Instant,
    report_dir: Option<PathBuf>,
) -> anyhow::Result<RunConfig> {
    Ok(RunConfig {
        state_dir: state_dir.to_path_buf(),
        self_exe: std::env::current_exe().context("cannot find the havoc executable")?,
        command_started: started,
        watchdog: true,
        report_dir,
    })
}

pub fn run(args: Args, state_dir: &Path, started: Instant) -> anyhow::Result<u8> {
    let text = match read(&args.file)? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let sched = match havoc_spec::schedule::parse_schedule(&text) {
        Ok(s) => s,
        Err(errs) => {
            eprintln!("{}", errs.render(&args.file.display().to_string()));
            return Ok(super::EXIT_INVALID);
        }
    };
    if let havoc_spec::schedule::ScheduleTarget::Workflow(w) = &sched.spec.target {
        let problems = havoc_engine::workflow::host_problems(w);
        if !problems.is_empty() {
            for p in problems {
                eprintln!("{}: {p}", args.file.display());
            }
            return Ok(super::EXIT_INVALID);
        }
    }
    if args.dry_run {
        let mut t = chrono_now();
        println!(
            "schedule {} ({}):",
            sched.metadata.name, sched.spec.schedule_text
        );
        for _ in 0..5 {
            match sched.spec.schedule.next_after(t) {
                Some(n) => {
                    println!("  next start {}", n.to_rfc3339());
                    t = n;
                }
                None => break,
            }
        }
        println!("dry run: nothing was run");
        return Ok(0);
    }
    if !super::is_root() {
        anyhow::bail!("havoc schedule needs root (its faults signal other users' processes and change cgroups and network settings)");
    }
    super::recover_stale(state_dir)?;
    let stop = StopFlag::new();
    stop.register_signals()
        .context("cannot install signal handlers")?;
    havoc_engine::run::install_panic_hook();
    let cfg = run_config(state_dir, started, args.report_dir)?;
    eprintln!(
        "havoc: schedule {} ({}, {:?}); stop with SIGTERM or Ctrl-C",
        sched.metadata.name, sched.spec.schedule_text, sched.spec.concurrency_policy
    );
    let runs = run_schedule(
        &sched.spec,
        &sched.metadata.name,
        &cfg,
        &stop,
        &mut |ev| match ev {
            ScheduleEvent::Started {
                scheduled,
                late,
                missed,
                report_dir,
            } => {
                if *missed > 0 {
                    eprintln!(
                    "havoc: {} start time(s) were missed (the schedule was not running): one catch-up run now",
                    if *missed > havoc_spec::schedule::MISSED_COUNT_CAP { format!("more than {}", havoc_spec::schedule::MISSED_COUNT_CAP) } else { missed.to_string() }
                );
                }
                eprintln!(
                    "havoc: run for {} started {} ms after its time; report in {}",
                    scheduled.to_rfc3339(),
                    late.as_millis(),
                    report_dir.display()
                );
            }
            ScheduleEvent::SkippedForbid { scheduled } => {
                eprintln!("havoc: run for {} skipped: the previous run is still running (concurrencyPolicy Forbid)", scheduled.to_rfc3339())
            }
            ScheduleEvent::SkippedLate { scheduled } => {
                eprintln!(
                    "havoc: run for {} skipped: later than startingDeadlineSeconds",
                    scheduled.to_rfc3339()
                )
            }
            ScheduleEvent::Finished(r) => eprintln!(
                "havoc: run finished: {:?}{} ({})",
                r.phase,
                if r.all_recovered {
                    ""
                } else {
                    ", NOT all recovered: run `havoc recover`"
                },
                r.report_dir.display()
            ),
        },
    );
    eprintln!("havoc: schedule stopped; {} recent run(s) kept", runs.len());
    Ok(if runs.iter().all(|r| r.all_recovered) {
        0
    } else {
        super::EXIT_FAILED
    })
}

fn chrono_now() -> havoc_spec::schedule::DateTime<havoc_spec::schedule::Utc> {
    havoc_spec::schedule::Utc::now()
}

/// `havoc run` of a `kind: Workflow` document.
pub fn run_workflow_file(
    file: &Path,
    text: &str,
    opts: &super::run::Options,
    state_dir: &Path,
    started: Instant,
) -> anyhow::Result<u8> {
    let wf = match havoc_spec::workflow::parse_workflow(text) {
        Ok(w) => w,
        Err(errs) => {
            eprintln!("{}", errs.render(&file.display().to_string()));
            return Ok(super::EXIT_INVALID);
        }
    };
    let problems = havoc_engine::workflow::host_problems(&wf.spec);
    if !problems.is_empty() {
        for p in problems {
            eprintln!("{}: {p}", file.display());
        }
        return Ok(super::EXIT_INVALID);
    }
    if opts.dry_run {
        println!("workflow {}: entry {}", wf.metadata.name, wf.spec.entry);
        for t in &wf.spec.templates {
            let deadline = havoc_spec::workflow::node_deadline(t)
                .map(|d| havoc_spec::units::HumanDuration(d).to_string())
                .unwrap_or_else(|| "when its children end".into());
            println!("  {} [{}] deadline {deadline}", t.name, t.kind.type_name());
        }
        println!("dry run: nothing was run");
        return Ok(0);
    }
    if !super::is_root() {
        anyhow::bail!("havoc run needs root (it signals other users' processes and changes cgroups and network settings): use sudo, or --dry-run to only see the plan");
    }
    super::recover_stale(state_dir)?;
    let stop = StopFlag::new();
    stop.register_signals()
        .context("cannot install signal handlers")?;
    havoc_engine::run::install_panic_hook();
    let cfg = run_config(state_dir, started, opts.report_dir.clone())?;
    let report = run_workflow(&wf.spec, &wf.metadata.name, &cfg, &stop);
    let dir = cfg.report_dir_for(&report.run_id);
    match report.write(&dir) {
        Ok(()) => eprintln!("havoc: report written to {}/report.json", dir.display()),
        Err(e) => eprintln!("havoc: cannot write the report to {}: {e}", dir.display()),
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    let signalled = matches!(stop.check(), Some((havoc_engine::Verdict::Interrupted, _)));
    Ok(match report.phase {
        _ if !report.all_recovered => super::EXIT_FAILED,
        NodePhase::Succeeded | NodePhase::DeadlineExceeded => 0,
        NodePhase::Aborted if signalled => super::EXIT_INTERRUPTED,
        NodePhase::Aborted => super::EXIT_ABORTED,
        _ => super::EXIT_FAILED,
    })
}
