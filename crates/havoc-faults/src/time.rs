//! `TimeChaos`: shift the clocks a running process reads by patching its vDSO.
//!
//! The C library reads clocks through the vDSO (`clock_gettime`, `gettimeofday`, `time`) without
//! entering the kernel. Havoc stops every thread of the target with ptrace, writes small
//! replacement functions into the zero padding after the vDSO's ELF image (the mapping is two
//! pages, the image about 6.5 KiB) and turns the entry of each clock function into a `jmp` to its
//! replacement. A replacement makes the real system call and adds the offset for the selected
//! clock ids, so `clock_gettime`, `gettimeofday` and `time` agree. The writes go through
//! `/proc/PID/mem`, which copies the vDSO page for that process only; children it forks later
//! copy the patched page, so they are skewed too, while programs started afterwards (`exec`, a
//! `kubectl exec`) get a fresh vDSO and the real time.
//!
//! Known limits, stated in the report: a program that makes the system call itself (statically
//! linked Go before 1.x, `syscall(SYS_clock_gettime)`) sees the real time; a clock read through
//! the replacement costs one system call (the vDSO's own read costs none).
//!
//! Recovery writes the original bytes back (into the target and every process whose vDSO carries
//! the same patch: its forks) and compares them. What to restore is journaled before the patch as
//! [`UndoAction::RestoreVdso`], so a watchdog does the same if Havoc dies. Threads are only
//! patched or restored while none of them executes inside a patched range.

use std::time::{Duration, Instant};

use havoc_spec::time::TimeChaos;
use havoc_sys::ptrace::StoppedProcess;
use serde::{Deserialize, Serialize};

use crate::procinfo::ProcInfo;
use crate::{Context, Effect, Fault, FaultError, Injection, Target, UndoAction};

/// One change to a vDSO: at `offset` from its start, `original` becomes `patched`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VdsoEdit {
    pub offset: u64,
    pub original: Vec<u8>,
    pub patched: Vec<u8>,
}

const PLACEHOLDER_SEC: [u8; 8] = 0x1122_3344_5566_7788u64.to_le_bytes();
const PLACEHOLDER_NSEC: [u8; 4] = 0x3b9a_c9ffu32.to_le_bytes();
const PLACEHOLDER_USEC: [u8; 4] = 0x000f_423fu32.to_le_bytes();
const PLACEHOLDER_MASK: [u8; 4] = 0x1234_5678u32.to_le_bytes();

/// `clock_gettime(edi = clock id, rsi = timespec *)`:
/// ```text
///   mov eax, 228 ; syscall            ; the real clock_gettime
///   test rax, rax ; jnz ret           ; errors are returned as they are
///   cmp edi, 31 ; ja ret0             ; negative (CPU clock) or large ids: unchanged
///   mov eax, MASK ; bt eax, edi ; jnc ret0
///   movabs rax, SEC ; add [rsi], rax
///   mov rax, [rsi+8] ; add rax, NSEC ; cmp rax, 1e9 ; jl 1f ; sub rax, 1e9 ; inc qword [rsi]
/// 1: mov [rsi+8], rax
/// ret0: xor eax, eax
/// ret: ret
/// ```
const CLOCK_GETTIME: &[u8] = &[
    0xb8, 0xe4, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x75, 0x3d, 0x83, 0xff, 0x1f, 0x77,
    0x38, 0xb8, 0x78, 0x56, 0x34, 0x12, 0x0f, 0xa3, 0xf8, 0x73, 0x2c, 0x48, 0xb8, 0x88, 0x77, 0x66,
    0x55, 0x44, 0x33, 0x22, 0x11, 0x48, 0x01, 0x06, 0x48, 0x8b, 0x46, 0x08, 0x48, 0x05, 0xff, 0xc9,
    0x9a, 0x3b, 0x48, 0x3d, 0x00, 0xca, 0x9a, 0x3b, 0x7c, 0x09, 0x48, 0x2d, 0x00, 0xca, 0x9a, 0x3b,
    0x48, 0xff, 0x06, 0x48, 0x89, 0x46, 0x08, 0x31, 0xc0, 0xc3,
];

