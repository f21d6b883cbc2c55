//! TimeChaos against a real multi-threaded Python process: every thread (and a child forked
//! during the fault) reads the offset through `clock_gettime` (REALTIME, MONOTONIC, BOOTTIME),
//! `time.time()`, `gettimeofday` and `time`, within 1 ms; after recovery none, and the vDSO is
//! byte for byte the kernel's again. Also: replaying the journaled undo record restores a patch
//! whose injection was lost (as the watchdog does when Havoc is killed).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use havoc_faults::{Context, Fault, Target, UndoAction};
use havoc_spec::time::{ClockId, TimeChaos};

const READER: &str = r#"
import sys, os, time, threading, queue, ctypes
libc = ctypes.CDLL(None)
libc.time.restype = ctypes.c_long
class TV(ctypes.Structure):
    _fields_ = [("s", ctypes.c_long), ("us", ctypes.c_long)]
def read():
    tv = TV()
    libc.gettimeofday(ctypes.byref(tv), None)
    return [time.clock_gettime(time.CLOCK_REALTIME), time.clock_gettime(time.CLOCK_MONOTONIC),
            time.clock_gettime(time.CLOCK_BOOTTIME), time.time(), tv.s + tv.us / 1e6,
            float(libc.time(None))]
reqs = [queue.Queue() for _ in range(8)]
out = queue.Queue()
def worker(q):
    while True:
        q.get()
        out.put(read())
for q in reqs:
    threading.Thread(target=worker, args=(q,), daemon=True).start()
i = 0
print("ready", flush=True)
for line in sys.stdin:
    c = line.strip()
    if c == "r":
        reqs[i % 8].put(1)
        i += 1
        print(" ".join(repr(x) for x in out.get()), flush=True)
    elif c == "f":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, (" ".join(repr(x) for x in read()) + "\n").encode())
            os._exit(0)
        os.close(w)
        data = os.read(r, 4096).decode()
        os.waitpid(pid, 0)
        print(data.strip(), flush=True)
"#;

fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root, and CI runs as root"
    );
    eprintln!("skipping {test}: needs root (ptrace and /proc/PID/mem of another process)");
    false
}

