//! Judging samples: per-phase verdicts against a [`Tolerance`], and the breach rule for abort.
//!
//! Pure functions over recorded [`Sample`]s, so every rule here is unit-tested with known samples.
//!
//! Percentiles are nearest-rank: the p-th percentile of n sorted samples is the one at rank
//! `ceil(p * n)`. So `latencyP99 <= 250ms` over n samples holds exactly when at most
//! `n - ceil(0.99 n)` samples are slower than 250ms, which lets the breach rule count "slow"
//! samples the same way it counts failed ones.

use serde::Serialize;

use crate::spec::{Comparison, Phase, Tolerance};

/// One probe result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// When the sample started, in seconds since the run's clock origin.
    pub t_seconds: f64,
    /// The phase the sample started in.
    pub phase: Phase,
    pub ok: bool,
    /// How long the check took (until it failed, for a failure).
    pub latency_ms: f64,
    /// The number a cmd or prometheus check read, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Why the sample failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Summary statistics of a set of samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    pub samples: usize,
    pub ok: usize,
    pub success_ratio: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
}

/// Nearest-rank rank (1-based) of quantile `q` among `n` values.
fn rank(q: f64, n: usize) -> usize {
    ((q * n as f64 - 1e-9).ceil() as usize).clamp(1, n.max(1))
}

/// Nearest-rank percentile `q` (0..=1) of `values`, which need not be sorted.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[rank(q, v.len()) - 1])
}

impl Stats {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Stats {
        let samples: Vec<&Sample> = samples.into_iter().collect();
        let n = samples.len();
        let ok = samples.iter().filter(|s| s.ok).count();
        let lat: Vec<f64> = samples.iter().map(|s| s.latency_ms).collect();
        let vals: Vec<f64> = samples.iter().filter_map(|s| s.value).collect();
        Stats {
            samples: n,
            ok,
            success_ratio: (n > 0).then(|| ok as f64 / n as f64),
            latency_p50_ms: percentile(&lat, 0.50),
            latency_p99_ms: percentile(&lat, 0.99),
            value_min: vals.iter().copied().reduce(f64::min),
            value_max: vals.iter().copied().reduce(f64::max),
        }
    }
}

/// Whether `tolerance` holds over `stats`, and why (or why not), in words with numbers.
pub fn evaluate(tolerance: &Tolerance, stats: &Stats) -> (bool, String) {
    let (Some(ratio), Some(p50), Some(p99)) = (
        stats.success_ratio,
        stats.latency_p50_ms,
        stats.latency_p99_ms,
    ) else {
        return (false, "no samples were taken in this phase".into());
    };
    let mut broken = Vec::new();
    if !tolerance.success_ratio.holds(ratio) {
        broken.push(format!(
            "success ratio {ratio:.3} ({} of {} ok) violates successRatio {}",
            stats.ok, stats.samples, tolerance.success_ratio
        ));
    }
    for (name, bound, got) in [
        ("latencyP50", &tolerance.latency_p50, p50),
        ("latencyP99", &tolerance.latency_p99, p99),
    ] {
        if let Some(b) = bound {
            if !b.holds(got) {
                broken.push(format!("{name} {got:.1}ms violates {name} {b}"));
            }
        }
    }
    if broken.is_empty() {
        (
            true,
            format!(
                "{} samples, success ratio {ratio:.3}, p50 {p50:.1}ms, p99 {p99:.1}ms: within tolerance",
                stats.samples
            ),
        )
    } else {
        (false, broken.join("; "))
    }
}

/// The least number of recent samples the breach rule looks at.
pub const MIN_BREACH_WINDOW: usize = 10;
/// The most recent samples the breach rule looks at, whatever the tolerance.
pub const MAX_BREACH_WINDOW: usize = 1000;
/// Consecutive failures that breach whenever the tolerance allows at least this many minus one.
pub const MAX_CONSECUTIVE: usize = 3;

/// The largest number of bad samples among `n` with which `good_fraction_ok` still holds.
fn allowed_bad(n: usize, good_fraction_ok: impl Fn(usize) -> bool) -> Option<usize> {
    (0..=n).rev().find(|bad| good_fraction_ok(n - bad))
}

