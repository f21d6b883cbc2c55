//! `havoc dashboard`, host mode: a small web UI and JSON API over one state directory.
//!
//! What it shows and does, all from what is on disk and the same code as the CLI:
//! - the finished runs (`<state dir>/reports/*/report.json`), filtered by verdict, each opened as
//!   the page `havoc_report::render_html` makes (timeline, probe charts, requested vs measured);
//! - an experiment editor that validates as you type with `havoc_spec::parse_experiment` (the
//!   code of `havoc validate`, errors at line:col) and previews the resolved targets
//!   (`havoc_engine::plan`, touching nothing);
//! - start of a run (`havoc run` of this executable, in the background: [`jobs`]), its progress
//!   live over server-sent events (phase, each fault's measured window, probe samples: the run's
//!   [`live`] stream), and Halt for one run or all (SIGUSR1, as `havoc halt`).
//!
//! The page is plain HTML, CSS and JavaScript compiled into the binary: nothing is fetched from
//! anywhere else. The server binds to 127.0.0.1 by default. Every request must name an allowed
//! Host (no DNS rebinding), and every request that changes anything must carry the per-process
//! token of the page in `X-Havoc-CSRF` and, if the browser sent one, a same-origin `Origin`
//! ([`guard`]): a page on another site can neither read the token nor send the header.

pub mod cluster;
pub mod guard;
pub mod jobs;
pub mod live;
pub mod runs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// A plain red "H" (browsers ask for an icon; a 404 would be noise in every console).
const FAVICON_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#b42318"/><path d="M4 3v10M12 3v10M4 8h8" stroke="#fff" stroke-width="2"/></svg>"##;

/// The header that carries the page's token on state-changing requests.
pub const CSRF_HEADER: &str = "x-havoc-csrf";

/// How the dashboard is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The state directory: its `reports/` and `runs/` (journals).
    pub state_dir: PathBuf,
    /// The `havoc` executable that runs experiments (normally this process's own).
    pub havoc_exe: PathBuf,
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Host names (with or without port) accepted besides 127.0.0.1, localhost, [::1] and the
    /// listen address: for a dashboard reached through another name.
    pub extra_hosts: Vec<String>,
    /// Cluster mode: Havoc's chaos objects in a cluster, with the user's identity ([`cluster`]).
    pub cluster: Option<cluster::Cluster>,
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("failed to listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the dashboard's server failed")]
    Serve(#[source] std::io::Error),
}

/// Shared by every request.
#[derive(Debug)]
pub struct App {
    pub state_dir: PathBuf,
    pub havoc_exe: PathBuf,
    /// The per-process CSRF token embedded in the page.
    pub token: String,
    pub guard: guard::Hosts,
    pub jobs: jobs::Jobs,
    pub cluster: Option<cluster::Cluster>,
}

/// A dashboard bound to its address, not yet serving.
#[derive(Debug)]
pub struct Bound {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
}

/// Binds the listen address and prepares the state shared by requests.
pub async fn bind(config: Config) -> Result<Bound, DashboardError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DashboardError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DashboardError::Bind {
            addr: config.listen,
            source,
        })?;
    // Streams of runs that died before removing theirs (the journals are replayed by `havoc
    // run` and `havoc recover`; what is left of their live view is only noise).
    for p in live::sweep(&config.state_dir) {
        tracing::info!(path = %p.display(), "removed the live stream of a run that is gone");
    }
    let token: String = rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let app = Arc::new(App {
        state_dir: config.state_dir,
        havoc_exe: config.havoc_exe,
        token,
        guard: guard::Hosts::new(addr, &config.extra_hosts),
        jobs: jobs::Jobs::default(),
        cluster: config.cluster,
    });
    Ok(Bound { listener, app })
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.app.guard.addr()
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), DashboardError> {
        axum::serve(self.listener, router(self.app))
            .await
            .map_err(DashboardError::Serve)
    }
}

