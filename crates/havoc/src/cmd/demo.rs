//! `havoc demo`: a real experiment on a fresh machine in one command. Havoc starts its own target
//! process, runs a bundled experiment against it (pause it, then stress it), prints the report, and
//! stops the target again.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Print the report as JSON.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

pub const DEMO_EXPERIMENT: &str = include_str!("../../../../examples/demo.yaml");

pub fn run(args: Args, state_dir: &Path, started: Instant) -> anyhow::Result<u8> {
    let exe = std::env::current_exe().context("cannot find the havoc executable")?;
    let mut cmd = Command::new(&exe);
    cmd.arg("__demo-target")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    havoc_sys::process::die_with_parent(&mut cmd, 9);
    let mut target = cmd.spawn().context("cannot start the demo target")?;
    std::thread::sleep(Duration::from_millis(100));
    let text = DEMO_EXPERIMENT.replace("__TARGET_PID__", &target.id().to_string());
    let exp = havoc_spec::parse_experiment(&text).map_err(|e| {
        anyhow::anyhow!(
            "bundled demo experiment is invalid:\n{}",
            e.render("demo.yaml")
        )
    })?;
    eprintln!(
        "havoc demo: target process pid {} started; running experiment `{}`",
        target.id(),
        exp.metadata.name
    );
    let code =
        super::run::run_experiment(exp, None, false, args.output == "json", state_dir, started);
    let _ = target.kill();
    let _ = target.wait();
    code
}

/// The demo's target: a small process that does a little work every 10 ms, like a real worker.
pub fn target_main() -> anyhow::Result<u8> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut x: u64 = 1;
    while Instant::now() < deadline {
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(0)
}
