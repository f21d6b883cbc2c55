//! The seam between the operator and the node agents.
//!
//! [`AgentPool`] is what the reconciler calls to inject, renew, recover and list faults on a node.
//! [`GrpcAgentPool`] is the real one: one tonic channel per node over mutual TLS, the agent found
//! as the agent DaemonSet's pod on that node (label [`AGENT_LABEL`], pod IP, port [`AGENT_PORT`])
//! and cached until a call fails at the transport level. [`FakeAgentPool`] records calls and fails
//! on demand, for tests.
//!
//! Every inject carries an idempotency key ([`idempotency_key`]) so a retried reconcile never
//! injects twice, and a lease the operator renews; a dead operator stops renewing and the agent
//! recovers by itself.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use havoc_api::v1::agent_client::AgentClient;
use havoc_api::v1::{
    InjectRequest, InjectResponse, Injection, ListRequest, RecoverRequest, RecoverResponse,
    RenewRequest, RenewResponse,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Label of the agent DaemonSet's pods.
pub const AGENT_LABEL: &str = "app.kubernetes.io/name=havoc-agent";
/// The agent's gRPC port.
pub const AGENT_PORT: u16 = 7433;
/// Default lease of an agent injection; the operator renews every third of it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// The DNS name the agent's server certificate must carry (pod IPs change, so the operator
/// verifies this name rather than the IP it dials).
pub const AGENT_TLS_NAME: &str = "havoc-agent";

/// What can go wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "no running havoc agent on node {node} (label {AGENT_LABEL} in namespace {namespace})"
    )]
    NoAgent { node: String, namespace: String },
    #[error("failed to look up the havoc agent on node {node}")]
    Lookup {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to load the agent TLS files")]
    Tls(#[source] havoc_api::tls::TlsError),
    #[error("invalid agent endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("node-level faults are disabled: the operator has no agent mTLS files ({reason}); {kinds} cannot run", kinds = crate::AGENT_KINDS)]
    Disabled { reason: String },
    #[error("agent {op} on node {node} failed: {code:?}: {message}")]
    Rpc {
        op: &'static str,
        node: String,
        code: tonic::Code,
        message: String,
    },
}

impl AgentError {
    fn rpc(op: &'static str, node: &str, s: tonic::Status) -> Self {
        AgentError::Rpc {
            op,
            node: node.to_string(),
            code: s.code(),
            message: s.message().to_string(),
        }
    }

    /// True when the agent cannot be reached at all (no pod, connection refused, TLS), as
    /// opposed to an agent that answered with an error.
    pub fn is_unreachable(&self) -> bool {
        match self {
            AgentError::Rpc { code, .. } => {
                matches!(
                    code,
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                )
            }
            _ => true,
        }
    }
}

/// The idempotency key of one agent injection: `<chaos uid>/<pod uid>/<container id>/<fault>`.
/// A new container id (the pod's container restarted) is a new key, so it is injected again.
pub fn idempotency_key(chaos_uid: &str, pod_uid: &str, container_id: &str, fault: usize) -> String {
    format!("{chaos_uid}/{pod_uid}/{container_id}/{fault}")
}

/// The parts of an [`idempotency_key`]: chaos uid, pod uid, container id (which contains `/`
/// itself, as in `containerd://...`) and fault index; `None` if `key` is not one.
pub fn parse_idempotency_key(key: &str) -> Option<(&str, &str, &str, &str)> {
    let (chaos, rest) = key.split_once('/')?;
    let (pod, rest) = rest.split_once('/')?;
    let (container, fault) = rest.rsplit_once('/')?;
    Some((chaos, pod, container, fault))
}

/// The agent's `fault_json` for one host-mode fault: `{"kind": K, "spec": {...}}`.
pub fn fault_json(fault: &havoc_spec::FaultSpec) -> Result<String, serde_json::Error> {
    let mut v = serde_json::to_value(fault)?;
    if let Some(obj) = v.as_object_mut() {
        obj.remove("kind");
    }
    serde_json::to_string(&serde_json::json!({ "kind": fault.kind(), "spec": v }))
}

/// The agent's `fault_json` for container-kill: SIGKILL to the container's init process.
pub fn container_kill_fault_json() -> String {
    serde_json::json!({"kind": "ProcessChaos", "spec": {"action": "kill", "signal": "KILL"}})
        .to_string()
}

/// The node agents, as the reconciler sees them. Every call is safe to retry.
pub trait AgentPool: Send + Sync + 'static {
    /// Injects one fault on `node`; an already held key returns the existing injection.
    fn inject(
        &self,
        node: &str,
        req: InjectRequest,
    ) -> BoxFuture<'_, Result<InjectResponse, AgentError>>;
    /// Extends an injection's lease.
    fn renew(
        &self,
        node: &str,
        req: RenewRequest,
    ) -> BoxFuture<'_, Result<RenewResponse, AgentError>>;
    /// Removes an injection; unknown ids answer `recovered = true`.
    fn recover(
        &self,
        node: &str,
        req: RecoverRequest,
    ) -> BoxFuture<'_, Result<RecoverResponse, AgentError>>;
    /// Every injection the agent on `node` holds.
    fn list(&self, node: &str) -> BoxFuture<'_, Result<Vec<Injection>, AgentError>>;
}

