//! Loading, attaching and driving the `havoc_rules` TC classifier.
//!
//! A [`Datapath`] owns one loaded copy of `bpf/rules.bpf.c` attached to one interface in one
//! direction through a TCX link. The link lives exactly as long as the `Datapath` (and the
//! process): dropping it, or the process dying even by SIGKILL, detaches the program, so a
//! crashed Havoc never leaves faults behind. Rules are written into a 32-slot table map; each
//! rule carries a generation (so a stale [`RuleId`] never addresses a reused slot) and an
//! optional lease (so a rule whose holder stops renewing it becomes inert by itself).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use aya::maps::{Array, MapData, MapError, PerCpuArray, PerCpuValues};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfError, EbpfLoader};
use havoc_sys::netns::{NetNs, NetNsError};

use crate::rule::{self, Encoded, Rule, RuleError, RULE_SIZE};

/// Number of rule slots in the datapath (`HAVOC_MAX_RULES` in the C program).
pub const MAX_RULES: usize = 32;

/// Name of the classifier as the kernel (and `bpftool prog show`) reports it.
pub const PROGRAM_NAME: &str = "havoc_rules";

/// Every BPF program and map of Havoc starts with this prefix.
pub const NAME_PREFIX: &str = "havoc_";

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rules.bpf.o"));

const MAP_TABLE: &str = "havoc_table";
const MAP_STATE: &str = "havoc_state";
const MAP_COUNTERS: &str = "havoc_counters";
const MAP_CFG: &str = "havoc_cfg";

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("failed to run in network namespace")]
    Netns {
        #[source]
        source: NetNsError,
    },
    #[error("failed to parse the Havoc eBPF object")]
    Object {
        #[source]
        source: EbpfError,
    },
    #[error("the Havoc eBPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("failed to load program {PROGRAM_NAME} into the kernel")]
    LoadProgram {
        #[source]
        source: ProgramError,
    },
    #[error("failed to attach {PROGRAM_NAME} to {ifname} ({direction})")]
    Attach {
        ifname: String,
        direction: Direction,
        #[source]
        source: ProgramError,
    },
    #[error("failed to open map {name}")]
    OpenMap {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("failed to {op} slot {slot} of map {map}")]
    MapAccess {
        op: &'static str,
        map: &'static str,
        slot: u32,
        #[source]
        source: MapError,
    },
    #[error("failed to count the possible CPUs ({what})")]
    Cpus {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid rule")]
    InvalidRule {
        #[source]
        source: RuleError,
    },
    #[error("all {MAX_RULES} rule slots are in use")]
    Full,
    #[error("rule {id} is not installed (removed, or its slot was reused)")]
    UnknownRule { id: RuleId },
    #[error("failed to list loaded BPF {what}")]
    List {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The hook a [`Datapath`] is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}

/// How a dropped packet leaves the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropVerdict {
    /// `TC_ACT_SHOT`. On egress the sender sees it (UDP `sendto` gets ENOBUFS,
    /// `IpOutDiscards`/`UdpSndbufErrors` rise).
    Shot,
    /// `TC_ACT_STOLEN`. Under TCX (kernel >= 6.6) this is *not* a drop: `tcx_action_code()` maps
    /// unknown codes to `TCX_NEXT` and the packet passes. Kept for legacy cls_bpf and for tests.
    Stolen,
    /// `bpf_redirect(0, 0)`: the redirect to the nonexistent ifindex 0 frees the packet in
    /// `skb_do_redirect()`, and `sch_handle_egress()` reports `NET_XMIT_SUCCESS`: a drop that
    /// is silent to the sender. The default on egress.
    RedirectVoid,
}

impl DropVerdict {
    fn code(self) -> u32 {
        match self {
            Self::Shot => 0,
            Self::Stolen => 1,
            Self::RedirectVoid => 2,
        }
    }
}

/// Identifies a rule in one [`Datapath`]: its slot and the generation written into that slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId {
    slot: u8,
    gen: u32,
}

