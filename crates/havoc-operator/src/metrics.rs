//! Prometheus metrics of the operator and the HTTP endpoint that serves them.
//!
//! Only `/metrics` and `/healthz` are served: nothing that injects is reachable over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The operator's metrics; cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    experiments: Family<Labels, Gauge>,
    injection_latency: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `havoc_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("havoc_operator");
        let reconciles = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let experiments = Family::<Labels, Gauge>::default();
        let injection_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconciles",
            "Reconciles by kind and result (ok, error)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind",
            errors.clone(),
        );
        registry.register(
            "experiments",
            "Chaos objects by kind and phase",
            experiments.clone(),
        );
        registry.register(
            "injection_latency_seconds",
            "Time from the decision to inject to the injection being held",
            injection_latency.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            errors,
            experiments,
            injection_latency,
        }
    }

    /// Counts one reconcile of `kind`; `ok = false` also counts an error.
    pub fn reconciled(&self, kind: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&labels(&[("kind", kind), ("result", result)]))
            .inc();
        if !ok {
            self.errors.get_or_create(&labels(&[("kind", kind)])).inc();
        }
    }

    /// Moves one experiment of `kind` from phase `from` (if any) to `to` (if any).
    pub fn phase_changed(&self, kind: &str, from: Option<&str>, to: Option<&str>) {
        if from == to {
            return;
        }
        if let Some(f) = from {
            self.experiments
                .get_or_create(&labels(&[("kind", kind), ("phase", f)]))
                .dec();
        }
        if let Some(t) = to {
            self.experiments
                .get_or_create(&labels(&[("kind", kind), ("phase", t)]))
                .inc();
        }
    }

    /// Records how long one injection took.
    pub fn injected(&self, took: Duration) {
        self.injection_latency.observe(took.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }
}

/// The HTTP router: `/metrics` and `/healthz`.
pub fn router(metrics: Metrics) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves [`router`] on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_with_labels() {
        let m = Metrics::new();
        m.reconciled("PodChaos", true);
        m.reconciled("PodChaos", false);
        m.phase_changed("PodChaos", None, Some("Running"));
        m.phase_changed("PodChaos", Some("Running"), Some("Finished"));
        m.injected(Duration::from_millis(3));
        let s = m.render();
        assert!(
            s.contains(r#"havoc_operator_reconciles_total{kind="PodChaos",result="ok"} 1"#),
            "{s}"
        );
        assert!(
            s.contains(r#"havoc_operator_reconcile_errors_total{kind="PodChaos"} 1"#),
            "{s}"
        );
        assert!(
            s.contains(r#"havoc_operator_experiments{kind="PodChaos",phase="Running"} 0"#),
            "{s}"
        );
        assert!(
            s.contains(r#"havoc_operator_experiments{kind="PodChaos",phase="Finished"} 1"#),
            "{s}"
        );
        assert!(
            s.contains("havoc_operator_injection_latency_seconds_count 1"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn http_serves_metrics_and_health_and_nothing_else() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let m = Metrics::new();
        m.reconciled("NetworkChaos", true);
        let server = tokio::spawn(async move { axum::serve(listener, router(m)).await });
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
            let mut out = String::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
                .await
                .expect("response in time")
                .expect("read");
            out
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("havoc_operator_reconciles_total"));
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/inject").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
