//! The `spec.steadyState` and `spec.abort` sections of an experiment: types, defaults, validation.
//!
//! Pure data and pure functions (no I/O), written against `havoc-spec`'s public items only, so this
//! module can live in `havoc-spec` unchanged apart from its `use` lines.
//!
//! ```yaml
//! steadyState:
//!   baseline: 5s          # probes only, before faults (default 0s)
//!   recovery: 10s         # max time after faults to become steady again (default 5s)
//!   probes:
//!     - name: api-ok
//!       http: { url: http://10.99.0.2:8080/health, timeout: 1s, expectStatus: [200] }
//!       interval: 200ms
//!       tolerance: { successRatio: ">= 0.99", latencyP99: "<= 250ms" }
//!       mode: continuous
//! abort:
//!   when: [api-ok]
//!   within: 1s
//! ```
//!
//! Comparisons are strings: an operator (`>=`, `<=`, `>`, `<`, `==`) and a number or a duration.
//! Quote them in YAML: a plain scalar starting with `>` is a YAML folded block.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::units::HumanDuration;

/// The phase of an experiment a sample was taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Before any fault is injected (`steadyState.baseline`).
    Baseline,
    /// From the first injection until every fault is recovered.
    Chaos,
    /// After every fault is recovered, while waiting for the steady state (`steadyState.recovery`).
    Recovery,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Baseline, Phase::Chaos, Phase::Recovery];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline",
            Phase::Chaos => "chaos",
            Phase::Recovery => "recovery",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a probe runs (Litmus: SOT, OnChaos, EOT, Continuous).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    /// Only in the baseline phase, before faults (needs `steadyState.baseline` > 0).
    Before,
    /// Only while faults are active.
    During,
    /// Only in the recovery phase, after faults are removed.
    After,
    /// In every phase (the default).
    #[default]
    Continuous,
}

impl ProbeMode {
    /// Whether a probe with this mode samples in `phase`.
    pub fn active_in(self, phase: Phase) -> bool {
        matches!(
            (self, phase),
            (ProbeMode::Continuous, _)
                | (ProbeMode::Before, Phase::Baseline)
                | (ProbeMode::During, Phase::Chaos)
                | (ProbeMode::After, Phase::Recovery)
        )
    }
}

/// `spec.steadyState`: what "healthy" means, checked before, during and after the faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SteadyState {
    /// How long probes run alone before the first fault is injected. Default `0s` (no baseline).
    #[serde(default)]
    pub baseline: HumanDuration,
    /// The longest wait, after every fault is recovered, for every probe to pass again.
    /// Default `5s`; must be greater than 0.
    #[serde(default = "default_recovery")]
    pub recovery: HumanDuration,
    /// At least one probe.
    pub probes: Vec<ProbeSpec>,
}

fn default_recovery() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// One probe: a check (exactly one of `http`, `tcp`, `cmd`, `prometheus`), how often, and what
/// counts as passing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Unique among the probes; `abort.when` refers to it.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<CmdCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusCheck>,
    /// Time between the starts of two samples. Default `1s`, at least `10ms`. A check that takes
    /// longer than the interval delays the next sample (samples never overlap).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// What must hold over each phase's samples. Default: every sample succeeds.
    #[serde(default)]
    pub tolerance: Tolerance,
    /// In which phases the probe runs. Default `continuous`.
    #[serde(default)]
    pub mode: ProbeMode,
    /// Run the check from inside this network namespace (a name from `ip netns`, or a path such
    /// as `/proc/PID/ns/net`): probe a service from its clients' point of view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// The one check of a probe, borrowed from its spec.
#[derive(Debug, Clone, Copy)]
pub enum CheckSpec<'a> {
    Http(&'a HttpCheck),
    Tcp(&'a TcpCheck),
    Cmd(&'a CmdCheck),
    Prometheus(&'a PrometheusCheck),
}

impl CheckSpec<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            CheckSpec::Http(_) => "http",
            CheckSpec::Tcp(_) => "tcp",
            CheckSpec::Cmd(_) => "cmd",
            CheckSpec::Prometheus(_) => "prometheus",
        }
    }
}

