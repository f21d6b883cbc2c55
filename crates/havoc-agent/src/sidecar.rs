//! Sidecar mode: inside an application's pod (with `shareProcessNamespace`), every `interval`
//! roll each configured fault against its `probability` with a seeded ChaCha8 generator, inject
//! the ones that hit for their `duration` (host-mode selectors: the pod's own processes), and
//! recover. `dryRun` only logs. The sidecar, its ancestors and its helpers are never targets.
//!
//! ```yaml
//! interval: 30s
//! seed: 42
//! dryRun: false
//! faults:
//!   - name: pause-worker
//!     kind: ProcessChaos
//!     probability: 0.2
//!     duration: 5s
//!     action: pause
//!     selector: { processNames: [worker] }
//! ```
//! The sequence of decisions is the pure function [`plan`]: the same seed gives the same
//! sequence on every run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use havoc_spec::de::from_node;
use havoc_spec::error::Problems;
use havoc_spec::experiment::load_fault;
use havoc_spec::units::HumanDuration;
use havoc_spec::yaml::{Node, Value};
use havoc_spec::{FaultSpec, FieldPath, SpecError, SpecErrors};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::holder::{self, HoldRequest, Registry};

/// One fault of the sidecar loop.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarFault {
    pub name: String,
    /// Chance of injecting at each interval, 0..=1.
    pub probability: f64,
    pub duration: Duration,
    pub spec: FaultSpec,
}

/// A parsed sidecar configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarConfig {
    pub interval: Duration,
    pub seed: u64,
    pub dry_run: bool,
    /// Where injection journals go (default `/var/lib/havoc`).
    pub state_dir: PathBuf,
    pub faults: Vec<SidecarFault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Top {
    interval: HumanDuration,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "skip")]
    #[allow(dead_code)]
    faults: (),
}

fn skip<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| ())
}

/// Parses and validates a sidecar configuration. Errors render as `FILE:LINE:COL: path: message`
/// with [`SpecErrors::render`].
pub fn parse_config(src: &str) -> Result<SidecarConfig, SpecErrors> {
    let root = FieldPath::root();
    let one =
        |pos, path: FieldPath, message: String| SpecErrors(vec![SpecError { path, pos, message }]);
    let docs = havoc_spec::yaml::parse_documents(src)
        .map_err(|e| one(e.pos, root.clone(), format!("invalid YAML: {}", e.message)))?;
    let Some(doc) = docs.first() else {
        return Err(one(
            havoc_spec::yaml::Pos { line: 1, col: 1 },
            root,
            "the file is empty: expected interval, seed, dryRun and faults".into(),
        ));
    };
    let top: Top = from_node(doc, &root).map_err(|e| SpecErrors(vec![e]))?;
    let mut errors = Vec::new();
    let mut p = Problems::new();
    if top.interval.0 < Duration::from_millis(10) {
        p.add(&root.key("interval"), "must be at least 10ms");
    }
    let mut faults = Vec::new();
    match doc.get("faults") {
        None => p.add(
            &root.key("faults"),
            "is required: a list of faults, each with name, kind, probability and duration",
        ),
        Some(Node {
            value: Value::Seq(items),
            ..
        }) => {
            if items.is_empty() {
                p.add(&root.key("faults"), "must list at least one fault");
            }
            for (i, item) in items.iter().enumerate() {
                let fp = root.key("faults").index(i);
                let probability = match item.get("probability") {
                    None => {
                        p.add(&fp.key("probability"), "is required: a number from 0 to 1");
                        None
                    }
                    Some(n) => match from_node::<f64>(n, &fp.key("probability")) {
                        Ok(v) if (0.0..=1.0).contains(&v) => Some(v),
                        Ok(v) => {
                            p.add(
                                &fp.key("probability"),
                                format!("must be from 0 to 1, got {v}"),
                            );
                            None
                        }
                        Err(e) => {
                            errors.push(e);
                            None
                        }
                    },
                };
                match load_fault(&item.without_keys(&["probability"]), &fp, None) {
                    Err(e) => errors.extend(e),
                    Ok(entry) => {
                        entry.spec.validate(&fp, &mut p);
                        if entry.after.is_some() {
                            p.add(
                                &fp.key("after"),
                                "does not apply in sidecar mode: faults start at intervals",
                            );
                        }
                        let duration = entry.duration.map(|d| d.0);
                        if duration.is_none() {
                            p.add(
                                &fp.key("duration"),
                                "is required: how long each injection lasts, e.g. `5s`",
                            );
                        }
                        if faults.iter().any(|f: &SidecarFault| f.name == entry.name) {
                            p.add(
                                &fp.key("name"),
                                format!("`{}` is used by another fault", entry.name),
                            );
                        }
                        faults.push(SidecarFault {
                            name: entry.name,
                            probability: probability.unwrap_or(0.0),
                            duration: duration.unwrap_or_default(),
                            spec: entry.spec,
                        });
                    }
                }
            }
        }
        Some(n) => p.add(
            &root.key("faults"),
            format!("expected a list of faults, got {}", n.describe()),
        ),
    }
    errors.extend(p.into_vec().into_iter().map(|(path, message)| SpecError {
        pos: path.locate(doc),
        path,
        message,
    }));
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.pos);
        return Err(SpecErrors(errors));
    }
    Ok(SidecarConfig {
        interval: top.interval.0,
        seed: top.seed.unwrap_or_else(rand::random),
        dry_run: top.dry_run,
        state_dir: top
            .state_dir
            .unwrap_or_else(|| havoc_engine::journal::DEFAULT_STATE_DIR.into()),
        faults,
    })
}