/// Where the agent of a node is.
#[derive(Clone)]
pub enum AgentLocator {
    /// The agent DaemonSet's running pod on the node, found through the API server.
    Discover {
        /// Client for the lookups.
        client: kube::Client,
        /// Namespace of the agent DaemonSet.
        namespace: String,
    },
    /// Fixed `https://HOST:PORT` per node (tests, or agents outside the cluster).
    Static(BTreeMap<String, String>),
}

impl std::fmt::Debug for AgentLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentLocator::Discover { namespace, .. } => {
                write!(f, "Discover {{ namespace: {namespace} }}")
            }
            AgentLocator::Static(m) => write!(f, "Static({m:?})"),
        }
    }
}

/// The real pool: tonic over mutual TLS, one cached channel per node.
#[derive(Debug)]
pub struct GrpcAgentPool {
    locator: AgentLocator,
    tls: ClientTlsConfig,
    timeout: Duration,
    channels: Mutex<HashMap<String, (String, Channel)>>,
}

/// The operator's side of the agent mTLS: CA, client certificate and key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTls {
    /// CA that signed the agents' server certificates.
    pub ca: PathBuf,
    /// The operator's client certificate.
    pub cert: PathBuf,
    /// The operator's private key.
    pub key: PathBuf,
    /// The name verified in the agent's certificate (default [`AGENT_TLS_NAME`]).
    pub server_name: String,
}

impl GrpcAgentPool {
    /// Loads the TLS files now (a wrong file fails at start, naming it) and connects lazily.
    pub fn new(locator: AgentLocator, tls: &AgentTls) -> Result<Self, AgentError> {
        let tls = havoc_api::tls::client_tls(&tls.ca, &tls.cert, &tls.key)
            .map_err(AgentError::Tls)?
            .domain_name(tls.server_name.clone());
        Ok(GrpcAgentPool {
            locator,
            tls,
            timeout: Duration::from_secs(10),
            channels: Mutex::new(HashMap::new()),
        })
    }

