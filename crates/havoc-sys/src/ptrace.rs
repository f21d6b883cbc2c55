//! Tracing a live process with ptrace(2), and reading and writing its memory.
//!
//! Used by two faults: TimeChaos stops every thread for the instant it patches the vDSO, and
//! SyscallChaos keeps the threads traced and rewrites chosen system calls. Every attach here is a
//! `PTRACE_SEIZE` *without* `PTRACE_O_EXITKILL`: when the tracing thread dies, even by SIGKILL,
//! the kernel detaches its tracees and they run on — the kernel owns the recovery.
//!
//! ptrace is per *thread*: the thread that seized a tracee is its tracer, and every later request
//! for that tracee must come from the same thread (callers keep a tracer on one thread).

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::SysError;

/// `PTRACE_O_*` options.
pub const O_TRACESYSGOOD: u32 = libc::PTRACE_O_TRACESYSGOOD as u32;
pub const O_TRACEFORK: u32 = libc::PTRACE_O_TRACEFORK as u32;
pub const O_TRACEVFORK: u32 = libc::PTRACE_O_TRACEVFORK as u32;
pub const O_TRACECLONE: u32 = libc::PTRACE_O_TRACECLONE as u32;

/// `PTRACE_EVENT_*` codes found in the high byte of a stop status.
pub const EVENT_FORK: i32 = libc::PTRACE_EVENT_FORK;
pub const EVENT_VFORK: i32 = libc::PTRACE_EVENT_VFORK;
pub const EVENT_CLONE: i32 = libc::PTRACE_EVENT_CLONE;
pub const EVENT_STOP: i32 = libc::PTRACE_EVENT_STOP;

fn check(call: &'static str, rc: libc::c_long) -> Result<libc::c_long, SysError> {
    if rc == -1 {
        Err(SysError::new(call, std::io::Error::last_os_error()))
    } else {
        Ok(rc)
    }
}

/// Issues a ptrace request that takes only integers.
fn request(
    call: &'static str,
    req: libc::c_uint,
    tid: i32,
    addr: usize,
    data: usize,
) -> Result<libc::c_long, SysError> {
    // SAFETY: every request routed here interprets `addr`/`data` as plain integers (options,
    // signal numbers, zero), never as pointers into our memory.
    let rc = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    check(call, rc)
}

/// Attaches to one thread without stopping it (`PTRACE_SEIZE`) with `options`.
pub fn seize(tid: i32, options: u32) -> Result<(), SysError> {
    request(
        "ptrace(PTRACE_SEIZE)",
        libc::PTRACE_SEIZE,
        tid,
        0,
        options as usize,
    )
    .map(|_| ())
}

/// Asks a seized thread to stop (`PTRACE_INTERRUPT`); it reports a `PTRACE_EVENT_STOP`.
pub fn interrupt(tid: i32) -> Result<(), SysError> {
    request(
        "ptrace(PTRACE_INTERRUPT)",
        libc::PTRACE_INTERRUPT,
        tid,
        0,
        0,
    )
    .map(|_| ())
}

/// Detaches from a stopped tracee, delivering `sig` (0 for none).
pub fn detach(tid: i32, sig: i32) -> Result<(), SysError> {
    request(
        "ptrace(PTRACE_DETACH)",
        libc::PTRACE_DETACH,
        tid,
        0,
        sig as usize,
    )
    .map(|_| ())
}

/// Resumes a stopped tracee until its next system call entry or exit (`PTRACE_SYSCALL`).
pub fn resume_syscall(tid: i32, sig: i32) -> Result<(), SysError> {
    request(
        "ptrace(PTRACE_SYSCALL)",
        libc::PTRACE_SYSCALL,
        tid,
        0,
        sig as usize,
    )
    .map(|_| ())
}

/// Resumes a stopped tracee (`PTRACE_CONT`).
pub fn resume(tid: i32, sig: i32) -> Result<(), SysError> {
    request(
        "ptrace(PTRACE_CONT)",
        libc::PTRACE_CONT,
        tid,
        0,
        sig as usize,
    )
    .map(|_| ())
}

