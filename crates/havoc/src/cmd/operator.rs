//! `havoc operator`: the Kubernetes controller (CRDs PodChaos, NetworkChaos, StressChaos).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// The operator's own namespace: holds the leader Lease, and is never a chaos target unless
    /// --allow-protected-namespaces.
    #[arg(long, env = "HAVOC_OPERATOR_NAMESPACE", default_value = "havoc-system")]
    operator_namespace: String,
    /// Namespaces open to chaos (comma-separated). Others must opt in with --opt-in-label.
    #[arg(long, value_delimiter = ',')]
    namespaces: Vec<String>,
    /// The namespace label that opts a namespace in (`key=value`; empty disables opting in).
    #[arg(long, default_value = havoc_k8s::policy::DEFAULT_OPT_IN_LABEL)]
    opt_in_label: String,
    /// Allow kube-system, kube-public, kube-node-lease and the operator's namespace as targets.
    #[arg(long)]
    allow_protected_namespaces: bool,
    /// Namespace of the agent DaemonSet (default: the operator's).
    #[arg(long)]
    agent_namespace: Option<String>,
    /// CA that signed the agents' certificates (PEM).
    #[arg(long, default_value = "/etc/havoc/tls/ca.pem")]
    agent_ca: PathBuf,
    /// The operator's client certificate for the agents (PEM).
    #[arg(long, default_value = "/etc/havoc/tls/operator.pem")]
    agent_cert: PathBuf,
    /// The operator's private key (PEM).
    #[arg(long, default_value = "/etc/havoc/tls/operator-key.pem")]
    agent_key: PathBuf,
    /// The name verified in the agents' certificate.
    #[arg(long, default_value = havoc_operator::agent::AGENT_TLS_NAME)]
    agent_tls_name: String,
    /// Lease of each agent injection; the operator renews it every third. If the operator dies,
    /// the agents recover on their own within this time.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    lease_ttl: std::time::Duration,
    /// Where /metrics and /healthz are served (plain HTTP, read-only).
    #[arg(long, default_value = "0.0.0.0:9464")]
    metrics_addr: SocketAddr,
    /// This replica's identity in leader election.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Reconcile without leader election (only when one replica runs).
    #[arg(long)]
    no_leader_election: bool,
    /// The image pod-failure puts in place of each container's (it must never start).
    #[arg(long)]
    failure_image: Option<String>,
    /// How many targets are injected at once (API or agent calls in flight per experiment).
    #[arg(long, default_value_t = havoc_operator::controller::DEFAULT_MAX_CONCURRENT_INJECTIONS as u16,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_injections: u16,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    if args.lease_ttl < std::time::Duration::from_secs(3) {
        anyhow::bail!(
            "--lease-ttl {:?} is too short: renewals every third of it would race the network; use 3s or more",
            args.lease_ttl
        );
    }
    let mut opts = havoc_operator::OperatorOptions {
        operator_namespace: args.operator_namespace,
        namespaces: args.namespaces,
        opt_in_label: args.opt_in_label,
        allow_protected: args.allow_protected_namespaces,
        agent_namespace: args.agent_namespace,
        agent_tls: havoc_operator::AgentTls {
            ca: args.agent_ca,
            cert: args.agent_cert,
            key: args.agent_key,
            server_name: args.agent_tls_name,
        },
        lease_ttl: args.lease_ttl,
        metrics_addr: args.metrics_addr,
        leader_election: !args.no_leader_election,
        failure_image: args.failure_image,
        max_concurrent_injections: usize::from(args.max_concurrent_injections),
        ..Default::default()
    };
    if let Some(id) = args.identity {
        opts.identity = id;
    }
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = rt.block_on(havoc_operator::run(opts));
    // A reconcile still running after the shutdown grace (or a second signal) must not keep
    // the process alive: Kubernetes would SIGKILL it anyway.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result?;
    Ok(0)
}