    async fn address(&self, node: &str) -> Result<String, AgentError> {
        match &self.locator {
            AgentLocator::Static(m) => m.get(node).cloned().ok_or_else(|| AgentError::NoAgent {
                node: node.to_string(),
                namespace: "(static)".into(),
            }),
            AgentLocator::Discover { client, namespace } => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                let lp = ListParams::default()
                    .labels(AGENT_LABEL)
                    .fields(&format!("spec.nodeName={node}"));
                let list = pods.list(&lp).await.map_err(|source| AgentError::Lookup {
                    node: node.to_string(),
                    source,
                })?;
                agent_address(&list.items).ok_or_else(|| AgentError::NoAgent {
                    node: node.to_string(),
                    namespace: namespace.clone(),
                })
            }
        }
    }

    async fn client(&self, node: &str) -> Result<AgentClient<Channel>, AgentError> {
        if let Some((_, ch)) = self.channels.lock().expect("channel cache").get(node) {
            return Ok(AgentClient::new(ch.clone()));
        }
        let addr = self.address(node).await?;
        let ep = Endpoint::from_shared(addr.clone())
            .and_then(|e| e.tls_config(self.tls.clone()))
            .map_err(|source| AgentError::Endpoint {
                endpoint: addr.clone(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let ch = ep.connect_lazy();
        self.channels
            .lock()
            .expect("channel cache")
            .insert(node.to_string(), (addr, ch.clone()));
        Ok(AgentClient::new(ch))
    }

    /// Drops the cached channel of `node` after a transport failure (the agent pod may have
    /// been replaced and have a new IP).
    fn forget_on_failure<T>(&self, node: &str, r: &Result<T, AgentError>) {
        if matches!(r, Err(e) if e.is_unreachable()) {
            self.channels.lock().expect("channel cache").remove(node);
        }
    }
}

/// `https://IP:7433` of the first running, not deleting agent pod.
pub fn agent_address(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.status.as_ref())
        .filter(|s| s.phase.as_deref() == Some("Running"))
        .find_map(|s| s.pod_ip.clone())
        .map(|ip| {
            if ip.contains(':') {
                format!("https://[{ip}]:{AGENT_PORT}")
            } else {
                format!("https://{ip}:{AGENT_PORT}")
            }
        })
}

macro_rules! call {
    ($self:ident, $node:ident, $op:literal, $method:ident, $req:expr) => {{
        let node = $node.to_string();
        Box::pin(async move {
            let r = async {
                let mut c = $self.client(&node).await?;
                c.$method($req)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| AgentError::rpc($op, &node, s))
            }
            .await;
            $self.forget_on_failure(&node, &r);
            r
        })
    }};
}

impl AgentPool for GrpcAgentPool {
    fn inject(
        &self,
        node: &str,
        req: InjectRequest,
    ) -> BoxFuture<'_, Result<InjectResponse, AgentError>> {
        call!(self, node, "inject", inject, req)
    }
    fn renew(
        &self,
        node: &str,
        req: RenewRequest,
    ) -> BoxFuture<'_, Result<RenewResponse, AgentError>> {
        call!(self, node, "renew", renew, req)
    }
    fn recover(
        &self,
        node: &str,
        req: RecoverRequest,
    ) -> BoxFuture<'_, Result<RecoverResponse, AgentError>> {
        call!(self, node, "recover", recover, req)
    }
    fn list(&self, node: &str) -> BoxFuture<'_, Result<Vec<Injection>, AgentError>> {
        let node = node.to_string();
        Box::pin(async move {
            let r = async {
                let mut c = self.client(&node).await?;
                c.list(ListRequest {})
                    .await
                    .map(|r| r.into_inner().injections)
                    .map_err(|s| AgentError::rpc("list", &node, s))
            }
            .await;
            self.forget_on_failure(&node, &r);
            r
        })
    }
}

/// One call the [`FakeAgentPool`] received.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeCall {
    Inject { node: String, req: InjectRequest },
    Renew { node: String, req: RenewRequest },
    Recover { node: String, req: RecoverRequest },
    List { node: String },
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<FakeCall>,
    /// (node, key) -> injection id: each node's agent holds its own injections.
    held: BTreeMap<(String, String), String>,
    unreachable: Vec<String>,
    next: u64,
}

/// An in-memory agent pool for tests: records every call, injects idempotently by key, and
/// fails every call to a node marked unreachable.
#[derive(Debug, Clone, Default)]
pub struct FakeAgentPool {
    state: Arc<Mutex<FakeState>>,
}