impl ProbeSpec {
    /// The probe's check, if exactly one is given (validation reports the other cases).
    pub fn check(&self) -> Option<CheckSpec<'_>> {
        let all = self.checks();
        match all.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    fn checks(&self) -> Vec<CheckSpec<'_>> {
        let mut v = Vec::new();
        if let Some(c) = &self.http {
            v.push(CheckSpec::Http(c));
        }
        if let Some(c) = &self.tcp {
            v.push(CheckSpec::Tcp(c));
        }
        if let Some(c) = &self.cmd {
            v.push(CheckSpec::Cmd(c));
        }
        if let Some(c) = &self.prometheus {
            v.push(CheckSpec::Prometheus(c));
        }
        v
    }
}

/// An HTTP request (plain `http://` only: Havoc's probes are built without TLS).
///
/// A sample succeeds when the response status is in `expectStatus` (default: any 2xx) and, if
/// `bodyMatches` is given, the first 64 KiB of the body match it. Redirects are not followed, no
/// proxy is used (whatever `HTTP_PROXY` says), and every sample opens a new connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCheck {
    /// `http://host[:port][/path][?query]`.
    pub url: String,
    /// Default `GET`.
    #[serde(default)]
    pub method: HttpMethod,
    /// For the whole request, connect to last body byte. Default `1s`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Accepted status codes. Default: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request body (for POST, PUT, PATCH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A regular expression the response body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_matches: Option<String>,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Options => "OPTIONS",
        }
    }
}

/// A TCP connect: the sample succeeds when the connection is established within `timeout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpCheck {
    /// `host:port`, `1.2.3.4:80` or `[::1]:80`; a host name is resolved at every sample.
    pub address: String,
    /// Default `1s`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// A command, run directly from `argv` (never through a shell). Its stdout is read up to 64 KiB.
///
/// A sample succeeds when the command exits with `expect.exitCode` (default 0) within `timeout`,
/// its stdout (trailing whitespace removed) matches `expect.stdoutMatches` if given, and the
/// number it prints satisfies `expect.value` if given. On timeout the command and everything in
/// its process group are killed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CmdCheck {
    /// Program and arguments; the program is looked up in `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// Default `5s`.
    #[serde(default = "default_cmd_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub expect: CmdExpect,
}

fn default_cmd_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CmdExpect {
    /// Default 0.
    #[serde(default)]
    pub exit_code: i32,
    /// A regular expression stdout (trailing whitespace removed) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_matches: Option<String>,
    /// stdout, trimmed, read as a number, must satisfy this, e.g. `"<= 1000"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Comparison>,
}

/// A PromQL instant query (`GET <url>/api/v1/query?query=...`).
///
/// The sample succeeds when the result is a non-empty vector (or a scalar) and every value
/// satisfies `value`; the value recorded is the one furthest on the wrong side (the largest for
/// `<=`/`<`, the smallest for `>=`/`>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusCheck {
    /// The server's base URL, `http://host:9090` (plain http only).
    pub url: String,
    pub query: String,
    /// E.g. `"<= 5"`.
    pub value: Comparison,
    /// Default `1s`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// What must hold over a phase's samples for the probe to pass in that phase.
///
/// Latency percentiles are nearest-rank over all samples of the phase, failed ones included (a
/// timeout is as slow as its timeout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tolerance {
    /// Fraction of samples that succeed: `>=`, `>` or `== 1` with a number in 0..=1.
    /// Default `"== 1"`: every sample succeeds.
    #[serde(default = "default_success_ratio")]
    pub success_ratio: Comparison,
    /// Upper bound on the median latency: `"<= 100ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50: Option<Comparison>,
    /// Upper bound on the 99th percentile latency: `"<= 250ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<Comparison>,
}

fn default_success_ratio() -> Comparison {
    Comparison {
        op: CmpOp::Eq,
        threshold: Threshold::Number(1.0),
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            success_ratio: default_success_ratio(),
            latency_p50: None,
            latency_p99: None,
        }
    }
}

/// `spec.abort`: stop the experiment early when a probe breaches.
///
/// A probe named in `when` *breaches* when, over its recent samples in the current phase, the
/// failures already exceed what its tolerance allows (see `havoc_probe::tolerance::BreachRule`):
/// - with the default tolerance (`successRatio: "== 1"`) the first failed sample breaches;
/// - otherwise the window is long enough for the tolerance to allow at least one bad sample
///   (at least 10 samples, 100 for `>= 0.99`), so one slow or failed sample never breaches,
///   while `min(allowed + 1, 3)` consecutive failures always do (an outage is seen within about
///   three intervals at most).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Abort {
    /// Names of probes whose breach aborts the run.
    pub when: Vec<String>,
    /// Every fault must be recovered within this long after the breach is seen. Default `1s`.
    #[serde(default = "default_within")]
    pub within: HumanDuration,
}

