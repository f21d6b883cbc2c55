//! `havoc validate FILE...`: exit 0 if every file is valid, else print each problem and exit 2.
//! Host-mode experiments and single-fault manifests, and Kubernetes-mode chaos objects
//! (`havoc.dev/v1alpha1` or Chaos Mesh `chaos-mesh.org/v1alpha1` PodChaos, NetworkChaos,
//! StressChaos with a pod selector) are all accepted. Every file is checked, even after an
//! invalid one; a file that is not UTF-8 or larger than 4 MiB is reported at FILE:LINE:COL too.

use std::path::{Path, PathBuf};

use havoc_spec::source::SourceError;

#[derive(clap::Args)]
pub struct Args {
    /// Experiment, single-fault manifest or Kubernetes chaos object files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    // Every file is checked and reported, whatever came before it; the exit code is 2 if any
    // file is invalid or unreadable.
    let mut code = 0;
    for f in &args.files {
        if !check(f) {
            code = super::EXIT_INVALID;
        }
    }
    Ok(code)
}

/// Checks one file, printing `FILE: ok (...)` or its problems as `FILE:LINE:COL: ...`; true if
/// it is valid.
fn check(f: &Path) -> bool {
    let name = f.display().to_string();
    let text = match havoc_spec::source::read_file(f) {
        Ok(t) => t,
        Err(SourceError::Invalid(errs)) => {
            eprintln!("{}", errs.render(&name));
            return false;
        }
        Err(e @ SourceError::Io { .. }) => {
            eprintln!("havoc: {:#}", anyhow::Error::new(e));
            return false;
        }
    };
    if havoc_k8s::convert::is_kubernetes_manifest(&text) {
        return match havoc_k8s::convert::validate_manifest(&text) {
            Ok(m) => {
                println!("{name}: ok (Kubernetes {})", describe(&m));
                true
            }
            Err(errs) => {
                eprintln!("{}", errs.render(&name));
                false
            }
        };
    }
    // Host Workflow, Schedule and StatusCheck documents: the same parsers as `havoc run` and
    // `havoc schedule`.
    let other = match havoc_spec::workflow::document_kind(&text).as_deref() {
        Some("Workflow") => Some(
            havoc_spec::workflow::parse_workflow(&text)
                .map(|w| format!("Workflow {}", w.metadata.name)),
        ),
        Some("Schedule") => Some(
            havoc_spec::schedule::parse_schedule(&text)
                .map(|s| format!("Schedule {}", s.metadata.name)),
        ),
        Some("StatusCheck") => Some(
            havoc_spec::statuscheck::parse_status_check(&text)
                .map(|c| format!("StatusCheck {}", c.metadata.name)),
        ),
        _ => None,
    };
    if let Some(result) = other {
        return match result {
            Ok(what) => {
                println!("{name}: ok ({what})");
                true
            }
            Err(errs) => {
                eprintln!("{}", errs.render(&name));
                false
            }
        };
    }
    match havoc_spec::parse_experiment(&text) {
        Ok(e) => {
            println!(
                "{name}: ok ({} {}, {} fault(s))",
                e.kind,
                e.metadata.name,
                e.spec.faults.len()
            );
            true
        }
        Err(errs) => {
            eprintln!("{}", errs.render(&name));
            false
        }
    }
}

/// `PodChaos default/web-kill (pod-kill)`.
fn describe(m: &havoc_k8s::convert::Manifest) -> String {
    use havoc_k8s::convert::Manifest;
    use havoc_k8s::ChaosObject;
    fn one<K: ChaosObject>(kind: &str, o: &K) -> String {
        let meta = o.meta();
        format!(
            "{kind} {}/{} ({})",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or(""),
            o.action_name()
        )
    }
    match m {
        Manifest::PodChaos(o) => one("PodChaos", o),
        Manifest::NetworkChaos(o) => one("NetworkChaos", o),
        Manifest::StressChaos(o) => one("StressChaos", o),
        Manifest::TimeChaos(o) => one("TimeChaos", o),
        Manifest::SyscallChaos(o) => one("SyscallChaos", o),
        Manifest::IOChaos(o) => one("IOChaos", o),
        Manifest::DNSChaos(o) => one("DNSChaos", o),
        Manifest::HTTPChaos(o) => one("HTTPChaos", o),
    }
}