impl FakeAgentPool {
    /// A pool where every node answers.
    pub fn new() -> Self {
        Self::default()
    }
    /// Makes every call to `node` fail with `Unavailable` (or answer again).
    pub fn set_unreachable(&self, node: &str, unreachable: bool) {
        let mut s = self.state.lock().expect("fake state");
        s.unreachable.retain(|n| n != node);
        if unreachable {
            s.unreachable.push(node.to_string());
        }
    }
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.state.lock().expect("fake state").calls.clone()
    }
    /// Idempotency keys of the injections currently held, on every node.
    pub fn held(&self) -> Vec<String> {
        let s = self.state.lock().expect("fake state");
        s.held.keys().map(|(_, k)| k.clone()).collect()
    }
    /// Makes the agent on `node` hold an injection with this key and id, as if injected by an
    /// earlier operator run (records no call).
    pub fn preload(&self, node: &str, key: &str, injection_id: &str) {
        let mut s = self.state.lock().expect("fake state");
        s.held.insert(
            (node.to_string(), key.to_string()),
            injection_id.to_string(),
        );
    }

    fn record(&self, node: &str, call: FakeCall) -> Result<(), AgentError> {
        let mut s = self.state.lock().expect("fake state");
        s.calls.push(call);
        if s.unreachable.iter().any(|n| n == node) {
            return Err(AgentError::Rpc {
                op: "call",
                node: node.to_string(),
                code: tonic::Code::Unavailable,
                message: "connection refused (fake)".into(),
            });
        }
        Ok(())
    }
}

/// The pool of an operator started without the agents' mTLS files: every call fails, saying
/// why, so PodChaos pod-kill and pod-failure still run and the rest fail with a clear record.
#[derive(Debug, Clone)]
pub struct DisabledAgentPool {
    reason: String,
}

impl DisabledAgentPool {
    /// A pool that answers every call with [`AgentError::Disabled`] carrying `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        DisabledAgentPool {
            reason: reason.into(),
        }
    }

    fn err(&self) -> AgentError {
        AgentError::Disabled {
            reason: self.reason.clone(),
        }
    }
}

impl AgentPool for DisabledAgentPool {
    fn inject(
        &self,
        _node: &str,
        _req: InjectRequest,
    ) -> BoxFuture<'_, Result<InjectResponse, AgentError>> {
        let e = self.err();
        Box::pin(async move { Err(e) })
    }
    fn renew(
        &self,
        _node: &str,
        _req: RenewRequest,
    ) -> BoxFuture<'_, Result<RenewResponse, AgentError>> {
        let e = self.err();
        Box::pin(async move { Err(e) })
    }
    fn recover(
        &self,
        _node: &str,
        _req: RecoverRequest,
    ) -> BoxFuture<'_, Result<RecoverResponse, AgentError>> {
        let e = self.err();
        Box::pin(async move { Err(e) })
    }
    fn list(&self, _node: &str) -> BoxFuture<'_, Result<Vec<Injection>, AgentError>> {
        let e = self.err();
        Box::pin(async move { Err(e) })
    }
}

