//! What an IOChaos does to one file-system operation, and the counters that measure it.
//!
//! The decision is made per operation from the method, the file's path relative to the volume,
//! and a seeded random draw for `percent` (and for the weighted errno). Counters are atomics,
//! updated by the FUSE worker threads and read by the injection for its [`crate::Effect`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use havoc_spec::io::{AttrOverride, Filling, Glob, IOChaos, IoAction, IoMethod, Mistake};

/// A lock-free random source (splitmix64 over an atomic counter), seeded per fault and target.
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    pub fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// What to do with one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not affected: pass through unchanged.
    Pass,
    /// Wait this long, then do the operation.
    Delay(Duration),
    /// Fail with this errno without doing the operation.
    Fail(i32),
    /// Do the operation, then replace attributes in the reply.
    Attr,
    /// Do the operation with altered data.
    Mistake,
}

/// The compiled rule of one IOChaos.
#[derive(Debug)]
pub struct Rule {
    action: IoAction,
    /// Bit i set: `IoMethod::ALL[i]` is affected; 0: all methods.
    methods: u64,
    glob: Option<Glob>,
    percent: u32,
    delay: Duration,
    /// (errno, cumulative weight).
    errnos: Vec<(i32, u64)>,
    pub attr: Option<AttrOverride>,
    pub mistake: Option<Mistake>,
    /// Off until the mount is observed in place, and again once recovery starts: everything
    /// passes uncounted.
    pub enabled: AtomicBool,
    rng: Rng,
}

impl Rule {
    pub fn new(spec: &IOChaos, seed: u64) -> Self {
        let methods = spec
            .methods
            .iter()
            .fold(0u64, |acc, m| acc | (1u64 << (*m as u32)));
        let mut total = 0u64;
        let mut errnos = Vec::new();
        if let Some(e) = spec.errno {
            total = 1;
            errnos.push((e.0, total));
        }
        for f in &spec.faults {
            total += f.weight as u64;
            errnos.push((f.errno.0, total));
        }
        Rule {
            action: spec.action,
            methods,
            glob: spec.glob(),
            percent: spec.percent,
            delay: spec.delay.map(|d| d.0).unwrap_or_default(),
            errnos,
            attr: spec.attr.clone(),
            mistake: spec.mistake.clone(),
            enabled: AtomicBool::new(false),
            rng: Rng::new(seed),
        }
    }

    /// Whether `method` can be affected at all (before looking at paths).
    pub fn covers(&self, method: IoMethod) -> bool {
        if self.methods != 0 && self.methods & (1u64 << (method as u32)) == 0 {
            return false;
        }
        match self.action {
            IoAction::AttrOverride => method.returns_attrs(),
            IoAction::Mistake => method.carries_data(),
            IoAction::Latency | IoAction::Fault => method != IoMethod::Forget,
        }
    }

    /// Whether `method` on the file at `rel` can ever be affected (whatever `percent` draws):
    /// what decides if the kernel may cache it. The rule never changes during an injection.
    pub fn can_match(&self, method: IoMethod, rel: &str) -> bool {
        self.covers(method) && self.glob.as_ref().is_none_or(|g| g.matches(rel))
    }

    /// Whether the kernel may cache the entry and attributes of `rel`: not when a lookup or
    /// getattr of it could be affected (every stat must then reach the rule).
    pub fn attrs_cacheable(&self, rel: &str) -> bool {
        !self.can_match(IoMethod::Lookup, rel) && !self.can_match(IoMethod::Getattr, rel)
    }

    /// Whether the kernel may keep the data of `rel` in its page cache: not when a read or a
    /// write of it could be affected (each one must then be a request that meets the rule).
    pub fn data_cacheable(&self, rel: &str) -> bool {
        !self.can_match(IoMethod::Read, rel) && !self.can_match(IoMethod::Write, rel)
    }

    /// Decides for one operation on the file at `rel` (relative to the volume, `""` = its root).
    pub fn decide(&self, method: IoMethod, rel: &str, c: &Counters) -> Decision {
        if !self.enabled.load(Ordering::Relaxed) {
            return Decision::Pass;
        }
        c.seen.fetch_add(1, Ordering::Relaxed);
        if !self.covers(method) {
            return Decision::Pass;
        }
        if let Some(g) = &self.glob {
            if !g.matches(rel) {
                return Decision::Pass;
            }
        }
        c.matched.fetch_add(1, Ordering::Relaxed);
        if self.percent < 100 && self.rng.below(100) >= self.percent as u64 {
            return Decision::Pass;
        }
        c.injected.fetch_add(1, Ordering::Relaxed);
        match self.action {
            IoAction::Latency => Decision::Delay(self.delay),
            IoAction::Fault => {
                let total = self.errnos.last().map_or(1, |(_, w)| *w);
                let draw = self.rng.below(total);
                let errno = self
                    .errnos
                    .iter()
                    .find(|(_, cum)| draw < *cum)
                    .map_or(libc_eio(), |(e, _)| *e);
                c.failed(errno);
                Decision::Fail(errno)
            }
            IoAction::AttrOverride => Decision::Attr,
            IoAction::Mistake => Decision::Mistake,
        }
    }