/// Decides, sample by sample, whether a probe in `abort.when` has breached.
///
/// With W the window (below), over the last `min(count, W)` samples of the current phase:
/// - **failures**: more failed samples than `successRatio` allows in W samples, or
/// - **outage**: the last `min(allowed + 1, 3)` samples all failed, or
/// - **slow**: for `latencyP50`/`latencyP99`, more samples over the bound than the percentile
///   allows in W samples.
///
/// W is the smallest window, at least [`MIN_BREACH_WINDOW`] and at most [`MAX_BREACH_WINDOW`],
/// in which each bound that tolerates any bad sample tolerates at least one (100 samples for
/// `>= 0.99` or a p99 bound). So the default `== 1` breaches on the first failure, a lenient
/// tolerance never breaches on a single bad sample, and a window that is not yet full breaches as
/// soon as it already holds more bad samples than the full window may.
#[derive(Debug, Clone, PartialEq)]
pub struct BreachRule {
    pub window: usize,
    pub allowed_failures: usize,
    pub consecutive: usize,
    /// (field name, bound, bad samples allowed in the window).
    pub slow: Vec<(&'static str, Comparison, usize)>,
    success_ratio: Comparison,
}

impl BreachRule {
    pub fn new(tolerance: &Tolerance) -> BreachRule {
        let ratio = tolerance.success_ratio;
        let failures_in = |n: usize| {
            allowed_bad(n, |good| ratio.holds(good as f64 / n.max(1) as f64)).unwrap_or(0)
        };
        let slow_in = |q: f64, n: usize| n - rank(q, n);
        let bounds: Vec<(&'static str, Comparison, f64)> = [
            ("latencyP50", tolerance.latency_p50, 0.50),
            ("latencyP99", tolerance.latency_p99, 0.99),
        ]
        .into_iter()
        .filter_map(|(name, b, q)| b.map(|b| (name, b, q)))
        .collect();
        // Smallest n in which a bound that tolerates anything tolerates one bad sample.
        let first_tolerated = |allowed: &dyn Fn(usize) -> usize| {
            (1..=MAX_BREACH_WINDOW)
                .find(|n| allowed(*n) >= 1)
                .unwrap_or(1)
        };
        let mut window = MIN_BREACH_WINDOW.max(first_tolerated(&failures_in));
        for (_, _, q) in &bounds {
            window = window.max(first_tolerated(&|n| slow_in(*q, n)));
        }
        let window = window.min(MAX_BREACH_WINDOW);
        let allowed_failures = failures_in(window);
        BreachRule {
            window,
            allowed_failures,
            consecutive: (allowed_failures + 1).min(MAX_CONSECUTIVE),
            slow: bounds
                .into_iter()
                .map(|(name, b, q)| (name, b, slow_in(q, window)))
                .collect(),
            success_ratio: ratio,
        }
    }