impl AgentPool for FakeAgentPool {
    fn inject(
        &self,
        node: &str,
        req: InjectRequest,
    ) -> BoxFuture<'_, Result<InjectResponse, AgentError>> {
        let r = self
            .record(
                node,
                FakeCall::Inject {
                    node: node.into(),
                    req: req.clone(),
                },
            )
            .map(|()| {
                let mut s = self.state.lock().expect("fake state");
                let at = (node.to_string(), req.idempotency_key.clone());
                let existing = s.held.get(&at).cloned();
                let (id, existing) = match existing {
                    Some(id) => (id, true),
                    None => {
                        s.next += 1;
                        let id = format!("inj-{}", s.next);
                        s.held.insert(at, id.clone());
                        (id, false)
                    }
                };
                InjectResponse {
                    injection_id: id,
                    existing,
                    pid: 4242,
                    lease_expires_unix_ms: 0,
                    summary: "fake".into(),
                }
            });
        Box::pin(async move { r })
    }
    fn renew(
        &self,
        node: &str,
        req: RenewRequest,
    ) -> BoxFuture<'_, Result<RenewResponse, AgentError>> {
        let r = self
            .record(
                node,
                FakeCall::Renew {
                    node: node.into(),
                    req,
                },
            )
            .map(|()| RenewResponse {
                lease_expires_unix_ms: 0,
            });
        Box::pin(async move { r })
    }
    fn recover(
        &self,
        node: &str,
        req: RecoverRequest,
    ) -> BoxFuture<'_, Result<RecoverResponse, AgentError>> {
        let id = req.injection_id.clone();
        let r = self
            .record(
                node,
                FakeCall::Recover {
                    node: node.into(),
                    req,
                },
            )
            .map(|()| {
                let mut s = self.state.lock().expect("fake state");
                let before = s.held.len();
                s.held.retain(|(n, _), v| n != node || *v != id);
                RecoverResponse {
                    recovered: true,
                    reason: if s.held.len() < before {
                        "recovered".into()
                    } else {
                        "already recovered".into()
                    },
                }
            });
        Box::pin(async move { r })
    }
    fn list(&self, node: &str) -> BoxFuture<'_, Result<Vec<Injection>, AgentError>> {
        let r = self
            .record(node, FakeCall::List { node: node.into() })
            .map(|()| {
                let s = self.state.lock().expect("fake state");
                s.held
                    .iter()
                    .filter(|((n, _), _)| n == node)
                    .map(|((_, k), id)| Injection {
                        injection_id: id.clone(),
                        idempotency_key: k.clone(),
                        ..Default::default()
                    })
                    .collect()
            });
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_container_gets_a_new_key() {
        let a = idempotency_key("c1", "p1", "containerd://aaa", 0);
        let b = idempotency_key("c1", "p1", "containerd://bbb", 0);
        assert_eq!(a, "c1/p1/containerd://aaa/0");
        assert_ne!(a, b);
        assert_eq!(
            parse_idempotency_key(&a),
            Some(("c1", "p1", "containerd://aaa", "0"))
        );
        assert_eq!(parse_idempotency_key("k"), None);
    }

    #[test]
    fn agent_address_takes_a_running_pod_ip() {
        let pod = |phase: &str, ip: &str, deleting: bool| {
            let mut p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "a"},
                "status": {"phase": phase, "podIP": ip}
            }))
            .expect("pod");
            if deleting {
                p.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ));
            }
            p
        };
        assert_eq!(agent_address(&[pod("Pending", "10.0.0.1", false)]), None);
        assert_eq!(
            agent_address(&[
                pod("Running", "10.0.0.1", true),
                pod("Running", "10.0.0.2", false)
            ]),
            Some("https://10.0.0.2:7433".into())
        );
        assert_eq!(
            agent_address(&[pod("Running", "fd00::5", false)]),
            Some("https://[fd00::5]:7433".into())
        );
    }

    #[tokio::test]
    async fn fake_injects_once_per_key_and_fails_on_demand() {
        let f = FakeAgentPool::new();
        let req = InjectRequest {
            idempotency_key: "k".into(),
            ..Default::default()
        };
        let a = f.inject("n1", req.clone()).await.expect("inject");
        let b = f.inject("n1", req.clone()).await.expect("inject again");
        assert_eq!(a.injection_id, b.injection_id);
        assert!(!a.existing && b.existing);
        f.set_unreachable("n1", true);
        let e = f.inject("n1", req).await.expect_err("unreachable");
        assert!(e.is_unreachable());
        assert_eq!(f.held(), vec!["k".to_string()]);
    }

    #[tokio::test]
    async fn fake_lists_and_recovers_per_node() {
        let f = FakeAgentPool::new();
        let req = |k: &str| InjectRequest {
            idempotency_key: k.into(),
            ..Default::default()
        };
        let a = f.inject("n1", req("a")).await.expect("inject");
        f.inject("n2", req("b")).await.expect("inject");
        f.preload("n2", "c", "old-1");
        let keys = |v: Vec<Injection>| {
            v.into_iter()
                .map(|i| (i.idempotency_key, i.injection_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(f.list("n1").await.expect("list")),
            vec![("a".to_string(), a.injection_id.clone())]
        );
        assert_eq!(f.list("n2").await.expect("list").len(), 2);
        let other = RecoverRequest {
            injection_id: a.injection_id.clone(),
        };
        f.recover("n2", other.clone()).await.expect("recover");
        assert_eq!(f.held().len(), 3, "an id of another node is not touched");
        f.recover("n1", other).await.expect("recover");
        assert_eq!(f.held(), vec!["b".to_string(), "c".to_string()]);
    }
}
