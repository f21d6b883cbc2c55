//! `StressChaos`: CPU and memory pressure from native worker processes in the target's cgroups.
//!
//! Workers are the `havoc` executable re-run as `havoc __stress-worker` (see [`worker_main`]), so
//! they can be moved into the target's cgroups (v1 and v2) and the target's limits apply to them.
//! Each worker dies with us three ways: `PR_SET_PDEATHSIG` (SIGKILL when the spawning thread dies),
//! end of file on its stdin pipe (we hold the other end), and a hard deadline of the fault's
//! duration plus a grace period. The journal also records each worker for `havoc recover`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use havoc_spec::stress::StressChaos;
use havoc_spec::units::MemorySize;

use crate::procinfo::ProcInfo;
use crate::{Context, Effect, Fault, FaultError, Injection, Target, UndoAction};

pub struct StressFault {
    spec: StressChaos,
}

impl StressFault {
    pub fn new(spec: StressChaos) -> Self {
        Self { spec }
    }

    fn memory_bytes(&self, target: &Target) -> Result<Option<u64>, FaultError> {
        let Some(mem) = &self.spec.stressors.memory else {
            return Ok(None);
        };
        match mem.size {
            MemorySize::Bytes(b) => Ok(Some(b.0)),
            MemorySize::PercentOfLimit(p) => {
                let pid = target.pid().unwrap_or_default();
                match crate::cgroup::memory_limit_of(pid) {
                    Some(limit) => Ok(Some((limit as f64 * p.fraction()) as u64)),
                    None => Err(FaultError::Refused {
                        target: target.label(),
                        reason: format!("memory size {p}% is relative to the cgroup memory limit, but its cgroup has none: give an absolute size such as 256MiB"),
                    }),
                }
            }
        }
    }
}

/// How long a worker outlives its planned end if nobody stops it.
const GRACE: Duration = Duration::from_secs(30);

impl Fault for StressFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        match target {
            Target::Process {
                pid, start_time, ..
            } => {
                if !ProcInfo::is_same(*pid, *start_time) {
                    return Err(FaultError::TargetGone {
                        target: target.label(),
                    });
                }
                self.memory_bytes(target).map(|_| ())
            }
            other => Err(FaultError::Refused {
                target: other.label(),
                reason: "StressChaos needs a process".into(),
            }),
        }
    }

    fn undo_plan(&self, _target: &Target) -> Vec<UndoAction> {
        // Workers are recorded as soon as they exist (late_undo); before that there is nothing.
        Vec::new()
    }

    fn inject(&self, target: &Target, ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        self.check(target)?;
        let tpid = target.pid().unwrap_or_default();
        let deadline_ms = (ctx.duration + GRACE).as_millis().to_string();
        let mut inj = StressInjection {
            target: target.clone(),
            workers: Vec::new(),
            started: Instant::now(),
            requested_load: self.spec.stressors.cpu.as_ref().map(|c| c.load),
            requested_bytes: 0,
            recovered: false,
            ended: None,
        };
        let mut specs: Vec<Vec<String>> = Vec::new();
        if let Some(cpu) = &self.spec.stressors.cpu {
            for _ in 0..cpu.workers {
                specs.push(vec!["--cpu-load".into(), cpu.load.to_string()]);
            }
        }
        if let (Some(bytes), Some(mem)) = (self.memory_bytes(target)?, &self.spec.stressors.memory)
        {
            inj.requested_bytes = bytes;
            let per = bytes / mem.workers as u64;
            for i in 0..mem.workers as u64 {
                let share = if i == mem.workers as u64 - 1 {
                    bytes - per * (mem.workers as u64 - 1)
                } else {
                    per
                };
                specs.push(vec!["--memory-bytes".into(), share.to_string()]);
            }
        }
        for args in specs {
            let mut cmd = Command::new(&ctx.self_exe);
            cmd.arg("__stress-worker")
                .args(&args)
                .args(["--deadline-ms", &deadline_ms]);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            havoc_sys::process::die_with_parent(&mut cmd, 9);
            let mut child = cmd.spawn().map_err(|source| FaultError::Io {
                action: format!("start stress worker {}", ctx.self_exe.display()),
                target: target.label(),
                source,
            })?;
            let pid = child.id() as i32;
            let start_time = ProcInfo::read(pid)
                .map(|p| p.start_time)
                .unwrap_or_default();
            let stdin = child.stdin.take();
            let mut w = Worker {
                child,
                pid,
                start_time,
                stdin,
                is_cpu: args[0] == "--cpu-load",
                baseline_rss: 0,
                last_cpu: 0.0,
                last_rss: 0,
                peak_rss: 0,
                exited: None,
            };
            // The worker announces itself once exec'd; its memory then is its baseline.
            let ready = w.child.stdout.take().map(|out| {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                line
            });
            if ready.as_deref().map(str::trim) != Some("ready") {
                let _ = w.child.kill();
                let _ = w.child.wait();
                return Err(FaultError::Other(format!(
                    "stress worker pid {pid} did not start (is {} a havoc binary?)",
                    ctx.self_exe.display()
                )));
            }
            w.baseline_rss = ProcInfo::rss_bytes(pid).unwrap_or_default();
            inj.workers.push(w);
            let w = inj.workers.last_mut().expect("just pushed");
            crate::cgroup::join_cgroups_of(tpid, pid)?;
            if let Some(stdin) = w.stdin.as_mut() {
                stdin.write_all(b"g").map_err(|source| FaultError::Io {
                    action: "start stress worker".into(),
                    target: target.label(),
                    source,
                })?;
            }
        }
        inj.started = Instant::now();
        Ok(Box::new(inj))
    }

    fn requested(&self) -> String {
        havoc_spec::FaultSpec::StressChaos(self.spec.clone()).summary()
    }
}