/// One roll of the loop.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// 0-based interval number.
    pub interval: u64,
    pub fault: String,
    /// The roll, uniform in [0, 1).
    pub roll: f64,
    /// `roll < probability`.
    pub inject: bool,
}

/// The decisions of the first `n_intervals` intervals: a pure function of the seed and faults.
pub fn plan(config: &SidecarConfig, n_intervals: u64) -> Vec<Decision> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut out = Vec::new();
    for interval in 0..n_intervals {
        for f in &config.faults {
            let roll: f64 = rng.random();
            out.push(Decision {
                interval,
                fault: f.name.clone(),
                roll,
                inject: roll < f.probability,
            });
        }
    }
    out
}

/// How to run the loop.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    pub config: PathBuf,
    /// The executable re-run for helper processes (`__stress-worker`).
    pub self_exe: PathBuf,
    /// Stop after this many intervals (None: until SIGTERM/SIGINT).
    pub max_intervals: Option<u64>,
}

/// What the loop did at one interval for one fault.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarEvent {
    pub interval: u64,
    pub fault: String,
    /// `injected`, `dry-run`, `skipped`, `failed`.
    pub outcome: String,
    /// The targets hit (or that would be).
    pub targets: Vec<String>,
    pub detail: String,
}

/// Reads the configuration file and runs the loop (see [`run_loop`]).
pub fn run_sidecar(opts: &SidecarOptions) -> anyhow::Result<()> {
    let src = std::fs::read_to_string(&opts.config)
        .with_context(|| format!("cannot read {}", opts.config.display()))?;
    let cfg = parse_config(&src)
        .map_err(|e| anyhow::anyhow!("{}", e.render(&opts.config.display().to_string())))?;
    let stop = Arc::new(AtomicBool::new(false));
    let events = run_loop(&cfg, &opts.self_exe, opts.max_intervals, stop)?;
    tracing::info!(events = events.len(), "sidecar loop ended");
    Ok(())
}

