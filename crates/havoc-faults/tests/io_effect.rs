//! IOChaos end to end on real files: a FUSE mount over a tempdir in the mount namespace of a real
//! process (a `sleep` in this test's namespace, or in a private one made with `unshare -m`), real
//! reads and writes through it, and the mount table compared before and after.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use havoc_faults::{Context, Fault, Target};

fn root_or_skip(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let fuse = Path::new("/dev/fuse").exists();
    if !(root && fuse) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root and /dev/fuse, which CI has"
        );
        eprintln!("SKIPPED {test}: needs root and /dev/fuse");
        return false;
    }
    true
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper(private_ns: bool) -> Reaped {
    let mut cmd = if private_ns {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sleep", "300"]);
        c
    } else {
        let mut c = Command::new("sleep");
        c.arg("300");
        c
    };
    let child = cmd.stdin(Stdio::null()).spawn().expect("spawn target");
    let r = Reaped(child);
    // `unshare` execs sleep in the same pid: wait until it has.
    let pid = r.0.id();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "sleep" {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    r
}

fn target_of(p: &Reaped) -> Target {
    let pid = p.0.id() as i32;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').expect("comm").1;
    let start_time: u64 = after
        .split_whitespace()
        .nth(19)
        .expect("field")
        .parse()
        .expect("n");
    Target::Process {
        pid,
        start_time,
        name: "sleep".into(),
    }
}

fn fault(yaml: &str, dir: &Path) -> Box<dyn Fault> {
    let src = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: IOChaos\nmetadata: {{name: t}}\nspec:\n  selector: {{pids: [1]}}\n  volumePath: {}\n  duration: 1m\n{yaml}",
        dir.display()
    );
    let e = havoc_spec::parse_experiment(&src).unwrap_or_else(|e| panic!("{}", e.render("t")));
    havoc_faults::build(&e.spec.faults[0].spec)
}

fn ctx() -> Context {
    Context {
        self_exe: PathBuf::from("/bin/false"),
        seed: 42,
        duration: Duration::from_secs(60),
    }
}

fn mountinfo(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo")
}

/// IOChaos mounts over `dir` seen by `pid` (tests run in parallel: count only this test's).
fn havoc_mounts(pid: u32, dir: &Path) -> usize {
    let mp = format!(" {} ", dir.display());
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains("fuse.havoc") && l.contains(&mp))
        .count()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn latency_median_within_5_percent_only_on_matching_paths_and_methods() {
    if !root_or_skip("latency") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("slow.db"), vec![7u8; 64 * 1024]).expect("write");
    std::fs::write(dir.path().join("fast.txt"), vec![8u8; 64 * 1024]).expect("write");
    let target = sleeper(false);
    let f = fault(
        "  action: latency\n  delay: 20ms\n  methods: [read]\n  path: '*.db'\n",
        dir.path(),
    );
    let mut inj = f.inject(&target_of(&target), &ctx()).expect("inject");
    assert_eq!(havoc_mounts(std::process::id(), dir.path()), 1);
    let mut slow = std::fs::File::open(dir.path().join("slow.db")).expect("open slow");
    let mut fast = std::fs::File::open(dir.path().join("fast.txt")).expect("open fast");
    let mut buf = [0u8; 256];
    let (mut s, mut q) = (Vec::new(), Vec::new());
    for i in 0..200u64 {
        slow.seek(SeekFrom::Start(i * 256)).expect("seek");
        let t = Instant::now();
        slow.read_exact(&mut buf).expect("read slow");
        s.push(t.elapsed());
        assert_eq!(buf, [7u8; 256]);
        fast.seek(SeekFrom::Start(i * 256)).expect("seek");
        let t = Instant::now();
        fast.read_exact(&mut buf).expect("read fast");
        q.push(t.elapsed());
    }
    // Writes to the matching file are not delayed (method filter).
    let t = Instant::now();
    for _ in 0..20 {
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("slow.db"))
            .expect("open w")
            .write_all(b"x")
            .expect("write");
    }
    let writes = t.elapsed();
    let (ms, mq) = (median(s), median(q));
    let e = inj.effect();
    eprintln!(
        "median read {ms:?} (matching) vs {mq:?} (other); 20 writes {writes:?}; {}",
        e.summary
    );
    let err = (ms.as_secs_f64() - 0.020).abs() / 0.020;
    assert!(err <= 0.05, "median {ms:?} is not within 5% of 20ms");
    assert!(
        mq < Duration::from_millis(5),
        "non-matching path delayed: {mq:?}"
    );
    assert!(
        writes < Duration::from_millis(200),
        "writes delayed: {writes:?}"
    );
    assert_eq!(e.metrics["ops_delayed"], 200.0);
    assert!(
        (e.metrics["delay_mean_ms"] - 20.0).abs() < 1.0,
        "{:?}",
        e.metrics
    );
    assert_eq!(e.metrics["delay_mean_ms_requested"], 20.0);
    drop((slow, fast));
    inj.recover().expect("recover");
    assert_eq!(havoc_mounts(std::process::id(), dir.path()), 0);
}