/// `gettimeofday(rdi = timeval *, rsi = timezone *)`: the real call, then SEC and USEC added
/// to a non-null `tv` (normalized to microseconds below one second).
const GETTIMEOFDAY: &[u8] = &[
    0xb8, 0x60, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x75, 0x33, 0x48, 0x85, 0xff, 0x74,
    0x2e, 0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x48, 0x01, 0x07, 0x48, 0x8b,
    0x47, 0x08, 0x48, 0x05, 0x3f, 0x42, 0x0f, 0x00, 0x48, 0x3d, 0x40, 0x42, 0x0f, 0x00, 0x7c, 0x09,
    0x48, 0x2d, 0x40, 0x42, 0x0f, 0x00, 0x48, 0xff, 0x07, 0x48, 0x89, 0x47, 0x08, 0x31, 0xc0, 0xc3,
];

/// `time(rdi = time_t *)`: clock_gettime(CLOCK_REALTIME) into a stack buffer, SEC added and one
/// more second when the nanoseconds plus NSEC carry, stored to a non-null `tloc` and returned.
const TIME: &[u8] = &[
    0x48, 0x89, 0xfa, 0x48, 0x83, 0xec, 0x18, 0x31, 0xff, 0x48, 0x89, 0xe6, 0xb8, 0xe4, 0x00, 0x00,
    0x00, 0x0f, 0x05, 0x48, 0x8b, 0x04, 0x24, 0x48, 0xb9, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22,
    0x11, 0x48, 0x01, 0xc8, 0x48, 0x8b, 0x4c, 0x24, 0x08, 0x48, 0x81, 0xc1, 0xff, 0xc9, 0x9a, 0x3b,
    0x48, 0x81, 0xf9, 0x00, 0xca, 0x9a, 0x3b, 0x7c, 0x03, 0x48, 0xff, 0xc0, 0x48, 0x83, 0xc4, 0x18,
    0x48, 0x85, 0xd2, 0x74, 0x03, 0x48, 0x89, 0x02, 0xc3,
];

/// Replaces the one occurrence of `from` in `code` with `to`.
fn fill(code: &mut [u8], from: &[u8], to: &[u8]) {
    let at = code
        .windows(from.len())
        .position(|w| w == from)
        .expect("placeholder present in the stub");
    code[at..at + to.len()].copy_from_slice(to);
}

/// The replacement functions for one offset and clock mask, each 16-byte aligned (`int3`
/// between them), with the offset of each in the returned block.
fn stubs(sec: i64, nsec: u32, mask: u32) -> (Vec<u8>, [usize; 3]) {
    let mut out = Vec::new();
    let mut at = [0usize; 3];
    for (i, tmpl) in [CLOCK_GETTIME, GETTIMEOFDAY, TIME].into_iter().enumerate() {
        while out.len() % 16 != 0 {
            out.push(0xcc);
        }
        at[i] = out.len();
        let mut code = tmpl.to_vec();
        fill(&mut code, &PLACEHOLDER_SEC, &sec.to_le_bytes());
        match i {
            0 => {
                fill(&mut code, &PLACEHOLDER_MASK, &mask.to_le_bytes());
                fill(&mut code, &PLACEHOLDER_NSEC, &nsec.to_le_bytes());
            }
            1 => fill(&mut code, &PLACEHOLDER_USEC, &(nsec / 1000).to_le_bytes()),
            _ => fill(&mut code, &PLACEHOLDER_NSEC, &nsec.to_le_bytes()),
        }
        out.extend_from_slice(&code);
    }
    // A trailing int3 so a return into the block's end traps instead of running zeros.
    out.push(0xcc);
    (out, at)
}

/// A computed patch: the edits, and the ranges no thread may be executing in while they are
/// written or undone (the patched functions and the replacement block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdsoPatch {
    pub edits: Vec<VdsoEdit>,
    pub busy_ranges: Vec<(u64, u64)>,
    pub functions: Vec<String>,
}