struct Reader {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Reader {
    fn start() -> Reader {
        let mut child = Command::new("python3")
            .args(["-c", READER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready");
        Reader {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `cmd`; returns the target's readings and the test's own (unpatched) clocks just
    /// before and just after.
    fn ask(&mut self, cmd: &str) -> (Vec<f64>, [f64; 3], [f64; 3]) {
        let before = own_clocks();
        writeln!(self.stdin, "{cmd}").expect("write command");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read readings");
        let after = own_clocks();
        let v = line
            .split_whitespace()
            .map(|x| x.parse().expect("a float"))
            .collect::<Vec<f64>>();
        assert_eq!(v.len(), 6, "six readings: {line}");
        (v, before, after)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn own_clocks() -> [f64; 3] {
    use rustix::time::{clock_gettime, ClockId as C};
    let f = |c| {
        let t = clock_gettime(c);
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    };
    [f(C::Realtime), f(C::Monotonic), f(C::Boottime)]
}

/// Asserts every reading is the test's own clock plus `offset` seconds, within 1 ms (1 s for
/// `time()`, which has a resolution of one second).
fn assert_offset(what: &str, r: &(Vec<f64>, [f64; 3], [f64; 3]), offset: [f64; 3]) {
    let (v, before, after) = r;
    let tol = 0.001;
    let checks = [
        ("clock_gettime(CLOCK_REALTIME)", v[0], 0, tol),
        ("clock_gettime(CLOCK_MONOTONIC)", v[1], 1, tol),
        ("clock_gettime(CLOCK_BOOTTIME)", v[2], 2, tol),
        ("time.time()", v[3], 0, tol),
        ("gettimeofday", v[4], 0, tol + 1e-6),
        ("time()", v[5], 0, 1.0 + tol),
    ];
    for (name, got, clock, tol) in checks {
        let lo = before[clock] + offset[clock] - tol;
        let hi = after[clock] + offset[clock] + tol;
        assert!(
            (lo..=hi).contains(&got),
            "{what}: {name} = {got:.6}, expected {:.6}..={:.6} (offset {})",
            lo + tol,
            hi - tol,
            offset[clock]
        );
    }
}

fn target_of(pid: i32) -> Target {
    let info = havoc_faults::procinfo::ProcInfo::read(pid).expect("target info");
    Target::Process {
        pid,
        start_time: info.start_time,
        name: info.comm,
    }
}

fn ctx() -> Context {
    Context {
        self_exe: std::env::current_exe().expect("exe"),
        seed: 1,
        duration: Duration::from_secs(5),
    }
}

fn vdso_of(pid: i32) -> Vec<u8> {
    let m = havoc_sys::vdso::find(pid).expect("maps").expect("vdso");
    havoc_sys::ptrace::read_mem(pid, m.start, m.len()).expect("read vdso")
}

fn spec(offset: &str) -> TimeChaos {
    TimeChaos {
        time_offset: offset.parse().expect("offset"),
        clock_ids: vec![ClockId(0), ClockId(1), ClockId(7)],
        selector: Default::default(),
    }
}

#[test]
fn every_thread_and_a_forked_child_see_the_offset_and_none_after_recovery() {
    if !root_or_skip("every_thread_and_a_forked_child_see_the_offset_and_none_after_recovery") {
        return;
    }
    let mut r = Reader::start();
    let pid = r.pid();
    let pristine = havoc_faults::time::pristine_vdso().expect("own vdso");
    assert_eq!(
        vdso_of(pid),
        pristine,
        "the target starts with the kernel's vDSO"
    );
    let none = [0.0; 3];
    assert_offset("before", &r.ask("r"), none);

    let fault = havoc_faults::time::TimeFault::new(spec("+2h"));
    let target = target_of(pid);
    fault.check(&target).expect("check");
    let undo = fault.undo_plan(&target);
    assert!(
        matches!(undo.as_slice(), [UndoAction::RestoreVdso { pid: p, .. }] if *p == pid),
        "the original bytes are journaled before the patch: {undo:?}"
    );
    let mut inj = fault.inject(&target, &ctx()).expect("inject");
    let effect = inj.effect();
    assert!(
        effect.metrics["threads_patched"] >= 9.0,
        "main + 8 workers: {}",
        effect.summary
    );
    let skew = [7200.0; 3];
    for i in 0..16 {
        assert_offset(&format!("during, read {i}"), &r.ask("r"), skew);
    }
    assert_offset("forked child during", &r.ask("f"), skew);
    // A second TimeChaos on the same process is a conflict, not a second patch.
    let again = havoc_faults::time::TimeFault::new(spec("-1m"));
    assert!(matches!(
        again.check(&target),
        Err(havoc_faults::FaultError::Conflict { .. })
    ));

    inj.recover().expect("recover");
    assert_eq!(
        vdso_of(pid),
        pristine,
        "recovery restores the bytes exactly"
    );
    for i in 0..4 {
        assert_offset(&format!("after, read {i}"), &r.ask("r"), none);
    }
    assert_offset("forked child after", &r.ask("f"), none);
    eprintln!("{}", inj.effect().summary);
}

#[test]
fn replaying_the_journal_restores_a_patch_whose_holder_is_gone() {
    if !root_or_skip("replaying_the_journal_restores_a_patch_whose_holder_is_gone") {
        return;
    }
    let mut r = Reader::start();
    let pid = r.pid();
    let pristine = havoc_faults::time::pristine_vdso().expect("own vdso");
    let fault = havoc_faults::time::TimeFault::new(spec("-90s"));
    let target = target_of(pid);
    let undo = fault.undo_plan(&target);
    let inj = fault.inject(&target, &ctx()).expect("inject");
    // The holder dies without recovering: its injection is never dropped.
    std::mem::forget(inj);
    assert_offset("patched", &r.ask("r"), [-90.0; 3]);
    assert_ne!(vdso_of(pid), pristine);
    for u in &undo {
        u.undo().expect("replay");
    }
    assert_eq!(vdso_of(pid), pristine, "replay restores the bytes exactly");
    assert_offset("after replay", &r.ask("r"), [0.0; 3]);
    // Replaying again finds nothing left.
    for u in &undo {
        assert!(matches!(
            u.undo().expect("second replay"),
            havoc_faults::undo::UndoOutcome::NothingLeft(_)
        ));
    }
}