/// Lets a tracee in group-stop stay stopped while still reporting events (`PTRACE_LISTEN`).
pub fn listen(tid: i32) -> Result<(), SysError> {
    request("ptrace(PTRACE_LISTEN)", libc::PTRACE_LISTEN, tid, 0, 0).map(|_| ())
}

/// The general-purpose registers of a stopped tracee (x86-64).
pub type Regs = libc::user_regs_struct;

pub fn get_regs(tid: i32) -> Result<Regs, SysError> {
    // SAFETY: user_regs_struct is plain old data; all-zero is a valid value.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS writes exactly one user_regs_struct to `data`, which points to one.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut regs as *mut Regs as *mut libc::c_void,
        )
    };
    check("ptrace(PTRACE_GETREGS)", rc)?;
    Ok(regs)
}

pub fn set_regs(tid: i32, regs: &Regs) -> Result<(), SysError> {
    // SAFETY: PTRACE_SETREGS only reads one user_regs_struct from `data`, which points to one.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            regs as *const Regs as *mut libc::c_void,
        )
    };
    check("ptrace(PTRACE_SETREGS)", rc).map(|_| ())
}

/// The message of the last ptrace event (`PTRACE_GETEVENTMSG`): a new child's pid after a
/// fork/clone event.
pub fn event_msg(tid: i32) -> Result<u64, SysError> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: PTRACE_GETEVENTMSG writes one unsigned long to `data`, which points to one.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut msg as *mut libc::c_ulong as *mut libc::c_void,
        )
    };
    check("ptrace(PTRACE_GETEVENTMSG)", rc)?;
    Ok(msg as u64)
}

/// What a tracee stopped at a system call stop is doing (`PTRACE_GET_SYSCALL_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallStop {
    Entry {
        nr: u64,
        args: [u64; 6],
    },
    Exit {
        rval: i64,
        is_error: bool,
    },
    /// Not a system call stop (or a seccomp stop, which Havoc never asks for).
    Other,
}

/// The kernel's `struct ptrace_syscall_info` (uapi/linux/ptrace.h), x86-64 layout.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawSyscallInfo {
    op: u8,
    _pad: [u8; 3],
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    /// entry: nr, args[6]; exit: rval (s64), is_error (u8).
    data: [u64; 7],
}

const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;

pub fn syscall_info(tid: i32) -> Result<SyscallStop, SysError> {
    let mut info = RawSyscallInfo {
        op: 0,
        _pad: [0; 3],
        arch: 0,
        instruction_pointer: 0,
        stack_pointer: 0,
        data: [0; 7],
    };
    let size = std::mem::size_of::<RawSyscallInfo>();
    // SAFETY: the kernel writes at most `size` bytes (passed as `addr`) into `info`, which is a
    // repr(C) struct of exactly that size.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_GET_SYSCALL_INFO,
            tid,
            size as *mut libc::c_void,
            &mut info as *mut RawSyscallInfo as *mut libc::c_void,
        )
    };
    check("ptrace(PTRACE_GET_SYSCALL_INFO)", rc)?;
    Ok(match info.op {
        1 => SyscallStop::Entry {
            nr: info.data[0],
            args: [
                info.data[1],
                info.data[2],
                info.data[3],
                info.data[4],
                info.data[5],
                info.data[6],
            ],
        },
        2 => SyscallStop::Exit {
            rval: info.data[0] as i64,
            is_error: info.data[1] & 0xff != 0,
        },
        _ => SyscallStop::Other,
    })
}

/// How a waited-for thread changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Killed(i32),
    /// Stopped: `sig` is the stop signal (`SIGTRAP | 0x80` for a system call stop with
    /// TRACESYSGOOD), `event` the `PTRACE_EVENT_*` code or 0.
    Stopped {
        sig: i32,
        event: i32,
    },
}

impl Status {
    pub fn is_syscall_stop(&self) -> bool {
        matches!(self, Status::Stopped { sig, event: 0 } if *sig == (libc::SIGTRAP | 0x80))
    }
}

