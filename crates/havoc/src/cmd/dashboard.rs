//! `havoc dashboard`: the web UI and JSON API over this host's runs (host mode). The work is in
//! the `havoc-dashboard` crate; this file parses the flags and runs its server.

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
}

pub fn run(args: Args, state_dir: &Path) -> anyhow::Result<u8> {
    let config = havoc_dashboard::Config {
        state_dir: state_dir.to_path_buf(),
        havoc_exe: std::env::current_exe().context("cannot find the havoc executable")?,
        listen: args.listen,
        extra_hosts: args.allow_host,
    };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        let bound = havoc_dashboard::bind(config).await?;
        // Tests and scripts read the address from this line (port 0 picks a free one).
        println!(
            "havoc dashboard listening on http://{}/",
            bound.local_addr()
        );
        if !super::is_root() {
            eprintln!("havoc: not running as root: runs can be listed and checked, not started");
        }
        bound.serve().await?;
        anyhow::Ok(0)
    })
}