impl RuleId {
    /// The slot in the rule table (0..[`MAX_RULES`]).
    pub fn slot(self) -> usize {
        usize::from(self.slot)
    }

    /// The generation, unique per rule within one `Datapath`.
    pub fn generation(self) -> u32 {
        self.gen
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.slot, self.gen)
    }
}

/// Packet counters of one rule, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Packets that reached the rule while it was active and unexpired.
    pub seen: u64,
    /// Packets that matched the rule's filter.
    pub matched: u64,
    pub dropped: u64,
    pub corrupted: u64,
    pub duplicated: u64,
}

#[derive(Debug)]
struct Slot {
    gen: u32,
    encoded: Encoded,
}

/// Havoc's eBPF datapath on one interface and direction. Dropping it detaches the program.
pub struct Datapath {
    // Owns the program and, through it, the TCX link: never read, dropped last.
    _ebpf: Ebpf,
    table: Array<MapData, [u8; RULE_SIZE]>,
    state: Array<MapData, [u32; 2]>,
    counters: PerCpuArray<MapData, [u64; 5]>,
    cfg: Array<MapData, [u32; 3]>,
    /// The drop verdict as last written to `cfg` (written together with `occupied`).
    verdict: DropVerdict,
    /// The bitmap of occupied slots as last written to `cfg`: the classifier walks only these.
    occupied: u32,
    slots: Vec<Option<Slot>>,
    next_gen: u32,
    nr_cpus: usize,
    direction: Direction,
    ifname: String,
    program_id: u32,
}

