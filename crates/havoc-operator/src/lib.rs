//! `havoc-operator`: the Kubernetes controller behind `havoc operator`.
//!
//! It decides WHAT to hit and WHEN; the node agent does the node-level work, reached over gRPC
//! with mutual TLS ([`agent`]). The lifecycle rules are a pure function ([`plan::decide`]); the
//! kube glue ([`controller`]) only reads the world and carries the steps out. Two replicas run
//! with leader election ([`leader`]); [`metrics`] serves Prometheus metrics and a health check.

pub mod agent;
pub mod controller;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod plan;
pub mod schedule;
pub mod statuscheck;
pub mod workflow;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{FutureExt, StreamExt};
use havoc_k8s::{
    ChaosObject, DNSChaos, HTTPChaos, IOChaos, NamespacePolicy, NetworkChaos, PodChaos,
    StressChaos, SyscallChaos, TimeChaos,
};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource};

pub use agent::{AgentPool, AgentTls, DisabledAgentPool, FakeAgentPool, GrpcAgentPool};
pub use manifests::{install_manifests, InstallOptions};

/// Everything `havoc operator` is configured with (the CLI maps its flags onto this).
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// The operator's own namespace (protected; holds the leader Lease).
    pub operator_namespace: String,
    /// Namespaces open to chaos without the opt-in label (`--namespaces`).
    pub namespaces: Vec<String>,
    /// The opt-in namespace label (`key=value`); empty disables opting in.
    pub opt_in_label: String,
    /// Allow kube-system & co. and the operator's namespace (`--allow-protected-namespaces`).
    pub allow_protected: bool,
    /// Namespace of the agent DaemonSet (default: the operator's).
    pub agent_namespace: Option<String>,
    /// The operator's side of the agent mTLS.
    pub agent_tls: AgentTls,
    /// Lease of agent injections; renewed every third.
    pub lease_ttl: Duration,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_addr: SocketAddr,
    /// This replica's identity for leader election (the pod name).
    pub identity: String,
    /// Run leader election (off: this replica always reconciles).
    pub leader_election: bool,
    /// Image that pod-failure puts in place (default [`controller::DEFAULT_FAILURE_IMAGE`]).
    pub failure_image: Option<String>,
    /// Targets injected at once (default [`controller::DEFAULT_MAX_CONCURRENT_INJECTIONS`]).
    pub max_concurrent_injections: usize,
}

impl Default for OperatorOptions {
    fn default() -> Self {
        OperatorOptions {
            operator_namespace: "havoc-system".into(),
            namespaces: Vec::new(),
            opt_in_label: havoc_k8s::policy::DEFAULT_OPT_IN_LABEL.into(),
            allow_protected: false,
            agent_namespace: None,
            agent_tls: AgentTls {
                ca: "/etc/havoc/tls/ca.pem".into(),
                cert: "/etc/havoc/tls/operator.pem".into(),
                key: "/etc/havoc/tls/operator-key.pem".into(),
                server_name: agent::AGENT_TLS_NAME.into(),
            },
            lease_ttl: agent::DEFAULT_LEASE_TTL,
            metrics_addr: ([0, 0, 0, 0], 9464).into(),
            identity: std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "havoc-operator".into()),
            leader_election: true,
            failure_image: None,
            max_concurrent_injections: controller::DEFAULT_MAX_CONCURRENT_INJECTIONS,
        }
    }
}

impl OperatorOptions {
    /// The namespace policy these options describe.
    pub fn policy(&self) -> NamespacePolicy {
        NamespacePolicy {
            allowed: self.namespaces.clone(),
            opt_in_label: self.opt_in_label.clone(),
            operator_namespace: self.operator_namespace.clone(),
            allow_protected: self.allow_protected,
        }
    }
}

/// How long `havoc operator` lets in-flight reconciles finish after SIGTERM/SIGINT before it
/// returns anyway (a second signal returns at once). Under Kubernetes' default 30 s grace.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A future that resolves when shutdown is requested; cheap to clone (one per controller).
pub type ShutdownSignal = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// Turns any future into a [`ShutdownSignal`] (tests pass a oneshot receiver, `havoc operator`
/// its [`Signals`]).
pub fn shutdown_signal(
    f: impl std::future::Future<Output = ()> + Send + 'static,
) -> ShutdownSignal {
    f.boxed().shared()
}

