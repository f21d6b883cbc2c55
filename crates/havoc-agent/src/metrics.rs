//! The agent's Prometheus metrics and the read-only HTTP listener that serves them.
//!
//! The listener is plain HTTP on purpose (scrapers rarely hold client certificates) and serves
//! only `/metrics` and `/healthz`: nothing on it can inject or reveal a fault's spec.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `havoc_injections_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InjectionLabels {
    pub kind: String,
    /// `inject`, `recover`, `expire`.
    pub action: String,
    /// `ok`, `existing`, `error`.
    pub result: String,
}

/// `havoc_injections_active` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// `havoc_injection_effect` labels: one measured number of one live injection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EffectLabels {
    pub injection_id: String,
    pub kind: String,
    /// e.g. `packets_seen`, `packets_dropped`, `cpu_seconds`.
    pub metric: String,
}

/// `havoc_request_duration_seconds` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the agent.
pub struct Metrics {
    registry: Registry,
    pub injections: Family<InjectionLabels, Counter>,
    pub active: Family<KindLabels, Gauge>,
    pub lease_expirations: Counter,
    pub effects: Family<EffectLabels, Gauge<f64, AtomicU64>>,
    pub latency: HistogramFamily,
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
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let injections = Family::<InjectionLabels, Counter>::default();
        registry.register(
            "havoc_injections",
            "Inject, recover and lease-expiry operations by fault kind and result",
            injections.clone(),
        );
        let active = Family::<KindLabels, Gauge>::default();
        registry.register(
            "havoc_injections_active",
            "Injections the agent holds now",
            active.clone(),
        );
        let lease_expirations = Counter::default();
        registry.register(
            "havoc_lease_expirations",
            "Injections the agent recovered itself because their lease was not renewed",
            lease_expirations.clone(),
        );
        let effects = Family::<EffectLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "havoc_injection_effect",
            "Measured effect of each live injection (e.g. the eBPF rule counters packets_seen, packets_dropped)",
            effects.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "havoc_request_duration_seconds",
            "gRPC request latency by method",
            latency.clone(),
        );
        Metrics {
            registry,
            injections,
            active,
            lease_expirations,
            effects,
            latency,
        }
    }

    /// Counts one operation.
    pub fn count(&self, kind: &str, action: &str, result: &str) {
        self.injections
            .get_or_create(&InjectionLabels {
                kind: kind.into(),
                action: action.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Records the latency of one request.
    pub fn observe(&self, method: &str, seconds: f64) {
        self.latency
            .get_or_create(&MethodLabels {
                method: method.into(),
            })
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(m): axum::extract::State<Arc<Metrics>>| async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