/// Computes the patch of a pristine vDSO `image` for an offset and a clock mask.
pub fn plan_patch(image: &[u8], sec: i64, nsec: u32, mask: u32) -> Result<VdsoPatch, String> {
    let vdso = havoc_sys::vdso::Vdso::new(image);
    let syms = vdso.symbols().map_err(|e| format!("{e}: {:?}", e.0))?;
    let sym = |name: &str| syms.iter().find(|s| s.name == name);
    let realtime = mask & 1 != 0;
    let mut targets = Vec::new();
    let cg = sym("__vdso_clock_gettime")
        .ok_or("the vDSO exports no __vdso_clock_gettime (not an x86-64 vDSO?)")?;
    targets.push((cg, 0usize));
    if realtime {
        if let Some(s) = sym("__vdso_gettimeofday") {
            targets.push((s, 1));
        }
        if let Some(s) = sym("__vdso_time") {
            targets.push((s, 2));
        }
    }
    let used = vdso.used_len().map_err(|e| e.to_string())?;
    let base = (used as u64).div_ceil(16) * 16 + 16;
    let (block, at) = stubs(sec, nsec, mask);
    let end = base as usize + block.len();
    if end > image.len() || image[base as usize..end].iter().any(|&b| b != 0) {
        return Err(format!(
            "the vDSO has no free space for the replacement functions ({} bytes needed after byte {base}, mapping is {} bytes)",
            block.len(),
            image.len()
        ));
    }
    let mut edits = vec![VdsoEdit {
        offset: base,
        original: image[base as usize..end].to_vec(),
        patched: block.clone(),
    }];
    let mut busy = vec![(base, end as u64)];
    let mut functions = Vec::new();
    for (s, which) in targets {
        if s.size < 5 {
            return Err(format!("{} is too small to patch", s.name));
        }
        let entry = s.offset;
        let dest = base + at[which] as u64;
        let rel = (dest as i64 - (entry as i64 + 5)) as i32;
        let mut jmp = vec![0xe9];
        jmp.extend_from_slice(&rel.to_le_bytes());
        edits.push(VdsoEdit {
            offset: entry,
            original: image[entry as usize..entry as usize + 5].to_vec(),
            patched: jmp,
        });
        busy.push((entry, entry + s.size));
        functions.push(s.name.clone());
    }
    Ok(VdsoPatch {
        edits,
        busy_ranges: busy,
        functions,
    })
}

/// This process's own vDSO: the kernel's image, never patched by Havoc.
pub fn pristine_vdso() -> Result<Vec<u8>, FaultError> {
    let me = std::process::id() as i32;
    read_vdso(me)?
        .map(|(_, img)| img)
        .ok_or_else(|| FaultError::Other("Havoc itself has no vDSO".into()))
}

/// The start and bytes of the vDSO of `pid`, `None` if it has none.
fn read_vdso(pid: i32) -> Result<Option<(u64, Vec<u8>)>, FaultError> {
    let io = |source| FaultError::Io {
        action: "read the vDSO of".into(),
        target: format!("pid {pid}"),
        source,
    };
    let Some(m) = havoc_sys::vdso::find(pid).map_err(io)? else {
        return Ok(None);
    };
    let img = havoc_sys::ptrace::read_mem(pid, m.start, m.len()).map_err(io)?;
    Ok(Some((m.start, img)))
}