impl fmt::Debug for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datapath")
            .field("ifname", &self.ifname)
            .field("direction", &self.direction)
            .field("program_id", &self.program_id)
            .field("rules", &self.rule_count())
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads the classifier and attaches it to `ifname` in `netns` through a TCX link (appended
    /// after any programs already attached there).
    pub fn attach(netns: &NetNs, ifname: &str, direction: Direction) -> Result<Self, BpfError> {
        netns
            .run(|| Self::attach_here(ifname, direction))
            .map_err(|source| BpfError::Netns { source })?
    }

    fn attach_here(ifname: &str, direction: Direction) -> Result<Self, BpfError> {
        let Loaded {
            mut ebpf,
            program_id,
        } = take_loaded()?;
        let prog = classifier(&mut ebpf)?;
        let attach_type = match direction {
            Direction::Ingress => TcAttachType::Ingress,
            Direction::Egress => TcAttachType::Egress,
        };
        prog.attach_with_options(
            ifname,
            attach_type,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|source| BpfError::Attach {
            ifname: ifname.to_owned(),
            direction,
            source,
        })?;

        let nr_cpus =
            aya::util::nr_cpus().map_err(|(what, source)| BpfError::Cpus { what, source })?;
        let mut dp = Self {
            table: take_map(&mut ebpf, MAP_TABLE)?,
            state: take_map(&mut ebpf, MAP_STATE)?,
            counters: take_map(&mut ebpf, MAP_COUNTERS)?,
            cfg: take_map(&mut ebpf, MAP_CFG)?,
            _ebpf: ebpf,
            verdict: DropVerdict::Shot,
            occupied: 0,
            slots: (0..MAX_RULES).map(|_| None).collect(),
            next_gen: 1,
            nr_cpus,
            direction,
            ifname: ifname.to_owned(),
            program_id,
        };
        let verdict = match direction {
            Direction::Ingress => DropVerdict::Shot,
            Direction::Egress => DropVerdict::RedirectVoid,
        };
        dp.set_drop_verdict(verdict)?;
        tracing::debug!(ifname, %direction, program_id, "havoc datapath attached");
        Ok(dp)
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The kernel's id of the loaded classifier (as in `bpftool prog show id N`).
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    /// Number of installed rules (expired ones included until removed).
    pub fn rule_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Chooses how drops leave the classifier (see [`DropVerdict`]). The default is
    /// [`DropVerdict::Shot`] on ingress and [`DropVerdict::RedirectVoid`] on egress.
    pub fn set_drop_verdict(&mut self, verdict: DropVerdict) -> Result<(), BpfError> {
        self.write_cfg(verdict, self.occupied)
    }

    /// Writes the classifier's configuration: how drops leave it, its direction, and which
    /// slots it walks (a bitmap of the occupied ones; it makes no call for the others).
    fn write_cfg(&mut self, verdict: DropVerdict, occupied: u32) -> Result<(), BpfError> {
        let ingress = u32::from(self.direction == Direction::Ingress);
        self.cfg
            .set(0, [verdict.code(), ingress, occupied], 0)
            .map_err(|source| map_err("write", MAP_CFG, 0, source))?;
        self.verdict = verdict;
        self.occupied = occupied;
        Ok(())
    }

    /// Makes the classifier walk exactly the occupied slots.
    fn update_occupied(&mut self) -> Result<(), BpfError> {
        let occupied = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .fold(0u32, |m, (i, _)| m | 1 << i);
        if occupied == self.occupied {
            return Ok(());
        }
        self.write_cfg(self.verdict, occupied)
    }

    /// Installs `rule` in a free slot and returns its id. Only that slot (and its counters and
    /// loss-model state, which start from zero) is written.
    pub fn add_rule(&mut self, rule: &Rule) -> Result<RuleId, BpfError> {
        let encoded = rule::encode(rule, self.direction == Direction::Ingress)
            .map_err(|source| BpfError::InvalidRule { source })?;
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(BpfError::Full)?;
        let key = slot as u32;
        let gen = self.next_gen;
        self.next_gen = self.next_gen.checked_add(1).unwrap_or(1);

        // Inactive first, so the datapath never sees a half-written active rule.
        self.write_slot(key, &encoded.with(0, 0))?;
        self.state
            .set(key, [0u32; 2], 0)
            .map_err(|e| map_err("reset", MAP_STATE, key, e))?;
        let zeros = PerCpuValues::try_from(vec![[0u64; 5]; self.nr_cpus])
            .map_err(|e| map_err("reset", MAP_COUNTERS, key, e.into()))?;
        self.counters
            .set(key, zeros, 0)
            .map_err(|e| map_err("reset", MAP_COUNTERS, key, e))?;
        self.write_slot(key, &encoded.with(gen, expiry_ns(rule.lease)))?;

        self.slots[slot] = Some(Slot { gen, encoded });
        // The slot is complete before the walk reaches it.
        if let Err(e) = self.update_occupied() {
            self.slots[slot] = None;
            let _ = self.write_slot(key, &[0u8; RULE_SIZE]);
            return Err(e);
        }
        let id = RuleId {
            slot: slot as u8,
            gen,
        };
        tracing::debug!(rule_id = %id, ifname = %self.ifname, "havoc rule added");
        Ok(id)
    }

    /// Removes a rule and returns its final counters.
    pub fn remove_rule(&mut self, id: RuleId) -> Result<Counters, BpfError> {
        let encoded = self.slot(id)?.encoded.clone();
        let key = u32::from(id.slot);
        // Deactivate (only `gen` changes), then clear.
        self.write_slot(key, &encoded.with(0, 0))?;
        self.write_slot(key, &[0u8; RULE_SIZE])?;
        self.slots[id.slot()] = None;
        // Only shortens the walk: a failure leaves it visiting an empty slot, which is harmless.
        if let Err(e) = self.update_occupied() {
            tracing::debug!(error = %e, "shortening the rule walk failed");
        }
        tracing::debug!(rule_id = %id, ifname = %self.ifname, "havoc rule removed");
        self.read_counters(key)
    }

    /// Renews a rule's lease: it stays active for `lease` from now (`None`: forever).
    pub fn renew(&mut self, id: RuleId, lease: Option<Duration>) -> Result<(), BpfError> {
        let value = self.slot(id)?.encoded.with(id.gen, expiry_ns(lease));
        self.write_slot(u32::from(id.slot), &value)
    }

    /// Whether the rule is installed and its lease has not run out.
    pub fn is_active(&self, id: RuleId) -> Result<bool, BpfError> {
        self.slot(id)?;
        let key = u32::from(id.slot);
        let value = self
            .table
            .get(&key, 0)
            .map_err(|e| map_err("read", MAP_TABLE, key, e))?;
        let expiry = u64::from_ne_bytes(value[8..16].try_into().expect("8-byte slice"));
        Ok(expiry == 0 || monotonic_ns() < expiry)
    }

    /// The rule's counters, summed over CPUs.
    pub fn counters(&self, id: RuleId) -> Result<Counters, BpfError> {
        self.slot(id)?;
        self.read_counters(u32::from(id.slot))
    }

    /// Ids of all installed rules, in slot (evaluation) order.
    pub fn rules(&self) -> Vec<RuleId> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref().map(|s| RuleId {
                    slot: i as u8,
                    gen: s.gen,
                })
            })
            .collect()
    }

    fn slot(&self, id: RuleId) -> Result<&Slot, BpfError> {
        match self.slots.get(id.slot()) {
            Some(Some(s)) if s.gen == id.gen => Ok(s),
            _ => Err(BpfError::UnknownRule { id }),
        }
    }

    fn write_slot(&mut self, key: u32, value: &[u8; RULE_SIZE]) -> Result<(), BpfError> {
        self.table
            .set(key, value, 0)
            .map_err(|e| map_err("write", MAP_TABLE, key, e))
    }

    fn read_counters(&self, key: u32) -> Result<Counters, BpfError> {
        let per_cpu = self
            .counters
            .get(&key, 0)
            .map_err(|e| map_err("read", MAP_COUNTERS, key, e))?;
        let mut sum = [0u64; 5];
        for cpu in per_cpu.iter() {
            for (s, v) in sum.iter_mut().zip(cpu) {
                *s = s.wrapping_add(*v);
            }
        }
        let [seen, matched, dropped, corrupted, duplicated] = sum;
        Ok(Counters {
            seen,
            matched,
            dropped,
            corrupted,
            duplicated,
        })
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // The TCX link is owned by the program in `self._ebpf` and closes when it drops.
        tracing::debug!(ifname = %self.ifname, program_id = self.program_id, "havoc datapath detached");
    }
}

