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
            Err(errs) => match kubernetes_program(&text) {
                // The same apiVersion and kind name the operator's Workflow and Schedule objects
                // (pod selectors, podChaos...): valid as one of those, it is valid.
                Some(Ok(what)) => {
                    println!("{name}: ok (Kubernetes {what})");
                    true
                }
                Some(Err(k8s)) => {
                    eprintln!("{}", errs.render(&name));
                    eprintln!("{name}: as a Kubernetes object it is not valid either: {k8s}");
                    false
                }
                None => {
                    eprintln!("{}", errs.render(&name));
                    false
                }
            },
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

/// A `havoc.dev` Workflow or Schedule read as the operator reads it: `None` when the text is
/// not one of those objects at all, else what it is or the operator's first objection.
fn kubernetes_program(text: &str) -> Option<Result<String, String>> {
    use havoc_k8s::schedule_crd::Schedule;
    use havoc_k8s::workflow_crd::Workflow;
    use havoc_spec::FieldPath;
    let sp = FieldPath::root().key("spec");
    let first =
        |e: havoc_k8s::workflow_crd::InvalidWorkflow| e.0.into_iter().next().unwrap_or_default();
    // The bounded parser (aliases, depth and size budgets), then the objects' serde types.
    let json = || -> Result<serde_json::Value, String> {
        let docs = havoc_spec::yaml::parse_documents(text).map_err(|e| e.to_string())?;
        match docs.as_slice() {
            [doc] => Ok(havoc_k8s::program_convert::node_to_json(doc)),
            _ => Err("expected exactly one document".to_string()),
        }
    };
    match havoc_spec::workflow::document_kind(text).as_deref() {
        Some("Workflow") => Some(
            match json()
                .and_then(|j| serde_json::from_value::<Workflow>(j).map_err(|e| e.to_string()))
            {
                Ok(w) => w
                    .spec
                    .to_spec(&sp)
                    .map(|_| format!("Workflow {}", w.metadata.name.unwrap_or_default()))
                    .map_err(first),
                Err(e) => Err(e),
            },
        ),
        Some("Schedule") => Some(
            match json()
                .and_then(|j| serde_json::from_value::<Schedule>(j).map_err(|e| e.to_string()))
            {
                Ok(s) => s
                    .spec
                    .plan(&sp)
                    .map(|_| format!("Schedule {}", s.metadata.name.unwrap_or_default()))
                    .map_err(first),
                Err(e) => Err(e),
            },
        ),
        _ => None,
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