fn default_within() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Ge,
    Le,
    Gt,
    Lt,
    Eq,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Ge => ">=",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Lt => "<",
            CmpOp::Eq => "==",
        }
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Number(f64),
    Duration(Duration),
}

impl Threshold {
    /// The threshold as a number; a duration in milliseconds (latencies are in milliseconds).
    pub fn as_f64(self) -> f64 {
        match self {
            Threshold::Number(n) => n,
            Threshold::Duration(d) => d.as_secs_f64() * 1000.0,
        }
    }
}

/// `">= 0.99"`, `"<= 250ms"`, `"== 1"`: an operator and a number or a duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub op: CmpOp,
    pub threshold: Threshold,
}

impl Comparison {
    /// Whether `x` satisfies the comparison; a duration threshold compares in milliseconds.
    /// NaN satisfies nothing.
    pub fn holds(&self, x: f64) -> bool {
        let t = self.threshold.as_f64();
        match self.op {
            CmpOp::Ge => x >= t,
            CmpOp::Le => x <= t,
            CmpOp::Gt => x > t,
            CmpOp::Lt => x < t,
            CmpOp::Eq => (x - t).abs() <= 1e-9 * t.abs().max(1.0),
        }
    }

    /// Of several values, the one furthest on the wrong side: the largest for `<=`/`<`, the
    /// smallest for `>=`/`>`, the first failing one for `==` (NaN first of all).
    pub fn worst(&self, values: &[f64]) -> Option<f64> {
        if let Some(nan) = values.iter().find(|v| v.is_nan()) {
            return Some(*nan);
        }
        let it = values.iter().copied();
        match self.op {
            CmpOp::Le | CmpOp::Lt => it.reduce(f64::max),
            CmpOp::Ge | CmpOp::Gt => it.reduce(f64::min),
            CmpOp::Eq => values
                .iter()
                .copied()
                .find(|v| !self.holds(*v))
                .or_else(|| values.first().copied()),
        }
    }

    fn is_upper_bound(&self) -> bool {
        matches!(self.op, CmpOp::Le | CmpOp::Lt)
    }
}

impl FromStr for Comparison {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let q = crate::units::clip(t);
        let ops = [
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("==", CmpOp::Eq),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ];
        let Some((op, rest)) = ops
            .iter()
            .find_map(|(text, op)| t.strip_prefix(text).map(|rest| (*op, rest.trim())))
        else {
            return Err(format!(
                "`{q}` has no comparison operator: write e.g. `>= 0.99` or `<= 250ms` (operators: >=, <=, >, <, ==)"
            ));
        };
        if rest.is_empty() {
            return Err(format!(
                "`{q}` has no value after `{}`: write e.g. `{} 0.99` or `{} 250ms`",
                op.as_str(),
                op.as_str(),
                op.as_str()
            ));
        }
        if let Ok(n) = rest.parse::<f64>() {
            if !n.is_finite() {
                return Err(format!(
                    "`{}` is not a finite number",
                    crate::units::clip(rest)
                ));
            }
            return Ok(Comparison {
                op,
                threshold: Threshold::Number(n),
            });
        }
        match rest.parse::<HumanDuration>() {
            Ok(d) => Ok(Comparison {
                op,
                threshold: Threshold::Duration(d.0),
            }),
            Err(_) => Err(format!(
                "expected a number or a duration after `{}`, got `{}` (e.g. `{} 0.99`, `{} 250ms`)",
                op.as_str(),
                crate::units::clip(rest),
                op.as_str(),
                op.as_str()
            )),
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.threshold {
            Threshold::Number(n) => write!(f, "{} {n}", self.op.as_str()),
            Threshold::Duration(d) => write!(f, "{} {}", self.op.as_str(), HumanDuration(d)),
        }
    }
}