/// A classifier loaded and verified by the kernel, with its own maps, not yet attached.
struct Loaded {
    ebpf: Ebpf,
    program_id: u32,
}

/// Loads the object and has the kernel verify the classifier. The verifier checks the rule body
/// (`havoc_slot`, a global function) once, not once per slot: ~3,300 instructions processed in
/// a few ms, where the former inlined 32-slot walk took ~272,000 and ~0.6 s on a 2-vCPU VM.
/// [`prewarm`] can still do it ahead of time.
fn load_verified() -> Result<Loaded, BpfError> {
    let mut ebpf = loader()
        .load(OBJECT)
        .map_err(|source| BpfError::Object { source })?;
    let prog = classifier(&mut ebpf)?;
    prog.load()
        .map_err(|source| BpfError::LoadProgram { source })?;
    let program_id = prog
        .info()
        .map_err(|source| BpfError::LoadProgram { source })?
        .id();
    Ok(Loaded { ebpf, program_id })
}

/// The process's one object loader. `EbpfLoader::new()` parses the kernel's BTF
/// (`/sys/kernel/btf/vmlinux`, 5.5 MB: ~21 ms, more than the verifier now takes) for CO-RE
/// relocations, which `rules.bpf.c` does not use, and aya has no constructor without it: the
/// loader is made on a thread that sees an empty `/sys/kernel/btf`
/// ([`havoc_sys::mount::run_with_dir_hidden`]), so the parse fails at once; where that thread
/// cannot be set up, the BTF is parsed and dropped (`btf(None)`). The object's own BTF, which the
/// kernel needs for the global function, is still loaded with it.
fn loader() -> std::sync::MutexGuard<'static, EbpfLoader<'static>> {
    static LOADER: std::sync::OnceLock<std::sync::Mutex<EbpfLoader<'static>>> =
        std::sync::OnceLock::new();
    LOADER
        .get_or_init(|| {
            let mut loader =
                havoc_sys::mount::run_with_dir_hidden(Path::new("/sys/kernel/btf"), || {
                    EbpfLoader::new()
                })
                .unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "parsing the kernel BTF aya asks for");
                    EbpfLoader::new()
                });
            loader.btf(None);
            std::sync::Mutex::new(loader)
        })
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The object's classifier program.
fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, BpfError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(BpfError::Missing {
            what: "program",
            name: PROGRAM_NAME,
        })?
        .try_into()
        .map_err(|source| BpfError::LoadProgram { source })
}

