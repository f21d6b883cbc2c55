//! `havoc-agent`: the node agent. It serves the gRPC API of `havoc-api` over mutual TLS and
//! holds the faults the operator asks for, with the same fault engine as host mode.
//!
//! ```text
//! Inject ─▶ parse (havoc-spec) ─▶ resolve target (containerd API | /proc) ─▶ protection check
//!        ─▶ holder thread: journal ─▶ inject ─▶ tick + lease ─▶ recover
//! ```
//! Recovery is certain three ways: Recover, lease expiry (the operator died or was cut off), and,
//! if the agent is killed (SIGKILL, out of memory), its watchdog ([`holder::Guardian`], a process
//! of its own) replaying the journals it left, at once; kernel-owned faults (eBPF links,
//! PDEATHSIG helpers) die with the agent. The next start replays whatever is still journaled.
//! SIGTERM recovers everything before exit.
//!
//! [`sidecar`] runs the same engine on a seeded probability loop inside an application's pod.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

pub mod fault;
pub mod holder;
pub mod listener;
pub mod metrics;
pub mod resolve;
pub mod service;
pub mod sidecar;

pub use resolve::Runtimes;
pub use sidecar::{plan, run_sidecar, Decision, SidecarConfig, SidecarOptions};

/// Default gRPC listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7433";
/// Default metrics listen address.
pub const DEFAULT_METRICS: &str = "0.0.0.0:7434";

/// Everything `havoc agent` needs; the CLI fills it from flags.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// gRPC address (port 0 picks a free port; see [`RunningAgent::addr`]).
    pub listen: SocketAddr,
    /// Metrics address (`/metrics`, `/healthz`), or None for no metrics listener.
    pub metrics_addr: Option<SocketAddr>,
    /// Mutual TLS files; required unless `insecure_dev`.
    pub tls: Option<havoc_api::tls::TlsFiles>,
    /// Plain-text gRPC for development: only on a loopback address, with a loud warning.
    pub insecure_dev: bool,
    /// Journals live under `<state_dir>/runs/`.
    pub state_dir: PathBuf,
    /// This node's name, reported by Health.
    pub node_name: String,
    pub runtimes: Runtimes,
    /// The executable re-run for helper processes (`__stress-worker`).
    pub self_exe: PathBuf,
    /// Connection cap, handshake deadline, keepalives, error message size.
    pub limits: listener::ListenerLimits,
    /// Run the watchdog that undoes what the agent holds if it dies (`self_exe __watchdog`).
    /// Always on for `havoc agent`; tests of other things, whose executable is not `havoc`,
    /// may turn it off.
    pub watchdog: bool,
}

impl AgentOptions {
    /// Defaults for everything but TLS: listen on 7433/7434, state in /var/lib/havoc, the node
    /// name from `NODE_NAME` or the host name.
    pub fn new(tls: Option<havoc_api::tls::TlsFiles>) -> Self {
        AgentOptions {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            metrics_addr: Some(DEFAULT_METRICS.parse().expect("valid default")),
            tls,
            insecure_dev: false,
            state_dir: havoc_engine::journal::DEFAULT_STATE_DIR.into(),
            node_name: std::env::var("NODE_NAME").unwrap_or_else(|_| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            }),
            runtimes: Runtimes::default(),
            self_exe: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
            limits: listener::ListenerLimits::default(),
            watchdog: true,
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// Checks the options: TLS or loopback-only insecure mode, never plain text elsewhere.
pub fn check_options(opts: &AgentOptions) -> anyhow::Result<()> {
    match (&opts.tls, opts.insecure_dev) {
        (Some(_), true) => anyhow::bail!(
            "--insecure-dev and TLS files were both given: choose one (TLS is the only mode for a cluster)"
        ),
        (None, false) => anyhow::bail!(
            "the agent needs mutual TLS: give --tls-ca, --tls-cert and --tls-key (make them with `havoc certs`); plain text only exists as --insecure-dev on a loopback address"
        ),
        (None, true) if !is_loopback(opts.listen.ip()) => anyhow::bail!(
            "--insecure-dev serves plain text and binds only to 127.0.0.1 or ::1, not {}: use --listen 127.0.0.1:PORT, or TLS",
            opts.listen
        ),
        _ => Ok(()),
    }
}

/// A started agent.
pub struct RunningAgent {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    registry: Arc<holder::Registry>,
    guardian: Option<holder::Guardian>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    metrics_server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for RunningAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningAgent")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningAgent {
    /// The bound gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// How many injections are held.
    pub fn active(&self) -> usize {
        self.registry.len()
    }

    /// The pid of the agent's watchdog process, if it runs one.
    pub fn watchdog_pid(&self) -> Option<u32> {
        self.guardian.as_ref().map(|g| g.pid())
    }

    /// Stops serving, then recovers every injection.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let served = self.server.await;
        let mut failed = Vec::new();
        for h in self.registry.all() {
            if let Err(e) = h.recover().await {
                failed.push(format!("{}: {e}", h.id));
            }
        }
        if let Some(m) = self.metrics_server {
            let _ = m.await;
        }
        let recovered = failed.is_empty();
        if let Some(guardian) = self.guardian {
            let _ = tokio::task::spawn_blocking(move || guardian.finish(recovered)).await;
        }
        match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the gRPC server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "the gRPC server task failed"),
        }
        if !failed.is_empty() {
            anyhow::bail!(
                "could not recover every injection (the journals are kept for the next start): {}",
                failed.join("; ")
            );
        }
        Ok(())
    }
}

