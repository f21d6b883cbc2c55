//! `havoc validate FILE...`: exit 0 if every file is valid, else print each problem and exit 2.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Experiment or single-fault manifest files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut code = 0;
    for f in &args.files {
        match super::load_experiment(f)? {
            Ok(e) => println!(
                "{}: ok ({} {}, {} fault(s))",
                f.display(),
                e.kind,
                e.metadata.name,
                e.spec.faults.len()
            ),
            Err(c) => code = c,
        }
    }
    Ok(code)
}
