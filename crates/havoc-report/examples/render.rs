//! Renders a run report as HTML: `cargo run -p havoc-report --example render -- report.json [report.html]`.
//!
//! Schema violations are printed to stderr; the page is written anyway (the renderer tolerates
//! them), and the exit code is 2 when there were any.

use std::path::PathBuf;

use anyhow::{bail, Context};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(input) = args.next().map(PathBuf::from) else {
        bail!("usage: render REPORT.json [OUT.html] (default: REPORT.html beside it)");
    };
    let output = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| input.with_extension("html"));
    let text = std::fs::read_to_string(&input)
        .with_context(|| format!("failed to read {}", input.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", input.display()))?;
    let invalid = match havoc_report::validate(&report) {
        Ok(()) => false,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", input.display());
            }
            true
        }
    };
    std::fs::write(&output, havoc_report::render_html(&report))
        .with_context(|| format!("failed to write {}", output.display()))?;
    eprintln!("wrote {}", output.display());
    if invalid {
        std::process::exit(2);
    }
    Ok(())
}
