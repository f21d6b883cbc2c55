//! The checks a probe can run, behind one trait: each takes one sample, bounded by its timeout.
//!
//! Checks are synchronous and run on their probe's own thread (see [`crate::set`]); a check never
//! runs longer than its timeout, and a command check also stops when the probe set stops.

use std::sync::atomic::AtomicBool;

use crate::spec::{CheckSpec, ProbeSpec};
use crate::ProbeError;

mod cmd;
mod http;
mod prometheus;
mod tcp;

pub use self::cmd::CmdProbe;
pub use self::http::HttpProbe;
pub use self::prometheus::{parse_query_response, PrometheusProbe};
pub use self::tcp::TcpProbe;

/// What one sample found (the caller measures its latency).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub value: Option<f64>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn pass(value: Option<f64>) -> Self {
        Outcome {
            ok: true,
            value,
            error: None,
        }
    }

    pub fn fail(error: impl Into<String>) -> Self {
        Outcome {
            ok: false,
            value: None,
            error: Some(error.into()),
        }
    }

    pub fn fail_with(value: Option<f64>, error: impl Into<String>) -> Self {
        Outcome {
            ok: false,
            value,
            error: Some(error.into()),
        }
    }
}

/// One kind of steady-state check.
pub trait Check: Send {
    /// Takes one sample. `stop` is set when the probe set is stopping: a check that can be
    /// interrupted (a command) should give up early.
    fn sample(&mut self, stop: &AtomicBool) -> Outcome;
}

/// Builds the check of a (validated) probe.
pub fn build(probe: &ProbeSpec) -> Result<Box<dyn Check>, ProbeError> {
    let regex = |re: &Option<String>| -> Result<Option<regex::Regex>, ProbeError> {
        re.as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|source| ProbeError::Regex {
                probe: probe.name.clone(),
                source,
            })
    };
    let check = build_check(probe, regex)?;
    Ok(match &probe.netns {
        Some(ns) => Box::new(InNetns {
            ns: netns_ref(ns),
            inner: check,
        }),
        None => check,
    })
}

fn netns_ref(ns: &str) -> havoc_sys::netns::NetNs {
    if ns.starts_with('/') {
        havoc_sys::netns::NetNs::from_path(ns)
    } else {
        havoc_sys::netns::NetNs::named(ns)
    }
}

/// Runs another check from inside a network namespace (a fresh thread enters it per sample).
struct InNetns {
    ns: havoc_sys::netns::NetNs,
    inner: Box<dyn Check>,
}

impl Check for InNetns {
    fn sample(&mut self, stop: &AtomicBool) -> Outcome {
        let inner = &mut self.inner;
        match self.ns.run(|| inner.sample(stop)) {
            Ok(o) => o,
            Err(e) => Outcome::fail(format!(
                "cannot probe from network namespace {}: {e}",
                self.ns.path().display()
            )),
        }
    }
}

fn build_check(
    probe: &ProbeSpec,
    regex: impl Fn(&Option<String>) -> Result<Option<regex::Regex>, ProbeError>,
) -> Result<Box<dyn Check>, ProbeError> {
    Ok(match probe.check() {
        Some(CheckSpec::Http(h)) => Box::new(HttpProbe::new(h, regex(&h.body_matches)?)),
        Some(CheckSpec::Tcp(t)) => Box::new(TcpProbe::new(t)),
        Some(CheckSpec::Cmd(c)) => Box::new(CmdProbe::new(c, regex(&c.expect.stdout_matches)?)),
        Some(CheckSpec::Prometheus(p)) => Box::new(PrometheusProbe::new(p)),
        None => {
            return Err(ProbeError::NoCheck {
                probe: probe.name.clone(),
            })
        }
    })
}

/// The first line of `text`, at most `max` characters, for error messages.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let line = text.trim().lines().next().unwrap_or_default();
    if line.chars().count() > max {
        format!("{}...", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}
