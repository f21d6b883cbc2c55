//! Hostile input to the CLI gets a clear, positioned error, bounded in time and memory: an alias
//! bomb, a non-UTF-8 file among valid ones, an overflowing duration, and `certs --force` over a
//! symlink.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn havoc() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_havoc"))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

fn validate(files: &[&Path]) -> Output {
    Command::new(havoc())
        .arg("validate")
        .args(files)
        .output()
        .expect("run havoc validate")
}

const VALID: &str = "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: { name: ok }\nspec:\n  duration: 10s\n  faults:\n    - name: p\n      kind: ProcessChaos\n      action: pause\n      selector: { pids: [1] }\n";

fn billion_laughs() -> String {
    let mut s = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        s.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    s
}

/// The bomb runs under a 512 MiB address-space limit: before the fix it needed more than 10 GB
/// and 30 s and died of SIGABRT; now it is one positioned error.
#[test]
fn an_alias_bomb_is_refused_quickly_within_a_small_memory_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bomb = write(dir.path(), "bomb.yaml", billion_laughs().as_bytes());
    let started = Instant::now();
    // 512 MiB of address space: the unbounded expansion needed more than 10 GB.
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 524288 && exec \"$0\" validate \"$1\"")
        .arg(havoc())
        .arg(&bomb)
        .output()
        .expect("run havoc validate under ulimit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let expected = format!(
        "{}:5:7: invalid YAML: alias expansion exceeds 100000 nodes",
        bomb.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn every_file_is_checked_and_non_utf8_is_positioned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(
        dir.path(),
        "latin1.yaml",
        b"apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: { name: caf\xE9 }\n",
    );
    let after = write(
        dir.path(),
        "after.yaml",
        VALID
            .replace(
                "action: pause",
                "action: pause\n      after: 18446744073709551615s",
            )
            .as_bytes(),
    );
    let ok = write(dir.path(), "ok.yaml", VALID.as_bytes());
    let missing = dir.path().join("missing.yaml");
    let out = validate(&[&bad, &after, &missing, &ok]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:3:22: the file is not UTF-8: byte 0xE9 at offset 69",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:10:14: spec.faults[0].after: `18446744073709551615s` is too long: durations are at most 365 days",
            after.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot read {}", missing.display())),
        "{stderr}"
    );
    // The file after the bad ones was still checked.
    assert!(
        stdout.contains(&format!("{}: ok (Experiment ok, 1 fault(s))", ok.display())),
        "{stdout}"
    );
}

#[test]
fn a_huge_value_is_not_echoed_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "N".repeat(3 << 20);
    let f = write(
        dir.path(),
        "big.yaml",
        VALID
            .replace("name: ok", &format!("name: {name}"))
            .as_bytes(),
    );
    let out = validate(&[&f]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.len() < 2_000,
        "stderr is {} bytes",
        out.stderr.len()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("… (3145728 bytes)` is not a valid name"),
        "{stderr}"
    );
}

#[test]
fn an_oversized_file_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&f).expect("create");
    // Sparse: 1 GiB of zero bytes that are never read beyond the 4 MiB limit.
    file.set_len(1 << 30).expect("set_len");
    let out = validate(&[&f]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the file is larger than the limit of 4 MiB"),
        "{stderr}"
    );
}

#[test]
fn certs_force_replaces_a_symlinked_key_and_leaves_its_target_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = write(dir.path(), "outside-secret", b"do not touch\n");
    let out_dir = dir.path().join("certs");
    std::fs::create_dir(&out_dir).expect("mkdir");
    std::os::unix::fs::symlink(&outside, out_dir.join("operator-key.pem")).expect("symlink");
    // A dangling symlink at ca.pem counts as an existing CA.
    std::os::unix::fs::symlink(dir.path().join("nowhere"), out_dir.join("ca.pem"))
        .expect("symlink");
    let run = |force: bool| {
        let mut c = Command::new(havoc());
        c.arg("certs").arg("--out").arg(&out_dir);
        if force {
            c.arg("--force");
        }
        c.output().expect("run havoc certs")
    };
    let refused = run(false);
    assert!(
        !refused.status.success(),
        "an existing ca.pem needs --force"
    );
    assert!(!dir.path().join("nowhere").exists());

    let forced = run(true);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(
        std::fs::read(&outside).expect("read outside"),
        b"do not touch\n"
    );
    assert!(
        !dir.path().join("nowhere").exists(),
        "the dangling link was not followed"
    );
    for name in ["operator-key.pem", "ca.pem"] {
        let meta = std::fs::symlink_metadata(out_dir.join(name)).expect("lstat");
        assert!(meta.file_type().is_file(), "{name} is now a regular file");
    }
}