/// SIGTERM and SIGINT, counted. Installed once by `havoc operator`: the controllers stop taking
/// new work at the first signal, the process returns at the second or after [`SHUTDOWN_GRACE`].
/// (The controllers themselves never install signal handlers: a library must not swallow a
/// process's SIGTERM, e.g. a test binary's under a CI timeout.)
#[derive(Clone)]
pub struct Signals {
    count: tokio::sync::watch::Receiver<u32>,
}

impl Signals {
    /// Installs the handlers now (a signal arriving from here on is counted).
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = term.recv() => "SIGTERM",
                    Some(()) = int.recv() => "SIGINT",
                    else => return,
                };
                let n = *tx.borrow() + 1;
                tracing::info!(signal = name, n, "shutdown requested");
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
        Ok(Signals { count: rx })
    }

    async fn at_least(&self, n: u32) {
        let mut rx = self.count.clone();
        if rx.wait_for(|c| *c >= n).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }

    /// Resolves at the first signal.
    pub fn first(&self) -> ShutdownSignal {
        let s = self.clone();
        shutdown_signal(async move { s.at_least(1).await })
    }

    /// Resolves at the second signal, or [`SHUTDOWN_GRACE`] after the first.
    pub async fn forced(&self) {
        self.at_least(1).await;
        tokio::select! {
            () = self.at_least(2) => tracing::warn!("second signal: stopping without waiting for reconciles"),
            () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running after the grace period: stopping"),
        }
    }
}

/// Runs one controller per chaos kind until `shutdown` resolves (then waits for the reconciles
/// in flight) or the watches end.
pub async fn run_controllers(ctx: Arc<controller::Context>, shutdown: ShutdownSignal) {
    fn one<K>(
        ctx: Arc<controller::Context>,
        shutdown: ShutdownSignal,
    ) -> futures::future::BoxFuture<'static, ()>
    where
        K: ChaosObject,
    {
        let api: Api<K> = Api::all(ctx.client.clone());
        let mut controller = Controller::new(api, watcher::Config::default());
        if K::kind(&()) == PodChaos::kind(&()) {
            // PodChaos holds pod-failure through the API: a pod replaced under the same name
            // must be noticed when it happens (agent-held kinds requeue for lease renewal).
            let index = ctx.clone();
            controller = controller.watches(
                Api::<Pod>::all(ctx.client.clone()),
                watcher::Config::default(),
                move |pod| index.objects_targeting::<K>(&pod),
            );
        }
        controller
            .graceful_shutdown_on(shutdown)
            .run(
                controller::reconcile::<K>,
                controller::error_policy::<K>,
                ctx,
            )
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %controller::chain(&e), "controller event");
                }
            })
            .boxed()
    }
    futures::future::join_all([
        one::<PodChaos>(ctx.clone(), shutdown.clone()),
        one::<NetworkChaos>(ctx.clone(), shutdown.clone()),
        one::<StressChaos>(ctx.clone(), shutdown.clone()),
        one::<TimeChaos>(ctx.clone(), shutdown.clone()),
        one::<SyscallChaos>(ctx.clone(), shutdown.clone()),
        one::<DNSChaos>(ctx.clone(), shutdown.clone()),
        one::<HTTPChaos>(ctx.clone(), shutdown.clone()),
        schedule::controller(ctx.clone(), shutdown.clone()),
        workflow::controller(ctx.clone(), shutdown.clone()),
        statuscheck::controller(ctx.clone(), shutdown.clone()),
        one::<IOChaos>(ctx, shutdown),
    ])
    .await;
}

/// Kinds and actions that need the node agents (and so their mTLS files).
pub const AGENT_KINDS: &str = "NetworkChaos, StressChaos, TimeChaos, SyscallChaos, IOChaos, DNSChaos, HTTPChaos and PodChaos container-kill";