struct Worker {
    child: Child,
    pid: i32,
    start_time: u64,
    /// Held open: the worker exits when it reads end of file.
    stdin: Option<ChildStdin>,
    is_cpu: bool,
    baseline_rss: u64,
    last_cpu: f64,
    last_rss: u64,
    peak_rss: u64,
    exited: Option<String>,
}

impl Worker {
    fn sample(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            use std::os::unix::process::ExitStatusExt;
            self.exited = Some(match status.signal() {
                Some(9) if !self.is_cpu => {
                    "killed by SIGKILL (likely the cgroup's OOM killer)".to_string()
                }
                Some(s) => format!("killed by signal {s}"),
                None => format!("exited with {status}"),
            });
            return;
        }
        if let Some(c) = ProcInfo::cpu_seconds(self.pid) {
            self.last_cpu = c;
        }
        if let Some(r) = ProcInfo::rss_bytes(self.pid) {
            self.last_rss = r.saturating_sub(self.baseline_rss);
            self.peak_rss = self.peak_rss.max(self.last_rss);
        }
    }
}

struct StressInjection {
    target: Target,
    workers: Vec<Worker>,
    started: Instant,
    requested_load: Option<u32>,
    requested_bytes: u64,
    recovered: bool,
    ended: Option<Duration>,
}

impl Injection for StressInjection {
    fn tick(&mut self) -> Result<(), FaultError> {
        for w in &mut self.workers {
            w.sample();
        }
        Ok(())
    }

    fn late_undo(&self) -> Vec<UndoAction> {
        self.workers
            .iter()
            .map(|w| UndoAction::KillHelper {
                pid: w.pid,
                start_time: w.start_time,
            })
            .collect()
    }

    fn effect(&self) -> Effect {
        let wall = self
            .ended
            .unwrap_or_else(|| self.started.elapsed())
            .as_secs_f64()
            .max(1e-9);
        let cpu: Vec<&Worker> = self.workers.iter().filter(|w| w.is_cpu).collect();
        let mem: Vec<&Worker> = self.workers.iter().filter(|w| !w.is_cpu).collect();
        let cpu_seconds: f64 = cpu.iter().map(|w| w.last_cpu).sum();
        let held: u64 = mem.iter().map(|w| w.peak_rss).sum();
        let mut parts = Vec::new();
        let mut e = Effect::default();
        if !cpu.is_empty() {
            let load = 100.0 * cpu_seconds / (wall * cpu.len() as f64);
            parts.push(format!("cpu {load:.1}% of a core per worker ({} workers, {cpu_seconds:.2} cpu-s over {wall:.1}s)", cpu.len()));
            e = e
                .metric("cpu_seconds", cpu_seconds)
                .metric("cpu_load_percent_per_worker", load);
            if let Some(l) = self.requested_load {
                e = e.metric("cpu_load_requested", l as f64);
            }
        }
        if !mem.is_empty() {
            parts.push(format!(
                "memory held {:.1} MiB of {:.1} MiB requested",
                held as f64 / 1048576.0,
                self.requested_bytes as f64 / 1048576.0
            ));
            e = e
                .metric("bytes_held", held as f64)
                .metric("bytes_requested", self.requested_bytes as f64);
        }
        for w in &self.workers {
            if let Some(why) = &w.exited {
                parts.push(format!("worker {} {why}", w.pid));
            }
        }
        e.summary = parts.join("; ");
        e.metric("workers", self.workers.len() as f64)
    }

