//! The gRPC service: Inject, Renew, Recover, List, Health.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use havoc_api::v1::agent_server::Agent;
use havoc_api::v1::{
    target, HealthRequest, HealthResponse, InjectRequest, InjectResponse, Injection, ListRequest,
    ListResponse, RecoverRequest, RecoverResponse, RenewRequest, RenewResponse,
};
use havoc_engine::resolve::Protection;
use tonic::{Request, Response, Status};

use crate::holder::{self, HoldError, HoldRequest, Registry};
use crate::resolve::{self, ResolveError, Runtimes};

/// Lease bounds, in milliseconds.
pub const MIN_TTL_MS: u32 = 1_000;
pub const MAX_TTL_MS: u32 = 3_600_000;

/// The service's fixed settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub node: String,
    pub state_dir: PathBuf,
    pub self_exe: PathBuf,
    pub runtimes: Runtimes,
}

/// The agent's gRPC service.
#[derive(Debug, Clone)]
pub struct AgentService {
    cfg: Arc<ServiceConfig>,
    registry: Arc<Registry>,
    next: Arc<AtomicU64>,
}

impl AgentService {
    pub fn new(cfg: ServiceConfig, registry: Arc<Registry>) -> Self {
        AgentService {
            cfg: Arc::new(cfg),
            registry,
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    fn new_id(&self) -> String {
        format!(
            "agent-{}-{}-{}",
            holder::now_ms(),
            std::process::id(),
            self.next.fetch_add(1, Ordering::SeqCst)
        )
    }

    fn timed<T>(&self, method: &str, started: Instant, r: Result<T, Status>) -> Result<T, Status> {
        self.registry
            .metrics
            .observe(method, started.elapsed().as_secs_f64());
        r
    }

    async fn inject(&self, req: InjectRequest) -> Result<InjectResponse, Status> {
        if req.idempotency_key.is_empty() || req.idempotency_key.len() > 512 {
            return Err(Status::invalid_argument(
                "idempotency_key: is required, 1..=512 characters (the operator uses <chaos uid>/<pod uid>/<container id>/<fault>)",
            ));
        }
        if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&req.lease_ttl_ms) {
            return Err(Status::invalid_argument(format!(
                "lease_ttl_ms: must be {MIN_TTL_MS}..={MAX_TTL_MS} milliseconds, got {}",
                req.lease_ttl_ms
            )));
        }
        let fault = crate::fault::parse_fault_json(&req.fault_json)
            .map_err(|e| Status::invalid_argument(e.render("fault_json")))?;
        let Some(kind) = req.target.as_ref().and_then(|t| t.kind.clone()) else {
            return Err(Status::invalid_argument(
                "target: is required: a container_id (containerd://ID, cri-o://ID, docker://ID or a bare ID) or a pid",
            ));
        };
        let key_lock = self.registry.key_lock(&req.idempotency_key);
        let mut key_held = key_lock.lock().await;
        if let Some(h) = key_held.as_deref().and_then(|id| self.registry.get(id)) {
            self.registry.metrics.count(h.kind, "inject", "existing");
            return Ok(InjectResponse {
                injection_id: h.id.clone(),
                existing: true,
                pid: h.pid,
                lease_expires_unix_ms: h.expires_unix_ms(),
                summary: h.summary.clone(),
            });
        }
        let spec_kind = fault.spec.kind();
        let result = self.inject_new(req, kind, fault).await;
        let (resp, held) = match result {
            Ok(v) => v,
            Err(s) => {
                self.registry.metrics.count(spec_kind, "inject", "error");
                return Err(s);
            }
        };
        *key_held = Some(held);
        self.registry.metrics.count(spec_kind, "inject", "ok");
        Ok(resp)
    }

    async fn inject_new(
        &self,
        req: InjectRequest,
        kind: target::Kind,
        fault: crate::fault::RequestedFault,
    ) -> Result<(InjectResponse, String), Status> {
        let (pid, label, via) = match &kind {
            target::Kind::Pid(pid) => (*pid, format!("pid {pid}"), "pid".to_string()),
            target::Kind::ContainerId(c) => {
                let r = resolve::resolve_container(&self.cfg.runtimes, c)
                    .await
                    .map_err(resolve_status)?;
                let short: String = resolve::parse_container_id(c)
                    .map(|c| c.id)
                    .unwrap_or_default()
                    .chars()
                    .take(12)
                    .collect();
                (r.pid, format!("container {short}"), r.via)
            }
        };
        let protect = Protection::for_this_process(&self.registry.helpers());
        let proc = resolve::checked_process(pid, &protect).map_err(resolve_status)?;
        let target = resolve::target_for(&fault.spec, &proc, &label);
        let id = self.new_id();
        let hold = HoldRequest {
            id: id.clone(),
            key: req.idempotency_key.clone(),
            owner: req.owner.clone(),
            spec: fault.spec,
            target,
            api_target: req.target.clone(),
            pid,
            ttl: Duration::from_millis(req.lease_ttl_ms as u64),
            duration: fault.duration,
            state_dir: self.cfg.state_dir.clone(),
            self_exe: self.cfg.self_exe.clone(),
            seed: rand::random(),
        };
        let held = holder::start(hold, self.registry.clone())
            .await
            .map_err(|e| match e {
                HoldError::Precondition(m) => Status::failed_precondition(m),
                HoldError::Failed(m) => Status::internal(m),
            })?;
        tracing::info!(id = %id, pid, via = %via, "target resolved");
        Ok((
            InjectResponse {
                injection_id: id.clone(),
                existing: false,
                pid,
                lease_expires_unix_ms: held.expires_unix_ms(),
                summary: held.summary.clone(),
            },
            id,
        ))
    }
}

fn resolve_status(e: ResolveError) -> Status {
    match e {
        ResolveError::InvalidId { .. } => Status::invalid_argument(format!("target: {e}")),
        ResolveError::NotFound { .. } | ResolveError::NoPid { .. } => {
            Status::not_found(format!("target: {e}"))
        }
        ResolveError::Protected { .. } => Status::permission_denied(format!("target: {e}")),
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn inject(
        &self,
        request: Request<InjectRequest>,
    ) -> Result<Response<InjectResponse>, Status> {
        let t = Instant::now();
        let r = AgentService::inject(self, request.into_inner()).await;
        self.timed("Inject", t, r).map(Response::new)
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let t = Instant::now();
        let req = request.into_inner();
        let r = (|| {
            if req.lease_ttl_ms != 0 && !(MIN_TTL_MS..=MAX_TTL_MS).contains(&req.lease_ttl_ms) {
                return Err(Status::invalid_argument(format!(
                    "lease_ttl_ms: must be 0 (keep) or {MIN_TTL_MS}..={MAX_TTL_MS} milliseconds, got {}",
                    req.lease_ttl_ms
                )));
            }
            let h = self.registry.get(&req.injection_id).ok_or_else(|| {
                let why = self
                    .registry
                    .ended_reason(&req.injection_id)
                    .unwrap_or_else(|| "unknown injection".into());
                Status::not_found(format!(
                    "injection `{}` is not held ({why}): inject it again",
                    req.injection_id
                ))
            })?;
            let ttl =
                (req.lease_ttl_ms != 0).then(|| Duration::from_millis(req.lease_ttl_ms as u64));
            Ok(RenewResponse {
                lease_expires_unix_ms: h.renew(ttl),
            })
        })();
        self.timed("Renew", t, r).map(Response::new)
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RecoverResponse>, Status> {
        let t = Instant::now();
        let id = request.into_inner().injection_id;
        let r = match self.registry.get(&id) {
            None => Ok(RecoverResponse {
                recovered: true,
                reason: match self.registry.ended_reason(&id) {
                    Some(r) if r != "recovered" => r,
                    _ => "already recovered".into(),
                },
            }),
            Some(h) => match h.recover().await {
                Ok(reason) => Ok(RecoverResponse {
                    recovered: true,
                    reason,
                }),
                Err(e) => Ok(RecoverResponse {
                    recovered: false,
                    reason: e,
                }),
            },
        };
        self.timed("Recover", t, r).map(Response::new)
    }

    async fn list(&self, _request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let t = Instant::now();
        let injections = self
            .registry
            .all()
            .into_iter()
            .map(|h| Injection {
                injection_id: h.id.clone(),
                idempotency_key: h.key.clone(),
                kind: h.kind.to_string(),
                summary: h.summary.clone(),
                target: h.api_target.clone(),
                pid: h.pid,
                lease_expires_unix_ms: h.expires_unix_ms(),
                owner: h.owner.clone(),
                injected_unix_ms: h.injected_unix_ms,
                metrics: h.effect().metrics.into_iter().collect(),
            })
            .collect();
        self.timed("List", t, Ok(ListResponse { injections }))
            .map(Response::new)
    }

    async fn health(
        &self,
        _request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        let t = Instant::now();
        let r = HealthResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: self.cfg.node.clone(),
            runtimes: self.cfg.runtimes.detect(),
            active_injections: self.registry.len() as u32,
        };
        self.timed("Health", t, Ok(r)).map(Response::new)
    }
}
