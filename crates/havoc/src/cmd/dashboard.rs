//! `havoc dashboard`: the web UI and JSON API over this host's runs, and with `--kubeconfig` or
//! `--in-cluster` over a cluster's chaos objects too. The work is in the `havoc-dashboard`
//! crate; this file parses the flags and runs its server.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on. Keep it on loopback: the dashboard starts and halts experiments.
    #[arg(long, default_value = "127.0.0.1:8484")]
    listen: SocketAddr,
    /// Another host name the dashboard answers to (e.g. behind an SSH tunnel or a proxy);
    /// repeatable. 127.0.0.1, localhost, [::1] and the listen address always are.
    #[arg(long = "allow-host")]
    allow_host: Vec<String>,
    /// Cluster mode with this kubeconfig: the cluster's chaos objects are shown and changed with
    /// its identity (yours), so RBAC applies as for kubectl.
    #[arg(long, value_name = "PATH", conflicts_with = "in_cluster")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Cluster mode in a pod behind an authenticating proxy: every Kubernetes call carries the
    /// bearer token of the request that caused it (never stored); requests without one get 401.
    #[arg(long)]
    in_cluster: bool,
    /// With --kubeconfig: use only its server and CA, and forward each request's bearer token
    /// as --in-cluster does (a dashboard outside the cluster behind an authenticating proxy).
    #[arg(long, requires = "kubeconfig")]
    forward_token: bool,
}

pub fn run(args: Args, state_dir: &Path) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let cluster = rt.block_on(async {
        use havoc_dashboard::cluster::Cluster;
        anyhow::Ok(
            match (&args.kubeconfig, args.in_cluster, args.forward_token) {
                (Some(path), _, true) => Some(Cluster::forwarding_to(path).await?),
                (Some(path), _, false) => Some(Cluster::from_kubeconfig(Some(path)).await?),
                (None, true, _) => Some(Cluster::in_cluster()?),
                (None, false, _) => None,
            },
        )
    })?;
    let cluster_mode = cluster.is_some();
    let config = havoc_dashboard::Config {
        state_dir: state_dir.to_path_buf(),
        havoc_exe: std::env::current_exe().context("cannot find the havoc executable")?,
        listen: args.listen,
        extra_hosts: args.allow_host,
        cluster,
    };
    rt.block_on(async {
        let bound = havoc_dashboard::bind(config).await?;
        // Tests and scripts read the address from this line (port 0 picks a free one).
        println!(
            "havoc dashboard listening on http://{}/",
            bound.local_addr()
        );
        if !super::is_root() && !cluster_mode {
            eprintln!("havoc: not running as root: runs can be listed and checked, not started");
        }
        bound.serve().await?;
        anyhow::Ok(0)
    })
}
