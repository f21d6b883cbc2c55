//! HTTPChaos through the real `havoc` binary: a Python HTTP server in a namespace the test makes,
//! requests aborted while `havoc run` holds the fault, and after kill -9 of `havoc run` HTTP
//! works again, unfaulted, within 1 s with no redirect left in the namespace; the examples
//! validate.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netpair::Pair;
use common::*;

/// curl from `ns` to `url`: (exit code, HTTP status).
fn curl(ns: &str, url: &str) -> (i32, u16) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--max-time", "1", url])
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (out.status.code().unwrap_or(-1), status)
}

fn tables(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "tables"])
        .output()
        .expect("nft list tables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kill_dash_nine_during_http_chaos_leaves_http_working_within_a_second() {
    if !root_or_skip("kill_dash_nine_during_http_chaos_leaves_http_working_within_a_second") {
        return;
    }
    let pair = Pair::new("http");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), "hello\n").expect("write page");
    // The server: python's http.server in namespace b (`ip netns exec` execs it: same pid).
    let server = Reaped::spawn(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &pair.b,
                "python3",
                "-m",
                "http.server",
                "8080",
            ])
            .args(["--bind", "0.0.0.0", "--directory"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let url = format!("http://{}:8080/index.html", pair.ip_b);
    assert!(
        wait_until(Duration::from_secs(10), || curl(&pair.a, &url).1 == 200),
        "the server answers"
    );
    let exp = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: HTTPChaos\nmetadata: {{ name: http-kill9 }}\nspec:\n  duration: 60s\n  target: Request\n  port: 8080\n  path: /index.*\n  abort: true\n  selector: {{ pids: [{}] }}\n",
        server.pid()
    );
    let file = write(dir.path(), "http.yaml", &exp);
    let state_dir = dir.path().join("state");
    let mut run = Reaped::spawn(&mut havoc_run(&state_dir, &file, false));
    assert!(
        wait_until(Duration::from_secs(10), || curl(&pair.a, &url).0 == 52),
        "requests are aborted (curl: empty reply) while the fault is held"
    );
    assert!(
        tables(&pair.b).contains("havoc_http"),
        "{}",
        tables(&pair.b)
    );
    let killed = Instant::now();
    run.0.kill().expect("SIGKILL havoc run");
    run.0.wait().expect("reap");
    assert!(
        wait_until(Duration::from_secs(1), || curl(&pair.a, &url).1 == 200),
        "HTTP works again within 1 s of kill -9"
    );
    eprintln!("HTTP unfaulted {:?} after SIGKILL", killed.elapsed());
    assert!(
        !tables(&pair.b).contains("havoc_http"),
        "no redirect left: {}",
        tables(&pair.b)
    );
    for _ in 0..20 {
        assert_eq!(curl(&pair.a, &url).1, 200, "every request served after");
    }
    drop(server);
}

#[test]
fn the_http_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).expect("examples") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if !name.starts_with("http-") {
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
    assert!(checked >= 3, "http-*.yaml examples checked: {checked}");
}
