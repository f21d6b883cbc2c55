//! Chaos Mesh's meaning of the fields whose Havoc spelling differs, for [`crate::convert`].
//!
//! Chaos Mesh documents are read in two steps: [`prepare`] rewrites or takes out of the YAML
//! tree what Havoc spells differently (an `action: rate`, `targetDevice`, stress-ng options) and
//! reports what cannot carry over (an IOChaos `path` that is relative, which Chaos Mesh matches
//! against nothing; Havoc's own DNSChaos and HTTPChaos fields, which Chaos Mesh does not have), then [`finish_network`] and [`finish_stress`] give the typed
//! spec the meaning Chaos Mesh has (netem `corrupt` leaves checksums broken, `direction: both`
//! without a target injects on egress only, stress-ng options become stressors). Everything that
//! would change meaning is an error naming the field, never a silent drop.

use std::time::Duration;

use havoc_spec::network::{BandwidthSpec, ChecksumMode, Direction, NetworkAction};
use havoc_spec::stress::{CpuStressor, MemoryStressor};
use havoc_spec::units::{ByteSize, MemorySize, Rate};
use havoc_spec::yaml::{Node, Pos, Value};
use havoc_spec::{FieldPath, SpecError};

use crate::crd::{NetworkChaosSpec, StressChaosSpec};

/// What [`prepare`] took out of the tree, to apply to the typed spec.
#[derive(Debug, Default)]
pub struct Pending {
    /// `rate.rate` (Chaos Mesh's netem rate), as bandwidth.
    rate: Option<Rate>,
    /// Stress-ng options of `stressngStressors` (replacing `stressors`, as in Chaos Mesh).
    stressng: Option<StressNg>,
    /// Stress-ng options of `stressors.cpu.options` and `stressors.memory.options`.
    cpu_options: Option<StressNg>,
    memory_options: Option<StressNg>,
}

fn err(pos: Pos, path: FieldPath, message: impl Into<String>) -> SpecError {
    SpecError {
        path,
        pos,
        message: message.into(),
    }
}

fn scalar(pos: Pos, text: &str) -> Node {
    Node::new(
        pos,
        Value::Scalar {
            text: text.to_string(),
            quoted: true,
        },
    )
}

/// `node` with `key` set to `value` (added at the end if missing).
fn with_key(node: &Node, key: &str, value: Node) -> Node {
    let Value::Map(entries) = &node.value else {
        return node.clone();
    };
    let mut entries = entries.clone();
    match entries.iter_mut().find(|(k, _)| k.as_scalar() == Some(key)) {
        Some((_, v)) => *v = value,
        None => entries.push((scalar(node.pos, key), value)),
    }
    Node::new(node.pos, Value::Map(entries))
}