#[test]
fn errno_rate_at_30_percent_within_2_points() {
    if !root_or_skip("errno") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f"), vec![1u8; 4096]).expect("write");
    let target = sleeper(false);
    let f = fault(
        "  action: fault\n  errno: EIO\n  percent: 30\n  methods: [READ]\n",
        dir.path(),
    );
    let mut inj = f.inject(&target_of(&target), &ctx()).expect("inject");
    let mut file = std::fs::File::open(dir.path().join("f")).expect("open");
    let (mut failed, n) = (0u32, 3000u32);
    let mut buf = [0u8; 16];
    for i in 0..n {
        file.seek(SeekFrom::Start((i % 200) as u64)).expect("seek");
        match file.read(&mut buf) {
            Ok(got) => {
                assert!(got > 0, "read returned data");
                assert_eq!(buf[0], 1)
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(5), "{e}");
                failed += 1;
            }
        }
    }
    let rate = failed as f64 * 100.0 / n as f64;
    let e = inj.effect();
    eprintln!("{rate:.2}% failed; {}", e.summary);
    assert!((rate - 30.0).abs() <= 2.0, "errno rate {rate:.2}%");
    assert_eq!(e.metrics["failed_EIO"], failed as f64, "counted as seen");
    assert_eq!(e.metrics["fault_percent_requested"], 30.0);
    // stat and open were never failed: only reads match.
    for _ in 0..200 {
        std::fs::metadata(dir.path().join("f")).expect("stat never fails");
    }
    drop(file);
    inj.recover().expect("recover");
}

#[test]
fn stat_sees_overridden_attributes_and_recovery_restores_them() {
    if !root_or_skip("attr") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a"), b"hello").expect("write");
    let real = std::fs::metadata(dir.path().join("a")).expect("stat");
    let target = sleeper(false);
    let f = fault(
        "  action: attrOverride\n  attr: {perm: \"0600\", uid: 4242, size: 999, nlink: 7}\n  path: a\n",
        dir.path(),
    );
    let mut inj = f.inject(&target_of(&target), &ctx()).expect("inject");
    let m = std::fs::symlink_metadata(dir.path().join("a")).expect("stat");
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!((m.uid(), m.size(), m.nlink()), (4242, 999, 7));
    let again = std::fs::symlink_metadata(dir.path().join("a")).expect("stat");
    assert_eq!(again.uid(), 4242, "not cached away");
    assert!(inj.effect().metrics["attrs_overridden"] >= 2.0);
    inj.recover().expect("recover");
    let m = std::fs::metadata(dir.path().join("a")).expect("stat");
    assert_eq!(
        (m.mode(), m.uid(), m.size()),
        (real.mode(), real.uid(), real.size())
    );
}

