//! `havoc validate FILE...`: exit 0 if every file is valid, else print each problem and exit 2.
//! Host-mode experiments and single-fault manifests, and Kubernetes-mode chaos objects
//! (`havoc.dev/v1alpha1` or Chaos Mesh `chaos-mesh.org/v1alpha1` PodChaos, NetworkChaos,
//! StressChaos with a pod selector) are all accepted.

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Experiment, single-fault manifest or Kubernetes chaos object files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut code = 0;
    for f in &args.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        if havoc_k8s::convert::is_kubernetes_manifest(&text) {
            match havoc_k8s::convert::validate_manifest(&text) {
                Ok(m) => println!("{}: ok (Kubernetes {})", f.display(), describe(&m)),
                Err(errs) => {
                    eprintln!("{}", errs.render(&f.display().to_string()));
                    code = super::EXIT_INVALID;
                }
            }
            continue;
        }
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
    }
}