/// `waitpid(pid, __WALL [| WNOHANG])`: `Ok(None)` when nothing changed (with `nohang`).
pub fn wait(pid: i32, nohang: bool) -> Result<Option<(i32, Status)>, SysError> {
    let mut status: libc::c_int = 0;
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: waitpid writes one int to `status`, which points to one.
        let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
        if rc == -1 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(SysError::new("waitpid", e));
        }
        if rc == 0 {
            return Ok(None);
        }
        return Ok(Some((rc, decode(status))));
    }
}

/// Waits for any tracee of the *calling thread* (`waitpid(-1, __WALL | __WNOTHREAD)`), never
/// for children of other threads of this process: helper processes are theirs to reap.
pub fn wait_own_tracee(nohang: bool) -> Result<Option<(i32, Status)>, SysError> {
    let mut status: libc::c_int = 0;
    let flags = libc::__WALL | libc::__WNOTHREAD | if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: waitpid writes one int to `status`, which points to one.
        let rc = unsafe { libc::waitpid(-1, &mut status, flags) };
        if rc == -1 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(SysError::new("waitpid", e));
        }
        if rc == 0 {
            return Ok(None);
        }
        return Ok(Some((rc, decode(status))));
    }
}

fn decode(status: libc::c_int) -> Status {
    if libc::WIFEXITED(status) {
        Status::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Status::Killed(libc::WTERMSIG(status))
    } else {
        Status::Stopped {
            sig: libc::WSTOPSIG(status),
            event: (status >> 16) & 0xff,
        }
    }
}

/// The pid of the tracer of `pid` (`TracerPid` in /proc/PID/status), 0 when untraced.
pub fn tracer_of(pid: i32) -> std::io::Result<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(s.lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// The thread ids of process `pid` (`/proc/PID/task`).
pub fn threads(pid: i32) -> std::io::Result<Vec<i32>> {
    let mut out: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Reads `len` bytes at `addr` of process `pid` through `/proc/PID/mem`.
pub fn read_mem(pid: i32, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, addr)?;
    Ok(buf)
}

/// Reads a NUL-terminated string of at most `max` bytes at `addr` of `pid`.
pub fn read_cstr(pid: i32, addr: u64, max: usize) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        // Read up to the end of the page so a string near an unmapped page still reads.
        let room = (4096 - (at % 4096) as usize).min(max - out.len());
        let mut buf = vec![0u8; room];
        let n = f.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Ok(out)
}

/// Writes `bytes` at `addr` of process `pid` through `/proc/PID/mem` (the kernel forces the write
/// into read-only private mappings such as the vDSO, copying the page for that process only).
pub fn write_mem(pid: i32, addr: u64, bytes: &[u8]) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))?;
    f.write_all_at(bytes, addr)
}

/// Every thread of one process, seized and stopped by the calling thread. Dropping it detaches
/// them all (each resumes where it was, with any signal it was about to take).
pub struct StoppedProcess {
    pub pid: i32,
    /// Stopped threads, with a signal to deliver at detach (0 for none).
    threads: BTreeMap<i32, i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("process {pid} has exited")]
    Gone { pid: i32 },
    #[error("failed to stop thread {tid} of process {pid}")]
    Sys {
        pid: i32,
        tid: i32,
        #[source]
        source: SysError,
    },
    #[error("the threads of process {pid} kept changing for {secs:.1}s")]
    Unstable { pid: i32, secs: f64 },
}

