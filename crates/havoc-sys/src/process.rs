//! Signals and helper processes whose lives are tied to ours.

use std::process::Command;

use crate::SysError;

/// Sends signal number `signo` to `pid`.
pub fn send_signal(pid: i32, signo: i32) -> Result<(), SysError> {
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signo) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::new("kill", std::io::Error::last_os_error()))
    }
}

/// True if a process with this pid exists (it may be a zombie).
pub fn pid_exists(pid: i32) -> bool {
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Arranges for the child spawned by `cmd` to receive `signo` when the thread that spawns it
/// exits (`PR_SET_PDEATHSIG`), and to exit at once if its parent already died before the setting
/// took effect. Spawn from a thread that lives as long as the child should.
pub fn die_with_parent(cmd: &mut Command, signo: i32) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls the async-signal-safe
    // functions `prctl`, `getppid` and `_exit`; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signo as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Puts the child spawned by `cmd` into its own session, detached from our terminal and process
/// group, so a Ctrl-C aimed at us does not reach it.
pub fn new_session(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets `PR_SET_PDEATHSIG` on the calling thread's process: used by re-executed helpers that
/// were not spawned through [`die_with_parent`].
pub fn set_parent_death_signal(signo: i32) -> Result<(), SysError> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signo as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::new(
            "prctl(PR_SET_PDEATHSIG)",
            std::io::Error::last_os_error(),
        ))
    }
}

/// Number of clock ticks per second (`sysconf(_SC_CLK_TCK)`), for /proc CPU times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// Page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as usize
    } else {
        4096
    }
}

/// Locks the pages of `buf` in RAM (best effort: returns false if the kernel refuses, e.g. for
/// lack of CAP_IPC_LOCK or RLIMIT_MEMLOCK).
pub fn lock_memory(buf: &[u8]) -> bool {
    // SAFETY: mlock only reads the address range, which `buf` guarantees is valid and mapped.
    unsafe { libc::mlock(buf.as_ptr().cast(), buf.len()) == 0 }
}
