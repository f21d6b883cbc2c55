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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{FutureExt, StreamExt};
use havoc_k8s::{ChaosObject, NamespacePolicy, NetworkChaos, PodChaos, StressChaos};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{watcher, Controller};
use kube::Api;

pub use agent::{AgentPool, AgentTls, FakeAgentPool, GrpcAgentPool};
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

/// Runs one controller per chaos kind until shutdown.
pub async fn run_controllers(ctx: Arc<controller::Context>) {
    fn one<K>(ctx: Arc<controller::Context>) -> futures::future::BoxFuture<'static, ()>
    where
        K: ChaosObject,
    {
        let api: Api<K> = Api::all(ctx.client.clone());
        Controller::new(api, watcher::Config::default())
            .shutdown_on_signal()
            .run(
                controller::reconcile::<K>,
                controller::error_policy::<K>,
                ctx,
            )
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "controller event");
                }
            })
            .boxed()
    }
    futures::future::join3(
        one::<PodChaos>(ctx.clone()),
        one::<NetworkChaos>(ctx.clone()),
        one::<StressChaos>(ctx),
    )
    .await;
}

/// `havoc operator`: serves metrics, waits for leadership (when enabled), then reconciles until
/// SIGTERM or until leadership is lost (an error: the pod restarts and follows).
pub async fn run(opts: OperatorOptions) -> anyhow::Result<()> {
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
    let agents = GrpcAgentPool::new(
        agent::AgentLocator::Discover {
            client: client.clone(),
            namespace: agent_ns,
        },
        &opts.agent_tls,
    )
    .context("failed to load the agent mTLS files")?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "havoc-operator".into(),
            instance: Some(opts.identity.clone()),
        },
    );
    let mut ctx = controller::Context::new(
        client.clone(),
        Arc::new(agents),
        opts.policy(),
        recorder,
        metrics,
        opts.lease_ttl,
    );
    if let Some(img) = &opts.failure_image {
        ctx.failure_image = img.clone();
    }
    let ctx = Arc::new(ctx);
    if !opts.leader_election {
        run_controllers(ctx).await;
        return Ok(());
    }
    let elector = leader::Elector::new(
        client,
        &opts.operator_namespace,
        &opts.identity,
        Duration::from_secs(15),
    );
    loop {
        match elector.try_lead().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election failed"),
        }
        tokio::time::sleep(elector.period()).await;
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
                    tracing::warn!(error = %e, misses, "failed to renew the leader lease");
                    // Two misses in a row: the lease (3 periods) may lapse; stop reconciling.
                    if misses >= 2 {
                        anyhow::bail!("could not renew the leader lease: {e}");
                    }
                }
            }
        }
    };
    tokio::select! {
        () = run_controllers(ctx) => Ok(()),
        r = keep_leading => r,
    }
}
