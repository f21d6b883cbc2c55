//! `havoc demo`: a real experiment on a fresh machine in one command.
//!
//! It builds a sandbox — two network namespaces joined by a veth pair, a small web service that
//! havoc itself serves in one, a client sending it requests from the other — runs the bundled
//! experiment (network delay, packet loss, a paused process, with probes and an abort rule), prints
//! the report, and removes the sandbox, also when interrupted. `--keep` leaves it for exploration.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

#[derive(clap::Args)]
pub struct Args {
    /// Print the report as JSON.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Leave the sandbox running afterwards (and print how to remove it).
    #[arg(long)]
    keep: bool,
    /// Remove a sandbox left by `--keep` (or by a demo that was killed) and exit.
    #[arg(long)]
    remove: bool,
    /// Where report.json and report.html go (default: the current directory).
    #[arg(long, default_value = ".")]
    report_dir: Option<std::path::PathBuf>,
}

pub const DEMO_EXPERIMENT: &str = include_str!("../../../../examples/demo.yaml");
pub const CLIENT_NS: &str = "havoc-demo-client";
pub const SERVER_NS: &str = "havoc-demo-server";
const SERVER_ADDR: &str = "10.99.0.2";
const CLIENT_ADDR: &str = "10.99.0.1";
const PORT: u16 = 8080;

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The sandbox; dropping it removes the namespaces (and with them the veth pair and every
/// process-independent kernel object inside) unless it is kept.
struct Sandbox {
    children: Vec<Child>,
    keep: bool,
}

impl Sandbox {
    fn exists() -> bool {
        Path::new("/run/netns").join(CLIENT_NS).exists()
            || Path::new("/run/netns").join(SERVER_NS).exists()
    }

    fn create(exe: &Path, keep: bool) -> anyhow::Result<Sandbox> {
        if Self::exists() {
            bail!("a demo sandbox already exists ({CLIENT_NS}, {SERVER_NS}): remove it with `havoc demo --remove`");
        }
        let mut sb = Sandbox {
            children: Vec::new(),
            keep: false,
        };
        ip(&["netns", "add", CLIENT_NS])?;
        ip(&["netns", "add", SERVER_NS])?;
        ip(&[
            "link", "add", "hvdemo-c", "type", "veth", "peer", "name", "hvdemo-s",
        ])?;
        ip(&["link", "set", "hvdemo-c", "netns", CLIENT_NS])?;
        ip(&["link", "set", "hvdemo-s", "netns", SERVER_NS])?;
        ip(&[
            "-n",
            CLIENT_NS,
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/24"),
            "dev",
            "hvdemo-c",
        ])?;
        ip(&[
            "-n",
            SERVER_NS,
            "addr",
            "add",
            &format!("{SERVER_ADDR}/24"),
            "dev",
            "hvdemo-s",
        ])?;
        for (ns, dev) in [(CLIENT_NS, "hvdemo-c"), (SERVER_NS, "hvdemo-s")] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        let spawn = |ns: &str, args: &[&str]| -> anyhow::Result<Child> {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns])
                .arg(exe)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if keep {
                // Kept sandboxes outlive us: `havoc demo --remove` stops these processes.
                havoc_sys::process::new_session(&mut cmd);
            } else {
                havoc_sys::process::die_with_parent(&mut cmd, 9);
            }
            cmd.spawn().context("cannot start a demo process")
        };
        let port = PORT.to_string();
        sb.children
            .push(spawn(SERVER_NS, &["__demo-server", "--port", &port])?);
        let url = format!("http://{SERVER_ADDR}:{PORT}/");
        sb.children
            .push(spawn(CLIENT_NS, &["__demo-load", "--url", &url])?);
        Ok(sb)
    }

    fn client_pid(&self) -> u32 {
        self.children[1].id()
    }

    fn remove() {
        for ns in [CLIENT_NS, SERVER_NS] {
            // Stop whatever still runs in the namespace, then delete it.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = havoc_sys::process::send_signal(pid, 18);
                        let _ = havoc_sys::process::send_signal(pid, 9);
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        Self::remove();
    }
}

pub fn run(args: Args, state_dir: &Path, started: Instant) -> anyhow::Result<u8> {
    if args.remove {
        let existed = Sandbox::exists();
        Sandbox::remove();
        println!(
            "{}",
            if existed {
                "demo sandbox removed"
            } else {
                "no demo sandbox found"
            }
        );
        return Ok(0);
    }
    if !super::is_root() {
        bail!("havoc demo needs root: it creates network namespaces and injects real faults");
    }
    // Ctrl-C during set-up must still remove the sandbox: take the signals from the start.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, interrupted.clone())
            .context("cannot install signal handlers")?;
    }
    let exe = std::env::current_exe().context("cannot find the havoc executable")?;
    let mut sandbox = Sandbox::create(&exe, args.keep)?;
    eprintln!("havoc demo: sandbox up: web service {SERVER_ADDR}:{PORT} in netns {SERVER_NS}, client in netns {CLIENT_NS} (pid {})", sandbox.client_pid());
    // Give the service a moment to listen.
    let ready = Instant::now();
    while ready.elapsed() < Duration::from_secs(3) && !interrupted.load(Ordering::SeqCst) {
        let up = havoc_sys::netns::NetNs::named(CLIENT_NS)
            .run(|| {
                std::net::TcpStream::connect_timeout(
                    &format!("{SERVER_ADDR}:{PORT}").parse().expect("address"),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
            .unwrap_or(false);
        if up {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("havoc demo: interrupted; sandbox removed");
        return Ok(super::EXIT_INTERRUPTED);
    }
    let text = DEMO_EXPERIMENT.replace("__LOAD_PID__", &sandbox.client_pid().to_string());
    let exp = havoc_spec::parse_experiment(&text).map_err(|e| {
        anyhow::anyhow!(
            "bundled demo experiment is invalid:\n{}",
            e.render("demo.yaml")
        )
    })?;
    eprintln!(
        "havoc demo: running experiment `{}` (examples/demo.yaml)",
        exp.metadata.name
    );
    let code = super::run::run_experiment(
        exp,
        &super::run::Options {
            json: args.output == "json",
            report_dir: args.report_dir.clone(),
            ..Default::default()
        },
        state_dir,
        started,
    );
    if args.keep {
        sandbox.keep = true;
        eprintln!(
            "havoc demo: sandbox kept. Explore it with e.g. `ip netns exec {CLIENT_NS} curl http://{SERVER_ADDR}:{PORT}/health`; remove it with `havoc demo --remove`"
        );
    }
    code
}

/// `__demo-server`: a tiny HTTP/1.1 service (one thread per connection, `Connection: close`).
pub fn server_main(port: u16) -> anyhow::Result<u8> {
    let l = std::net::TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("cannot listen on port {port}"))?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    for conn in l.incoming() {
        if Instant::now() > deadline {
            break;
        }
        let Ok(mut c) = conn else { continue };
        std::thread::spawn(move || {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 2048];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let body = if req.starts_with("GET /health") {
                "ok\n".to_string()
            } else {
                format!("hello from havoc's demo service ({} bytes asked)\n", n)
            };
            let _ = c.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes());
        });
    }
    Ok(0)
}

/// `__demo-load`: a client sending a request every 50 ms, for at most an hour.
pub fn load_main(url: &str) -> anyhow::Result<u8> {
    let rest = url
        .strip_prefix("http://")
        .context("url must start with http://")?;
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let deadline = Instant::now() + Duration::from_secs(3600);
    while Instant::now() < deadline {
        if let Ok(mut c) = std::net::TcpStream::connect(hostport) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(0)
}
