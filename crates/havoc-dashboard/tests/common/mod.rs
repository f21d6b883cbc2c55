//! A dashboard on 127.0.0.1 over a temporary state directory, and a tiny HTTP/1.1 client that
//! sends exactly the headers a test gives it (browsers' and attackers' alike).

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const FIXTURE: &str = include_str!("../../../havoc-report/tests/fixture-report.json");

pub struct Server {
    pub addr: SocketAddr,
    pub state: tempfile::TempDir,
    pub token: String,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    /// Starts a dashboard for `state` (which the caller may fill first).
    pub fn start(state: tempfile::TempDir, havoc_exe: PathBuf) -> Server {
        Server::start_with(state, havoc_exe, None)
    }

    /// Starts a dashboard in cluster mode with the kubeconfig at `kubeconfig`: its identity when
    /// `forward_token` is false, else only its server and CA (each request's token is used).
    pub fn start_cluster(kubeconfig: &Path, forward_token: bool) -> Server {
        let state = tempfile::tempdir().expect("tempdir");
        Server::start_with(
            state,
            "/nonexistent/havoc".into(),
            Some((kubeconfig.to_path_buf(), forward_token)),
        )
    }

    fn start_with(
        state: tempfile::TempDir,
        havoc_exe: PathBuf,
        cluster: Option<(PathBuf, bool)>,
    ) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        // The cluster's client is made on the server's runtime (its worker task lives there).
        let cluster = cluster.map(|(path, forward)| {
            rt.block_on(async {
                if forward {
                    havoc_dashboard::cluster::Cluster::forwarding_to(&path).await
                } else {
                    havoc_dashboard::cluster::Cluster::from_kubeconfig(Some(&path)).await
                }
            })
            .expect("cluster mode")
        });
        let bound = rt
            .block_on(havoc_dashboard::bind(havoc_dashboard::Config {
                state_dir: state.path().to_path_buf(),
                havoc_exe,
                listen: "127.0.0.1:0".parse().expect("addr"),
                extra_hosts: vec![],
                cluster,
            }))
            .expect("bind the dashboard");
        let addr = bound.local_addr();
        rt.spawn(bound.serve());
        let mut s = Server {
            addr,
            state,
            token: String::new(),
            _runtime: rt,
        };
        let page = s.get("/").body;
        s.token = token_of(&page);
        s
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[("Host", &self.host())], b"")
    }

    /// A POST as the dashboard's own page sends it.
    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.send("POST", path, body, None)
    }

    /// A request as the dashboard's own page sends it, with a bearer token if given (as an
    /// authenticating proxy in front of the dashboard adds it).
    pub fn send(&self, method: &str, path: &str, body: &str, bearer: Option<&str>) -> Resp {
        let origin = format!("http://{}", self.host());
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            ("Host", self.host()),
            ("Origin", origin),
            ("X-Havoc-CSRF", self.token.clone()),
            ("Content-Type", "application/yaml".to_string()),
        ];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(self.addr, method, path, &headers, body.as_bytes())
    }
}

pub fn token_of(page: &str) -> String {
    let at = page
        .find(r#"name="havoc-csrf" content=""#)
        .expect("the page embeds the token")
        + r#"name="havoc-csrf" content=""#.len();
    page[at..at + 32].to_string()
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).expect("send");
    s.write_all(body).expect("send body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        head: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).expect("chunk length");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Writes a copy of the fixture report as `<state>/reports/<key>/report.json`.
pub fn write_report(state: &Path, key: &str, verdict: &str, started_ms: u64) {
    let mut v: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture");
    v["runId"] = key.into();
    v["verdict"] = verdict.into();
    v["startedAtUnixMs"] = started_ms.into();
    let dir = state.join("reports").join(key);
    std::fs::create_dir_all(&dir).expect("mkdir report dir");
    std::fs::write(dir.join("report.json"), v.to_string()).expect("write report");
}

/// Reads the server-sent events of `/api/events` as (event name, JSON data), passing each to `f`
/// until it returns true (then true) or `timeout` passes (then false).
pub fn sse_until(
    addr: SocketAddr,
    host: &str,
    timeout: Duration,
    mut f: impl FnMut(&str, &serde_json::Value) -> bool,
) -> bool {
    let mut s = TcpStream::connect(addr).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    write!(
        s,
        // HTTP/1.0: the body comes as it is, without chunked framing, until the end.
        "GET /api/events HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send");
    let t0 = std::time::Instant::now();
    let mut buf = String::new();
    let mut raw = Vec::new();
    while t0.elapsed() < timeout {
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("reading events: {e}"),
        }
        // A read may end inside a character or an event: keep the rest for the next one.
        let upto = match std::str::from_utf8(&raw) {
            Ok(_) => raw.len(),
            Err(e) => e.valid_up_to(),
        };
        buf.push_str(std::str::from_utf8(&raw[..upto]).expect("utf8"));
        raw.drain(..upto);
        // Events end with a blank line; the last piece may be incomplete.
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = "message".to_string();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
                if f(&name, &v) {
                    return true;
                }
            }
        }
    }
    false
}
