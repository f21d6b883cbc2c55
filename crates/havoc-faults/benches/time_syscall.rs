//! Benchmarks of the tracing faults (run as root: `cargo bench -p havoc-faults --bench time_syscall`).
//!
//! 1. TimeChaos: time to skew (inject) and to restore (recover) a process with 100 threads, idle
//!    and busy reading the clock.
//! 2. SyscallChaos: system calls per second of a target with a SyscallChaos on a call it does not
//!    make (every call still stops in the tracer) beside the same target untraced.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use havoc_faults::{Context, Fault, Target};

const THREADS: &str = r#"
import sys, threading, time
busy = sys.argv[1] == "busy"
def run():
    if busy:
        while True:
            time.time()
    else:
        threading.Event().wait()
for _ in range(100):
    threading.Thread(target=run, daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "rate":
        import os
        n = 200000
        t0 = time.monotonic()
        for _ in range(n):
            os.getppid()
        print(n / (time.monotonic() - t0), flush=True)
"#;

struct Py {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Py {
    fn start(mode: &str) -> Py {
        let mut child = Command::new("python3")
            .args(["-c", THREADS, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ready");
        Py {
            child,
            stdin,
            stdout,
        }
    }
    fn ask(&mut self, cmd: &str) -> f64 {
        writeln!(self.stdin, "{cmd}").expect("write");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        line.trim().parse().expect("number")
    }
    fn target(&self) -> Target {
        let pid = self.child.id() as i32;
        let info = havoc_faults::procinfo::ProcInfo::read(pid).expect("info");
        Target::Process {
            pid,
            start_time: info.start_time,
            name: info.comm,
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctx() -> Context {
    Context {
        self_exe: std::env::current_exe().expect("exe"),
        seed: 1,
        duration: Duration::from_secs(10),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn spec(kind: &str, fields: &str) -> havoc_spec::FaultSpec {
    let doc = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: {kind}\nmetadata: {{ name: b }}\nspec:\n  duration: 10s\n  selector: {{ pids: [1] }}\n{fields}"
    );
    let exp = havoc_spec::parse_experiment(&doc).expect("valid");
    exp.spec.faults[0].spec.clone()
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("time_syscall bench needs root (ptrace)");
        return;
    }
    let havoc_spec::FaultSpec::TimeChaos(time) = spec(
        "TimeChaos",
        "  timeOffset: -5m\n  clockIds: [CLOCK_REALTIME, CLOCK_MONOTONIC]\n",
    ) else {
        unreachable!("a TimeChaos")
    };
    for mode in ["idle", "busy"] {
        let py = Py::start(mode);
        let fault = havoc_faults::time::TimeFault::new(time.clone());
        let (mut inj_t, mut rec_t, mut threads) = (Vec::new(), Vec::new(), 0.0);
        for _ in 0..7 {
            let t0 = Instant::now();
            let mut inj = fault.inject(&py.target(), &ctx()).expect("inject");
            inj_t.push(t0.elapsed().as_secs_f64() * 1000.0);
            threads = inj.effect().metrics["threads_patched"];
            let t0 = Instant::now();
            inj.recover().expect("recover");
            rec_t.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "TimeChaos, {threads} threads ({mode}): skew median {:.2} ms (max {:.2}), restore median {:.2} ms (max {:.2}), 7 runs",
            median(inj_t.clone()),
            inj_t.iter().cloned().fold(0.0, f64::max),
            median(rec_t.clone()),
            rec_t.iter().cloned().fold(0.0, f64::max),
        );
    }

    let havoc_spec::FaultSpec::SyscallChaos(sys) = spec(
        "SyscallChaos",
        "  syscalls: [connect]\n  errno: ECONNREFUSED\n",
    ) else {
        unreachable!("a SyscallChaos")
    };
    let mut py = Py::start("idle");
    let mut base = Vec::new();
    let mut traced = Vec::new();
    for _ in 0..3 {
        base.push(py.ask("rate"));
        let fault = havoc_faults::syscall::SyscallFault::new(sys.clone());
        let mut inj = fault.inject(&py.target(), &ctx()).expect("inject");
        traced.push(py.ask("rate"));
        inj.recover().expect("recover");
    }
    let (b, t) = (median(base), median(traced));
    println!(
        "SyscallChaos on connect, target calling getppid (not matching): {b:.0} calls/s untraced, {t:.0} calls/s traced ({:.1}x slower, +{:.1} us per call), median of 3",
        b / t,
        (1.0 / t - 1.0 / b) * 1e6
    );
}