/// Rewrites a Chaos Mesh `spec` node into Havoc's spelling; returns it with what to apply after
/// parsing. Problems go to `errors`.
pub fn prepare(
    kind: &str,
    spec: &Node,
    sp: &FieldPath,
    errors: &mut Vec<SpecError>,
) -> (Node, Pending) {
    let mut pending = Pending::default();
    let mut out = spec.clone();
    match kind {
        "NetworkChaos" => {
            let action = spec
                .get("action")
                .and_then(Node::as_scalar)
                .unwrap_or_default();
            if let Some(rate) = spec.get("rate") {
                let rp = sp.key("rate");
                match rate.get("rate").and_then(Node::as_scalar) {
                    Some(r) => match r.parse::<Rate>() {
                        Ok(r) => pending.rate = Some(r),
                        Err(e) => errors.push(err(rate.pos, rp.key("rate"), e)),
                    },
                    None => errors.push(err(
                        rate.pos,
                        rp.key("rate"),
                        "is required: the rate, like `1mbps`",
                    )),
                }
                if let Value::Map(entries) = &rate.value {
                    for (k, _) in entries {
                        let name = k.as_scalar().unwrap_or_default();
                        if name != "rate" {
                            errors.push(err(
                                k.pos,
                                rp.key(name),
                                format!(
                                    "unknown field `{name}`: Chaos Mesh's rate has only `rate`"
                                ),
                            ));
                        }
                    }
                }
                if spec.get("bandwidth").is_some() {
                    errors.push(err(
                        rate.pos,
                        rp,
                        "give either rate or bandwidth: both limit the bandwidth",
                    ));
                }
                out = out.without_keys(&["rate"]);
                if action == "rate" {
                    let pos = spec.get("action").map_or(spec.pos, |n| n.pos);
                    out = with_key(&out, "action", scalar(pos, "bandwidth"));
                } else if !matches!(action, "netem" | "bandwidth") {
                    errors.push(err(
                        rate.pos,
                        sp.key("rate"),
                        format!("rate only applies to actions rate and netem, not {action}"),
                    ));
                }
            } else if action == "rate" {
                errors.push(err(
                    spec.pos,
                    sp.key("rate"),
                    "is required with action rate",
                ));
            }
            if let Some(key) = spec.key_node("targetDevice") {
                let direction = spec
                    .get("direction")
                    .and_then(Node::as_scalar)
                    .unwrap_or("to");
                // Chaos Mesh uses the target pods' device only where it injects into the target
                // pods: partitions (their INPUT or OUTPUT chain) and netem `from`/`both`.
                if action == "partition" || direction != "to" {
                    errors.push(err(key.pos, sp.key("targetDevice"), "unsupported Chaos Mesh field: Havoc injects on the selected pods' side only (their `device`), so the target pods' interface cannot be chosen; remove targetDevice (with one interface per target pod the same packets are hit)"));
                }
                // Otherwise Chaos Mesh ignores it too (netem `to` touches only the selected pods).
                out = out.without_keys(&["targetDevice"]);
            }
            let has_target = spec.get("target").is_some();
            let direction = spec
                .get("direction")
                .and_then(Node::as_scalar)
                .unwrap_or("to");
            if !has_target && action != "partition" && direction == "from" {
                let pos = spec.get("direction").map_or(spec.pos, |n| n.pos);
                errors.push(err(pos, sp.key("direction"), "direction `from` without target injects nothing in Chaos Mesh (its netem acts on the target pods' egress): add a target, or use `to`"));
            }
        }
        "StressChaos" => {
            if let Some(n) = spec.get("stressngStressors") {
                let p = sp.key("stressngStressors");
                match n.as_scalar() {
                    Some(text) => match StressNg::parse(text) {
                        Ok(s) => pending.stressng = Some(s),
                        Err(e) => errors.push(err(n.pos, p, e)),
                    },
                    None => errors.push(err(
                        n.pos,
                        p,
                        format!(
                            "expected a string of stress-ng options, got {}",
                            n.describe()
                        ),
                    )),
                }
                // As in Chaos Mesh, stressngStressors wins over stressors.
                out = with_key(
                    &out.without_keys(&["stressngStressors"]),
                    "stressors",
                    Node::new(n.pos, Value::Map(Vec::new())),
                );
            } else if let Some(stressors) = spec.get("stressors") {
                let mut st = stressors.clone();
                for (which, slot) in [
                    ("cpu", &mut pending.cpu_options),
                    ("memory", &mut pending.memory_options),
                ] {
                    let Some(s) = stressors.get(which) else {
                        continue;
                    };
                    let Some(opts) = s.get("options") else {
                        continue;
                    };
                    let p = sp.key("stressors").key(which).key("options");
                    let text = match &opts.value {
                        Value::Seq(items) => items
                            .iter()
                            .filter_map(Node::as_scalar)
                            .collect::<Vec<_>>()
                            .join(" "),
                        Value::Scalar { text, .. } => text.clone(),
                        _ => String::new(),
                    };
                    match StressNg::parse(&text) {
                        Ok(s) => *slot = Some(s),
                        Err(e) => errors.push(err(opts.pos, p, e)),
                    }
                    st = with_key(&st, which, s.without_keys(&["options"]));
                }
                out = with_key(&out, "stressors", st);
            }
        }
        "IOChaos" => {
            // Chaos Mesh's toda matches `path` against the absolute path of each file, so a
            // relative pattern matches nothing there; Havoc would read it relative to
            // volumePath and fault files Chaos Mesh leaves alone.
            if let Some(n) = spec.get("path") {
                if let Some(text) = n.as_scalar().filter(|t| !t.trim().starts_with('/')) {
                    let volume = spec
                        .get("volumePath")
                        .and_then(Node::as_scalar)
                        .unwrap_or("/VOLUME")
                        .trim_end_matches('/');
                    errors.push(err(
                        n.pos,
                        sp.key("path"),
                        format!(
                            "a relative path matches no file in Chaos Mesh (it matches absolute paths): write it under volumePath, e.g. `{volume}/{}`",
                            text.trim()
                        ),
                    ));
                }
            }
        }
        "DNSChaos" | "HTTPChaos" => {
            // Havoc's additions are not Chaos Mesh fields: Chaos Mesh's API server refuses (or
            // prunes) them, so a chaos-mesh.org document with them means something else there.
            let mut havoc_only = vec!["percent"];
            if kind == "DNSChaos" {
                havoc_only.push("delay");
                if let Some(a) = spec
                    .get("action")
                    .filter(|a| a.as_scalar() == Some("delay"))
                {
                    errors.push(err(
                        a.pos,
                        sp.key("action"),
                        format!("action `delay` is Havoc's (Chaos Mesh's DNSChaos has error and random): write apiVersion `{}` to use it", crate::crd::API_VERSION),
                    ));
                }
            }
            for name in havoc_only {
                if let Some(k) = spec.key_node(name) {
                    errors.push(err(
                        k.pos,
                        sp.key(name),
                        format!("`{name}` is a Havoc field, not one of Chaos Mesh's {kind}: write apiVersion `{}` to use it", crate::crd::API_VERSION),
                    ));
                }
            }
        }
        _ => {}
    }
    (out, pending)
}