impl<'de> Deserialize<'de> for Comparison {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Comparison;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a comparison such as `>= 0.99` or `<= 250ms`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Comparison, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Comparison, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Comparison, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Comparison, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Comparison {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The same rule as fault names: 1..=63 of `a-z 0-9 - . _`, starting with a letter or digit.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_'
        })
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

const MAX_PHASE: Duration = Duration::from_secs(3600);
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

fn check_timeout(t: HumanDuration, path: &FieldPath, p: &mut Problems) {
    if t.0.is_zero() {
        p.add(path, "must be greater than 0, e.g. `1s`");
    } else if t.0 > MAX_TIMEOUT {
        p.add(path, format!("must be at most 10m, got {t}"));
    }
}

fn check_regex(re: &Option<String>, path: &FieldPath, p: &mut Problems) {
    if let Some(re) = re {
        if let Err(e) = regex::Regex::new(re) {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or_default().trim().to_string();
            p.add(
                path,
                format!(
                    "invalid regular expression `{}`: {}",
                    crate::units::clip(re),
                    crate::units::clip(&last)
                ),
            );
        }
    }
}

/// Checks an `http://` URL without resolving anything: scheme, a host, a numeric port.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let t = url.trim();
    let q = crate::units::clip(t);
    if t.chars().any(char::is_whitespace) || t != url {
        return Err(format!("`{q}` contains whitespace"));
    }
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(format!(
            "`{q}`: https is not supported (Havoc's probes are built without TLS): use an http:// URL, or a tcp probe on the port"
        ));
    }
    let Some(rest) = lower.strip_prefix("http://").map(|_| &t[7..]) else {
        return Err(format!(
            "`{q}` is not an http URL: write it like `http://10.0.0.2:8080/health`"
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, after)) => (h, after.strip_prefix(':')),
            None => return Err(format!("`{q}`: unclosed `[` in the host")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, port)) => (h, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "`{q}` has no host: write it like `http://10.0.0.2:8080/health`"
        ));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => {
                return Err(format!(
                    "`{q}`: `{}` is not a port (1..=65535)",
                    crate::units::clip(port)
                ))
            }
        }
    }
    Ok(())
}

/// Checks a `host:port` address without resolving it.
pub fn check_address(addr: &str) -> Result<(), String> {
    let t = addr.trim();
    let q = crate::units::clip(t);
    let hint = "write it as `host:port`, e.g. `10.0.0.2:8080` or `[::1]:8080`";
    if let Ok(sa) = t.parse::<std::net::SocketAddr>() {
        return if sa.port() == 0 {
            Err(format!("port 0 is not a port to connect to: {hint}"))
        } else {
            Ok(())
        };
    }
    let Some((host, port)) = t.rsplit_once(':') else {
        return Err(format!("`{q}` has no port: {hint}"));
    };
    if host.is_empty() || host.contains(':') || host.chars().any(char::is_whitespace) {
        return Err(format!("`{q}` is not a valid address: {hint}"));
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!(
            "`{}` is not a port (1..=65535): {hint}",
            crate::units::clip(port)
        )),
    }
}

fn check_value_comparison(c: &Comparison, path: &FieldPath, p: &mut Problems) {
    if let Threshold::Duration(_) = c.threshold {
        p.add(
            path,
            format!("`{c}` compares with a duration, but this value is a plain number: write e.g. `<= 1000`"),
        );
    }
}

impl SteadyState {
    /// Checks `spec.steadyState`; `path` is that field's path.
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        if self.baseline.0 > MAX_PHASE {
            p.add(
                &path.key("baseline"),
                format!("must be at most 1h, got {}", self.baseline),
            );
        }
        if self.recovery.0.is_zero() {
            p.add(
                &path.key("recovery"),
                "must be greater than 0: how long to wait for the probes to pass again after the faults are removed, e.g. `5s`",
            );
        } else if self.recovery.0 > MAX_PHASE {
            p.add(
                &path.key("recovery"),
                format!("must be at most 1h, got {}", self.recovery),
            );
        }
        let pp = path.key("probes");
        if self.probes.is_empty() {
            p.add(&pp, "must list at least one probe");
        }
        let mut seen = HashSet::new();
        for (i, probe) in self.probes.iter().enumerate() {
            let ip = pp.index(i);
            if !valid_name(&probe.name) {
                p.add(&ip.key("name"), format!("`{}` is not a valid name: use 1..=63 lowercase letters, digits, `-`, `.` or `_`, starting with a letter or digit", crate::units::clip(&probe.name)));
            } else if !seen.insert(probe.name.as_str()) {
                p.add(
                    &ip.key("name"),
                    format!(
                        "`{}` is used by another probe: probe names must be unique",
                        probe.name
                    ),
                );
            }
            probe.validate(&ip, p);
            if probe.mode == ProbeMode::Before && self.baseline.0.is_zero() {
                p.add(&ip.key("mode"), "mode `before` samples only during the baseline, which is 0s: set steadyState.baseline (e.g. `5s`) or use another mode");
            }
        }
    }

    /// The probe called `name`.
    pub fn probe(&self, name: &str) -> Option<&ProbeSpec> {
        self.probes.iter().find(|p| p.name == name)
    }
}

