//! Cluster mode: Havoc's chaos objects in a Kubernetes cluster, seen and changed with the
//! user's own identity.
//!
//! Two ways to reach the API server, and in neither does the dashboard have an identity of its own:
//! - [`Access::Kubeconfig`]: run locally (`havoc dashboard --kubeconfig`), every call is made with
//!   the user's kubeconfig, as `kubectl` would make it.
//! - [`Access::ForwardToken`]: in a cluster behind an authenticating proxy
//!   (`havoc dashboard --in-cluster`), every call carries the bearer token of the request that
//!   caused it, and nothing else: the server's address and CA come from the pod, the
//!   credentials never do. A request without a token is refused (401) before any call is made;
//!   the token is never stored, logged or reused for another request.
//!
//! Either way RBAC applies as it does for the user: what they may not list is reported as
//! forbidden, never filled in with the dashboard's rights. The kinds are those of
//! [`havoc_k8s::crds`] (so kinds added later appear without change here); a kind whose CRD is
//! not installed is named as missing.

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::App;

/// Annotations the operator acts on (the operator's `plan` module defines them; these are
/// their wire names, which are part of the CRDs' documented interface).
pub const PAUSE_ANNOTATION: &str = "havoc.dev/pause";
pub const FORCE_CLEANUP_ANNOTATION: &str = "havoc.dev/force-cleanup";

/// How the dashboard reaches the API server.
#[derive(Clone)]
pub enum Access {
    /// The user's kubeconfig: one client for every request.
    Kubeconfig(kube::Client),
    /// The request's bearer token, forwarded; `base` has the server and CA, no credentials.
    ForwardToken(Box<kube::Config>),
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Kubeconfig(_) => f.write_str("Kubeconfig"),
            Access::ForwardToken(c) => write!(f, "ForwardToken({})", c.cluster_url),
        }
    }
}

/// One chaos kind as the API server serves it.
#[derive(Debug, Clone)]
pub struct Kind {
    pub kind: String,
    pub plural: String,
    pub resource: ApiResource,
}

/// Cluster mode's state.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub access: Access,
    pub kinds: Vec<Kind>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read the kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "cannot find a kubeconfig (KUBECONFIG, ~/.kube/config) or an in-cluster service account"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("not running in a pod: no service account to find the API server by")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("cannot build a Kubernetes client")]
    Client(#[source] kube::Error),
}

/// Havoc's namespaced kinds, from the CRDs Havoc defines.
pub fn havoc_kinds() -> Vec<Kind> {
    havoc_k8s::crds()
        .into_iter()
        .filter(|c| c.spec.scope == "Namespaced")
        .filter_map(|c| {
            let version = c
                .spec
                .versions
                .iter()
                .find(|v| v.storage)
                .or(c.spec.versions.first())?
                .name
                .clone();
            let gvk = GroupVersionKind::gvk(&c.spec.group, &version, &c.spec.names.kind);
            Some(Kind {
                kind: c.spec.names.kind.clone(),
                plural: c.spec.names.plural.clone(),
                resource: ApiResource::from_gvk_with_plural(&gvk, &c.spec.names.plural),
            })
        })
        .collect()
}

impl Cluster {
    /// With the user's kubeconfig (`path`, else the usual places).
    pub async fn from_kubeconfig(path: Option<&Path>) -> Result<Cluster, ClusterError> {
        let config = match path {
            Some(p) => {
                let kc = kube::config::Kubeconfig::read_from(p).map_err(|source| {
                    ClusterError::Kubeconfig {
                        path: p.display().to_string(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|source| ClusterError::Kubeconfig {
                        path: p.display().to_string(),
                        source,
                    })?
            }
            None => kube::Config::infer().await.map_err(ClusterError::Infer)?,
        };
        let client = kube::Client::try_from(config).map_err(ClusterError::Client)?;
        Ok(Cluster {
            access: Access::Kubeconfig(client),
            kinds: havoc_kinds(),
        })
    }

    /// Forwarding each request's bearer token to the server of `base`, whose own credentials
    /// are dropped here.
    pub fn forwarding(mut base: kube::Config) -> Cluster {
        base.auth_info = Default::default();
        base.headers.retain(|(k, _)| k != header::AUTHORIZATION);
        Cluster {
            access: Access::ForwardToken(Box::new(base)),
            kinds: havoc_kinds(),
        }
    }

    /// In a pod: the API server and CA of the pod's service account, tokens from requests.
    pub fn in_cluster() -> Result<Cluster, ClusterError> {
        kube::Config::incluster()
            .map(Cluster::forwarding)
            .map_err(ClusterError::InCluster)
    }

    /// Forwarding tokens to the server and CA named by a kubeconfig (whose credentials are not
    /// used): for a dashboard outside the cluster behind an authenticating proxy, and for tests.
    pub async fn forwarding_to(kubeconfig: &Path) -> Result<Cluster, ClusterError> {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|source| {
            ClusterError::Kubeconfig {
                path: kubeconfig.display().to_string(),
                source,
            }
        })?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|source| ClusterError::Kubeconfig {
                path: kubeconfig.display().to_string(),
                source,
            })?;
        Ok(Cluster::forwarding(config))
    }

    fn mode(&self) -> &'static str {
        match self.access {
            Access::Kubeconfig(_) => "kubeconfig",
            Access::ForwardToken(_) => "forward-token",
        }
    }

