//! TimeChaos and SyscallChaos through the real `havoc` binary: kill -9 of `havoc run` mid-fault
//! leaves the target with its original vDSO (restored by the watchdog) and untraced (the kernel
//! detaches it), within 1 s; the examples validate.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn vdso_of(pid: i32) -> Option<Vec<u8>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (a, b) = line.split_whitespace().next()?.split_once('-')?;
    let (a, b) = (
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    );
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; (b - a) as usize];
    f.read_exact_at(&mut buf, a).ok()?;
    Some(buf)
}

fn tracer_of(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("TracerPid")
}

/// A Python process that opens a file N times on request and prints how many opens succeeded,
/// and its CLOCK_REALTIME on `t`.
struct Py {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const PY: &str = r#"
import os, sys, time
print("ready", flush=True)
for line in sys.stdin:
    p = line.split()
    if p[0] == "t":
        print(time.time(), flush=True)
        continue
    ok = 0
    for _ in range(int(p[1])):
        try:
            os.close(os.open(p[2], os.O_RDONLY))
            ok += 1
        except OSError:
            pass
    print(ok, flush=True)
"#;

impl Py {
    fn start() -> Py {
        let mut child = Command::new("python3")
            .args(["-c", PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ready");
        assert_eq!(line.trim(), "ready");
        Py {
            child,
            stdin,
            stdout,
        }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn ask(&mut self, cmd: &str) -> f64 {
        writeln!(self.stdin, "{cmd}").expect("write");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        line.trim().parse().expect("number")
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[test]
fn kill_dash_nine_during_time_chaos_restores_the_vdso_within_a_second() {
    if !root_or_skip("kill_dash_nine_during_time_chaos_restores_the_vdso_within_a_second") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut py = Py::start();
    let pid = py.pid();
    let pristine = vdso_of(std::process::id() as i32).expect("own vdso");
    assert_eq!(vdso_of(pid).as_deref(), Some(&pristine[..]));
    let exp = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: TimeChaos\nmetadata: {{ name: skew-kill9 }}\nspec:\n  duration: 60s\n  timeOffset: -1h\n  selector: {{ pids: [{pid}] }}\n"
    );
    let file = write(dir.path(), "skew.yaml", &exp);
    let state_dir = dir.path().join("state");
    let mut run = Reaped::spawn(&mut havoc_run(&state_dir, &file, false));
    assert!(
        wait_until(Duration::from_secs(10), || vdso_of(pid)
            .is_some_and(|v| v != pristine)),
        "the vDSO is patched"
    );
    let skew = py.ask("t") - now();
    assert!(
        (skew + 3600.0).abs() < 0.01,
        "time.time() is an hour back: {skew}"
    );
    let killed = Instant::now();
    run.0.kill().expect("SIGKILL havoc run");
    run.0.wait().expect("reap");
    assert!(
        wait_until(Duration::from_secs(1), || vdso_of(pid).as_deref()
            == Some(&pristine[..])),
        "the watchdog restores the original bytes within 1 s"
    );
    eprintln!("vDSO restored {:?} after SIGKILL", killed.elapsed());
    let skew = py.ask("t") - now();
    assert!(skew.abs() < 0.01, "time.time() is right again: {skew}");
    assert_ne!(state(pid), Some('T'), "the target runs");
}

#[test]
fn kill_dash_nine_during_syscall_chaos_leaves_the_target_untraced_and_working() {
    if !root_or_skip("kill_dash_nine_during_syscall_chaos_leaves_the_target_untraced_and_working") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "x").expect("write");
    let mut py = Py::start();
    let pid = py.pid();
    let exp = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: SyscallChaos\nmetadata: {{ name: eacces-kill9 }}\nspec:\n  duration: 60s\n  syscalls: [openat]\n  errno: EACCES\n  path: \"{}/*.txt\"\n  selector: {{ pids: [{pid}] }}\n",
        dir.path().display()
    );
    let file = write(dir.path(), "sys.yaml", &exp);
    let state_dir = dir.path().join("state");
    let mut run = Reaped::spawn(&mut havoc_run(&state_dir, &file, false));
    assert!(
        wait_until(Duration::from_secs(10), || tracer_of(pid) != 0),
        "the target is traced"
    );
    let cmd = format!("o 50 {}", victim.display());
    assert_eq!(
        py.ask(&cmd),
        0.0,
        "every matching open fails during the fault"
    );
    let killed = Instant::now();
    run.0.kill().expect("SIGKILL havoc run");
    run.0.wait().expect("reap");
    assert!(
        wait_until(Duration::from_secs(1), || tracer_of(pid) == 0),
        "the kernel detaches the target within 1 s"
    );
    eprintln!("target untraced {:?} after SIGKILL", killed.elapsed());
    assert_eq!(py.ask(&cmd), 50.0, "every open succeeds after");
    assert_ne!(state(pid), Some('T'), "the target runs");
}

#[test]
fn the_time_and_syscall_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).expect("examples") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if !(name.starts_with("time-") || name.starts_with("syscall-")) {
            continue;
        }
        let out = Command::new(havoc())
            .args(["validate", p.to_str().expect("path")])
            .output()
            .expect("run havoc validate");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "time-*.yaml and syscall-*.yaml examples checked"
    );
}
