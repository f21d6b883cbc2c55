//! `HTTPChaos`: abort, delay, replace or patch HTTP requests to a server, or its responses, by
//! transparent interception in the server's network namespace.
//!
//! Injecting starts an interceptor ([`proxy`]) on a thread whose tokio runtime lives in the
//! target's network namespace, listening on an ephemeral port there ([`crate::redirect`], shared
//! with DNSChaos's TCP path), then adds an nftables table
//! with `flags owner` ([`havoc_sys::nft::OwnedTable`]) that redirects TCP to the server's `port`
//! (from other namespaces at prerouting, from local clients at output) to the interceptor,
//! except connections carrying [`MARK`]: the interceptor's own connections to the server.
//!
//! Fail-open: the table belongs to an `nft -i` session whose stdin is a pipe from this process.
//! When Havoc dies (even by SIGKILL) the pipe closes, `nft` exits and the kernel deletes the
//! table at once, so new connections reach the server directly; no redirect is ever left pointing
//! at a port nobody listens on. Connections open through the interceptor at that moment end.
//! The `nft` helper is also journaled ([`UndoAction::KillHelper`]) for the watchdog.
//!
//! Limits: IPv4 only (IPv6 connections pass unfaulted); two HTTPChaos on the same namespace and
//! port do not stack (the first redirect wins). With `tls` ([`tls`]) the interceptor terminates
//! TLS with the given certificate and talks TLS to the server.

pub mod proxy;
pub mod rules;
pub mod tls;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use havoc_sys::nft::OwnedTable;

use crate::redirect::{redirect_table, NetnsServer, Traffic};

use crate::{Context, Effect, Fault, FaultError, Injection, Target, UndoAction};

/// The socket mark of the interceptors' own connections to servers; redirect rules skip it.
pub use crate::redirect::MARK;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub struct HttpFault {
    spec: havoc_spec::http::HTTPChaos,
}

impl HttpFault {
    pub fn new(spec: havoc_spec::http::HTTPChaos) -> Self {
        HttpFault { spec }
    }

    fn netns_of(&self, target: &Target) -> Result<PathBuf, FaultError> {
        match target {
            Target::Netns { path, .. } => {
                if !path.exists() {
                    return Err(FaultError::TargetGone {
                        target: target.label(),
                    });
                }
                Ok(path.clone())
            }
            Target::Process { .. } => {
                let (pid, _) = target.live_process("HTTPChaos")?;
                Ok(crate::procinfo::netns_path(pid))
            }
        }
    }
}

impl Fault for HttpFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        self.netns_of(target)?;
        if let Some(t) = &self.spec.tls {
            tls::Tls::load(t).map_err(|e| FaultError::Refused {
                target: target.label(),
                reason: format!("tls: {e}: {}", error_chain(&e)),
            })?;
        }
        Ok(())
    }

    fn undo_plan(&self, _target: &Target) -> Vec<UndoAction> {
        // The redirect is kernel-owned (an owner table); the nft helper is journaled once known.
        Vec::new()
    }

    fn inject(&self, target: &Target, ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        self.check(target)?;
        let netns = self.netns_of(target)?;
        let label = target.label();
        let tls = match &self.spec.tls {
            Some(t) => Some(Arc::new(tls::Tls::load(t).map_err(|e| {
                FaultError::Other(format!("tls for {label}: {e}: {}", error_chain(&e)))
            })?)),
            None => None,
        };
        let shared = Arc::new(proxy::Shared {
            rule: rules::Rule::new(self.spec.clone(), ctx.seed),
            tls,
            stats: proxy::Stats::default(),
            mark: MARK,
        });
        let serve_shared = shared.clone();
        let interceptor = NetnsServer::start(&netns, "havoc-http", move |listener, stop| {
            proxy::serve(listener, serve_shared, stop)
        })
        .map_err(|e| FaultError::Io {
            action: "start the HTTP interceptor in".into(),
            target: label.clone(),
            source: e,
        })?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("havoc_http_{}_{id}", std::process::id());
        let (port, to) = (self.spec.port, interceptor.port());
        let table =
            redirect_table(&netns, &name, port, Traffic::ToLocalServer, to).map_err(|e| {
                FaultError::Other(format!("failed to add the HTTP redirect in {label}: {e}"))
            })?;
        let helper =
            crate::procinfo::ProcInfo::read(table.pid() as i32).map(|p| UndoAction::KillHelper {
                pid: p.pid,
                start_time: p.start_time,
            });
        Ok(Box::new(HttpInjection {
            requested: self.spec.summary(),
            target: label,
            table: Some(table),
            interceptor: Some(interceptor),
            shared,
            since: Instant::now(),
            until: None,
            helper,
        }))
    }

    fn requested(&self) -> String {
        self.spec.summary()
    }
}