    /// The client for this request: the kubeconfig's, or one carrying the request's token.
    fn client(&self, headers: &HeaderMap) -> Result<kube::Client, Refusal> {
        match &self.access {
            Access::Kubeconfig(c) => Ok(c.clone()),
            Access::ForwardToken(base) => {
                let token = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty());
                let Some(token) = token else {
                    return Err(err(
                        StatusCode::UNAUTHORIZED,
                        "no credentials: this dashboard makes every Kubernetes call with the \
                         bearer token of the request (Authorization: Bearer ...), and this \
                         request has none",
                    ));
                };
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        err(
                            StatusCode::UNAUTHORIZED,
                            "the bearer token has characters a header cannot carry",
                        )
                    })?;
                value.set_sensitive(true);
                let mut config = (**base).clone();
                config.headers.push((header::AUTHORIZATION, value));
                kube::Client::try_from(config).map_err(|e| {
                    err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot build a Kubernetes client: {e}"),
                    )
                })
            }
        }
    }

    fn kind(&self, plural: &str) -> Result<&Kind, Refusal> {
        self.kinds
            .iter()
            .find(|k| k.plural == plural || k.kind.eq_ignore_ascii_case(plural))
            .ok_or_else(|| {
                let known: Vec<&str> = self.kinds.iter().map(|k| k.plural.as_str()).collect();
                err(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no chaos kind {plural:?}: expected one of {}",
                        known.join(", ")
                    ),
                )
            })
    }
}

/// A refused or failed request: its status and JSON body (`{"error": ...}` or `{"errors": [...]}`).
#[derive(Debug)]
pub struct Refusal(StatusCode, Value);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn err(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, json!({ "error": message.into() }))
}

/// The API server's answer passed on with its own code and message (403 stays 403), else 502.
fn kube_err(what: &str, e: kube::Error) -> Refusal {
    match e {
        kube::Error::Api(s) => {
            let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY);
            let code = if code.is_success() {
                StatusCode::BAD_GATEWAY
            } else {
                code
            };
            Refusal(
                code,
                json!({ "error": format!("{what}: {}", s.message), "reason": s.reason }),
            )
        }
        other => err(
            StatusCode::BAD_GATEWAY,
            format!("{what}: {}", crate::runs::error_chain(&other)),
        ),
    }
}

fn cluster_of(app: &App) -> Result<&Cluster, Refusal> {
    app.cluster.as_ref().ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            "cluster mode is off: start the dashboard with --kubeconfig (or --in-cluster)",
        )
    })
}

