//! `havoc-probe`: steady-state probes for experiments.
//!
//! An experiment's `spec.steadyState` lists probes (HTTP, TCP connect, a command, a Prometheus
//! query), each sampled on its own thread at its interval while the experiment moves through its
//! phases: [`Phase::Baseline`] (before faults), [`Phase::Chaos`], [`Phase::Recovery`]. Each sample
//! is kept; at the end each probe gets a verdict per phase against its tolerance. Probes named in
//! `spec.abort.when` are watched sample by sample and a breach calls back at once, so the engine
//! can recover every fault within `abort.within`.
//!
//! - [`spec`]: the YAML types and their validation (pure; no I/O).
//! - [`tolerance`]: verdicts and the breach rule (pure).
//! - [`check`]: the checks, behind the [`check::Check`] trait.
//! - [`set`]: [`ProbeSet`], the threads, phases, `wait_steady` and the results.

pub mod check;
pub mod set;
/// The probe spec types live in `havoc-spec` (pure data, shared by every entry point).
pub use havoc_spec::probe as spec;
pub mod tolerance;

pub use set::{
    Breach, BreachCallback, PhaseSpan, ProbeResults, ProbeSeries, ProbeSet, Steadiness, Verdict,
};
pub use spec::{
    validate, Abort, CheckSpec, Comparison, Phase, ProbeMode, ProbeSpec, SteadyState, Tolerance,
};
pub use tolerance::Sample;

/// Why a probe set could not start. Specs that passed validation only fail to start when the
/// system refuses a thread.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe `{probe}` has no check: give exactly one of http, tcp, cmd, prometheus")]
    NoCheck { probe: String },
    #[error("probe `{probe}` has an invalid regular expression")]
    Regex {
        probe: String,
        #[source]
        source: regex::Error,
    },
    #[error("abort.when names `{name}`, which is not a probe of steadyState")]
    UnknownAbortProbe { name: String },
    #[error("failed to start the thread of probe `{probe}`")]
    Spawn {
        probe: String,
        #[source]
        source: std::io::Error,
    },
}