/// The causes of `e`, for a message that must stand alone.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    if out.is_empty() {
        "no further cause".into()
    } else {
        out.join(": ")
    }
}

struct HttpInjection {
    requested: String,
    target: String,
    table: Option<OwnedTable>,
    interceptor: Option<NetnsServer>,
    shared: Arc<proxy::Shared>,
    since: Instant,
    until: Option<Instant>,
    helper: Option<UndoAction>,
}

impl Injection for HttpInjection {
    fn late_undo(&self) -> Vec<UndoAction> {
        self.helper.iter().cloned().collect()
    }

    fn in_effect_since(&self) -> Option<Instant> {
        Some(self.since)
    }

    fn in_effect_until(&self) -> Option<Instant> {
        self.until
    }

    fn tick(&mut self) -> Result<(), FaultError> {
        // The redirect lives only as long as its nft session: if that died, the fault is off.
        if self.until.is_none() {
            if let Some(t) = self.table.as_mut() {
                if t.list().is_err() {
                    self.until = Some(Instant::now());
                    return Err(FaultError::Other(format!(
                        "the HTTP redirect in {} is gone (its nft session ended)",
                        self.target
                    )));
                }
            }
        }
        Ok(())
    }

    fn effect(&self) -> Effect {
        let s = &self.shared.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (seen, matched, hit) = (g(&s.seen), g(&s.matched), g(&s.hit));
        let (aborted, delayed) = (g(&s.aborted), g(&s.delayed));
        let delay_mean_ms = if delayed > 0 {
            g(&s.delay_ns) as f64 / delayed as f64 / 1e6
        } else {
            0.0
        };
        let mut samples = s.overhead_ns.lock().expect("stats lock").clone();
        let mean_us = if samples.is_empty() {
            0.0
        } else {
            samples.iter().sum::<u64>() as f64 / samples.len() as f64 / 1e3
        };
        let p50_us = proxy::percentile(&mut samples, 50.0).unwrap_or(0) as f64 / 1e3;
        // The latency the interceptor adds end to end (sockets, parsing) is measured by the
        // http_proxy benchmark against the direct path: a proxy cannot observe it from inside.
        let share = if matched > 0 {
            100.0 * hit as f64 / matched as f64
        } else {
            0.0
        };
        let summary = format!(
            "{}: {seen} request(s) seen, {matched} matching, {hit} hit ({share:.2}% of matching, {}% requested): {aborted} aborted, {delayed} delayed (mean {delay_mean_ms:.1} ms), {} replaced, {} patched; interceptor's own time per unfaulted exchange (matching and forwarding, excluding the server and the sockets): mean {mean_us:.1} µs, p50 {p50_us:.1} µs; {} upstream error(s)",
            self.requested,
            self.shared.rule.spec.percent,
            g(&s.replaced),
            g(&s.patched),
            g(&s.upstream_errors),
        );
        Effect {
            summary,
            ..Default::default()
        }
        .metric("http_connections", g(&s.connections) as f64)
        .metric("http_requests_seen", seen as f64)
        .metric("http_requests_matched", matched as f64)
        .metric("http_requests_hit", hit as f64)
        .metric("http_aborted", aborted as f64)
        .metric("http_delayed", delayed as f64)
        .metric("http_delay_mean_ms", delay_mean_ms)
        .metric("http_replaced", g(&s.replaced) as f64)
        .metric("http_patched", g(&s.patched) as f64)
        .metric("http_upstream_errors", g(&s.upstream_errors) as f64)
        .metric("http_proxy_overhead_mean_us", mean_us)
        .metric("http_proxy_overhead_p50_us", p50_us)
    }

    fn recover(&mut self) -> Result<(), FaultError> {
        // The redirect first: new connections go straight to the server from here on.
        if let Some(t) = self.table.take() {
            let r = t.close();
            self.until.get_or_insert_with(Instant::now);
            r.map_err(|e| {
                FaultError::Other(format!(
                    "failed to remove the HTTP redirect in {}: {e}",
                    self.target
                ))
            })?;
        }
        if let Some(mut i) = self.interceptor.take() {
            i.stop();
        }
        Ok(())
    }
}

impl Drop for HttpInjection {
    fn drop(&mut self) {
        let _ = self.recover();
    }
}