    /// Alters `data` as `mistake` says; returns how many bytes changed.
    pub fn alter(&self, data: &mut [u8], c: &Counters) -> u64 {
        let Some(m) = &self.mistake else { return 0 };
        if data.is_empty() {
            return 0;
        }
        let mut changed = 0u64;
        let occurrences = 1 + self.rng.below(m.max_occurrences as u64);
        for _ in 0..occurrences {
            let len = (1 + self.rng.below(m.max_length as u64)).min(data.len() as u64) as usize;
            let start = self.rng.below((data.len() - len + 1) as u64) as usize;
            for b in &mut data[start..start + len] {
                let new = match m.filling {
                    Filling::Zero => 0,
                    Filling::Random => self.rng.next() as u8,
                };
                if *b != new {
                    changed += 1;
                }
                *b = new;
            }
            c.mistake_occurrences.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes_altered.fetch_add(changed, Ordering::Relaxed);
        changed
    }
}

fn libc_eio() -> i32 {
    5
}

/// What the fault did, as counted where it happened.
#[derive(Debug)]
pub struct Counters {
    pub seen: AtomicU64,
    pub matched: AtomicU64,
    pub injected: AtomicU64,
    pub delayed: AtomicU64,
    pub delay_ns: AtomicU64,
    pub attrs_overridden: AtomicU64,
    pub bytes_altered: AtomicU64,
    pub mistake_occurrences: AtomicU64,
    /// errno -> count, for errno 1..=133 (the rest in slot 0).
    failed: Vec<AtomicU64>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            seen: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            delay_ns: AtomicU64::new(0),
            attrs_overridden: AtomicU64::new(0),
            bytes_altered: AtomicU64::new(0),
            mistake_occurrences: AtomicU64::new(0),
            failed: (0..134).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Counters {
    fn failed(&self, errno: i32) {
        let i = if (1..134).contains(&errno) {
            errno as usize
        } else {
            0
        };
        self.failed[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed_by_errno(&self) -> BTreeMap<i32, u64> {
        self.failed
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((i as i32, n))
            })
            .collect()
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml_extra: &str) -> IOChaos {
        let src = format!(
            "apiVersion: havoc.dev/v1alpha1\nkind: IOChaos\nmetadata: {{name: t}}\nspec:\n  selector: {{pids: [1]}}\n  volumePath: /data\n  duration: 1s\n{yaml_extra}"
        );
        let e = havoc_spec::parse_experiment(&src).expect("valid");
        match &e.spec.faults[0].spec {
            havoc_spec::FaultSpec::IOChaos(io) => io.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn percent_and_weights_hold_over_many_draws() {
        let s = spec("  action: fault\n  percent: 30\n  faults: [{errno: EIO, weight: 3}, {errno: ENOSPC, weight: 1}]\n");
        let r = Rule::new(&s, 7);
        r.enabled.store(true, Ordering::SeqCst);
        let c = Counters::default();
        for _ in 0..100_000 {
            r.decide(IoMethod::Read, "x", &c);
        }
        let failed = c.failed_by_errno();
        let total = c.failed_total() as f64;
        assert!((total / 1000.0 - 30.0).abs() < 1.0, "{total}");
        let eio = failed[&5] as f64 / total;
        assert!((eio - 0.75).abs() < 0.02, "{eio}");
    }

    #[test]
    fn methods_and_paths_filter() {
        let s = spec("  action: latency\n  delay: 10ms\n  methods: [READ]\n  path: '**/*.db'\n");
        let r = Rule::new(&s, 1);
        r.enabled.store(true, Ordering::SeqCst);
        let c = Counters::default();
        assert_eq!(
            r.decide(IoMethod::Read, "a/b.db", &c),
            Decision::Delay(Duration::from_millis(10))
        );
        assert_eq!(r.decide(IoMethod::Write, "a/b.db", &c), Decision::Pass);
        assert_eq!(r.decide(IoMethod::Read, "a/b.txt", &c), Decision::Pass);
        assert!(r.attrs_cacheable("a/b.db"));
        assert!(!r.data_cacheable("a/b.db"));
        assert!(r.data_cacheable("a/b.txt"));
        let s = spec("  action: fault\n  errno: EIO\n  path: 'x/**'\n");
        let r = Rule::new(&s, 1);
        assert!(!r.attrs_cacheable("x/y"));
        assert!(!r.data_cacheable("x/y"));
        assert!(r.attrs_cacheable("z"));
        assert!(r.data_cacheable("z"));
    }

    #[test]
    fn mistakes_count_changed_bytes() {
        let s = spec(
            "  action: mistake\n  mistake: {filling: zero, maxOccurrences: 3, maxLength: 8}\n",
        );
        let r = Rule::new(&s, 3);
        let c = Counters::default();
        let mut data = vec![0xffu8; 4096];
        let n = r.alter(&mut data, &c);
        assert_eq!(n, data.iter().filter(|b| **b == 0).count() as u64);
        assert!((1..=24).contains(&n));
    }
}