/// Every route, behind the Host and CSRF guard.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/assets/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .route("/runs/{key}", get(report_page))
        .route("/api/runs", get(list_runs).post(start_run))
        .route("/api/runs/{key}", get(report_json))
        .route("/api/runs/{id}/halt", post(halt_one))
        .route("/api/halt", post(halt_all))
        .route("/api/active", get(active))
        .route("/api/live/{run_id}", get(live_one))
        .route("/api/events", get(events))
        .route("/api/validate", post(validate))
        .route("/api/plan", post(plan))
        .route("/api/cluster", get(cluster::info))
        .route(
            "/api/cluster/objects",
            get(cluster::list).post(cluster::create),
        )
        .route(
            "/api/cluster/objects/{plural}/{namespace}/{name}",
            get(cluster::get_one).delete(cluster::delete),
        )
        .route(
            "/api/cluster/objects/{plural}/{namespace}/{name}/{action}",
            post(cluster::act),
        )
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::check,
        ))
        .with_state(app)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn no_cache(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn index(State(app): State<Arc<App>>) -> Response {
    no_cache(
        "text/html; charset=utf-8",
        INDEX_HTML.replace("{{CSRF_TOKEN}}", &app.token),
    )
}

async fn app_js() -> Response {
    no_cache("text/javascript; charset=utf-8", APP_JS.into())
}

async fn favicon() -> Response {
    no_cache("image/svg+xml", FAVICON_SVG.into())
}

async fn app_css() -> Response {
    no_cache("text/css; charset=utf-8", APP_CSS.into())
}

const VERDICTS: [&str; 5] = ["completed", "failed", "interrupted", "aborted", "deviated"];

#[derive(Deserialize)]
struct ListQuery {
    verdict: Option<String>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("worker failed: {e}"),
        )
    })
}

async fn list_runs(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Response {
    let verdict = q.verdict.filter(|v| !v.is_empty());
    if let Some(v) = &verdict {
        if !VERDICTS.contains(&v.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("verdict {v:?} is not one of {}", VERDICTS.join(", ")),
            );
        }
    }
    let state = app.state_dir.clone();
    let listed = match blocking(move || runs::list(&state)).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match listed {
        Ok((all, broken)) => {
            let total = all.len();
            let runs: Vec<_> = all
                .into_iter()
                .filter(|r| verdict.is_none() || r.verdict == verdict)
                .collect();
            Json(json!({ "runs": runs, "total": total, "unreadable": broken })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, runs::error_chain(&e)),
    }
}

fn report_error(e: runs::RunsError) -> Response {
    match e {
        runs::RunsError::NotFound { .. } => error(StatusCode::NOT_FOUND, e.to_string()),
        e => error(StatusCode::INTERNAL_SERVER_ERROR, runs::error_chain(&e)),
    }
}

async fn report_json(State(app): State<Arc<App>>, UrlPath(key): UrlPath<String>) -> Response {
    match runs::read(&app.state_dir, &key) {
        Ok(v) => Json(v).into_response(),
        Err(e) => report_error(e),
    }
}

async fn report_page(State(app): State<Arc<App>>, UrlPath(key): UrlPath<String>) -> Response {
    match runs::read(&app.state_dir, &key) {
        Ok(v) => {
            let page = havoc_report::render_html(&v);
            // One way back to the list; the report page itself stays what `havoc run` writes.
            let page = match page
                .find("<body")
                .and_then(|at| page[at..].find('>').map(|e| at + e + 1))
            {
                Some(end) => format!(
                    "{}<p><a href=\"/\">← all runs</a></p>{}",
                    &page[..end],
                    &page[end..]
                ),
                None => page,
            };
            no_cache("text/html; charset=utf-8", page)
        }
        Err(e) => report_error(e),
    }
}

/// One spec problem, positioned.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub path: String,
    pub message: String,
}

/// The experiment in a request body, or its problems.
fn parse(body: &Bytes) -> Result<havoc_spec::Experiment, Vec<Problem>> {
    let to_problems = |errs: havoc_spec::SpecErrors| {
        errs.iter()
            .map(|e| Problem {
                line: e.pos.line,
                col: e.pos.col,
                path: if e.path.is_root() {
                    String::new()
                } else {
                    e.path.to_string()
                },
                message: e.message.clone(),
            })
            .collect::<Vec<_>>()
    };
    let text = havoc_spec::source::decode(body.to_vec()).map_err(to_problems)?;
    havoc_spec::parse_experiment(&text).map_err(to_problems)
}

