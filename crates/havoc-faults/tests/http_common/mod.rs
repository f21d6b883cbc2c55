//! Sandbox for HTTPChaos tests and benchmarks: a client and a server network namespace joined by
//! a veth pair, an echo server (HTTP/1.1 keep-alive and h2c, hyper) in the server namespace,
//! and clients (curl, a Python keep-alive client) run in the client namespace.

#![allow(dead_code)]

use std::os::fd::AsFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub const SERVER_IP: &str = "10.231.0.2";
pub const PORT: u16 = 8080;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether the test can run (root); in CI a test that cannot run fails.
pub fn can_run() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "HTTPChaos tests need root, and CI runs as root"
    );
    eprintln!("skipped: HTTPChaos tests need root (netns, nftables)");
    false
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces (`client`, `server`) joined by a veth pair; removed on drop.
pub struct Sandbox {
    pub client: String,
    pub server: String,
    echo: Option<EchoServer>,
}

impl Sandbox {
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}_{n}", tag, std::process::id());
        let client = format!("hxc{id}");
        let server = format!("hxs{id}");
        sh(&["ip", "netns", "add", &client]);
        let mut sb = Sandbox {
            client: client.clone(),
            server: server.clone(),
            echo: None,
        };
        sh(&["ip", "netns", "add", &server]);
        sh(&[
            "ip", "link", "add", "hxa", "netns", &client, "type", "veth", "peer", "name", "hxb",
            "netns", &server,
        ]);
        sh(&[
            "ip",
            "-n",
            &client,
            "addr",
            "add",
            "10.231.0.1/24",
            "dev",
            "hxa",
        ]);
        sh(&[
            "ip",
            "-n",
            &server,
            "addr",
            "add",
            "10.231.0.2/24",
            "dev",
            "hxb",
        ]);
        for (ns, dev) in [(&client, "hxa"), (&server, "hxb")] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        sb.echo = Some(EchoServer::start(&format!("/run/netns/{server}")));
        sb
    }

    pub fn server_netns(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/run/netns/{}", self.server))
    }

    /// Runs `args` in the client namespace.
    pub fn in_client(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.client])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run in client netns")
    }

    /// `curl` from the client namespace: (exit code, status, body, headers).
    pub fn curl(&self, extra: &[&str], path: &str) -> Curl {
        let url = format!("http://{SERVER_IP}:{PORT}{path}");
        let mut args = vec![
            "curl",
            "-s",
            "-S",
            "-D",
            "/dev/stderr",
            "-o",
            "-",
            "--max-time",
            "10",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = self.in_client(&args);
        let head = String::from_utf8_lossy(&out.stderr).to_string();
        let status = head
            .lines()
            .find(|l| l.starts_with("HTTP/"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Curl {
            code: out.status.code().unwrap_or(-1),
            status,
            body: String::from_utf8_lossy(&out.stdout).to_string(),
            head,
        }
    }

    /// The Python keep-alive client: `n` requests on one connection (reconnecting after an
    /// error), returns one JSON object per request.
    pub fn python(
        &self,
        n: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Vec<serde_json::Value> {
        let script =
            std::env::temp_dir().join(format!("havoc_http_client_{}.py", std::process::id()));
        std::fs::write(&script, PY_CLIENT).expect("write client script");
        let n = n.to_string();
        let port = PORT.to_string();
        let mut args = vec![
            "python3",
            script.to_str().expect("utf-8 path"),
            SERVER_IP,
            &port,
            &n,
            method,
            path,
        ];
        if let Some(b) = body {
            args.push(b);
        }
        let out = self.in_client(&args);
        assert!(
            out.status.success(),
            "python client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("client prints JSON")
    }

    /// nftables tables present in the server namespace.
    pub fn server_tables(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.server, "nft", "list", "tables"])
            .output()
            .expect("nft list tables");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.echo.take();
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub struct Curl {
    pub code: i32,
    pub status: u16,
    pub body: String,
    pub head: String,
}

impl Curl {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

const PY_CLIENT: &str = r#"
import http.client, json, sys, time
host, port, n, method, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
body = sys.argv[6] if len(sys.argv) > 6 else None
out = []
c = http.client.HTTPConnection(host, port, timeout=10)
for i in range(n):
    t = time.perf_counter()
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        data = r.read()
        out.append({"status": r.status, "ms": (time.perf_counter() - t) * 1000, "body": data.decode(errors="replace")})
    except Exception as e:
        out.append({"status": 0, "ms": (time.perf_counter() - t) * 1000, "error": repr(e)})
        c.close()
        c = http.client.HTTPConnection(host, port, timeout=10)
print(json.dumps(out))
"#;

/// An echo server: answers every request with JSON {method, path (with query), version,
/// headers, body}; `/status/NNN` answers with status NNN. HTTP/1.1 keep-alive and h2c.
pub struct EchoServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(netns: &str) -> Self {
        let ns = std::fs::File::open(netns).expect("open server netns");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("enter server netns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind(("0.0.0.0", PORT))
                    .await
                    .expect("bind echo server");
                ready_tx.send(()).expect("ready");
                let accept = async {
                    loop {
                        let Ok((s, _)) = l.accept().await else {
                            continue;
                        };
                        let _ = s.set_nodelay(true);
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(echo);
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(s), svc)
                                    .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("echo server listening");
        EchoServer {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn echo(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let v = v.to_str().unwrap_or("").to_string();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|e| {
                *e = serde_json::Value::String(format!("{}, {v}", e.as_str().unwrap_or("")))
            })
            .or_insert(serde_json::Value::String(v));
    }
    let status = parts
        .uri
        .path()
        .strip_prefix("/status/")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200u16);
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "server": "echo",
    });
    Ok(http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-origin", "echo")
        .body(Full::new(Bytes::from(doc.to_string())))
        .expect("response"))
}

/// An HTTPChaos spec from JSON, validated.
pub fn spec(json: serde_json::Value) -> havoc_spec::http::HTTPChaos {
    let h: havoc_spec::http::HTTPChaos = serde_json::from_value(json).expect("spec parses");
    let mut p = havoc_spec::error::Problems::new();
    h.validate(&havoc_spec::path::FieldPath::root(), &mut p);
    assert!(p.is_empty(), "spec problems: {:?}", p.into_vec());
    h
}

pub fn ctx() -> havoc_faults::Context {
    havoc_faults::Context {
        self_exe: std::env::current_exe().expect("exe"),
        seed: 7,
        duration: Duration::from_secs(60),
    }
}

/// Injects `spec` into the sandbox's server namespace.
pub fn inject(sb: &Sandbox, spec: havoc_spec::http::HTTPChaos) -> Box<dyn havoc_faults::Injection> {
    let fault = havoc_faults::build(&havoc_spec::FaultSpec::HTTPChaos(spec));
    let target = havoc_faults::Target::Netns {
        path: sb.server_netns(),
        label: sb.server.clone(),
    };
    fault.check(&target).expect("check");
    fault.inject(&target, &ctx()).expect("inject")
}
