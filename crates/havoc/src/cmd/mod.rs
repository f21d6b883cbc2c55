//! One module per subcommand.

pub mod agent;
pub mod certs;
pub mod convert;
pub mod crds;
pub mod dashboard;
pub mod demo;
pub mod halt;
pub mod install;
pub mod operator;
pub mod recover;
pub mod run;
pub mod schedule;
pub mod validate;

use std::path::Path;

use anyhow::Context as _;
use havoc_spec::Experiment;

/// Exit codes shared by the subcommands.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_TARGET: u8 = 3;
pub const EXIT_ABORTED: u8 = 4;
pub const EXIT_DEVIATED: u8 = 5;
pub const EXIT_INTERRUPTED: u8 = 130;

/// Reads and validates an experiment file; on problems prints them as `FILE:LINE:COL: ...` and
/// returns the exit code to use.
pub fn load_experiment(path: &Path) -> Result<Result<Experiment, u8>, anyhow::Error> {
    let text = match havoc_spec::source::read_file(path) {
        Ok(t) => t,
        // Not UTF-8, or too large: positioned like any other problem of the file.
        Err(havoc_spec::source::SourceError::Invalid(errs)) => {
            eprintln!("{}", errs.render(&path.display().to_string()));
            return Ok(Err(EXIT_INVALID));
        }
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    Ok(match havoc_spec::parse_experiment(&text) {
        Ok(e) => Ok(e),
        Err(errs) => {
            eprintln!("{}", errs.render(&path.display().to_string()));
            Err(EXIT_INVALID)
        }
    })
}

/// Replays journals left by havoc processes that died, printing what was undone.
pub fn recover_stale(state_dir: &Path) -> anyhow::Result<bool> {
    let replays = havoc_engine::journal::recover_stale(state_dir)
        .with_context(|| format!("cannot read the journal in {}", state_dir.display()))?;
    // The live streams of runs that died: nothing to undo, only files to remove.
    havoc_dashboard::live::sweep(state_dir);
    let mut ok = true;
    for (run, r) in replays {
        for d in &r.done {
            eprintln!("havoc: recovered from earlier run {run}: {d}");
        }
        for f in &r.failed {
            eprintln!("havoc: could not recover from earlier run {run}: {f}");
            ok = false;
        }
    }
    Ok(ok)
}

pub fn is_root() -> bool {
    rustix_uid() == 0
}

fn rustix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