/// Gives a Chaos Mesh NetworkChaos the meaning it has there.
pub fn finish_network(s: &mut NetworkChaosSpec, pending: &Pending) {
    if let Some(rate) = pending.rate {
        s.bandwidth = Some(BandwidthSpec {
            rate,
            limit: None,
            buffer: None,
        });
    }
    // netem's corrupt flips a bit after the checksum was computed: the receiver drops the packet.
    if let Some(c) = s.corrupt.as_mut() {
        c.checksum = ChecksumMode::Break;
    }
    // Without a target, Chaos Mesh's netem acts on the selected pods' egress only, whatever the
    // direction (`from` was refused in `prepare`); partitions honour the direction.
    if s.target.is_none() && s.action != NetworkAction::Partition && s.direction == Direction::Both
    {
        s.direction = Direction::To;
    }
}

/// Gives a Chaos Mesh StressChaos the meaning it has there; errors name the field.
pub fn finish_stress(
    s: &mut StressChaosSpec,
    pending: &Pending,
    sp: &FieldPath,
) -> Vec<(FieldPath, String)> {
    let mut problems = Vec::new();
    if let Some(ng) = &pending.stressng {
        let p = sp.key("stressngStressors");
        s.stressors.cpu = None;
        s.stressors.memory = None;
        match (ng.cpu_workers, ng.cpu_load) {
            (Some(w), load) => {
                s.stressors.cpu = Some(CpuStressor {
                    workers: w,
                    load: load.unwrap_or(100),
                })
            }
            (None, Some(_)) => problems.push((
                p.clone(),
                "`--cpu-load` needs `--cpu N` (stress-ng runs no CPU stressor without it)"
                    .to_string(),
            )),
            (None, None) => {}
        }
        match (ng.vm_workers, ng.vm_bytes) {
            (Some(w), bytes) => s.stressors.memory = Some(memory(w, bytes)),
            (None, Some(_)) => problems.push((
                p.clone(),
                "`--vm-bytes` needs `--vm N` (stress-ng runs no memory stressor without it)"
                    .to_string(),
            )),
            (None, None) => {}
        }
        if s.stressors.cpu.is_none() && s.stressors.memory.is_none() {
            problems.push((
                p,
                "names no stressor Havoc runs: give `--cpu N` and/or `--vm N`".to_string(),
            ));
        }
        apply_timeout(s, ng.timeout);
    }
    if let Some(ng) = &pending.cpu_options {
        if let Some(cpu) = s.stressors.cpu.as_mut() {
            cpu.workers = ng.cpu_workers.unwrap_or(cpu.workers);
            cpu.load = ng.cpu_load.unwrap_or(cpu.load);
        }
        if ng.vm_workers.is_some() || ng.vm_bytes.is_some() {
            problems.push((
                sp.key("stressors").key("cpu").key("options"),
                "`--vm`/`--vm-bytes` belong in stressors.memory".to_string(),
            ));
        }
        apply_timeout(s, ng.timeout);
    }
    if let Some(ng) = &pending.memory_options {
        if let Some(m) = s.stressors.memory.as_mut() {
            if ng.vm_workers.is_some() || ng.vm_bytes.is_some() {
                let workers = ng.vm_workers.unwrap_or(m.workers);
                *m = match ng.vm_bytes {
                    Some(b) => memory(workers, Some(b)),
                    None => MemoryStressor {
                        workers,
                        size: m.size,
                    },
                };
            }
        }
        if ng.cpu_workers.is_some() || ng.cpu_load.is_some() {
            problems.push((
                sp.key("stressors").key("memory").key("options"),
                "`--cpu`/`--cpu-load` belong in stressors.cpu".to_string(),
            ));
        }
        apply_timeout(s, ng.timeout);
    }
    problems
}

/// stress-ng's `--vm-bytes` is per worker (256 MiB by default); Havoc's size is the total.
fn memory(workers: u32, per_worker: Option<u64>) -> MemoryStressor {
    let per = per_worker.unwrap_or(256 << 20);
    MemoryStressor {
        workers,
        size: MemorySize::Bytes(ByteSize(per.saturating_mul(u64::from(workers)))),
    }
}

