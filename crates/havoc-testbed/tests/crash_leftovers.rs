//! A test process killed with SIGKILL cannot run its guards' `Drop`. Its containerd dies with it
//! (PR_SET_PDEATHSIG), and the next `Containerd::start` removes the rest.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use havoc_testbed::{root_or_skip, Containerd};

const CHILD_ENV: &str = "HAVOC_TB_CRASH_CHILD";

/// Run by the test below in a child process: starts a testbed, reports it, waits to be killed.
#[test]
#[ignore = "helper process for crash_leftovers_are_removed_by_the_next_start"]
fn crash_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let ctrd = Containerd::start().expect("child: start containerd");
    let c = ctrd
        .run("tb-crash", &["sleep", "3600"])
        .expect("child: run");
    println!(
        "READY {} {} {} {}",
        ctrd.dir().display(),
        ctrd.pid(),
        c.id,
        c.pid
    );
    std::thread::sleep(Duration::from_secs(60));
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[test]
fn crash_leftovers_are_removed_by_the_next_start() {
    if !root_or_skip("crash_leftovers_are_removed_by_the_next_start") {
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    while !line.starts_with("READY") {
        line.clear();
        if out.read_line(&mut line).expect("read child") == 0 {
            let _ = child.kill();
            panic!("child exited before it was ready");
        }
    }
    let f: Vec<&str> = line.split_whitespace().collect();
    let (dir, ctrd_pid, id, task_pid) = (
        Path::new(f[1]).to_path_buf(),
        f[2].parse::<i32>().expect("pid"),
        f[3].to_string(),
        f[4].parse::<i32>().expect("pid"),
    );
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");

    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(ctrd_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(ctrd_pid), "containerd died with its parent");
    assert!(
        alive(task_pid),
        "the container outlives the crash (so this test means something)"
    );
    assert!(Path::new("/run/netns").join(&id).exists());
    assert!(dir.exists());

    let next = Containerd::start().expect("start the next testbed");
    assert!(!alive(task_pid), "the crashed testbed's container is gone");
    assert!(
        !Path::new("/run/netns").join(&id).exists(),
        "its netns is gone"
    );
    assert!(!dir.exists(), "its temp dir is gone");
    let cgroup = Path::new("/sys/fs/cgroup/pids/k8s.io").join(&id);
    assert!(!cgroup.exists(), "{} is gone", cgroup.display());
    drop(next);
}