fn resolve(
    f: &SidecarFault,
    protect: &havoc_engine::resolve::Protection,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<havoc_faults::Target>, String> {
    let sel = f.spec.selector();
    let r = if f.spec.targets_network_namespaces() {
        havoc_engine::resolve::resolve_netns(&f.name, sel, protect, rng)
    } else {
        havoc_engine::resolve::resolve_processes(&f.name, sel, protect, rng)
    };
    r.map_err(|e| e.to_string())
}

/// Runs the loop on a small runtime of its own until `max_intervals`, `stop`, SIGTERM or
/// SIGINT; every injection is recovered before it returns. Returns what happened, in order.
pub fn run_loop(
    cfg: &SidecarConfig,
    self_exe: &Path,
    max_intervals: Option<u64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<SidecarEvent>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the sidecar's runtime")?;
    rt.block_on(run_async(cfg, self_exe, max_intervals, stop))
}

async fn run_async(
    cfg: &SidecarConfig,
    self_exe: &Path,
    max_intervals: Option<u64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<SidecarEvent>> {
    let registry = Arc::new(Registry::new(Arc::new(crate::metrics::Metrics::new())));
    let replays = havoc_engine::journal::recover_stale(&cfg.state_dir)
        .with_context(|| format!("cannot replay journals under {}", cfg.state_dir.display()))?;
    for (run, r) in replays {
        tracing::warn!(run = %run, done = ?r.done, "replayed the journal of a dead holder");
    }
    // The guarantee of the agent: if the sidecar dies, its watchdog undoes what it held.
    let guardian = crate::holder::Guardian::start(self_exe, &cfg.state_dir, &registry)
        .context("cannot start the sidecar's watchdog")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let mut events = Vec::new();
    let mut running: Vec<Option<tokio::task::JoinHandle<()>>> =
        (0..cfg.faults.len()).map(|_| None).collect();
    let t0 = tokio::time::Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut interval = 0u64;
    let mut signalled = false;
    tracing::info!(seed = cfg.seed, interval = ?cfg.interval, dry_run = cfg.dry_run, "sidecar loop starting");
    while max_intervals.is_none_or(|m| interval < m) && !stop.load(Ordering::SeqCst) {
        for (j, f) in cfg.faults.iter().enumerate() {
            let roll: f64 = rng.random();
            if roll >= f.probability {
                continue;
            }
            let mut ev = SidecarEvent {
                interval,
                fault: f.name.clone(),
                outcome: String::new(),
                targets: Vec::new(),
                detail: String::new(),
            };
            if running[j].as_ref().is_some_and(|h| !h.is_finished()) {
                ev.outcome = "skipped".into();
                ev.detail = "its previous injection is still active".into();
                tracing::info!(interval, fault = %f.name, "skipped: still active");
                events.push(ev);
                continue;
            }
            let protect = havoc_engine::resolve::Protection::for_this_process(&registry.helpers());
            let mut trng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (interval << 16) ^ j as u64);
            let targets = match resolve(f, &protect, &mut trng) {
                Ok(t) => t,
                Err(e) => {
                    ev.outcome = "failed".into();
                    ev.detail = e;
                    tracing::warn!(interval, fault = %f.name, detail = %ev.detail, "cannot resolve targets");
                    events.push(ev);
                    continue;
                }
            };
            ev.targets = targets.iter().map(|t| t.label()).collect();
            if cfg.dry_run {
                ev.outcome = "dry-run".into();
                ev.detail = format!("would inject {} for {:?}", f.spec.summary(), f.duration);
                tracing::info!(interval, fault = %f.name, targets = ?ev.targets, "dry run: {}", ev.detail);
                events.push(ev);
                continue;
            }
            let mut held = Vec::new();
            let mut failures = Vec::new();
            for (k, t) in targets.into_iter().enumerate() {
                let pid = t.pid().unwrap_or_default();
                let req = HoldRequest {
                    id: format!(
                        "sidecar-{}-{}-{interval}-{j}-{k}",
                        std::process::id(),
                        holder::now_ms()
                    ),
                    key: format!("{interval}/{}/{k}", f.name),
                    owner: format!("sidecar {}", f.name),
                    spec: f.spec.clone(),
                    target: t,
                    api_target: None,
                    pid,
                    // The lease backs up the timer below: if this loop stalls, it still ends.
                    ttl: f.duration + Duration::from_secs(10),
                    duration: Some(f.duration),
                    state_dir: cfg.state_dir.clone(),
                    self_exe: self_exe.to_path_buf(),
                    seed: cfg.seed ^ interval,
                };
                match holder::start(req, registry.clone()).await {
                    Ok(h) => held.push(h),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            ev.outcome = if failures.is_empty() {
                "injected"
            } else {
                "failed"
            }
            .into();
            ev.detail = failures.join("; ");
            tracing::info!(interval, fault = %f.name, targets = ?ev.targets, outcome = %ev.outcome, "{}", ev.detail);
            events.push(ev);
            let d = f.duration;
            running[j] = Some(tokio::spawn(async move {
                tokio::time::sleep(d).await;
                for h in held {
                    if let Err(e) = h.recover().await {
                        tracing::error!(id = %h.id, error = %e, "recovery failed");
                    }
                }
            }));
        }
        interval += 1;
        let next = t0 + cfg.interval * interval as u32;
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                _ = term.recv() => { signalled = true; break }
                _ = tokio::signal::ctrl_c() => { signalled = true; break }
                _ = poll.tick() => if stop.load(Ordering::SeqCst) { break },
            }
        }
        if signalled {
            tracing::info!("signal: recovering and stopping");
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut recovered = true;
    for h in registry.all() {
        recovered &= h.recover().await.is_ok();
    }
    for h in running.into_iter().flatten() {
        if Instant::now() > deadline {
            h.abort();
        } else {
            let _ = h.await;
        }
    }
    recovered &= registry.is_empty();
    let _ = tokio::task::spawn_blocking(move || guardian.finish(recovered)).await;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "interval: 1s\nseed: 7\nfaults:\n  - name: pause-it\n    kind: ProcessChaos\n    probability: 0.5\n    duration: 100ms\n    action: pause\n    selector: { pids: [12345] }\n  - name: kill-it\n    kind: ProcessChaos\n    probability: 0.1\n    duration: 0s\n    action: kill\n    selector: { processNames: [nothing] }\n";

    #[test]
    fn a_config_parses() {
        let c = parse_config(CFG).expect("valid");
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.seed, 7);
        assert_eq!(c.faults.len(), 2);
        assert_eq!(c.faults[0].probability, 0.5);
        assert!(!c.dry_run);
    }

    #[test]
    fn the_same_seed_plans_the_same_and_another_seed_differs() {
        let c = parse_config(CFG).expect("valid");
        let a = plan(&c, 50);
        assert_eq!(a, plan(&c, 50));
        assert_eq!(a.len(), 100);
        let hits = a
            .iter()
            .filter(|d| d.fault == "pause-it" && d.inject)
            .count();
        assert!((10..=40).contains(&hits), "p=0.5 over 50 rolls: {hits}");
        let other = SidecarConfig { seed: 8, ..c };
        assert_ne!(a, plan(&other, 50));
    }

    #[test]
    fn errors_have_positions_and_paths() {
        let bad = CFG
            .replace("probability: 0.5", "probability: 1.5")
            .replace("interval: 1s", "interval: 1s\ndryrun: true");
        let e = parse_config(&bad).expect_err("invalid");
        let text = e.render("sidecar.yaml");
        assert!(text.contains("sidecar.yaml:2:1"), "{text}");
        assert!(text.contains("dryRun"), "did-you-mean: {text}");
        let e = parse_config(&CFG.replace("probability: 0.5", "probability: 1.5"))
            .expect_err("invalid");
        let text = e.render("sidecar.yaml");
        assert!(
            text.contains("faults[0].probability: must be from 0 to 1"),
            "{text}"
        );
        let e = parse_config(&CFG.replace("    duration: 100ms\n", "")).expect_err("invalid");
        assert!(
            e.render("s").contains("faults[0].duration: is required"),
            "{}",
            e.render("s")
        );
    }
}