impl ProbeSpec {
    /// Checks one probe; `path` is its path (`spec.steadyState.probes[1]`).
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        if let Some(ns) = &self.netns {
            let ok = if ns.starts_with('/') {
                !ns.split('/').any(|s| s == "..")
            } else {
                !ns.is_empty() && ns.len() <= 255 && !ns.contains('/') && ns != "." && ns != ".."
            };
            if !ok {
                p.add(
                    &path.key("netns"),
                    format!(
                        "`{}` is not a namespace name (as in `ip netns`) or an absolute path",
                        crate::units::clip(ns)
                    ),
                );
            }
        }
        let checks = self.checks();
        match checks.len() {
            0 => p.add(
                path,
                "a probe needs a check: give exactly one of http, tcp, cmd, prometheus",
            ),
            1 => {}
            _ => {
                let names: Vec<&str> = checks.iter().map(CheckSpec::kind).collect();
                p.add(
                    &path.key(checks[1].kind()),
                    format!(
                        "a probe has exactly one check, this one has {}: split it into several probes",
                        names.join(" and ")
                    ),
                );
            }
        }
        for c in &checks {
            let cp = path.key(c.kind());
            match c {
                CheckSpec::Http(h) => h.validate(&cp, p),
                CheckSpec::Tcp(t) => t.validate(&cp, p),
                CheckSpec::Cmd(c) => c.validate(&cp, p),
                CheckSpec::Prometheus(q) => q.validate(&cp, p),
            }
        }
        let iv = self.interval.0;
        if iv < Duration::from_millis(10) {
            p.add(
                &path.key("interval"),
                format!("must be at least 10ms, got {}", self.interval),
            );
        } else if iv > MAX_PHASE {
            p.add(
                &path.key("interval"),
                format!("must be at most 1h, got {}", self.interval),
            );
        }
        self.tolerance.validate(&path.key("tolerance"), p);
    }
}

impl HttpCheck {
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        if let Err(e) = check_http_url(&self.url) {
            p.add(&path.key("url"), e);
        }
        check_timeout(self.timeout, &path.key("timeout"), p);
        for (i, s) in self.expect_status.iter().enumerate() {
            if !(100..=599).contains(s) {
                p.add(
                    &path.key("expectStatus").index(i),
                    format!("`{s}` is not an HTTP status code (100..=599)"),
                );
            }
        }
        for (k, v) in &self.headers {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if k.is_empty() || !k.chars().all(token) {
                p.add(
                    &path.key("headers").key(k),
                    format!("`{}` is not a valid header name", crate::units::clip(k)),
                );
            }
            if v.chars().any(|c| c == '\r' || c == '\n') {
                p.add(
                    &path.key("headers").key(k),
                    "a header value cannot contain a line break",
                );
            }
        }
        if self.body.is_some() && matches!(self.method, HttpMethod::Get | HttpMethod::Head) {
            p.add(
                &path.key("body"),
                format!(
                    "a {} request has no body: use method POST, PUT or PATCH",
                    self.method.as_str()
                ),
            );
        }
        check_regex(&self.body_matches, &path.key("bodyMatches"), p);
    }
}

impl TcpCheck {
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        if let Err(e) = check_address(&self.address) {
            p.add(&path.key("address"), e);
        }
        check_timeout(self.timeout, &path.key("timeout"), p);
    }
}