/// Stops every thread of `pid` at a moment when none executes inside `busy` (offsets from
/// `vdso_start`). Returns the stopped process, or `None` if it exited.
fn stop_outside(
    pid: i32,
    vdso_start: u64,
    busy: &[(u64, u64)],
) -> Result<Option<StoppedProcess>, FaultError> {
    for attempt in 0..200 {
        let sp = match StoppedProcess::stop(pid, Duration::from_secs(2)) {
            Ok(sp) => sp,
            Err(havoc_sys::ptrace::StopError::Gone { .. }) => return Ok(None),
            Err(e) => {
                return Err(FaultError::Other(format!(
                    "cannot stop the threads of pid {pid}: {}",
                    crate_error_chain(&e)
                )))
            }
        };
        let rips = sp
            .instruction_pointers()
            .map_err(|source| FaultError::Sys {
                action: "read the registers of",
                target: format!("pid {pid}"),
                source,
            })?;
        let abs: Vec<(u64, u64)> = busy
            .iter()
            .map(|(a, b)| (vdso_start + a, vdso_start + b))
            .collect();
        let mut sp = sp;
        let mut all_out = true;
        for (tid, rip) in rips {
            if abs.iter().any(|(a, b)| rip >= *a && rip < *b) {
                // Run it out of the range an instruction at a time (a clock read is short).
                all_out &= sp.step_out(tid, &abs, 4096).unwrap_or(false);
            }
        }
        if all_out {
            return Ok(Some(sp));
        }
        drop(sp);
        std::thread::sleep(Duration::from_micros(200 * (attempt + 1).min(10)));
    }
    Err(FaultError::Other(format!(
        "a thread of pid {pid} stayed inside the vDSO clock functions for 200 tries"
    )))
}

fn crate_error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Writes the `patched` (or, with `undo`, the `original`) side of every edit into `pid` and
/// reads it back. The replacement block is written first when patching and last when undoing,
/// so no entry ever jumps to bytes that are not there yet.
fn write_edits(
    pid: i32,
    vdso_start: u64,
    edits: &[VdsoEdit],
    undo: bool,
) -> Result<(), FaultError> {
    let io = |source| FaultError::Io {
        action: if undo {
            "restore the vDSO of".into()
        } else {
            "patch the vDSO of".into()
        },
        target: format!("pid {pid}"),
        source,
    };
    let order: Vec<&VdsoEdit> = if undo {
        edits.iter().rev().collect()
    } else {
        edits.iter().collect()
    };
    for e in order {
        let bytes = if undo { &e.original } else { &e.patched };
        havoc_sys::ptrace::write_mem(pid, vdso_start + e.offset, bytes).map_err(io)?;
        let back =
            havoc_sys::ptrace::read_mem(pid, vdso_start + e.offset, bytes.len()).map_err(io)?;
        if &back != bytes {
            return Err(FaultError::Other(format!(
                "the vDSO of pid {pid} at +{:#x} reads back different bytes after writing",
                e.offset
            )));
        }
    }
    Ok(())
}

/// Whether the vDSO of `pid` at `vdso_start` carries exactly this patch.
fn carries_patch(pid: i32, vdso_start: u64, edits: &[VdsoEdit]) -> bool {
    edits.iter().all(|e| {
        havoc_sys::ptrace::read_mem(pid, vdso_start + e.offset, e.patched.len())
            .is_ok_and(|b| b == e.patched)
    })
}

/// Restores the original bytes in every live process whose vDSO sits at `vdso_start` and carries
/// the patch (the target and the children it forked after the patch). Returns the pids restored.
pub fn restore_everywhere(vdso_start: u64, edits: &[VdsoEdit]) -> Result<Vec<i32>, FaultError> {
    let busy: Vec<(u64, u64)> = edits
        .iter()
        .map(|e| (e.offset, e.offset + e.patched.len() as u64))
        .collect();
    let mut restored = Vec::new();
    let mut errors = Vec::new();
    // Every process, by its maps only (kernel threads have no vDSO): cheap enough to scan
    // the whole machine, which also finds forks whose parent has exited.
    let me = std::process::id() as i32;
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&pid| pid != me)
                .collect()
        })
        .unwrap_or_default();
    for pid in pids {
        let at = havoc_sys::vdso::find(pid).ok().flatten().map(|m| m.start);
        if at != Some(vdso_start) || !carries_patch(pid, vdso_start, edits) {
            continue;
        }
        let r = (|| {
            let Some(sp) = stop_outside(pid, vdso_start, &busy)? else {
                return Ok(false);
            };
            // Re-check under the stop: another recovery may have restored it meanwhile.
            if !carries_patch(pid, vdso_start, edits) {
                return Ok(false);
            }
            write_edits(pid, vdso_start, edits, true)?;
            sp.detach_all();
            Ok::<bool, FaultError>(true)
        })();
        match r {
            Ok(true) => restored.push(pid),
            Ok(false) => {}
            Err(e) => errors.push(crate_error_chain(&e)),
        }
    }
    if errors.is_empty() {
        Ok(restored)
    } else {
        Err(FaultError::Other(errors.join("; ")))
    }
}