async fn validate(body: Bytes) -> Response {
    match parse(&body) {
        Ok(exp) => Json(json!({
            "valid": true,
            "errors": [],
            "experiment": exp.metadata.name,
            "faults": exp.spec.faults.iter().map(|f| json!({
                "name": f.name, "kind": f.spec.kind(),
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(problems) => Json(json!({ "valid": false, "errors": problems })).into_response(),
    }
}

/// True when this process runs as root (resolving other users' processes and running
/// experiments need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse::<u32>().ok())
        })
        == Some(0)
}

async fn plan(body: Bytes) -> Response {
    let exp = match parse(&body) {
        Ok(e) => e,
        Err(problems) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "valid": false, "errors": problems })),
            )
                .into_response()
        }
    };
    let root = is_root();
    let note = (!root).then_some(
        "the dashboard is not running as root: targets are resolved from what this user can \
         see in /proc, so other users' processes may be missing, and runs cannot be started",
    );
    let seed = exp.spec.seed.unwrap_or(0);
    let seed_note = exp.spec.seed.is_none().then_some(
        "the spec has no seed: the preview used seed 0, and a run picks its own, so targets \
         chosen at random (mode one, fixed, percentages) may differ; set spec.seed to fix them",
    );
    let planned = blocking(move || {
        let protect = havoc_engine::resolve::Protection::for_this_process(&[]);
        havoc_engine::plan(&exp, seed, &protect)
            .map(|p| p.describe())
            .map_err(|e| havoc_engine::error_chain(&e))
    })
    .await;
    match planned {
        Ok(Ok(text)) => Json(json!({
            "valid": true, "root": root, "note": note, "seed": seed, "seedNote": seed_note, "plan": text,
        })),
        Ok(Err(e)) => Json(json!({
            "valid": true, "root": root, "note": note, "seed": seed, "seedNote": seed_note, "planError": e,
        })),
        Err(resp) => return resp,
    }
    .into_response()
}

async fn start_run(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let exp = match parse(&body) {
        Ok(e) => e,
        Err(problems) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "valid": false, "errors": problems })),
            )
                .into_response()
        }
    };
    if !is_root() {
        return error(
            StatusCode::FORBIDDEN,
            "the dashboard is not running as root, and havoc run needs root: restart it with sudo",
        );
    }
    // The run reads the file, not these bytes: they were checked to be UTF-8 above.
    let yaml = String::from_utf8_lossy(&body).into_owned();
    match app
        .jobs
        .start(&app.havoc_exe, &app.state_dir, &yaml, &exp.metadata.name)
    {
        Ok(job) => (StatusCode::CREATED, Json(json!({ "job": job }))).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, runs::error_chain(&e)),
    }
}

async fn halt_one(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    let state = app.state_dir.clone();
    let jobs = app.jobs.clone();
    match blocking(move || jobs::halt(&jobs, &state, &id)).await {
        Ok(Ok(pid)) => Json(json!({ "halted": [pid] })).into_response(),
        Ok(Err(e @ jobs::JobError::NotFound(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, runs::error_chain(&e)),
        Err(resp) => resp,
    }
}

async fn halt_all(State(app): State<Arc<App>>) -> Response {
    let state = app.state_dir.clone();
    let jobs = app.jobs.clone();
    match blocking(move || jobs::halt_all(&jobs, &state)).await {
        Ok((halted, errors)) => Json(json!({ "halted": halted, "errors": errors })).into_response(),
        Err(resp) => resp,
    }
}

fn snapshot(app: &App) -> serde_json::Value {
    let (active, broken) = jobs::active(&app.state_dir);
    json!({
        "active": active,
        "jobs": app.jobs.snapshot(&app.state_dir),
        "unreadable": broken,
    })
}

async fn active(State(app): State<Arc<App>>) -> Response {
    match blocking(move || snapshot(&app)).await {
        Ok(v) => Json(v).into_response(),
        Err(resp) => resp,
    }
}

/// The live stream of one run, whole (with every sample it holds), while it exists: a run's
/// stream is removed once its report is written.
async fn live_one(State(app): State<Arc<App>>, UrlPath(run_id): UrlPath<String>) -> Response {
    if !runs::valid_key(&run_id) {
        return error(StatusCode::NOT_FOUND, format!("no live run {run_id:?}"));
    }
    let state = app.state_dir.clone();
    let id = run_id.clone();
    match blocking(move || live::read(&state, &id)).await {
        Ok(Ok(Some(run))) => {
            let alive = run.owner_alive();
            let mut v = serde_json::to_value(run).unwrap_or_default();
            v["ownerAlive"] = alive.into();
            Json(v).into_response()
        }
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("no live stream of run {run_id:?} (it ended, or never wrote one)"),
        ),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the live stream of {run_id:?}: {e}"),
        ),
        Err(resp) => resp,
    }
}