/// `GET /api/cluster`: the mode and the kinds.
pub async fn info(State(app): State<Arc<App>>) -> Response {
    match &app.cluster {
        None => Json(json!({ "enabled": false })).into_response(),
        Some(c) => Json(json!({
            "enabled": true,
            "mode": c.mode(),
            "kinds": c.kinds.iter().map(|k| json!({"kind": k.kind, "plural": k.plural})).collect::<Vec<_>>(),
        }))
        .into_response(),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    namespace: Option<String>,
}

/// What the list shows of one object.
fn summary(kind: &Kind, o: &DynamicObject) -> Value {
    let status = o.data.get("status").cloned().unwrap_or(Value::Null);
    let annotations = o.metadata.annotations.clone().unwrap_or_default();
    json!({
        "kind": kind.kind,
        "plural": kind.plural,
        "namespace": o.metadata.namespace,
        "name": o.metadata.name,
        "uid": o.metadata.uid,
        "created": o.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        "deleting": o.metadata.deletion_timestamp.is_some(),
        "paused": annotations.get(PAUSE_ANNOTATION).map(String::as_str) == Some("true"),
        "phase": status.get("phase").cloned().unwrap_or(Value::Null),
        "counts": status.get("counts").cloned().unwrap_or(Value::Null),
        "conditions": status.get("conditions").cloned().unwrap_or(Value::Null),
    })
}

/// `GET /api/cluster/objects[?namespace=NS]`: every chaos object the user may list, per kind
/// across all namespaces (or the namespaces the user may list, one by one, when a cluster-wide
/// list is forbidden), with what was forbidden or missing named.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, Refusal> {
    let cluster = cluster_of(&app)?;
    let client = cluster.client(&headers)?;
    let namespace = q.namespace.filter(|n| !n.is_empty());
    let mut objects = Vec::new();
    let mut forbidden = Vec::new();
    let mut missing = Vec::new();
    // Namespaces to try one by one when a cluster-wide list is refused (listed lazily).
    let mut namespaces: Option<Vec<String>> = None;
    for kind in &cluster.kinds {
        let scopes: Vec<Option<String>> = match &namespace {
            Some(ns) => vec![Some(ns.clone())],
            None => vec![None],
        };
        let mut queue = scopes;
        while let Some(scope) = queue.pop() {
            let api: Api<DynamicObject> = match &scope {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.resource),
                None => Api::all_with(client.clone(), &kind.resource),
            };
            match api.list(&ListParams::default()).await {
                Ok(list) => objects.extend(list.items.iter().map(|o| summary(kind, o))),
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    missing.push(kind.kind.clone());
                    break;
                }
                Err(kube::Error::Api(s)) if s.code == 403 && scope.is_none() => {
                    if namespaces.is_none() {
                        let nsapi: Api<Namespace> = Api::all(client.clone());
                        namespaces = Some(match nsapi.list(&ListParams::default()).await {
                            Ok(l) => l
                                .items
                                .into_iter()
                                .filter_map(|n| n.metadata.name)
                                .collect(),
                            Err(_) => Vec::new(),
                        });
                    }
                    let per_ns = namespaces.clone().unwrap_or_default();
                    if per_ns.is_empty() {
                        forbidden.push(
                            json!({"kind": kind.kind, "namespace": null, "message": s.message}),
                        );
                    }
                    queue.extend(per_ns.into_iter().map(Some));
                }
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    forbidden
                        .push(json!({"kind": kind.kind, "namespace": scope, "message": s.message}));
                }
                Err(e) => return Err(kube_err(&format!("cannot list {}", kind.plural), e)),
            }
        }
    }
    Ok(Json(json!({
        "objects": objects,
        "forbidden": forbidden,
        "missingKinds": missing,
        "mode": cluster.mode(),
    }))
    .into_response())
}

fn api_for(
    cluster: &Cluster,
    headers: &HeaderMap,
    plural: &str,
    namespace: &str,
) -> Result<(Api<DynamicObject>, Kind), Refusal> {
    let kind = cluster.kind(plural)?.clone();
    let client = cluster.client(headers)?;
    Ok((
        Api::namespaced_with(client, namespace, &kind.resource),
        kind,
    ))
}

/// `GET /api/cluster/objects/{plural}/{namespace}/{name}`: the object and its events, oldest first.
pub async fn get_one(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath((plural, namespace, name)): UrlPath<(String, String, String)>,
) -> Result<Response, Refusal> {
    let cluster = cluster_of(&app)?;
    let (api, kind) = api_for(cluster, &headers, &plural, &namespace)?;
    let obj = match api.get(&name).await {
        Ok(o) => o,
        Err(e) => {
            return Err(kube_err(
                &format!("cannot get {} {namespace}/{name}", kind.kind),
                e,
            ))
        }
    };
    let client = cluster.client(&headers)?;
    let events_api: Api<Event> = Api::namespaced(client, &namespace);
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let (events, events_error) = match events_api
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await
    {
        Ok(list) => {
            let mut ev: Vec<Value> = list
                .items
                .into_iter()
                .map(|e| {
                    let at = e
                        .last_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string())
                        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.to_string()));
                    json!({
                        "at": at, "type": e.type_, "reason": e.reason,
                        "message": e.message, "count": e.count,
                    })
                })
                .collect();
            ev.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
            (ev, None)
        }
        // The object is still worth showing when the user may not read events.
        Err(kube::Error::Api(s)) => (Vec::new(), Some(s.message)),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    // The chaos kinds' records, decoded from their compact wire form into one row per target.
    let records: Vec<Value> = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value::<havoc_k8s::ChaosStatus>(s.clone()).ok())
        .map(|st| {
            st.records
                .iter()
                .map(|r| {
                    json!({
                        "namespace": r.namespace, "pod": r.name, "node": r.node,
                        "container": r.container_id, "podUid": r.pod_uid, "phase": r.phase,
                        "injected": r.injected, "recovered": r.recovered, "lastError": r.last_error,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({
        "summary": summary(&kind, &obj),
        "records": records,
        "object": obj,
        "events": events,
        "eventsError": events_error,
    }))
    .into_response())
}

/// `POST /api/cluster/objects/{plural}/{namespace}/{name}/{action}`: `pause`, `resume` or
/// `force-cleanup`, as annotations the operator acts on.
pub async fn act(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath((plural, namespace, name, action)): UrlPath<(String, String, String, String)>,
) -> Result<Response, Refusal> {
    let cluster = cluster_of(&app)?;
    let annotations = match action.as_str() {
        "pause" => json!({ PAUSE_ANNOTATION: "true" }),
        "resume" => json!({ PAUSE_ANNOTATION: null }),
        "force-cleanup" => json!({ FORCE_CLEANUP_ANNOTATION: "true" }),
        other => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("no action {other:?}: expected pause, resume or force-cleanup"),
            ))
        }
    };
    let (api, kind) = api_for(cluster, &headers, &plural, &namespace)?;
    let patch = json!({ "metadata": { "annotations": annotations } });
    let o = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            kube_err(
                &format!("cannot {action} {} {namespace}/{name}", kind.kind),
                e,
            )
        })?;
    Ok(Json(json!({ "summary": summary(&kind, &o) })).into_response())
}

