//! Real containers for tests: a private containerd (Debian's, with runc) started on its own
//! socket, root and state dir, a busybox image built locally in pure Rust (no registry is
//! reachable in CI), and containers that each get their own network namespace with a veth to the
//! host. Every object is named uniquely and removed by a guard's `Drop`, so a test leaves the
//! machine as it found it.
//!
//! ```no_run
//! let ctrd = havoc_testbed::Containerd::start()?;
//! let c = ctrd.run("web", &["nc", "-ll", "-p", "8080", "-e", "cat"])?;
//! assert!(c.is_running());
//! println!("{} pid {} at {}", c.id, c.pid, c.container_ip);
//! # anyhow::Ok(())
//! ```
//!
//! Needs root, `containerd`, `ctr`, `runc`, `busybox-static` and `iproute2`.

mod containerd;
mod host;
mod image;

pub use containerd::{Container, Containerd, UdpCounters, IMAGE, NAMESPACE};
pub use image::{build_busybox_image, build_havoc_image, HavocImage};

/// True if the process runs as root; otherwise prints why the calling test is skipped.
/// Use as `if !havoc_testbed::root_or_skip("name") { return; }`.
pub fn root_or_skip(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipping {test}: needs root (containerd, runc, netns, cgroups)");
    }
    root
}
