//! `havoc halt`: from another terminal, stop every running havoc on this host and recover all its
//! faults within a second. Each run gets SIGUSR1 (it recovers and reports verdict `aborted`); a run
//! that has not finished within the deadline has its journal replayed by us.

use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// How long runs get to recover by themselves before their journals are replayed here.
    #[arg(long, default_value = "800ms", value_parser = parse_duration)]
    grace: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<havoc_spec::units::HumanDuration>().map(|d| d.0)
}

pub fn run(args: Args, state_dir: &std::path::Path) -> anyhow::Result<u8> {
    let t0 = Instant::now();
    let live: Vec<_> = havoc_engine::journal::list(state_dir)?
        .into_iter()
        .filter(|f| f.owner_alive())
        .collect();
    if live.is_empty() {
        println!("no havoc run is active");
        super::recover_stale(state_dir)?;
        return Ok(0);
    }
    for f in &live {
        match havoc_sys::process::send_signal(f.data.owner_pid, 10) {
            Ok(()) => eprintln!(
                "havoc: halting run {} (pid {})",
                f.data.run_id, f.data.owner_pid
            ),
            Err(e) => eprintln!("havoc: cannot signal pid {}: {e}", f.data.owner_pid),
        }
    }
    let deadline = t0 + args.grace;
    while Instant::now() < deadline && live.iter().any(|f| f.path.exists() && f.owner_alive()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut ok = true;
    for f in &live {
        if !f.path.exists() {
            continue;
        }
        // Still there: recover it ourselves from the journal (idempotent with the run's own).
        if let Ok(found) = havoc_engine::journal::read(&f.path) {
            let r = havoc_engine::journal::replay_keep(&found);
            for d in &r.done {
                eprintln!("havoc: recovered for run {}: {d}", f.data.run_id);
            }
            for e in &r.failed {
                eprintln!("havoc: could not recover for run {}: {e}", f.data.run_id);
                ok = false;
            }
        }
    }
    println!(
        "halted {} run(s) in {:.0} ms",
        live.len(),
        t0.elapsed().as_secs_f64() * 1000.0
    );
    Ok(if ok { 0 } else { super::EXIT_FAILED })
}
