//! HTTPChaos on real namespaces, a real server (hyper echo) and real clients (curl, Python):
//! every action on both targets, matching, percent, keep-alive, h2c, recovery and fail-open.

mod http_common;

use std::time::{Duration, Instant};

use http_common::{inject, spec, Sandbox};
use serde_json::json;

fn body_json(r: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(r["body"].as_str().expect("body")).expect("JSON body")
}

#[test]
fn request_abort_hits_matching_paths_only() {
    if !http_common::can_run() {
        return;
    }
    let sb = Sandbox::new("ab");
    assert_eq!(sb.curl(&[], "/api/x").status, 200, "baseline");
    let mut inj = inject(
        &sb,
        spec(
            json!({"target": "Request", "port": 8080, "path": "/api/*", "method": "GET",
                    "abort": true, "selector": {"netns": [sb.server]}}),
        ),
    );
    let hit = sb.curl(&[], "/api/x");
    assert_eq!(
        hit.code, 52,
        "curl: empty reply from server; got {}",
        hit.head
    );
    let other = sb.curl(&[], "/other?q=1");
    assert_eq!(other.status, 200);
    let doc = other.json();
    assert_eq!(doc["path"], "/other?q=1", "non-matching path unchanged");
    assert_eq!(doc["method"], "GET");
    let post = sb.curl(&["-X", "POST", "-d", "{}"], "/api/x");
    assert_eq!(post.status, 200, "method does not match");
    let e = inj.effect();
    assert_eq!(e.metrics["http_aborted"], 1.0, "{}", e.summary);
    assert_eq!(e.metrics["http_requests_seen"], 3.0, "{}", e.summary);
    inj.recover().expect("recover");
    assert!(
        !sb.server_tables().contains("havoc_http"),
        "redirect removed: {}",
        sb.server_tables()
    );
    assert_eq!(sb.curl(&[], "/api/x").status, 200, "after recovery");
}

#[test]
fn request_delay_is_precise() {
    if !http_common::can_run() {
        return;
    }
    let sb = Sandbox::new("dl");
    let base = sb.python(20, "GET", "/slow/base", None);
    let base_ms: f64 = base.iter().map(|r| r["ms"].as_f64().unwrap()).sum::<f64>() / 20.0;
    let mut inj = inject(
        &sb,
        spec(
            json!({"target": "Request", "port": 8080, "path": "/slow/*", "delay": "200ms",
                    "selector": {"netns": [sb.server]}}),
        ),
    );
    let rs = sb.python(20, "GET", "/slow/x", None);
    let fast = sb.python(5, "GET", "/fast", None);
    for r in &rs {
        assert_eq!(r["status"], 200);
        assert!(r["ms"].as_f64().unwrap() >= 200.0, "never early: {r}");
    }
    let mean: f64 = rs.iter().map(|r| r["ms"].as_f64().unwrap()).sum::<f64>() / 20.0;
    let added = mean - base_ms;
    assert!(
        (190.0..=210.0).contains(&added),
        "added {added:.1} ms, want 200 ms ± 5 %"
    );
    for r in &fast {
        assert!(
            r["ms"].as_f64().unwrap() < 100.0,
            "unmatched not delayed: {r}"
        );
    }
    let e = inj.effect();
    assert_eq!(e.metrics["http_delayed"], 20.0);
    assert!(
        (e.metrics["http_delay_mean_ms"] - 200.0).abs() < 10.0,
        "{}",
        e.summary
    );
    inj.recover().expect("recover");
}

