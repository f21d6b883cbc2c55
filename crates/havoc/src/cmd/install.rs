//! `havoc install --print`: everything needed in a cluster, as one YAML stream for kubectl apply.

#[derive(clap::Args)]
pub struct Args {
    /// Print the manifests (namespace, CRDs, RBAC, operator Deployment, agent DaemonSet) to stdout.
    /// Havoc never talks to a cluster to install itself: pipe this into `kubectl apply -f -`.
    #[arg(long, required = true)]
    print: bool,
    /// Namespace of the operator and the agents.
    #[arg(long, default_value = "havoc-system")]
    namespace: String,
    /// Image holding the `havoc` binary (see deploy/Dockerfile; no registry is needed when the
    /// image is imported on each node).
    #[arg(long, default_value = "havoc:dev")]
    image: String,
    /// Namespaces open to chaos without the opt-in label (comma-separated).
    #[arg(long, value_delimiter = ',')]
    chaos_namespaces: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    debug_assert!(args.print);
    print!(
        "{}",
        havoc_operator::install_manifests(&havoc_operator::InstallOptions {
            namespace: args.namespace,
            image: args.image,
            chaos_namespaces: args.chaos_namespaces,
        })
    );
    Ok(0)
}
