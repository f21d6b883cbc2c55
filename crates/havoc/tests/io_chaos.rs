//! IOChaos through the binary: the examples validate, wrong input is refused with positions and
//! field paths, a run reports the measured effect, and `havoc run` killed with SIGKILL at random
//! moments leaves no FUSE mount and no "Transport endpoint is not connected" behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{havoc_run, root_or_skip, run_havoc, write, Reaped};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_io_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let state = tempfile::tempdir().expect("state");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).expect("examples") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if !(name.starts_with("io-") && name.ends_with(".yaml")) {
            continue;
        }
        let out = run_havoc(state.path(), &["validate", p.to_str().expect("path")]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        checked += 1;
    }
    assert_eq!(checked, 4, "one example per action");
}

#[test]
fn wrong_io_specs_name_the_field_and_position() {
    let dir = tempfile::tempdir().expect("dir");
    let cases: &[(&str, &str)] = &[
        (
            "  delay: 10ms\n  methods: [raed]\n",
            "bad.yaml:10:13: spec.methods[0]: unknown method `raed`: did you mean `read`?",
        ),
        ("  delay: 0s\n", "spec.delay: must be greater than 0"),
        (
            "  errno: EIO\n",
            "spec.errno: errno does not apply to action latency",
        ),
        (
            "  delay: 1ms\n  containerNames: [app]\n",
            "spec.containerNames: containerNames selects containers",
        ),
        (
            "  delay: 1ms\n  percent: 0\n",
            "spec.percent: must be 1..=100",
        ),
        (
            "  delay: 1ms\n  path: /etc/*\n",
            "spec.path: `/etc/*` is not under volumePath",
        ),
    ];
    for (extra, want) in cases {
        let src = format!(
            "apiVersion: havoc.dev/v1alpha1\nkind: IOChaos\nmetadata: {{name: bad}}\nspec:\n  action: latency\n  selector: {{pids: [1]}}\n  volumePath: /data\n  duration: 10s\n{extra}"
        );
        let p = write(dir.path(), "bad.yaml", &src);
        let out = run_havoc(dir.path(), &["validate", p.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(2), "{extra}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{extra}: wanted {want:?} in\n{err}");
    }
}

/// IOChaos mounts over `dir` in this test's mount namespace.
fn mounts_over(dir: &Path) -> usize {
    let mp = format!(" {} ", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains("fuse.havoc") && l.contains(&mp))
        .count()
}

#[test]
fn a_run_reports_the_effect_and_leaves_the_directory_as_it_was() {
    if !root_or_skip("io run") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("f"), b"payload").expect("write");
    let target = Reaped::sleeper();
    let exp = write(
        dir.path(),
        "io.yaml",
        &format!(
            "apiVersion: havoc.dev/v1alpha1\nkind: IOChaos\nmetadata: {{name: io-run}}\nspec:\n  action: fault\n  errno: EIO\n  methods: [read]\n  selector: {{pids: [{}]}}\n  volumePath: {}\n  duration: 2s\n",
            target.pid(),
            data.display()
        ),
    );
    let child = havoc_run(dir.path(), &exp, true)
        .spawn()
        .expect("havoc run");
    let t0 = Instant::now();
    while mounts_over(&data) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "fault never mounted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The rule is switched on once the mount is observed in place: wait for the first EIO.
    assert!(
        common::wait_until(Duration::from_secs(5), || std::fs::read(data.join("f"))
            .is_err()),
        "no EIO while mounted"
    );
    let mut failed = 0;
    for _ in 0..20 {
        if let Err(e) = std::fs::read(data.join("f")) {
            assert_eq!(e.raw_os_error(), Some(5), "{e}");
            failed += 1;
        }
    }
    assert_eq!(
        failed, 20,
        "every read fails with EIO while the fault holds"
    );
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "havoc run failed");
    let report = text(&out.stdout);
    assert!(report.contains("failed_EIO"), "{report}");
    assert!(report.contains("fault_percent_requested"), "{report}");
    assert_eq!(mounts_over(&data), 0);
    assert_eq!(
        std::fs::read(data.join("f")).expect("read after"),
        b"payload"
    );
}

#[test]
fn kill_9_of_havoc_run_at_random_moments_leaves_no_mount_and_no_enotconn() {
    if !root_or_skip("io kill -9") {
        return;
    }
    let target = Reaped::sleeper();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    let mut worst = Duration::ZERO;
    for round in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::write(data.join("f"), b"payload").expect("write");
        let exp = write(
            dir.path(),
            "io.yaml",
            &format!(
                "apiVersion: havoc.dev/v1alpha1\nkind: IOChaos\nmetadata: {{name: io-kill}}\nspec:\n  action: latency\n  delay: 5ms\n  selector: {{pids: [{}]}}\n  volumePath: {}\n  duration: 30s\n",
                target.pid(),
                data.display()
            ),
        );
        let mut child = havoc_run(dir.path(), &exp, false)
            .spawn()
            .expect("havoc run");
        // Kill anywhere from before the mount to well into the hold.
        let wait = Duration::from_millis(seed % 600);
        let t0 = Instant::now();
        // Keep the directory busy meanwhile, as a target would.
        while t0.elapsed() < wait {
            let _ = std::fs::read(data.join("f"));
        }
        let mounted = mounts_over(&data) > 0;
        child.kill().expect("SIGKILL havoc run");
        let killed = Instant::now();
        let _ = child.wait();
        let clean = common::wait_until(Duration::from_secs(3), || {
            mounts_over(&data) == 0 && std::fs::read(data.join("f")).is_ok()
        });
        let took = killed.elapsed();
        assert!(clean, "round {round}: mount left {took:?} after SIGKILL");
        worst = worst.max(took);
        assert!(
            took <= Duration::from_secs(1),
            "round {round} (killed after {wait:?}, mounted {mounted}): took {took:?}"
        );
        // No ENOTCONN for anything that opens the directory now.
        for _ in 0..50 {
            let b = std::fs::read(data.join("f")).expect("read after recovery");
            assert_eq!(b, b"payload");
        }
        std::fs::read_dir(&data).expect("list after recovery");
        eprintln!("round {round}: killed after {wait:?} (mounted {mounted}), clean after {took:?}");
    }
    eprintln!("worst time to a clean directory after SIGKILL: {worst:?}");
}
