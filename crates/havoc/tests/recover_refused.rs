//! `havoc recover` never says "nothing left" about what it could not look at: a journal
//! directory it may not read, a namespace it may not enter. It names each and exits non-zero.
//!
//! The refusals are real: `havoc recover` runs as root without the capabilities the check needs
//! (`setpriv --bounding-set -...`), against a journal directory of mode 000 or a namespace this
//! test made. Without CAP_SYS_ADMIN and CAP_NET_ADMIN it also cannot change any namespace, so
//! the sweep cannot touch what other tests on this machine hold.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// `havoc recover` as root without the capabilities in `drop` (setpriv names, no `cap_`).
fn recover_without(state: &Path, drop: &[&str]) -> Output {
    let bounding = drop
        .iter()
        .map(|c| format!("-{c}"))
        .collect::<Vec<_>>()
        .join(",");
    Command::new("setpriv")
        .args(["--bounding-set", &bounding, "--"])
        .arg(havoc())
        .arg("recover")
        .env("HAVOC_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)")
}

/// Capabilities whose absence keeps `havoc recover` from changing any namespace.
const NO_CHANGES: [&str; 2] = ["sys_admin", "net_admin"];

/// A directory made unreadable for the test, made readable again on drop (so the tempdir goes).
struct Unreadable<'a>(&'a Path);

impl<'a> Unreadable<'a> {
    fn new(dir: &'a Path) -> Self {
        std::fs::create_dir_all(dir).expect("create");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
        Unreadable(dir)
    }
}

impl Drop for Unreadable<'_> {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o755));
    }
}

/// A named network namespace made for the test, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "hvrec{:x}{:04x}",
            std::process::id() & 0xffff,
            rand::random::<u16>()
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(ok.success(), "ip netns add {name}");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn recover_names_a_journal_directory_it_may_not_read_and_fails() {
    if !root_or_skip("recover_names_a_journal_directory_it_may_not_read_and_fails") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let runs = state.join("runs");
    let _guard = Unreadable::new(&runs);
    let mut drop = vec!["dac_override", "dac_read_search"];
    drop.extend(NO_CHANGES);
    let out = recover_without(&state, &drop);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "exit code: {stderr}");
    assert!(
        stderr.contains("could not check")
            && stderr.contains(runs.to_str().expect("utf8"))
            && stderr.contains("Permission denied"),
        "names the journal directory and why: {stderr}"
    );
    assert!(
        stderr.contains("not swept"),
        "does not sweep without knowing which runs are alive: {stderr}"
    );
    assert!(!stdout.contains("nothing left"), "{stdout}");
}

#[test]
fn recover_names_a_journal_it_may_not_read_and_fails() {
    if !root_or_skip("recover_names_a_journal_it_may_not_read_and_fails") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let runs = state.join("runs");
    std::fs::create_dir_all(&runs).expect("runs");
    let journal = runs.join("r-unreadable.json");
    std::fs::write(&journal, "{}").expect("journal");
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let mut drop = vec!["dac_override", "dac_read_search"];
    drop.extend(NO_CHANGES);
    let out = recover_without(&state, &drop);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code: {stderr}");
    assert!(
        stderr.contains(journal.to_str().expect("utf8")) && stderr.contains("Permission denied"),
        "names the journal and why: {stderr}"
    );
    assert!(stderr.contains("not swept"), "{stderr}");
}

#[test]
fn recover_names_a_namespace_it_may_not_enter_and_fails() {
    if !root_or_skip("recover_names_a_namespace_it_may_not_enter_and_fails") {
        return;
    }
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = recover_without(&state, &NO_CHANGES);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "exit code: {stderr}");
    for what in ["delay rules", "bandwidth limits"] {
        assert!(
            stderr.lines().any(|l| l.contains("could not check")
                && l.contains(what)
                && l.contains(&format!("/run/netns/{}", ns.0))),
            "names the {what} of namespace {}: {stderr}",
            ns.0
        );
    }
    assert!(!stdout.contains("nothing left"), "{stdout}");
}