#[test]
fn mistake_bytes_read_are_counted_exactly() {
    if !root_or_skip("mistake") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(dir.path().join("d"), &data).expect("write");
    let target = sleeper(false);
    let f = fault(
        "  action: mistake\n  methods: [read]\n  mistake: {filling: zero, maxOccurrences: 3, maxLength: 16}\n",
        dir.path(),
    );
    let mut inj = f.inject(&target_of(&target), &ctx()).expect("inject");
    let got = std::fs::read(dir.path().join("d")).expect("read");
    let differ = got.iter().zip(&data).filter(|(a, b)| a != b).count() as f64;
    let e = inj.effect();
    eprintln!("{differ} bytes differ; {}", e.summary);
    assert_eq!(got.len(), data.len());
    assert!(differ > 0.0);
    assert_eq!(
        e.metrics["bytes_altered"], differ,
        "every altered byte counted"
    );
    inj.recover().expect("recover");
    assert_eq!(
        std::fs::read(dir.path().join("d")).expect("read"),
        data,
        "read mistakes never touch the file"
    );
}

fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn data_written_under_faults_lands_in_the_real_files() {
    if !root_or_skip("integrity") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = sleeper(false);
    let f = fault(
        "  action: latency\n  delay: 1ms\n  percent: 50\n  methods: [write, create, fsync]\n",
        dir.path(),
    );
    let mut inj = f.inject(&target_of(&target), &ctx()).expect("inject");
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let body: Vec<u8> = (0..(64 * 1024 + i * 977))
            .map(|j| (j * 31 + i) as u8)
            .collect();
        let p = dir.path().join(format!("sub{}", i % 3));
        std::fs::create_dir_all(&p).expect("mkdir");
        let mut w = std::fs::File::create(p.join(format!("f{i}"))).expect("create");
        for chunk in body.chunks(5000) {
            w.write_all(chunk).expect("write");
        }
        w.sync_all().expect("fsync");
        expected.push((p.join(format!("f{i}")), checksum(&body)));
    }
    std::fs::rename(dir.path().join("sub0/f0"), dir.path().join("moved")).expect("rename");
    expected[0].0 = dir.path().join("moved");
    let e = inj.effect();
    assert!(e.metrics["ops_delayed"] > 0.0, "{}", e.summary);
    inj.recover().expect("recover");
    for (p, sum) in &expected {
        let b = std::fs::read(p).expect("read back from the real directory");
        assert_eq!(checksum(&b), *sum, "{}", p.display());
    }
}

#[test]
fn a_private_mount_namespace_is_faulted_and_the_host_is_not() {
    if !root_or_skip("private ns") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("x"), b"data").expect("write");
    let target = sleeper(true);
    let pid = target.0.id();
    // The target's namespace is private to this test: its whole table must come back.
    let before = mountinfo(pid);
    let f = fault(
        "  action: fault\n  errno: EACCES\n  methods: [open]\n",
        dir.path(),
    );
    let mut inj = f.inject(&target_of(&target), &ctx()).expect("inject");
    assert_eq!(
        havoc_mounts(pid, dir.path()),
        1,
        "the target sees the mount"
    );
    assert_eq!(
        havoc_mounts(std::process::id(), dir.path()),
        0,
        "the host does not"
    );
    assert_eq!(
        std::fs::read(dir.path().join("x")).expect("host read"),
        b"data"
    );
    let inside = PathBuf::from(format!("/proc/{pid}/root"))
        .join(dir.path().join("x").strip_prefix("/").expect("abs"));
    let err = std::fs::read(&inside).expect_err("target's open fails");
    assert_eq!(err.raw_os_error(), Some(13));
    inj.recover().expect("recover");
    assert_eq!(
        mountinfo(pid),
        before,
        "mount table identical after recovery"
    );
    assert_eq!(std::fs::read(&inside).expect("after"), b"data");
}

#[test]
fn files_already_open_are_named_and_unaffected() {
    if !root_or_skip("open files") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("held"), b"abc").expect("write");
    // The target holds the file open on fd 3 before the fault.
    let target = Reaped(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec 3<{}/held; exec sleep 300",
                dir.path().display()
            ))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let pid = target.0.id();
    let t0 = Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/fd/3")).is_err()
        || std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            != "sleep"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "target did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let f = fault("  action: fault\n  errno: EIO\n", dir.path());
    let mut inj = f.inject(&target_of(&target), &ctx()).expect("inject");
    let e = inj.effect();
    assert_eq!(e.metrics["open_files_unaffected"], 1.0, "{}", e.summary);
    assert!(e.summary.contains("held"), "{}", e.summary);
    // The held descriptor still reads the original file.
    let mut s = String::new();
    std::fs::File::open(format!("/proc/{pid}/fd/3"))
        .expect("reopen via proc")
        .read_to_string(&mut s)
        .expect("read");
    assert_eq!(s, "abc");
    inj.recover().expect("recover");
}

