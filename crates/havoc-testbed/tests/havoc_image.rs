//! The `havoc` container image, built without Docker ([`havoc_testbed::build_havoc_image`]),
//! imports into containerd and starts the agent: its `/healthz` answers from inside the
//! container's own network namespace.
//!
//! Uses the `havoc` binary that `cargo test --workspace` builds (`target/debug/havoc`), or
//! `HAVOC_BIN` (e.g. a release build). Without one it prints that it skipped, or fails when
//! `CI` is set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use havoc_testbed::{build_havoc_image, root_or_skip, Containerd};

fn havoc_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HAVOC_BIN") {
        return Some(p.into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let found = ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("havoc"))
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no havoc binary was found under {} (cargo test --workspace builds it; or set HAVOC_BIN)",
            target.display()
        );
        println!("skipped: no havoc binary (cargo build -p havoc, or set HAVOC_BIN)");
    }
    found
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn havoc_image_imports_into_containerd_and_runs_the_agent() {
    if !root_or_skip("havoc_image_imports_into_containerd_and_runs_the_agent") {
        return;
    }
    let Some(binary) = havoc_binary() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("havoc-oci.tar");
    let name = "havoc.local/havoc:test";
    let image = build_havoc_image(&archive, name, &binary).expect("build the havoc image");
    let original = std::fs::metadata(&binary).expect("binary").len();
    eprintln!(
        "image: binary {} -> {} bytes stripped, static: {}, libraries: {:?}, archive {} bytes",
        original, image.binary_bytes, image.is_static, image.libraries, image.archive_bytes
    );
    assert!(
        image.binary_bytes < original,
        "the binary in the image is stripped"
    );
    assert!(
        image.is_static || image.libraries.iter().any(|l| l.contains("libc.so")),
        "a glibc-linked binary brings its libc: {:?}",
        image.libraries
    );

    let ctr = Containerd::start().expect("start containerd");
    let t0 = Instant::now();
    ctr.import_image(&archive).expect("import the havoc image");
    let imported = t0.elapsed();
    let c = ctr
        .run_image(
            "havoc-agent",
            name,
            &[
                "/havoc",
                "agent",
                "--insecure-dev",
                "--listen=127.0.0.1:7433",
                "--metrics-addr=0.0.0.0:7434",
                "--state-dir=/var/lib/havoc",
                "--node-name=testbed",
            ],
        )
        .expect("run the agent from the image");
    let addr = SocketAddr::from((c.container_ip, 7434));
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        match http_get(addr, "/healthz") {
            Ok(r) if r.starts_with("HTTP/1.") => break r,
            other => {
                assert!(
                    c.is_running(),
                    "the agent exited: {other:?}; log: {}",
                    std::fs::read_to_string(c.log_path()).unwrap_or_default()
                );
                assert!(
                    Instant::now() < deadline,
                    "no /healthz from the agent at {addr} within 20s: {other:?}; log: {}",
                    std::fs::read_to_string(c.log_path()).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let started = t0.elapsed();
    assert!(reply.contains(" 200 "), "healthz: {reply}");
    let metrics = http_get(addr, "/metrics").expect("metrics");
    assert!(
        metrics.contains(" 200 ") && metrics.contains("havoc"),
        "{metrics}"
    );
    eprintln!(
        "import {:.2}s, agent answering /healthz {:.2}s after the import started",
        imported.as_secs_f64(),
        started.as_secs_f64()
    );
}