pub struct TimeFault {
    spec: TimeChaos,
}

impl TimeFault {
    pub fn new(spec: TimeChaos) -> Self {
        Self { spec }
    }

    fn patch(&self) -> Result<VdsoPatch, FaultError> {
        let (sec, nsec) = self.spec.time_offset.as_sec_nsec();
        plan_patch(&pristine_vdso()?, sec, nsec, self.spec.clock_mask()).map_err(FaultError::Other)
    }
}

fn process_target(target: &Target) -> Result<(i32, u64), FaultError> {
    target.live_process("TimeChaos needs a process")
}

/// Checks that the target's vDSO is the kernel's image: a vDSO patched already (by another
/// TimeChaos, or another tool) is a conflict, since restoring ours would undo theirs.
fn check_pristine(target: &Target, pid: i32, pristine: &[u8]) -> Result<u64, FaultError> {
    match read_vdso(pid)? {
        None => Err(FaultError::Refused {
            target: target.label(),
            reason: "it has no vDSO (a static binary started without one?)".into(),
        }),
        Some((_, img)) if img != pristine => Err(FaultError::Conflict {
            target: target.label(),
            reason: "its vDSO differs from the kernel's: its clocks are already patched (by another TimeChaos or another tool)".into(),
        }),
        Some((start, _)) => Ok(start),
    }
}

impl Fault for TimeFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        let (pid, _) = process_target(target)?;
        self.patch()?;
        check_pristine(target, pid, &pristine_vdso()?)?;
        Ok(())
    }

    fn undo_plan(&self, target: &Target) -> Vec<UndoAction> {
        let Target::Process {
            pid, start_time, ..
        } = target
        else {
            return Vec::new();
        };
        let (Ok(patch), Ok(Some(m))) = (self.patch(), havoc_sys::vdso::find(*pid)) else {
            return Vec::new();
        };
        vec![UndoAction::RestoreVdso {
            pid: *pid,
            start_time: *start_time,
            vdso_start: m.start,
            edits: patch.edits,
        }]
    }

    fn inject(&self, target: &Target, _ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        let (pid, start_time) = process_target(target)?;
        let patch = self.patch()?;
        let pristine = pristine_vdso()?;
        let started = Instant::now();
        // The vDSO's place is fixed for the life of the process: locate and check it first.
        let vdso_start = check_pristine(target, pid, &pristine)?;
        let Some(sp) = stop_outside(pid, vdso_start, &patch.busy_ranges)? else {
            return Err(FaultError::TargetGone {
                target: target.label(),
            });
        };
        let threads = sp.tids().len();
        // Checked again under the stop: another run may have patched it meanwhile.
        check_pristine(target, pid, &pristine)?;
        if let Err(e) = write_edits(pid, vdso_start, &patch.edits, false) {
            // Put back whatever was written; the threads are still stopped.
            let _ = write_edits(pid, vdso_start, &patch.edits, true);
            return Err(e);
        }
        sp.detach_all();
        let in_effect = Instant::now();
        Ok(Box::new(TimeInjection {
            pid,
            start_time,
            vdso_start,
            edits: patch.edits,
            functions: patch.functions,
            threads,
            inject_time: in_effect - started,
            in_effect,
            requested: self.spec.summary(),
            recovered: None,
        }))
    }

    fn requested(&self) -> String {
        self.spec.summary()
    }
}

