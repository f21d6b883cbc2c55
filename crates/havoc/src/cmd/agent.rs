//! `havoc agent`: the node agent (gRPC with mutual TLS), or `havoc agent --sidecar FILE`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Run as a sidecar inside an application's pod: inject the faults of this config file on a
    /// seeded probability loop (no gRPC server).
    #[arg(long, value_name = "CONFIG")]
    sidecar: Option<PathBuf>,
    /// gRPC address (mutual TLS).
    #[arg(long, default_value = havoc_agent::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Plain HTTP address of /metrics and /healthz (read-only; nothing there injects).
    #[arg(long, default_value = havoc_agent::DEFAULT_METRICS)]
    metrics_addr: SocketAddr,
    /// CA that signs the clients' (the operator's) certificates, PEM.
    #[arg(long, default_value = "/etc/havoc/tls/ca.pem")]
    tls_ca: PathBuf,
    /// The agent's certificate, PEM.
    #[arg(long, default_value = "/etc/havoc/tls/agent.pem")]
    tls_cert: PathBuf,
    /// The agent's private key, PEM.
    #[arg(long, default_value = "/etc/havoc/tls/agent-key.pem")]
    tls_key: PathBuf,
    /// DEVELOPMENT ONLY: serve plain-text gRPC without any authentication. Allowed only on a
    /// loopback --listen address.
    #[arg(long)]
    insecure_dev: bool,
    /// This node's name (reported by Health).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// containerd's socket (the runtime is detected from the sockets present; a missing socket
    /// falls back to scanning /proc/*/cgroup).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// containerd namespaces searched after k8s.io (repeatable).
    #[arg(long = "containerd-namespace")]
    containerd_namespaces: Vec<String>,
}

pub fn run(args: Args, state_dir: &Path) -> anyhow::Result<u8> {
    if let Some(config) = args.sidecar {
        let opts = havoc_agent::SidecarOptions {
            config,
            self_exe: std::env::current_exe().context("cannot find the havoc executable")?,
            max_intervals: None,
        };
        havoc_agent::run_sidecar(&opts)?;
        return Ok(0);
    }
    let tls = (!args.insecure_dev).then_some(havoc_api::tls::TlsFiles {
        ca: args.tls_ca,
        cert: args.tls_cert,
        key: args.tls_key,
    });
    let mut opts = havoc_agent::AgentOptions::new(tls);
    opts.listen = args.listen;
    opts.metrics_addr = Some(args.metrics_addr);
    opts.insecure_dev = args.insecure_dev;
    opts.state_dir = state_dir.to_path_buf();
    if let Some(n) = args.node_name {
        opts.node_name = n;
    }
    opts.runtimes.containerd_socket = args.containerd_socket;
    if !args.containerd_namespaces.is_empty() {
        opts.runtimes.containerd_namespaces = args.containerd_namespaces;
    }
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(havoc_agent::run(opts))?;
    Ok(0)
}