#[test]
fn request_replace_and_patch() {
    if !http_common::can_run() {
        return;
    }
    let sb = Sandbox::new("rq");
    let mut inj = inject(
        &sb,
        spec(
            json!({"target": "Request", "port": 8080, "path": "/orders*",
            "replace": {"path": "/v2/orders", "method": "PUT", "queries": {"limit": "5"},
                        "headers": {"X-Tenant": "chaos"}},
            "patch": {"body": {"type": "JSON", "value": "{\"qty\": 0, \"note\": null}"},
                      "queries": [["trace", "1"]], "headers": [["X-Extra", "a"]]},
            "selector": {"netns": [sb.server]}}),
        ),
    );
    let r = sb.python(
        1,
        "POST",
        "/orders?limit=50&x=y",
        Some(r#"{"qty": 3, "note": "hi", "item": "book"}"#),
    );
    let doc = body_json(&r[0]);
    assert_eq!(doc["method"], "PUT");
    assert_eq!(doc["path"], "/v2/orders?limit=5&x=y&trace=1");
    assert_eq!(doc["headers"]["x-tenant"], "chaos");
    assert_eq!(doc["headers"]["x-extra"], "a");
    let sent: serde_json::Value = serde_json::from_str(doc["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"qty": 0, "item": "book"}), "merge patch");
    assert_eq!(
        doc["headers"]["content-length"],
        sent.to_string().len().to_string()
    );
    // Replacing the body (base64, as Chaos Mesh) replaces it whole.
    inj.recover().expect("recover");
    let mut inj = inject(
        &sb,
        spec(json!({"target": "Request", "port": 8080,
            "replace": {"body": "eyJvayI6ZmFsc2V9"}, "selector": {"netns": [sb.server]}})),
    );
    let doc = sb.curl(&["-X", "POST", "-d", "original"], "/any").json();
    assert_eq!(doc["body"], r#"{"ok":false}"#);
    let e = inj.effect();
    assert_eq!(e.metrics["http_replaced"], 1.0);
    inj.recover().expect("recover");
}

#[test]
fn response_abort_delay_replace_patch() {
    if !http_common::can_run() {
        return;
    }
    let sb = Sandbox::new("rs");
    // abort only responses with code 404
    let mut inj = inject(
        &sb,
        spec(
            json!({"target": "Response", "port": 8080, "code": 404, "abort": true,
                    "selector": {"netns": [sb.server]}}),
        ),
    );
    assert_eq!(
        sb.curl(&[], "/status/404").code,
        52,
        "404 responses aborted"
    );
    assert_eq!(sb.curl(&[], "/status/200").status, 200);
    inj.recover().expect("recover");

    let mut inj = inject(
        &sb,
        spec(json!({"target": "Response", "port": 8080, "delay": "300ms",
                    "response_headers": {"X-Origin": "echo"},
                    "replace": {"code": 503, "headers": {"X-Origin": "havoc"}},
                    "patch": {"body": {"type": "JSON", "value": "{\"degraded\": true, \"server\": null}"},
                              "headers": [["X-Chaos", "1"]]},
                    "selector": {"netns": [sb.server]}})),
    );
    let start = Instant::now();
    let c = sb.curl(&[], "/item");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "delayed: {took:?}");
    assert_eq!(c.status, 503);
    let head = c.head.to_ascii_lowercase();
    assert!(head.contains("x-origin: havoc"), "{head}");
    assert!(head.contains("x-chaos: 1"), "{head}");
    let doc = c.json();
    assert_eq!(doc["degraded"], true);
    assert!(doc.get("server").is_none(), "removed by the merge patch");
    assert_eq!(doc["path"], "/item", "the rest of the body kept");
    let e = inj.effect();
    assert_eq!(e.metrics["http_delayed"], 1.0);
    assert_eq!(e.metrics["http_patched"], 1.0);
    inj.recover().expect("recover");

    let mut inj = inject(
        &sb,
        spec(json!({"target": "Response", "port": 8080, "path": "/item",
                    "replace": {"body": "eyJvayI6ZmFsc2V9"}, "selector": {"netns": [sb.server]}})),
    );
    let c = sb.curl(&[], "/item");
    assert_eq!(c.body, r#"{"ok":false}"#);
    inj.recover().expect("recover");
}

#[test]
fn percent_within_two_points_over_2000_requests() {
    if !http_common::can_run() {
        return;
    }
    let sb = Sandbox::new("pc");
    let mut inj = inject(
        &sb,
        spec(json!({"target": "Response", "port": 8080, "percent": "30",
                    "replace": {"code": 503}, "selector": {"netns": [sb.server]}})),
    );
    let rs = sb.python(2000, "GET", "/p", None);
    let hit = rs.iter().filter(|r| r["status"] == 503).count();
    let ok = rs.iter().filter(|r| r["status"] == 200).count();
    assert_eq!(hit + ok, 2000, "every request answered");
    let share = 100.0 * hit as f64 / 2000.0;
    assert!(
        (28.0..=32.0).contains(&share),
        "{share:.2}% hit, want 30 ± 2"
    );
    let e = inj.effect();
    assert_eq!(e.metrics["http_requests_hit"], hit as f64);
    assert_eq!(
        e.metrics["http_connections"], 1.0,
        "keep-alive: one connection"
    );
    inj.recover().expect("recover");
}

#[test]
fn h2c_prior_knowledge_is_intercepted() {
    if !http_common::can_run() {
        return;
    }
    let sb = Sandbox::new("h2");
    let mut inj = inject(
        &sb,
        spec(json!({"target": "Response", "port": 8080, "path": "/h2",
                    "patch": {"headers": [["X-Chaos", "h2"]]}, "selector": {"netns": [sb.server]}})),
    );
    let c = sb.curl(&["--http2-prior-knowledge"], "/h2");
    assert!(c.head.starts_with("HTTP/2 200"), "{}", c.head);
    assert!(
        c.head.to_ascii_lowercase().contains("x-chaos: h2"),
        "{}",
        c.head
    );
    assert_eq!(c.json()["version"], "HTTP/2.0", "the server got HTTP/2 too");
    let other = sb.curl(&["--http2-prior-knowledge"], "/else");
    assert!(!other.head.to_ascii_lowercase().contains("x-chaos"));
    // Several requests on one h2 connection.
    let url = format!("http://{}:{}/h2", http_common::SERVER_IP, http_common::PORT);
    let out = sb.in_client(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{num_connects}\n",
        "--http2-prior-knowledge",
        &url,
        &url,
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let connects: Vec<&str> = text
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        connects,
        vec!["1", "0", "0"],
        "one connection reused: {text}"
    );
    inj.recover().expect("recover");
}

#[test]
fn redirect_is_gone_within_a_second_when_its_nft_session_dies() {
    if !http_common::can_run() {
        return;
    }
    let sb = Sandbox::new("fo");
    let mut inj = inject(
        &sb,
        spec(json!({"target": "Request", "port": 8080, "abort": true,
                    "selector": {"netns": [sb.server]}})),
    );
    assert_eq!(sb.curl(&[], "/x").code, 52, "faulted");
    let nft = inj
        .late_undo()
        .into_iter()
        .find_map(|u| match u {
            havoc_faults::UndoAction::KillHelper { pid, .. } => Some(pid),
            _ => None,
        })
        .expect("the nft helper is journaled");
    let killed = Instant::now();
    assert_eq!(unsafe_free_kill(nft), 0, "kill -9 nft");
    let mut ok = false;
    while killed.elapsed() < Duration::from_secs(1) {
        if sb.curl(&["--max-time", "1"], "/x").status == 200 {
            ok = true;
            break;
        }
    }
    assert!(ok, "HTTP works again within 1 s");
    assert!(!sb.server_tables().contains("havoc_http"));
    assert!(
        inj.tick().is_err(),
        "the injection notices its redirect is gone"
    );
    inj.recover().expect("recover after the redirect vanished");
}

fn unsafe_free_kill(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(-1))
        .unwrap_or(-1)
}

const PY_TLS_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        b = ('{"tls": true, "path": "%s"}' % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

#[test]
fn tls_is_terminated_with_the_given_certificate() {
    if !http_common::can_run() {
        return;
    }
    let sb = Sandbox::new("tl");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (ca, ca_key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let csr = dir.path().join("req.csr");
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        format!("subjectAltName=IP:{}\n", http_common::SERVER_IP),
    )
    .expect("write ext");
    let p = |s: &std::path::Path| s.to_str().expect("utf-8 path").to_string();
    let steps: [Vec<String>; 3] = [
        vec![
            "req".into(),
            "-x509".into(),
            "-newkey".into(),
            "rsa:2048".into(),
            "-nodes".into(),
            "-days".into(),
            "1".into(),
            "-subj".into(),
            "/CN=havoc-test-ca".into(),
            "-keyout".into(),
            p(&ca_key),
            "-out".into(),
            p(&ca),
        ],
        vec![
            "req".into(),
            "-newkey".into(),
            "rsa:2048".into(),
            "-nodes".into(),
            "-subj".into(),
            "/CN=havoc-test".into(),
            "-keyout".into(),
            p(&key),
            "-out".into(),
            p(&csr),
        ],
        vec![
            "x509".into(),
            "-req".into(),
            "-in".into(),
            p(&csr),
            "-CA".into(),
            p(&ca),
            "-CAkey".into(),
            p(&ca_key),
            "-CAcreateserial".into(),
            "-days".into(),
            "1".into(),
            "-extfile".into(),
            p(&ext),
            "-out".into(),
            p(&cert),
        ],
    ];
    let mut st = None;
    for args in &steps {
        let s = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(s.success(), "openssl {args:?}");
        st = Some(s);
    }
    let st = st.expect("ran");
    assert!(st.success(), "make a certificate");
    let script = dir.path().join("tls_server.py");
    std::fs::write(&script, PY_TLS_SERVER).expect("write server");
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &sb.server, "python3"])
        .arg(&script)
        .arg(&cert)
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start TLS server");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut server);
    let url = format!("https://{}:8443/tls", http_common::SERVER_IP);
    let get = |extra: &[&str]| {
        let mut args = vec!["curl", "-s", "-k", "-D", "/dev/stderr", "--max-time", "5"];
        args.extend_from_slice(extra);
        args.push(&url);
        let o = sb.in_client(&args);
        (
            String::from_utf8_lossy(&o.stderr).to_ascii_lowercase(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let t0 = Instant::now();
    while !get(&[]).1.contains("\"tls\": true") {
        assert!(t0.elapsed() < Duration::from_secs(10), "TLS server up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tls = json!({"certFile": cert, "keyFile": key, "caFile": ca});
    let mut inj = inject(
        &sb,
        spec(json!({"target": "Response", "port": 8443, "path": "/tls",
                    "patch": {"headers": [["X-Chaos", "tls"]],
                              "body": {"type": "JSON", "value": "{\"patched\": true}"}},
                    "tls": tls, "selector": {"netns": [sb.server]}})),
    );
    let (head, body) = get(&[]);
    assert!(
        head.contains("x-chaos: tls"),
        "{head}: {}",
        inj.effect().summary
    );
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(doc, json!({"tls": true, "path": "/tls", "patched": true}));
    // The client sees Havoc's certificate (here the same one), verified against it as CA.
    let (head, _) = get(&["--cacert", ca.to_str().expect("path")]);
    assert!(head.contains("x-chaos: tls"), "verified: {head}");
    let e = inj.effect();
    assert_eq!(e.metrics["http_patched"], 2.0, "{}", e.summary);
    inj.recover().expect("recover");
    assert!(!get(&[]).0.contains("x-chaos"), "unfaulted after recovery");
}