/// Reads `p` to the end with 1 MiB reads.
fn read_mib(p: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(p).expect("open");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_matching_file_is_faulted_on_every_read_while_an_unmatched_one_is_cached() {
    if !root_or_skip("cache") {
        return;
    }
    const SIZE: usize = 4 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let hot_data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8 + 1).collect();
    let cold_data: Vec<u8> = (0..SIZE).map(|i| (i % 241) as u8 + 1).collect();
    std::fs::write(dir.path().join("hot.db"), &hot_data).expect("write");
    std::fs::write(dir.path().join("cold.txt"), &cold_data).expect("write");
    // The real directory under the mount, reached after mounting through this descriptor.
    let real = std::fs::File::open(dir.path()).expect("open dir");
    let real_path = |name: &str| {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}/{name}", real.as_raw_fd()))
    };
    let target = sleeper(false);
    let f = fault(
        "  action: mistake\n  methods: [read]\n  path: '*.db'\n  mistake: {filling: zero, maxOccurrences: 1, maxLength: 1}\n",
        dir.path(),
    );
    let mut inj = f.inject(&target_of(&target), &ctx()).expect("inject");
    let (hot, cold) = (dir.path().join("hot.db"), dir.path().join("cold.txt"));
    let metric = |inj: &dyn havoc_faults::Injection, k: &str| inj.effect().metrics[k];
    // Fill the page cache of the unmatched file.
    assert_eq!(read_mib(&cold), cold_data);
    for pass in 0..5 {
        // The matching file: every 1 MiB read is a request that meets the rule (4 at least),
        // each alters exactly one byte.
        let (m0, b0) = (
            metric(inj.as_ref(), "ops_matched"),
            metric(inj.as_ref(), "bytes_altered"),
        );
        let got = read_mib(&hot);
        let differ = got.iter().zip(&hot_data).filter(|(a, b)| a != b).count() as f64;
        let (m1, b1) = (
            metric(inj.as_ref(), "ops_matched"),
            metric(inj.as_ref(), "bytes_altered"),
        );
        assert_eq!(got.len(), SIZE);
        assert!(m1 - m0 >= 4.0, "pass {pass}: {} reads matched", m1 - m0);
        assert!(differ >= 4.0, "pass {pass}: {differ} bytes differ");
        assert_eq!(b1 - b0, differ, "pass {pass}: every altered byte counted");
        // The unmatched file: served by the kernel (passthrough to the real file, or the FUSE
        // page cache without it): open, flush, release and at most a lookup and a getattr
        // reach the file system, not 4 MiB of reads; and exact.
        let s0 = metric(inj.as_ref(), "ops_seen");
        assert_eq!(read_mib(&cold), cold_data, "pass {pass}");
        let seen = metric(inj.as_ref(), "ops_seen") - s0;
        assert!(
            seen <= 5.0,
            "pass {pass}: {seen} operations for a cached read"
        );
    }
    // Changed under the mount (outside it): the next open drops the stale cache.
    let changed: Vec<u8> = cold_data.iter().map(|b| b.wrapping_add(1)).collect();
    std::fs::write(real_path("cold.txt"), &changed).expect("write the real file");
    assert_eq!(
        read_mib(&cold),
        changed,
        "no stale page cache after a change"
    );
    // Written through the mount: the real file has it at once (write-through), and so does
    // the directory after recovery.
    let written: Vec<u8> = cold_data.iter().map(|b| b.wrapping_add(2)).collect();
    std::fs::write(&cold, &written).expect("write through the mount");
    assert_eq!(std::fs::read(real_path("cold.txt")).expect("read"), written);
    assert_eq!(read_mib(&cold), written);
    inj.recover().expect("recover");
    assert_eq!(havoc_mounts(target.0.id(), dir.path()), 0);
    assert_eq!(read_mib(&cold), written, "after recovery");
    assert_eq!(read_mib(&hot), hot_data, "after recovery");
}
