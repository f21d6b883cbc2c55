//! `havoc convert FILE`: Chaos Mesh manifests (`chaos-mesh.org/v1alpha1` PodChaos, NetworkChaos,
//! StressChaos) to `havoc.dev/v1alpha1`, on stdout. Fields Havoc does not support are errors.

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// A Chaos Mesh manifest (one document or a `---` stream); `-` reads stdin.
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let (name, text) = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("cannot read stdin")?;
        ("<stdin>".to_string(), s)
    } else {
        let s = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        (args.file.display().to_string(), s)
    };
    match havoc_k8s::convert::convert(&text) {
        Ok(out) => {
            print!("{out}");
            Ok(0)
        }
        Err(errs) => {
            eprintln!("{}", errs.render(&name));
            Ok(super::EXIT_INVALID)
        }
    }
}
