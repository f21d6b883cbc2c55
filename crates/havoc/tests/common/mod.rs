//! Shared helpers for the binary's integration tests: root check, child processes that are
//! always reaped, and per-test state directories.
#![allow(dead_code)]

pub mod netpair;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn havoc() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_havoc"))
}

/// True if running as root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
        })
        .unwrap_or_default();
    if uid != "0" {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root (signals, cgroups, namespaces), and CI runs as root"
        );
        eprintln!("SKIPPED {test}: needs root (signals, cgroups); run the tests as root");
        return false;
    }
    true
}

/// A child process killed and reaped when dropped.
pub struct Reaped(pub Child);

impl Reaped {
    pub fn spawn(cmd: &mut Command) -> Reaped {
        Reaped(cmd.stdin(Stdio::null()).spawn().expect("spawn child"))
    }
    pub fn sleeper() -> Reaped {
        Self::spawn(Command::new("sleep").arg("300"))
    }
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The one-letter state of a process from /proc/PID/stat.
pub fn state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Writes an experiment file into `dir`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write experiment");
    p
}

/// `havoc run FILE` in the background with a private state directory; with `json` the report
/// comes on a piped stdout, otherwise stdout is discarded. stderr is always discarded.
pub fn havoc_run(state: &Path, file: &Path, json: bool) -> Command {
    let mut cmd = Command::new(havoc());
    cmd.arg("run")
        .arg(file)
        .env("HAVOC_STATE_DIR", state)
        .stderr(Stdio::null());
    if json {
        cmd.arg("--output").arg("json").stdout(Stdio::piped());
    } else {
        cmd.stdout(Stdio::null());
    }
    cmd
}

/// Runs havoc with a private state directory.
pub fn run_havoc(state: &Path, args: &[&str]) -> Output {
    Command::new(havoc())
        .args(args)
        .env("HAVOC_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .expect("run havoc")
}

/// Pids of live stress workers whose command line carries `marker` (their deadline argument).
pub fn workers_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("__stress-worker")
            && cmd.contains(marker)
            && state(pid).is_some_and(|s| s != 'Z')
        {
            out.push(pid);
        }
    }
    out
}

/// `havoc dashboard` on a free port of 127.0.0.1 with `extra` flags, and the address it printed.
pub fn spawn_dashboard(state_dir: &Path, extra: &[&str]) -> (Reaped, std::net::SocketAddr) {
    use std::io::BufRead as _;
    let mut child = Reaped::spawn(
        Command::new(havoc())
            .arg("--state-dir")
            .arg(state_dir)
            .args(["dashboard", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the dashboard prints its address");
    let addr = line
        .trim()
        .strip_prefix("havoc dashboard listening on http://")
        .and_then(|s| s.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address");
    (child, addr)
}
