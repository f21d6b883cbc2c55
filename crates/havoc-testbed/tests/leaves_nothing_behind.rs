//! After a testbed with containers is dropped, the machine is exactly as before: processes,
//! network namespaces, links, mounts, cgroups and /run/containerd. Its own test binary, so the
//! other testbed tests do not run at the same time.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use havoc_testbed::{root_or_skip, Containerd};

fn lines(argv: &[&str]) -> BTreeSet<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("{}: {}", argv.join(" "), l.trim()))
        .collect()
}

/// Cgroup directories up to three levels below each hierarchy, except the VM agent's per-command
/// memory cgroups (`memory/process_api/*`), which come and go with every shell command.
fn cgroup_dirs(out: &mut BTreeSet<String>) {
    fn walk(dir: &Path, depth: usize, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) || p.ends_with("process_api") {
                continue;
            }
            out.insert(format!("cgroup: {}", p.display()));
            if depth > 1 {
                walk(&p, depth - 1, out);
            }
        }
    }
    walk(Path::new("/sys/fs/cgroup"), 4, out);
}

fn snapshot() -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    // Exited shims are reparented to init, which reaps their zombies when it gets to it (seconds
    // here): a zombie holds nothing but its pid, so zombies are not counted.
    let procs = lines(&["pgrep", "-a", "containerd"])
        .into_iter()
        .chain(lines(&["pgrep", "-a", "runc"]));
    s.extend(procs.filter(|l| !l.ends_with("<defunct>")));
    s.extend(lines(&["ip", "netns", "list"]));
    s.extend(lines(&["ip", "-o", "link", "show"]).into_iter().map(|l| {
        // Drop the counters that change with traffic; keep index, name and flags.
        l.split(" link/").next().unwrap_or(&l).to_string()
    }));
    s.extend(lines(&["findmnt", "-rn", "-o", "TARGET,FSTYPE"]));
    s.extend(lines(&["find", "/run/containerd", "/run/netns"]));
    cgroup_dirs(&mut s);
    s
}

/// Another testbed (another engineer's tests) running at the same time changes the same places.
fn other_testbed_running(ours: &str) -> bool {
    lines(&["pgrep", "-a", "containerd"])
        .iter()
        .any(|l| l.contains("havoc-tb-") && !l.contains(ours))
}

#[test]
fn dropping_the_testbed_leaves_the_machine_as_before() {
    if !root_or_skip("dropping_the_testbed_leaves_the_machine_as_before") {
        return;
    }
    let before = snapshot();
    let ctrd = Containerd::start().expect("start containerd");
    let dir = ctrd.dir().display().to_string();
    let a = ctrd.run("tb-clean-a", &["sleep", "3600"]).expect("run a");
    let b = ctrd
        .run("tb-clean-b", &["sh", "-c", "sleep 3600 & sleep 3600"])
        .expect("run b");
    let c = ctrd.run("tb-clean-c", &["sleep", "3600"]).expect("run c");
    let mut markers = vec![dir.clone()];
    for k in [&a, &b, &c] {
        markers.extend([k.id.clone(), k.host_veth.clone(), format!(" {} ", k.pid)]);
    }
    markers.push(format!("{} ", ctrd.pid()));
    let during = snapshot();
    let new: Vec<&String> = during.difference(&before).collect();
    // The snapshot sees what the testbed made, so an empty diff below means something.
    for marker in [&a.id, &b.id, &c.id, &a.host_veth, &dir] {
        assert!(
            new.iter().any(|l| l.contains(marker.as_str())),
            "snapshot shows {marker} while it runs: {new:#?}"
        );
    }
    assert!(b.cgroup_procs().len() >= 2, "b has its init and a child");

    // Drop a first, then the daemon with b and c still running: the daemon cleans those up.
    drop(a);
    drop(ctrd);
    // Dropping a container after its daemon must be harmless.
    drop(b);
    drop(c);

    // Zombies of the shims are reaped by init a little later: poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = snapshot();
        let gone: Vec<&String> = before.difference(&after).collect();
        let added: Vec<&String> = after.difference(&before).collect();
        if gone.is_empty() && added.is_empty() {
            return;
        }
        let ours: Vec<&&String> = gone
            .iter()
            .chain(added.iter())
            .filter(|l| markers.iter().any(|m| l.contains(m.as_str())))
            .collect();
        if ours.is_empty() && other_testbed_running(&dir) {
            eprintln!("another testbed is running; differences not ours: +{added:#?} -{gone:#?}");
            return;
        }
        if Instant::now() >= deadline {
            panic!("left behind: added {added:#?}\nremoved {gone:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