/// `DELETE /api/cluster/objects/{plural}/{namespace}/{name}`: deletion; the operator recovers
/// every target before the object goes (its finalizer).
pub async fn delete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath((plural, namespace, name)): UrlPath<(String, String, String)>,
) -> Result<Response, Refusal> {
    let cluster = cluster_of(&app)?;
    let (api, kind) = api_for(cluster, &headers, &plural, &namespace)?;
    api.delete(&name, &DeleteParams::default())
        .await
        .map_err(|e| {
            kube_err(
                &format!("cannot delete {} {namespace}/{name}", kind.kind),
                e,
            )
        })?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "deleting": name }))).into_response())
}

#[derive(Deserialize)]
pub struct CreateQuery {
    namespace: Option<String>,
    #[serde(rename = "dryRun")]
    dry_run: Option<bool>,
}

/// `POST /api/cluster/objects[?namespace=NS&dryRun=true]` with one YAML manifest: checked by
/// the same code as `havoc validate` where Havoc knows the kind (positioned problems, 422;
/// a Chaos Mesh manifest is converted), then created by the API server, whose own validation
/// messages come back as they are.
pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<CreateQuery>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let cluster = cluster_of(&app)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                format!("the body is not UTF-8: {e}"),
            )
        })?
        .to_string();
    let raw: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        problems(vec![
            json!({"line": line, "col": col, "path": "", "message": e.to_string()}),
        ])
    })?;
    let kind_name = raw["kind"].as_str().unwrap_or_default().to_string();
    let api_version = raw["apiVersion"].as_str().unwrap_or_default().to_string();
    // Havoc's own checks where it has them (every kind `havoc validate` knows), else the server's.
    let manifest = match havoc_k8s::validate_manifest(&text) {
        Ok(_) if api_version == havoc_spec::experiment::CHAOS_MESH_API_VERSION => {
            match havoc_k8s::convert(&text)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_yaml_ng::from_str::<Value>(&t).map_err(|e| e.to_string()))
            {
                Ok(v) => v,
                Err(e) => return Err(err(StatusCode::UNPROCESSABLE_ENTITY, e)),
            }
        }
        Ok(_) => raw,
        Err(errors) => {
            let unknown_kind = errors
                .iter()
                .any(|e| e.path.to_string() == "kind" && e.message.contains("unsupported kind"));
            let havoc_kind = cluster.kinds.iter().any(|k| k.kind == kind_name);
            if unknown_kind && havoc_kind && api_version == havoc_spec::experiment::API_VERSION {
                raw
            } else {
                return Err(problems(
                    errors
                        .iter()
                        .map(|e| {
                            json!({
                                "line": e.pos.line, "col": e.pos.col,
                                "path": if e.path.is_root() { String::new() } else { e.path.to_string() },
                                "message": e.message,
                            })
                        })
                        .collect(),
                ));
            }
        }
    };
    let kind_name = manifest["kind"].as_str().unwrap_or_default().to_string();
    let kind = cluster
        .kinds
        .iter()
        .find(|k| k.kind == kind_name)
        .ok_or_else(|| {
            err(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("kind {kind_name:?} is not a Havoc chaos kind"),
            )
        })?;
    let namespace = manifest["metadata"]["namespace"]
        .as_str()
        .map(str::to_string)
        .or(q.namespace.filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "default".into());
    let obj: DynamicObject = serde_json::from_value(manifest).map_err(|e| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not an object: {e}"),
        )
    })?;
    let client = cluster.client(&headers)?;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &kind.resource);
    let pp = PostParams {
        dry_run: q.dry_run.unwrap_or(false),
        ..Default::default()
    };
    let o = api
        .create(&pp, &obj)
        .await
        .map_err(|e| kube_err(&format!("the API server refused the {}", kind.kind), e))?;
    let status = if pp.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({ "dryRun": pp.dry_run, "summary": summary(kind, &o) })),
    )
        .into_response())
}

fn problems(list: Vec<Value>) -> Refusal {
    Refusal(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({ "valid": false, "errors": list }),
    )
}