/// stress-ng stops at `--timeout`: the stress lasts the shorter of it and the duration.
fn apply_timeout(s: &mut StressChaosSpec, timeout: Option<Duration>) {
    if let Some(t) = timeout {
        let d = s.duration.map_or(t, |d| d.0.min(t));
        s.duration = Some(d.into());
    }
}

/// The stress-ng options Havoc has an equivalent for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StressNg {
    cpu_workers: Option<u32>,
    cpu_load: Option<u32>,
    vm_workers: Option<u32>,
    vm_bytes: Option<u64>,
    timeout: Option<Duration>,
}

const STRESSNG_HELP: &str =
    "Havoc translates `--cpu N`, `--cpu-load P`, `--vm N`, `--vm-bytes SIZE` and `--timeout T`";

impl StressNg {
    /// Parses stress-ng command-line options (`--cpu 2 --cpu-load 50`, `--vm=1`).
    pub fn parse(text: &str) -> Result<StressNg, String> {
        let mut out = StressNg::default();
        let mut words = text.split_whitespace().peekable();
        while let Some(w) = words.next() {
            let (name, inline) = match w.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (w, None),
            };
            let known = matches!(
                name,
                "--cpu"
                    | "-c"
                    | "--cpu-load"
                    | "-l"
                    | "--vm"
                    | "-m"
                    | "--vm-bytes"
                    | "--timeout"
                    | "-t"
            );
            if !known {
                return Err(if name.starts_with('-') {
                    format!(
                        "stress-ng option `{}` has no Havoc equivalent: {STRESSNG_HELP}",
                        havoc_spec::units::clip(name)
                    )
                } else {
                    format!(
                        "expected a stress-ng option, got `{}`: {STRESSNG_HELP}",
                        havoc_spec::units::clip(name)
                    )
                });
            }
            let value = match inline {
                Some(v) => v,
                None => words
                    .next()
                    .map(str::to_string)
                    .ok_or_else(|| format!("stress-ng option `{name}` needs a value"))?,
            };
            let count = |v: &str, what: &str| -> Result<u32, String> {
                match v.parse::<u32>() {
                    Ok(0) => Err(format!(
                        "`{name} 0` means one {what} per CPU in stress-ng: give a count"
                    )),
                    Ok(n) if n <= havoc_spec::stress::MAX_WORKERS => Ok(n),
                    _ => Err(format!(
                        "`{name}` needs a count 1..=1024, got `{}`",
                        havoc_spec::units::clip(v)
                    )),
                }
            };
            match name {
                "--cpu" | "-c" => out.cpu_workers = Some(count(&value, "CPU worker")?),
                "--vm" | "-m" => out.vm_workers = Some(count(&value, "memory worker")?),
                "--cpu-load" | "-l" => {
                    out.cpu_load = Some(
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|p| *p <= 100)
                            .ok_or_else(|| {
                                format!(
                                    "`{name}` needs a percentage 0..=100, got `{}`",
                                    havoc_spec::units::clip(&value)
                                )
                            })?,
                    )
                }
                "--vm-bytes" => out.vm_bytes = Some(stressng_size(&value)?),
                _ => out.timeout = Some(stressng_time(&value)?),
            }
        }
        Ok(out)
    }
}

/// stress-ng sizes: bytes with an optional b, k, m or g suffix (powers of 1024).
fn stressng_size(v: &str) -> Result<u64, String> {
    let q = havoc_spec::units::clip(v);
    if v.ends_with('%') {
        return Err(format!("`--vm-bytes {q}`: a percentage of the host's memory has no Havoc equivalent (Havoc's `50%` is of the container's memory limit): give a size"));
    }
    let lower = v.to_ascii_lowercase();
    let (num, mult) = match lower.chars().last() {
        Some('b') => (&lower[..lower.len() - 1], 1u64),
        Some('k') => (&lower[..lower.len() - 1], 1 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower.as_str(), 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`--vm-bytes {q}`: expected a size like `256m`, `1g` or `512k`"))
}

/// stress-ng times: seconds, or with an s, m, h or d suffix.
fn stressng_time(v: &str) -> Result<Duration, String> {
    let q = havoc_spec::units::clip(v);
    let (num, mult) = match v.chars().last() {
        Some('s') => (&v[..v.len() - 1], 1u64),
        Some('m') => (&v[..v.len() - 1], 60),
        Some('h') => (&v[..v.len() - 1], 3600),
        Some('d') => (&v[..v.len() - 1], 86400),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(mult))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`--timeout {q}`: expected a time like `60`, `30s`, `5m` or `1h`"))
}

/// A duration as Go writes and parses it (`1h30m`, `1m30s500ms`), so the CRD's pattern and CEL
/// `duration()` accept it; humantime's `1m 30s` or `1day` they reject.
pub fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let parts = [
        (secs / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1000 % 1000), "us"),
        (u64::from(nanos % 1000), "ns"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}
