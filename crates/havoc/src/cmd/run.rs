//! `havoc run FILE`: validate, resolve, inject, hold, recover, report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use havoc_engine::resolve::Protection;
use havoc_engine::{RunConfig, StopFlag, Verdict};
use havoc_spec::Experiment;

#[derive(clap::Args)]
pub struct Args {
    /// The experiment (or single-fault manifest) to run.
    pub file: PathBuf,
    /// Resolve targets and print what would be done; touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seed for every random choice (overrides spec.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// `text` (default) or `json` (the run report on stdout).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Where report.json and report.html go (default: <state dir>/reports/<run id>).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
}

pub fn run(args: Args, state_dir: &Path, started: Instant) -> anyhow::Result<u8> {
    // A Workflow document runs through the workflow engine (see cmd::schedule).
    if let Ok(text) = havoc_spec::source::read_file(&args.file) {
        if havoc_spec::workflow::document_kind(&text).as_deref() == Some("Workflow") {
            let opts = Options {
                seed: args.seed,
                dry_run: args.dry_run,
                json: args.output == "json",
                report_dir: args.report_dir,
            };
            return super::schedule::run_workflow_file(
                &args.file, &text, &opts, state_dir, started,
            );
        }
    }
    let exp = match super::load_experiment(&args.file)? {
        Ok(e) => e,
        Err(code) => return Ok(code),
    };
    let opts = Options {
        seed: args.seed,
        dry_run: args.dry_run,
        json: args.output == "json",
        report_dir: args.report_dir,
    };
    run_experiment(exp, &opts, state_dir, started)
}

/// How to run an experiment (shared by `run` and `demo`).
#[derive(Default)]
pub struct Options {
    pub seed: Option<u64>,
    pub dry_run: bool,
    pub json: bool,
    pub report_dir: Option<PathBuf>,
}

pub fn run_experiment(
    exp: Experiment,
    opts: &Options,
    state_dir: &Path,
    started: Instant,
) -> anyhow::Result<u8> {
    let (seed, dry_run, json) = (opts.seed, opts.dry_run, opts.json);
    if !dry_run && !super::is_root() {
        anyhow::bail!("havoc run needs root (it signals other users' processes and changes cgroups and network settings): use sudo, or --dry-run to only see the plan");
    }
    if !dry_run {
        // Work a fault can do before its targets are known (an eBPF classifier loaded and
        // verified on a background thread) starts now, beside the stale-journal sweep and the
        // plan, not after them: it is most of a network fault's time to take effect.
        for f in &exp.spec.faults {
            havoc_faults::build(&f.spec).prepare();
        }
        super::recover_stale(state_dir)?;
    }
    let seed = seed.or(exp.spec.seed).unwrap_or_else(rand::random);
    let protect = Protection::for_this_process(&[]);
    let plan = match havoc_engine::plan(&exp, seed, &protect) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "havoc: {} (nothing was injected)",
                havoc_engine::error_chain(&e)
            );
            return Ok(super::EXIT_TARGET);
        }
    };
    if dry_run {
        print!("{}", plan.describe());
        println!("dry run: nothing was injected");
        return Ok(0);
    }
    let stop = StopFlag::new();
    stop.register_signals()
        .context("cannot install signal handlers")?;
    havoc_engine::run::install_panic_hook();
    let cfg = RunConfig {
        state_dir: state_dir.to_path_buf(),
        self_exe: std::env::current_exe().context("cannot find the havoc executable")?,
        command_started: started,
        watchdog: true,
        report_dir: opts.report_dir.clone(),
    };
    let mut obs = crate::progress::Display::new(&plan, &cfg);
    let report = havoc_engine::execute(plan, &cfg, &stop, &mut obs);
    obs.finish();
    // The reports are always written, whatever the verdict.
    let dir = cfg.report_dir_for(&report.run_id);
    match havoc_engine::report::write(&report, &dir) {
        Ok(()) => eprintln!(
            "havoc: report written to {}/report.html and report.json",
            dir.display()
        ),
        Err(e) => eprintln!("havoc: cannot write the report to {}: {e}", dir.display()),
    }
    // The report is the run's record now; its live stream was only a view.
    obs.remove_live();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(match report.verdict {
        Verdict::Completed => 0,
        Verdict::Failed => super::EXIT_FAILED,
        Verdict::Aborted => super::EXIT_ABORTED,
        Verdict::Deviated => super::EXIT_DEVIATED,
        Verdict::Interrupted => super::EXIT_INTERRUPTED,
    })
}