    /// Whether the most recent samples (oldest first; only the current phase's) breach, and why.
    pub fn check(&self, probe: &str, recent: &[Sample]) -> Option<String> {
        let recent = &recent[recent.len().saturating_sub(self.window)..];
        let m = recent.len();
        let last_error = || {
            recent
                .iter()
                .rev()
                .find_map(|s| s.error.as_deref())
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        };
        let failed = recent.iter().filter(|s| !s.ok).count();
        if failed > self.allowed_failures {
            return Some(format!(
                "probe `{probe}` breached: {failed} of the last {m} samples failed, successRatio {} allows at most {} in {} samples{}",
                self.success_ratio, self.allowed_failures, self.window, last_error()
            ));
        }
        let run = recent.iter().rev().take_while(|s| !s.ok).count();
        if run >= self.consecutive {
            return Some(format!(
                "probe `{probe}` breached: the last {run} samples failed in a row{}",
                last_error()
            ));
        }
        for (name, bound, allowed) in &self.slow {
            let slow: Vec<f64> = recent
                .iter()
                .map(|s| s.latency_ms)
                .filter(|l| !bound.holds(*l))
                .collect();
            if slow.len() > *allowed {
                let worst = slow.iter().copied().fold(f64::MIN, f64::max);
                return Some(format!(
                    "probe `{probe}` breached: {} of the last {m} samples violate {name} {bound} (slowest {worst:.1}ms), which allows at most {allowed} in {} samples",
                    slow.len(), self.window
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(ratio: &str, p50: Option<&str>, p99: Option<&str>) -> Tolerance {
        Tolerance {
            success_ratio: ratio.parse().expect("ratio"),
            latency_p50: p50.map(|s| s.parse().expect("p50")),
            latency_p99: p99.map(|s| s.parse().expect("p99")),
        }
    }

    fn sample(ok: bool, latency_ms: f64) -> Sample {
        Sample {
            t_seconds: 0.0,
            phase: Phase::Chaos,
            ok,
            latency_ms,
            value: None,
            error: (!ok).then(|| "HTTP 500".to_string()),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 0.50), Some(50.0));
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 0.5), Some(3.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn success_ratio_is_judged_over_the_phase() {
        let t = tol(">= 0.9", None, None);
        let mut s: Vec<Sample> = (0..9).map(|_| sample(true, 1.0)).collect();
        s.push(sample(false, 1.0));
        let (pass, why) = evaluate(&t, &Stats::of(&s));
        assert!(pass, "{why}");
        s.push(sample(false, 1.0));
        let (pass, why) = evaluate(&t, &Stats::of(&s));
        assert!(!pass);
        assert!(why.contains("0.818") && why.contains("9 of 11"), "{why}");
        let (pass, _) = evaluate(&Tolerance::default(), &Stats::of(&s[..9]));
        assert!(pass, "default tolerance passes when every sample succeeds");
        let (pass, _) = evaluate(&Tolerance::default(), &Stats::of(&s));
        assert!(!pass, "default tolerance fails on any failure");
    }

    #[test]
    fn p99_with_known_samples() {
        // 1..=100 ms: p99 is 99ms, p50 is 50ms.
        let s: Vec<Sample> = (1..=100).map(|i| sample(true, f64::from(i))).collect();
        let st = Stats::of(&s);
        assert_eq!(st.latency_p99_ms, Some(99.0));
        assert_eq!(st.latency_p50_ms, Some(50.0));
        assert!(evaluate(&tol("== 1", None, Some("<= 99ms")), &st).0);
        let (pass, why) = evaluate(&tol("== 1", None, Some("<= 98ms")), &st);
        assert!(!pass);
        assert!(why.contains("latencyP99 99.0ms"), "{why}");
        assert!(!evaluate(&tol("== 1", Some("< 50ms"), None), &st).0);
    }

    #[test]
    fn values_are_summarised() {
        let mut s = vec![sample(true, 1.0), sample(true, 1.0), sample(false, 1.0)];
        s[0].value = Some(3.0);
        s[1].value = Some(-1.5);
        let st = Stats::of(&s);
        assert_eq!((st.value_min, st.value_max), (Some(-1.5), Some(3.0)));
        let (pass, why) = evaluate(&Tolerance::default(), &Stats::of(&[]));
        assert!(!pass && why.contains("no samples"));
    }

    #[test]
    fn breach_window_fits_the_tolerance() {
        let strict = BreachRule::new(&Tolerance::default());
        assert_eq!(
            (strict.window, strict.allowed_failures, strict.consecutive),
            (10, 0, 1)
        );
        let r99 = BreachRule::new(&tol(">= 0.99", None, None));
        assert_eq!(
            (r99.window, r99.allowed_failures, r99.consecutive),
            (100, 1, 2)
        );
        let r90 = BreachRule::new(&tol(">= 0.9", None, None));
        assert_eq!(
            (r90.window, r90.allowed_failures, r90.consecutive),
            (10, 1, 2)
        );
        let r50 = BreachRule::new(&tol(">= 0.5", None, None));
        assert_eq!(
            (r50.window, r50.allowed_failures, r50.consecutive),
            (10, 5, 3)
        );
        let gt = BreachRule::new(&tol("> 0.9", None, None));
        assert_eq!((gt.window, gt.allowed_failures), (11, 1));
        let lat = BreachRule::new(&tol(">= 0.9", None, Some("<= 250ms")));
        assert_eq!(lat.window, 100);
        assert_eq!(lat.slow[0].2, 1);
    }

    #[test]
    fn strict_tolerance_breaches_on_first_failure() {
        let rule = BreachRule::new(&Tolerance::default());
        let s = vec![sample(true, 1.0), sample(true, 1.0), sample(false, 3.0)];
        assert!(rule.check("api", &s[..2]).is_none());
        let why = rule.check("api", &s).expect("a breach");
        assert!(
            why.contains("`api`") && why.contains("1 of the last 3"),
            "{why}"
        );
        assert!(why.contains("HTTP 500"), "{why}");
    }

    #[test]
    fn lenient_tolerance_survives_one_bad_sample_but_not_an_outage() {
        let rule = BreachRule::new(&tol(">= 0.99", None, Some("<= 250ms")));
        let mut s: Vec<Sample> = (0..20).map(|_| sample(true, 5.0)).collect();
        s.push(sample(true, 900.0)); // one slow sample
        assert!(rule.check("api", &s).is_none());
        s.push(sample(false, 5.0)); // one failure
        assert!(rule.check("api", &s).is_none());
        s.push(sample(true, 5.0));
        s.push(sample(false, 5.0)); // a second failure within 100 samples
        let why = rule.check("api", &s).expect("a breach");
        assert!(why.contains("2 of the last 24 samples failed"), "{why}");

        let mut outage: Vec<Sample> = (0..200).map(|_| sample(true, 5.0)).collect();
        outage.push(sample(false, 5.0));
        assert!(rule.check("api", &outage).is_none());
        outage.push(sample(false, 5.0));
        assert!(rule.check("api", &outage).is_some());

        let mut slow: Vec<Sample> = (0..50).map(|_| sample(true, 5.0)).collect();
        slow.push(sample(true, 300.0));
        assert!(rule.check("api", &slow).is_none());
        slow.push(sample(true, 400.0));
        let why = rule.check("api", &slow).expect("a latency breach");
        assert!(
            why.contains("latencyP99 <= 250ms") && why.contains("400.0ms"),
            "{why}"
        );
    }

    #[test]
    fn half_tolerance_breaches_after_three_consecutive_failures() {
        let rule = BreachRule::new(&tol(">= 0.5", None, None));
        let mut s: Vec<Sample> = (0..10).map(|_| sample(true, 1.0)).collect();
        s.push(sample(false, 1.0));
        s.push(sample(false, 1.0));
        assert!(rule.check("q", &s).is_none());
        s.push(sample(false, 1.0));
        let why = rule.check("q", &s).expect("a breach");
        assert!(why.contains("last 3 samples failed in a row"), "{why}");
    }
}
