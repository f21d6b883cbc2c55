//! `havoc-agent-testd`: the agent as a process of its own, for the integration tests (SIGKILL,
//! SIGTERM) and the benchmark, and the `__stress-worker` and `__watchdog` entries that stress
//! faults and the agent re-execute (as `havoc` has them).
//!
//! ```text
//! havoc-agent-testd serve --listen ADDR --metrics ADDR --state-dir DIR [--tls CA CERT KEY | --insecure-dev]
//! havoc-agent-testd __stress-worker ARGS...
//! havoc-agent-testd __watchdog --journal PATH
//! ```
//! Prints `listening ADDR`, `metrics ADDR` and `watchdog PID` on stdout once serving.

use std::io::Write;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__stress-worker") {
        let (task, deadline) = havoc_faults::stress::parse_worker_args(&args[1..])
            .map_err(|e| anyhow::anyhow!("__stress-worker: {e}"))?;
        havoc_faults::stress::worker_main(task, deadline);
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("__watchdog") {
        let [_, flag, path] = args.as_slice() else {
            anyhow::bail!("usage: havoc-agent-testd __watchdog --journal PATH");
        };
        anyhow::ensure!(flag == "--journal", "__watchdog: unknown argument {flag}");
        std::process::exit(havoc_engine::watchdog::watchdog_main(path.into()));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.first().map(String::as_str) != Some("serve") {
        anyhow::bail!("usage: havoc-agent-testd serve [--listen ADDR] [--metrics ADDR] [--state-dir DIR] [--tls CA CERT KEY | --insecure-dev]");
    }
    let mut opts = havoc_agent::AgentOptions::new(None);
    opts.node_name = "testd".into();
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--listen" => opts.listen = val()?.parse().context("--listen")?,
            "--metrics" => opts.metrics_addr = Some(val()?.parse().context("--metrics")?),
            "--state-dir" => opts.state_dir = val()?.into(),
            "--insecure-dev" => opts.insecure_dev = true,
            "--tls" => {
                opts.tls = Some(havoc_api::tls::TlsFiles {
                    ca: val()?.into(),
                    cert: val()?.into(),
                    key: val()?.into(),
                })
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let agent = havoc_agent::start(opts).await?;
        println!("listening {}", agent.addr());
        if let Some(m) = agent.metrics_addr() {
            println!("metrics {m}");
        }
        println!("watchdog {}", agent.watchdog_pid().unwrap_or_default());
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        agent.shutdown().await
    })
}