    fn recover(&mut self) -> Result<(), FaultError> {
        if self.recovered {
            return Ok(());
        }
        for w in &mut self.workers {
            w.sample();
        }
        self.ended = Some(self.started.elapsed());
        for w in &mut self.workers {
            w.stdin.take();
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        self.recovered = true;
        tracing::debug!(target = %self.target.label(), "stress workers stopped");
        Ok(())
    }
}

impl Drop for StressInjection {
    fn drop(&mut self) {
        let _ = self.recover();
    }
}

/// What a worker does, parsed from its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerTask {
    Cpu { load: u32 },
    Memory { bytes: u64 },
}

/// Parses `__stress-worker` arguments: `--cpu-load N` or `--memory-bytes N`, and `--deadline-ms N`.
pub fn parse_worker_args(args: &[String]) -> Result<(WorkerTask, Duration), String> {
    let mut task = None;
    let mut deadline = Duration::from_secs(3600);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        let n: u64 = v.parse().map_err(|_| format!("{a}: not a number: {v}"))?;
        match a.as_str() {
            "--cpu-load" => {
                task = Some(WorkerTask::Cpu {
                    load: n.min(100) as u32,
                })
            }
            "--memory-bytes" => task = Some(WorkerTask::Memory { bytes: n }),
            "--deadline-ms" => deadline = Duration::from_millis(n),
            other => return Err(format!("unknown worker argument {other}")),
        }
    }
    task.map(|t| (t, deadline))
        .ok_or_else(|| "no task given".into())
}

/// The body of a stress worker process. Returns when told to stop, when its parent goes away
/// (end of file on stdin), or at the deadline.
pub fn worker_main(task: WorkerTask, deadline: Duration) {
    let _ = havoc_sys::process::set_parent_death_signal(9);
    let started = Instant::now();
    println!("ready");
    let _ = std::io::stdout().flush();
    // Wait for the go byte: the parent first moves us into the target's cgroups.
    let mut stdin = std::io::stdin();
    let mut b = [0u8; 1];
    if !matches!(stdin.read(&mut b), Ok(1)) {
        return;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let done = || stop.load(std::sync::atomic::Ordering::Relaxed) || started.elapsed() >= deadline;
    match task {
        WorkerTask::Cpu { load } => burn_cpu(load, &done),
        WorkerTask::Memory { bytes } => hold_memory(bytes, &done),
    }
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Keeps this thread's CPU time at `load` percent of wall time, correcting as it goes: time
/// lost to preemption is made up, time ahead is slept off.
fn burn_cpu(load: u32, done: &dyn Fn() -> bool) {
    let frac = load as f64 / 100.0;
    let t0 = Instant::now();
    let c0 = thread_cpu();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while !done() {
        let wall = t0.elapsed().as_secs_f64();
        let used = (thread_cpu() - c0).as_secs_f64();
        let target = frac * wall;
        if frac >= 1.0 || used < target {
            // Spin for about a millisecond of work.
            let until = Instant::now() + Duration::from_micros(1000);
            while Instant::now() < until {
                for _ in 0..1000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                }
                std::hint::black_box(x);
            }
        } else {
            // Ahead of target: sleep until wall time catches up (at most 20 ms at a time).
            let ahead = if frac > 0.0 { used / frac - wall } else { 0.02 };
            std::thread::sleep(Duration::from_secs_f64(ahead.clamp(0.0005, 0.02)));
        }
    }
}

/// Allocates `bytes`, fills every page with pseudo-random data (so neither KSM nor zswap can
/// shrink it), locks it in RAM when allowed, and re-touches it every second until told to stop.
fn hold_memory(bytes: u64, done: &dyn Fn() -> bool) {
    let page = havoc_sys::process::page_size();
    let mut buf: Vec<u8> = Vec::new();
    if buf.try_reserve_exact(bytes as usize).is_err() {
        eprintln!("havoc stress worker: cannot reserve {bytes} bytes");
        return;
    }
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ std::process::id() as u64;
    buf.resize(bytes as usize, 0);
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = x.to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    havoc_sys::process::lock_memory(&buf);
    while !done() {
        for i in (0..buf.len()).step_by(page) {
            buf[i] = buf[i].wrapping_add(1);
        }
        for _ in 0..20 {
            if done() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::hint::black_box(&buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_args_parse() {
        let a: Vec<String> = ["--cpu-load", "60", "--deadline-ms", "1000"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            parse_worker_args(&a).expect("ok"),
            (WorkerTask::Cpu { load: 60 }, Duration::from_secs(1))
        );
        assert!(parse_worker_args(&["--bogus".into(), "1".into()]).is_err());
        assert!(parse_worker_args(&[]).is_err());
    }
}