/// How often the journals, live streams and report directories are looked at for the live view.
const POLL: Duration = Duration::from_millis(250);

/// What one event stream has sent: where it is in each live stream.
#[derive(Default)]
struct Follow {
    tails: live::Tails,
    /// (run id, probe) -> samples sent.
    sent: std::collections::BTreeMap<(String, String), usize>,
    last_state: Option<String>,
}

impl Follow {
    /// One look at the state directory: the `samples` events for what was appended to each
    /// probe since the last look, then a `state` event if the state changed.
    fn poll(&mut self, app: &App) -> Vec<(&'static str, String)> {
        let (active, broken) = jobs::active_with(&app.state_dir, &mut self.tails, false);
        let mut out = Vec::new();
        let mut live_probes = std::collections::BTreeSet::new();
        for run in &active {
            let Some(l) = self.tails.get(&run.run_id) else {
                continue;
            };
            for p in &l.probe_samples {
                let key = (run.run_id.clone(), p.name.clone());
                let sent = self.sent.get(&key).copied().unwrap_or(0);
                if p.samples.len() > sent {
                    out.push((
                        "samples",
                        json!({
                            "runId": run.run_id, "probe": p.name, "from": sent,
                            "samples": &p.samples[sent..],
                        })
                        .to_string(),
                    ));
                }
                self.sent.insert(key.clone(), p.samples.len());
                live_probes.insert(key);
            }
        }
        self.sent.retain(|k, _| live_probes.contains(k));
        let state = json!({
            "active": active,
            "jobs": app.jobs.snapshot(&app.state_dir),
            "unreadable": broken,
        })
        .to_string();
        if self.last_state.as_deref() != Some(state.as_str()) {
            self.last_state = Some(state.clone());
            out.push(("state", state));
        }
        out
    }
}

/// Server-sent events, polled every 250 ms: at once and whenever it changes, a `state` event
/// (the body of `/api/active`, without the probe samples: each probe's `sampleCount` says how
/// many there are); before it, for each probe with new samples, a `samples` event
/// `{runId, probe, from, samples}` (`from`: how many this connection was sent before).
async fn events(State(app): State<Arc<App>>) -> impl IntoResponse {
    use futures::StreamExt as _;
    let stream = futures::stream::unfold(
        (app, Follow::default(), true),
        |(app, follow, first)| async move {
            if !first {
                tokio::time::sleep(POLL).await;
            }
            let a = app.clone();
            let (follow, events) = tokio::task::spawn_blocking(move || {
                let mut follow = follow;
                let events = follow.poll(&a);
                (follow, events)
            })
            .await
            .unwrap_or_else(|e| {
                let err = json!({ "error": e.to_string() }).to_string();
                (Follow::default(), vec![("state", err)])
            });
            let events: Vec<Result<Event, std::convert::Infallible>> = events
                .into_iter()
                .map(|(name, data)| Ok(Event::default().event(name).data(data)))
                .collect();
            Some((futures::stream::iter(events), (app, follow, false)))
        },
    )
    .flat_map(|events| events);
    Sse::new(stream).keep_alive(KeepAlive::default())
}