impl StoppedProcess {
    /// Seizes and stops every thread of `pid`, rereading the thread list until no new thread
    /// appears (a thread can only be created by a running thread, so once all known threads are
    /// stopped the list is final). Gives up after `timeout`.
    pub fn stop(pid: i32, timeout: Duration) -> Result<StoppedProcess, StopError> {
        let started = Instant::now();
        let mut sp = StoppedProcess {
            pid,
            threads: BTreeMap::new(),
        };
        loop {
            let tids = threads(pid).map_err(|_| StopError::Gone { pid })?;
            if tids.is_empty() {
                return Err(StopError::Gone { pid });
            }
            let new: Vec<i32> = tids
                .into_iter()
                .filter(|t| !sp.threads.contains_key(t))
                .collect();
            if new.is_empty() {
                return Ok(sp);
            }
            if started.elapsed() > timeout {
                return Err(StopError::Unstable {
                    pid,
                    secs: started.elapsed().as_secs_f64(),
                });
            }
            // Seize and interrupt them all first, then wait: the threads stop in parallel
            // (a busy thread may wait for a CPU before it can stop).
            let mut interrupted = Vec::with_capacity(new.len());
            let mut failed = None;
            for tid in new {
                match seize(tid, 0).and_then(|()| interrupt(tid)) {
                    Ok(()) => interrupted.push(tid),
                    // The thread exited between listing and seizing.
                    Err(e) if e.errno() == Some(libc::ESRCH) => {}
                    Err(source) => {
                        failed = Some(StopError::Sys { pid, tid, source });
                        break;
                    }
                }
            }
            for tid in interrupted {
                match Self::wait_stopped(tid) {
                    Ok(Some(sig)) => {
                        sp.threads.insert(tid, sig);
                    }
                    Ok(None) => {} // exited
                    Err(source) => {
                        failed.get_or_insert(StopError::Sys { pid, tid, source });
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e); // dropping `sp` detaches the threads stopped so far
            }
        }
    }

    /// Waits for a seized, interrupted thread to stop. `Some(sig)`: stopped, with `sig` to
    /// deliver at detach; `None`: it exited.
    fn wait_stopped(tid: i32) -> Result<Option<i32>, SysError> {
        match wait(tid, false)? {
            None => Ok(None),
            Some((_, Status::Exited(_) | Status::Killed(_))) => Ok(None),
            // The interrupt (or a group stop: the thread stays stopped after detach).
            Some((_, Status::Stopped { event, .. })) if event == EVENT_STOP => Ok(Some(0)),
            // A signal-delivery stop came first: stopped too; hand the signal back at detach.
            Some((_, Status::Stopped { sig, .. })) => Ok(Some(sig)),
        }
    }

    pub fn tids(&self) -> Vec<i32> {
        self.threads.keys().copied().collect()
    }

    /// The instruction pointer of every stopped thread.
    pub fn instruction_pointers(&self) -> Result<Vec<(i32, u64)>, SysError> {
        let mut out = Vec::new();
        for &tid in self.threads.keys() {
            match get_regs(tid) {
                Ok(r) => out.push((tid, r.rip)),
                Err(e) if e.errno() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Single-steps stopped thread `tid` until its instruction pointer leaves every range in
    /// `ranges` (absolute addresses), at most `max_steps` instructions. Returns whether it left.
    /// A signal that arrives meanwhile is kept and delivered at detach.
    pub fn step_out(
        &mut self,
        tid: i32,
        ranges: &[(u64, u64)],
        max_steps: usize,
    ) -> Result<bool, SysError> {
        let inside = |rip: u64| ranges.iter().any(|(a, b)| rip >= *a && rip < *b);
        for _ in 0..max_steps {
            if !inside(get_regs(tid)?.rip) {
                return Ok(true);
            }
            let pending = self.threads.get(&tid).copied().unwrap_or(0);
            request(
                "ptrace(PTRACE_SINGLESTEP)",
                libc::PTRACE_SINGLESTEP,
                tid,
                0,
                0,
            )?;
            match wait(tid, false)? {
                Some((_, Status::Stopped { sig, .. })) => {
                    if sig != libc::SIGTRAP && pending == 0 {
                        self.threads.insert(tid, sig);
                    }
                }
                _ => {
                    self.threads.remove(&tid);
                    return Ok(true);
                }
            }
        }
        Ok(!inside(get_regs(tid)?.rip))
    }

    /// Detaches every thread; returns how many were detached.
    pub fn detach_all(mut self) -> usize {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> usize {
        let mut n = 0;
        for (tid, sig) in std::mem::take(&mut self.threads) {
            if detach(tid, sig).is_ok() {
                n += 1;
            }
        }
        n
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        self.detach_inner();
    }
}