impl CmdCheck {
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        match self.argv.first() {
            None => p.add(
                &path.key("argv"),
                "must name a program and its arguments, e.g. [\"/usr/local/bin/depth\", \"--queue\", \"jobs\"]",
            ),
            Some(prog) if prog.trim().is_empty() => p.add(
                &path.key("argv").index(0),
                "the program name is empty",
            ),
            Some(_) => {}
        }
        for (i, a) in self.argv.iter().enumerate() {
            if a.contains('\0') {
                p.add(
                    &path.key("argv").index(i),
                    "an argument cannot contain a NUL byte",
                );
            }
        }
        check_timeout(self.timeout, &path.key("timeout"), p);
        let ep = path.key("expect");
        check_regex(&self.expect.stdout_matches, &ep.key("stdoutMatches"), p);
        if let Some(v) = &self.expect.value {
            check_value_comparison(v, &ep.key("value"), p);
        }
    }
}

impl PrometheusCheck {
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        if let Err(e) = check_http_url(&self.url) {
            p.add(&path.key("url"), e);
        } else if self.url.contains('?') {
            p.add(
                &path.key("url"),
                "give the server's base URL (e.g. `http://127.0.0.1:9090`); the query goes in `query`",
            );
        }
        if self.query.trim().is_empty() {
            p.add(
                &path.key("query"),
                "must be a PromQL expression, e.g. `sum(rate(http_errors_total[30s]))`",
            );
        }
        check_value_comparison(&self.value, &path.key("value"), p);
        check_timeout(self.timeout, &path.key("timeout"), p);
    }
}

impl Tolerance {
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        let sr = &self.success_ratio;
        let sp = path.key("successRatio");
        match sr.threshold {
            Threshold::Duration(_) => p.add(
                &sp,
                format!("`{sr}`: a success ratio is a number in 0..=1, e.g. `>= 0.99`"),
            ),
            Threshold::Number(n) if !(0.0..=1.0).contains(&n) => p.add(
                &sp,
                format!("`{sr}`: a success ratio is a number in 0..=1, e.g. `>= 0.99`"),
            ),
            Threshold::Number(n) => match sr.op {
                CmpOp::Ge => {}
                CmpOp::Gt if n < 1.0 => {}
                CmpOp::Gt => p.add(&sp, "`> 1` can never hold: use `== 1`"),
                CmpOp::Eq if n == 1.0 => {}
                CmpOp::Eq => p.add(
                    &sp,
                    format!("`{sr}`: `==` only makes sense with 1; use `>= {n}`"),
                ),
                CmpOp::Le | CmpOp::Lt => p.add(
                    &sp,
                    format!(
                        "`{sr}` bounds successes from above: use `>=` (e.g. `>= {n}`) or `== 1`"
                    ),
                ),
            },
        }
        for (key, c) in [
            ("latencyP50", &self.latency_p50),
            ("latencyP99", &self.latency_p99),
        ] {
            let Some(c) = c else { continue };
            let lp = path.key(key);
            if !matches!(c.threshold, Threshold::Duration(_)) {
                p.add(
                    &lp,
                    format!("`{c}`: give a duration with a unit, e.g. `<= 250ms`"),
                );
            } else if !c.is_upper_bound() {
                p.add(
                    &lp,
                    format!("`{c}`: a latency bound is an upper bound: use `<=` or `<`"),
                );
            } else if c.threshold.as_f64() <= 0.0 {
                p.add(&lp, "must be greater than 0");
            }
        }
    }
}