/// One verified classifier kept ready by [`prewarm`], and whether attaches refill it.
struct Spare {
    ready: Option<Loaded>,
    loading: bool,
    keep_warm: bool,
}

static SPARE: std::sync::Mutex<Spare> = std::sync::Mutex::new(Spare {
    ready: None,
    loading: false,
    keep_warm: false,
});

fn spare() -> std::sync::MutexGuard<'static, Spare> {
    SPARE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Signalled when a prewarm ends (ready or failed).
static SPARE_DONE: std::sync::Condvar = std::sync::Condvar::new();

/// Loads and verifies one classifier on a background thread, so that the next
/// [`Datapath::attach`] in this process only attaches it (it saves the object load and the
/// verifier, a few ms). With `keep_warm`, every attach that uses the spare loads the next one
/// (for long-lived holders such as the node agent). A spare that is never attached holds no
/// traffic and is freed by the kernel with the process. Failures are left to the attach
/// itself, which then loads as usual and reports the error.
pub fn prewarm(keep_warm: bool) {
    let mut s = spare();
    s.keep_warm |= keep_warm;
    if s.ready.is_some() || s.loading {
        return;
    }
    s.loading = true;
    drop(s);
    let spawned = std::thread::Builder::new()
        .name("havoc-bpf-prewarm".into())
        .spawn(|| {
            let loaded = load_verified();
            let mut s = spare();
            s.loading = false;
            match loaded {
                Ok(l) => s.ready = Some(l),
                Err(e) => tracing::debug!(error = %e, "prewarming the classifier failed"),
            }
            SPARE_DONE.notify_all();
        });
    if spawned.is_err() {
        spare().loading = false;
        SPARE_DONE.notify_all();
    }
}

/// The spare if one is ready or being loaded (waiting for it costs less than a second load
/// competing with it for the CPU and the loader), else a classifier loaded now.
fn take_loaded() -> Result<Loaded, BpfError> {
    let (ready, keep_warm) = {
        let mut s = spare();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while s.loading && s.ready.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            s = SPARE_DONE
                .wait_timeout(s, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        (s.ready.take(), s.keep_warm)
    };
    if keep_warm {
        prewarm(false);
    }
    match ready {
        Some(l) => Ok(l),
        None => load_verified(),
    }
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, BpfError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(BpfError::Missing { what: "map", name })?;
    M::try_from(map).map_err(|source| BpfError::OpenMap { name, source })
}

fn map_err(op: &'static str, map: &'static str, slot: u32, source: MapError) -> BpfError {
    BpfError::MapAccess {
        op,
        map,
        slot,
        source,
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns()`.
pub(crate) fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn expiry_ns(lease: Option<Duration>) -> u64 {
    match lease {
        None => 0,
        Some(d) => {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            monotonic_ns().saturating_add(ns).max(1)
        }
    }
}