/// `havoc operator`: serves metrics, waits for leadership (when enabled), then reconciles until
/// SIGTERM/SIGINT (in-flight reconciles get [`SHUTDOWN_GRACE`]) or until leadership is lost (an
/// error: the pod restarts and follows).
pub async fn run(opts: OperatorOptions) -> anyhow::Result<()> {
    let signals = Signals::install().context("failed to install the SIGTERM/SIGINT handlers")?;
    let client = kube::Client::try_default()
        .await
        .context("failed to create a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let metrics = metrics::Metrics::new();
    let listener = tokio::net::TcpListener::bind(opts.metrics_addr)
        .await
        .with_context(|| format!("failed to bind --metrics-addr {}", opts.metrics_addr))?;
    let m = metrics.clone();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, metrics::router(m)).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    let agent_ns = opts
        .agent_namespace
        .clone()
        .unwrap_or_else(|| opts.operator_namespace.clone());
    let agents: Arc<dyn AgentPool> = match GrpcAgentPool::new(
        agent::AgentLocator::Discover {
            client: client.clone(),
            namespace: agent_ns,
        },
        &opts.agent_tls,
    ) {
        Ok(pool) => Arc::new(pool),
        Err(e) => {
            let why = format!(
                "{} (--agent-ca {}, --agent-cert {}, --agent-key {})",
                controller::chain(&e),
                opts.agent_tls.ca.display(),
                opts.agent_tls.cert.display(),
                opts.agent_tls.key.display()
            );
            tracing::warn!(
                error = %why,
                "no agent mTLS: {AGENT_KINDS} cannot run; PodChaos pod-kill and pod-failure can"
            );
            Arc::new(agent::DisabledAgentPool::new(why))
        }
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "havoc-operator".into(),
            instance: Some(opts.identity.clone()),
        },
    );
    let mut ctx = controller::Context::new(
        client.clone(),
        agents,
        opts.policy(),
        recorder,
        metrics,
        opts.lease_ttl,
    );
    if let Some(img) = &opts.failure_image {
        ctx.failure_image = img.clone();
    }
    ctx.max_concurrent_injections = opts.max_concurrent_injections.max(1);
    let ctx = Arc::new(ctx);
    if !opts.leader_election {
        tokio::select! {
            () = run_controllers(ctx, signals.first()) => {}
            () = signals.forced() => {}
        }
        return Ok(());
    }
    let elector = leader::Elector::new(
        client,
        &opts.operator_namespace,
        &opts.identity,
        Duration::from_secs(15),
    );
    loop {
        let round = tokio::select! {
            r = elector.try_lead() => r,
            () = signals.first() => return Ok(()),
        };
        match round {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                if let Some(missing) = leader::missing_namespace(&e) {
                    anyhow::bail!(
                        "leader election: namespace {missing} does not exist (it holds the Lease \
                         {}); create it, or point --operator-namespace (HAVOC_OPERATOR_NAMESPACE) \
                         at the operator's namespace",
                        leader::LEASE_NAME
                    );
                }
                tracing::warn!(error = %controller::chain(&e), "leader election failed");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(elector.period()) => {}
            () = signals.first() => return Ok(()),
        }
    }
    tracing::info!(identity = %opts.identity, "leading");
    let keep_leading = async {
        let mut misses = 0u32;
        loop {
            tokio::time::sleep(elector.period()).await;
            match elector.try_lead().await {
                Ok(true) => misses = 0,
                Ok(false) => anyhow::bail!("lost leadership to another replica"),
                Err(e) => {
                    misses += 1;
                    let e = controller::chain(&e);
                    tracing::warn!(error = %e, misses, "failed to renew the leader lease");
                    // Two misses in a row: the lease (3 periods) may lapse; stop reconciling.
                    if misses >= 2 {
                        anyhow::bail!("could not renew the leader lease: {e}");
                    }
                }
            }
        }
    };
    let r = tokio::select! {
        () = run_controllers(ctx, signals.first()) => Ok(()),
        r = keep_leading => r,
        () = signals.forced() => Ok(()),
    };
    // Hand over at once rather than after the lease runs out.
    match tokio::time::timeout(Duration::from_secs(2), elector.release()).await {
        Ok(Ok(())) => tracing::info!("released the leader lease"),
        Ok(Err(e)) => {
            tracing::warn!(error = %controller::chain(&e), "failed to release the leader lease")
        }
        Err(_) => tracing::warn!("releasing the leader lease timed out"),
    }
    r
}
