//! `havoc convert FILE`: Chaos Mesh manifests (`chaos-mesh.org/v1alpha1` PodChaos, NetworkChaos,
//! StressChaos, TimeChaos, IOChaos, DNSChaos, HTTPChaos, and Schedule and Workflow with the chaos
//! they embed) to `havoc.dev/v1alpha1`, on stdout. Fields Havoc does not support are errors.

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// A Chaos Mesh manifest (one document or a `---` stream); `-` reads stdin.
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    use havoc_spec::source::{self, SourceError};
    let (name, text) = if args.file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(
                std::io::stdin(),
                havoc_spec::yaml::MAX_DOCUMENT_BYTES as u64 + 1,
            ),
            &mut bytes,
        )
        .context("cannot read stdin")?;
        ("<stdin>".to_string(), source::decode(bytes))
    } else {
        let text = match source::read_file(&args.file) {
            Ok(t) => Ok(t),
            Err(SourceError::Invalid(e)) => Err(e),
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        (args.file.display().to_string(), text)
    };
    let text = match text {
        Ok(t) => t,
        Err(errs) => {
            eprintln!("{}", errs.render(&name));
            return Ok(super::EXIT_INVALID);
        }
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