impl Abort {
    /// Checks `spec.abort` (`path`) against the steady state it refers to.
    pub fn validate(&self, path: &FieldPath, steady: Option<&SteadyState>, p: &mut Problems) {
        let wp = path.key("when");
        if self.when.is_empty() {
            p.add(
                &wp,
                "must name at least one probe of spec.steadyState.probes",
            );
        }
        let Some(steady) = steady else {
            p.add(
                path,
                "abort watches probes, but there is no spec.steadyState: add steadyState.probes or remove abort",
            );
            return;
        };
        let names: Vec<&str> = steady.probes.iter().map(|p| p.name.as_str()).collect();
        let mut seen = HashSet::new();
        for (i, name) in self.when.iter().enumerate() {
            if !names.contains(&name.as_str()) {
                p.add(
                    &wp.index(i),
                    format!(
                        "no probe is named `{}`: expected one of {}",
                        crate::units::clip(name),
                        names
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            } else if !seen.insert(name.as_str()) {
                p.add(&wp.index(i), format!("`{name}` is listed twice"));
            }
        }
        if self.within.0.is_zero() {
            p.add(&path.key("within"), "must be greater than 0, e.g. `1s`");
        } else if self.within.0 > Duration::from_secs(60) {
            p.add(
                &path.key("within"),
                format!("must be at most 1m, got {}", self.within),
            );
        }
    }
}

/// Validates both sections of an experiment's `spec` (`spec_path`, usually `spec`): the one call an
/// entry point needs.
pub fn validate(
    steady: Option<&SteadyState>,
    abort: Option<&Abort>,
    spec_path: &FieldPath,
    p: &mut Problems,
) {
    if let Some(s) = steady {
        s.validate(&spec_path.key("steadyState"), p);
    }
    if let Some(a) = abort {
        a.validate(&spec_path.key("abort"), steady, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(s: &str) -> Comparison {
        s.parse().expect("a valid comparison")
    }

    #[test]
    fn comparisons_parse_numbers_and_durations() {
        assert_eq!(
            cmp(">= 0.99"),
            Comparison {
                op: CmpOp::Ge,
                threshold: Threshold::Number(0.99)
            }
        );
        assert_eq!(
            cmp("<=250ms"),
            Comparison {
                op: CmpOp::Le,
                threshold: Threshold::Duration(Duration::from_millis(250))
            }
        );
        assert_eq!(cmp("== 1").op, CmpOp::Eq);
        assert_eq!(cmp("> 3").op, CmpOp::Gt);
        assert_eq!(cmp("< -2.5").threshold, Threshold::Number(-2.5));
        assert_eq!(cmp("<= 250ms").to_string(), "<= 250ms");
        assert_eq!(cmp(">= 0.99").to_string(), ">= 0.99");
        assert!("0.99"
            .parse::<Comparison>()
            .expect_err("no operator")
            .contains("no comparison operator"));
        assert!(">=".parse::<Comparison>().is_err());
        assert!("<= lots".parse::<Comparison>().is_err());
        assert!("=< 5".parse::<Comparison>().is_err());
    }

    #[test]
    fn comparisons_hold() {
        assert!(cmp(">= 0.99").holds(0.99));
        assert!(!cmp(">= 0.99").holds(0.98));
        assert!(cmp("<= 250ms").holds(250.0));
        assert!(!cmp("< 250ms").holds(250.0));
        assert!(cmp("== 1").holds(1.0));
        assert!(!cmp("<= 5").holds(f64::NAN));
        assert_eq!(cmp("<= 5").worst(&[1.0, 7.0, 3.0]), Some(7.0));
        assert_eq!(cmp(">= 5").worst(&[6.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(cmp("== 5").worst(&[5.0, 4.0]), Some(4.0));
        assert_eq!(cmp("<= 5").worst(&[]), None);
    }

    #[test]
    fn modes_pick_phases() {
        assert!(ProbeMode::Continuous.active_in(Phase::Recovery));
        assert!(ProbeMode::Before.active_in(Phase::Baseline));
        assert!(!ProbeMode::Before.active_in(Phase::Chaos));
        assert!(ProbeMode::During.active_in(Phase::Chaos));
        assert!(!ProbeMode::During.active_in(Phase::Recovery));
        assert!(ProbeMode::After.active_in(Phase::Recovery));
    }

    #[test]
    fn urls_and_addresses() {
        assert!(check_http_url("http://10.99.0.2:8080/health").is_ok());
        assert!(check_http_url("http://[::1]:80/x?y=1").is_ok());
        assert!(check_http_url("http://example.com").is_ok());
        assert!(check_http_url("https://example.com")
            .expect_err("tls")
            .contains("https is not supported"));
        assert!(check_http_url("ftp://x").is_err());
        assert!(check_http_url("http://:80/").is_err());
        assert!(check_http_url("http://h:99999/").is_err());
        assert!(check_http_url("10.0.0.1:80").is_err());
        assert!(check_address("127.0.0.1:80").is_ok());
        assert!(check_address("[::1]:80").is_ok());
        assert!(check_address("db.internal:5432").is_ok());
        assert!(check_address("127.0.0.1").is_err());
        assert!(check_address("127.0.0.1:0").is_err());
        assert!(check_address(":80").is_err());
    }
}
