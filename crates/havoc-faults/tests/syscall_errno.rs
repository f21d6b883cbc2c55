//! SyscallChaos against a real Python process: `openat` of a matching path fails with the asked
//! errno at the asked rate while other paths succeed; `connect` fails as asked; a held call is
//! delayed; after recovery every call succeeds and the target is no longer traced.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use havoc_faults::{Context, Fault, Target};
use havoc_spec::syscall::SyscallChaos;

const CALLER: &str = r#"
import os, sys, socket, time
os.chdir(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    parts = line.split()
    n = int(parts[1])
    ok = 0
    codes = {}
    t0 = time.monotonic()
    for _ in range(n):
        try:
            if parts[0] == "o":
                fd = os.open(parts[2], os.O_RDONLY)
                os.close(fd)
            else:
                s = socket.socket()
                try:
                    s.connect(("127.0.0.1", int(parts[2])))
                finally:
                    s.close()
            ok += 1
        except OSError as e:
            codes[e.errno] = codes.get(e.errno, 0) + 1
    print(ok, time.monotonic() - t0, " ".join(f"{k}:{v}" for k, v in codes.items()), flush=True)
"#;

fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root, and CI runs as root"
    );
    eprintln!("skipping {test}: needs root (ptrace of another process)");
    false
}

struct Caller {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// How a batch of calls went: successes, seconds, and failures by errno.
struct Batch {
    ok: u32,
    secs: f64,
    errors: Vec<(i32, u32)>,
}

impl Batch {
    fn failed_with(&self, errno: i32) -> u32 {
        self.errors
            .iter()
            .filter(|(e, _)| *e == errno)
            .map(|(_, n)| n)
            .sum()
    }
    fn failed(&self) -> u32 {
        self.errors.iter().map(|(_, n)| n).sum()
    }
}

impl Caller {
    fn start(dir: &std::path::Path) -> Caller {
        let mut child = Command::new("python3")
            .args(["-c", CALLER])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready");
        Caller {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn run(&mut self, cmd: &str) -> Batch {
        writeln!(self.stdin, "{cmd}").expect("write command");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read result");
        let mut it = line.split_whitespace();
        let ok = it.next().expect("ok count").parse().expect("number");
        let secs = it.next().expect("seconds").parse().expect("number");
        let errors = it
            .map(|kv| {
                let (k, v) = kv.split_once(':').expect("errno:count");
                (k.parse().expect("errno"), v.parse().expect("count"))
            })
            .collect();
        Batch { ok, secs, errors }
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

fn ctx(seed: u64) -> Context {
    Context {
        self_exe: std::env::current_exe().expect("exe"),
        seed,
        duration: Duration::from_secs(30),
    }
}

fn spec(yaml_fields: &str) -> SyscallChaos {
    let doc = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: SyscallChaos\nmetadata: {{ name: t }}\nspec:\n  duration: 30s\n  selector: {{ pids: [1] }}\n{yaml_fields}"
    );
    let exp = havoc_spec::parse_experiment(&doc).expect("valid spec");
    match &exp.spec.faults[0].spec {
        havoc_spec::FaultSpec::SyscallChaos(s) => s.clone(),
        other => panic!("not a SyscallChaos: {other:?}"),
    }
}

fn traced(pid: i32) -> bool {
    havoc_sys::ptrace::tracer_of(pid).expect("status") != 0
}

#[test]
fn openat_of_a_matching_path_fails_at_the_asked_rate_and_other_paths_succeed() {
    if !root_or_skip("openat_of_a_matching_path_fails_at_the_asked_rate_and_other_paths_succeed") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["match-1.txt", "other.txt"] {
        std::fs::write(dir.path().join(f), "x").expect("write file");
    }
    let mut c = Caller::start(dir.path());
    let glob = format!("{}/match-*", dir.path().display());
    let s = spec(&format!(
        "  syscalls: [openat]\n  errno: EACCES\n  percent: 30\n  path: \"{glob}\"\n"
    ));
    let fault = havoc_faults::syscall::SyscallFault::new(s);
    let target = target_of(c.pid());
    fault.check(&target).expect("check");
    assert!(
        fault.undo_plan(&target).is_empty(),
        "the kernel owns recovery"
    );
    let mut inj = fault.inject(&target, &ctx(7)).expect("inject");
    assert!(traced(c.pid()));

    let n = 3000;
    let m = c.run(&format!("o {n} {}/match-1.txt", dir.path().display()));
    let pct = 100.0 * m.failed_with(13) as f64 / n as f64;
    assert_eq!(m.failed(), m.failed_with(13), "only EACCES: {:?}", m.errors);
    assert_eq!(m.ok + m.failed(), n);
    assert!(
        (28.0..=32.0).contains(&pct),
        "30% requested, {pct:.2}% of {n} failed"
    );
    let o = c.run(&format!("o 1000 {}/other.txt", dir.path().display()));
    assert_eq!((o.ok, o.failed()), (1000, 0), "other paths succeed");
    // A relative path is resolved against the caller's working directory before matching.
    let rel = c.run("o 400 match-1.txt");
    assert!(
        rel.failed_with(13) > 60 && rel.failed_with(13) < 180,
        "relative path matched: {} of 400 failed",
        rel.failed_with(13)
    );

    let e = inj.effect();
    assert_eq!(
        e.metrics["syscalls_failed"] as u32,
        m.failed_with(13) + rel.failed_with(13),
        "the tracer counted every failure: {}",
        e.summary
    );
    assert!(e.metrics["syscalls_matched"] as u32 >= n + 400);
    inj.recover().expect("recover");
    assert!(!traced(c.pid()), "detached after recovery");
    let after = c.run(&format!("o 500 {}/match-1.txt", dir.path().display()));
    assert_eq!(
        (after.ok, after.failed()),
        (500, 0),
        "no failure after recovery"
    );
    eprintln!("{}", e.summary);
}

#[test]
fn connect_fails_as_asked_and_held_calls_are_delayed() {
    if !root_or_skip("connect_fails_as_asked_and_held_calls_are_delayed") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = listener.local_addr().expect("addr").port();
    let mut c = Caller::start(dir.path());
    let base = c.run(&format!("c 20 {port}"));
    assert_eq!(base.ok, 20, "connect works before the fault");

    let fault = havoc_faults::syscall::SyscallFault::new(spec(
        "  syscalls: [connect]\n  errno: ECONNREFUSED\n",
    ));
    let target = target_of(c.pid());
    let mut inj = fault.inject(&target, &ctx(1)).expect("inject");
    let b = c.run(&format!("c 50 {port}"));
    assert_eq!(
        (b.ok, b.failed_with(111)),
        (0, 50),
        "every connect refused: {:?}",
        b.errors
    );
    inj.recover().expect("recover");
    let b = c.run(&format!("c 20 {port}"));
    assert_eq!(b.ok, 20, "connect works after recovery");

    // Delay only: the calls succeed, each about 20 ms late.
    let fault =
        havoc_faults::syscall::SyscallFault::new(spec("  syscalls: [connect]\n  delay: 20ms\n"));
    let mut inj = fault.inject(&target, &ctx(1)).expect("inject delay");
    let started = Instant::now();
    let b = c.run(&format!("c 10 {port}"));
    assert_eq!(b.ok, 10);
    assert!(
        b.secs >= 0.2,
        "10 calls held 20 ms each took {:.3}s (wall {:?})",
        b.secs,
        started.elapsed()
    );
    assert_eq!(inj.effect().metrics["syscalls_delayed"], 10.0);
    inj.recover().expect("recover");
    drop(listener);
}

#[test]
fn a_target_that_is_already_traced_is_a_conflict() {
    if !root_or_skip("a_target_that_is_already_traced_is_a_conflict") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Caller::start(dir.path());
    let target = target_of(c.pid());
    let f = havoc_faults::syscall::SyscallFault::new(spec(
        "  syscalls: [read]\n  errno: EIO\n  percent: 1\n",
    ));
    let mut first = f.inject(&target, &ctx(1)).expect("first tracer");
    assert!(matches!(
        f.check(&target),
        Err(havoc_faults::FaultError::Conflict { .. })
    ));
    first.recover().expect("recover");
    f.check(&target).expect("free again");
}