/// Replays journals of dead agents and runs, then starts serving. Returns once listening.
pub async fn start(opts: AgentOptions) -> anyhow::Result<RunningAgent> {
    check_options(&opts)?;
    let limits = opts.limits;
    let tls = match &opts.tls {
        Some(files) => Some(
            files
                .server()
                .context("cannot load the agent's TLS files")?
                .timeout(limits.handshake_timeout),
        ),
        None => None,
    };
    // Network faults attach an eBPF classifier whose verification takes ~0.6 s; keep one
    // verified ahead so an Inject only attaches it.
    havoc_bpf::prewarm(true);
    let state_dir = opts.state_dir.clone();
    let replays =
        tokio::task::spawn_blocking(move || havoc_engine::journal::recover_stale(&state_dir))
            .await
            .context("journal replay panicked")?
            .with_context(|| {
                format!(
                    "cannot replay the journals under {}",
                    opts.state_dir.display()
                )
            })?;
    for (run, r) in &replays {
        tracing::warn!(run = %run, done = ?r.done, nothing_left = ?r.nothing_left, failed = ?r.failed, "replayed the journal of a dead holder");
    }
    let metrics = Arc::new(metrics::Metrics::new());
    let registry = Arc::new(holder::Registry::new(metrics.clone()));
    // After the replay above (which waits for an earlier agent's watchdog to finish), before
    // anything is injected.
    let guardian = if opts.watchdog {
        Some(
            holder::Guardian::start(&opts.self_exe, &opts.state_dir, &registry)
                .context("cannot start the agent's watchdog")?,
        )
    } else {
        None
    };
    let svc = service::AgentService::new(
        service::ServiceConfig {
            node: opts.node_name.clone(),
            state_dir: opts.state_dir.clone(),
            self_exe: opts.self_exe.clone(),
            runtimes: opts.runtimes.clone(),
        },
        registry.clone(),
    );
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut builder = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(limits.concurrency_per_connection)
        .http2_keepalive_interval(Some(limits.http2_keepalive))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("invalid TLS configuration")?;
        tracing::info!(%addr, "agent API listening (mutual TLS)");
    } else {
        tracing::warn!(%addr, "INSECURE: the agent API serves PLAIN TEXT without authentication (--insecure-dev); loopback only, never use this in a cluster");
    }
    let incoming = listener::CappedIncoming::new(listener, &limits);
    let max_message = limits.max_error_message;
    let server = tokio::spawn(
        builder
            .layer(axum::middleware::map_response(
                move |res: tonic::codegen::http::Response<tonic::body::Body>| async move {
                    listener::clip_grpc_message(res, max_message)
                },
            ))
            .add_service(havoc_api::v1::agent_server::AgentServer::new(svc))
            .serve_with_incoming_shutdown(incoming, wait(stopped.clone())),
    );
    let (metrics_addr, metrics_server) = match opts.metrics_addr {
        Some(a) => {
            let l = metrics::bind(a)
                .await
                .with_context(|| format!("cannot listen for metrics on {a}"))?;
            let bound = l.local_addr().context("no local address")?;
            tracing::info!(addr = %bound, "metrics listening (read-only: /metrics, /healthz)");
            (
                Some(bound),
                Some(tokio::spawn(metrics::serve(l, metrics, wait(stopped)))),
            )
        }
        None => (None, None),
    };
    Ok(RunningAgent {
        addr,
        metrics_addr,
        registry,
        guardian,
        stop,
        server,
        metrics_server,
    })
}

/// Runs the agent until SIGTERM or SIGINT, then recovers everything it holds.
pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    let agent = start(opts).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: recovering every injection"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: recovering every injection"),
    }
    agent.shutdown().await
}