struct TimeInjection {
    pid: i32,
    start_time: u64,
    vdso_start: u64,
    edits: Vec<VdsoEdit>,
    functions: Vec<String>,
    threads: usize,
    inject_time: Duration,
    in_effect: Instant,
    requested: String,
    /// Pids restored at recovery.
    recovered: Option<Vec<i32>>,
}

impl Injection for TimeInjection {
    fn in_effect_since(&self) -> Option<Instant> {
        Some(self.in_effect)
    }

    fn tick(&mut self) -> Result<(), FaultError> {
        if self.recovered.is_none() && !ProcInfo::is_same(self.pid, self.start_time) {
            return Err(FaultError::TargetGone {
                target: format!("pid {}", self.pid),
            });
        }
        Ok(())
    }

    fn effect(&self) -> Effect {
        let mut summary = format!(
            "{} on {} thread(s) of pid {} (patched {} in {:.1} ms); programs that call the clock system call directly, and programs started later, see the real time",
            self.requested,
            self.threads,
            self.pid,
            self.functions.join(", "),
            self.inject_time.as_secs_f64() * 1000.0
        );
        if let Some(r) = &self.recovered {
            summary.push_str(&format!(
                "; original bytes restored and compared in {} process(es)",
                r.len()
            ));
        }
        Effect {
            summary,
            ..Default::default()
        }
        .metric("threads_patched", self.threads as f64)
        .metric("inject_seconds", self.inject_time.as_secs_f64())
        .metric(
            "processes_restored",
            self.recovered.as_ref().map_or(0, |r| r.len()) as f64,
        )
    }

    fn recover(&mut self) -> Result<(), FaultError> {
        if self.recovered.is_some() {
            return Ok(());
        }
        let restored = restore_everywhere(self.vdso_start, &self.edits)?;
        self.recovered = Some(restored);
        Ok(())
    }
}

impl Drop for TimeInjection {
    fn drop(&mut self) {
        if let Err(e) = self.recover() {
            tracing::error!(pid = self.pid, error = %e, "failed to restore the vDSO on drop");
        }
    }
}

/// Replays a journaled [`UndoAction::RestoreVdso`]: restores every process that still carries
/// the patch. Returns how many were restored.
pub fn replay_restore(vdso_start: u64, edits: &[VdsoEdit]) -> Result<usize, FaultError> {
    restore_everywhere(vdso_start, edits).map(|v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_fill_every_placeholder() {
        let (block, at) = stubs(-300, 5, 0b1000_0011);
        for p in [
            &PLACEHOLDER_SEC[..],
            &PLACEHOLDER_NSEC,
            &PLACEHOLDER_USEC,
            &PLACEHOLDER_MASK,
        ] {
            assert!(!block.windows(p.len()).any(|w| w == p), "placeholder left");
        }
        assert_eq!(at[0], 0);
        assert!(at[1] % 16 == 0 && at[2] % 16 == 0 && at[1] > 0 && at[2] > at[1]);
        assert_eq!(*block.last().unwrap(), 0xcc);
    }

    #[test]
    fn plan_patch_of_own_vdso_jumps_into_free_tail() {
        let img = pristine_vdso().expect("own vdso");
        let p = plan_patch(&img, 3600, 0, 1).expect("patch");
        assert_eq!(
            p.edits.len(),
            4,
            "block + clock_gettime + gettimeofday + time"
        );
        let block = &p.edits[0];
        assert!(block.original.iter().all(|&b| b == 0));
        for e in &p.edits[1..] {
            assert_eq!(e.patched[0], 0xe9);
            let rel = i32::from_le_bytes(e.patched[1..5].try_into().unwrap()) as i64;
            let dest = e.offset as i64 + 5 + rel;
            assert!(
                dest >= block.offset as i64
                    && dest < (block.offset + block.patched.len() as u64) as i64
            );
        }
        let mono = plan_patch(&img, 3600, 0, 1 << 1).expect("patch");
        assert_eq!(
            mono.edits.len(),
            2,
            "without CLOCK_REALTIME only clock_gettime"
        );
    }
}
