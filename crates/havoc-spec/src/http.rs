//! `HTTPChaos`: abort, delay, rewrite or patch the HTTP requests a server receives, or the
//! responses it sends, as Chaos Mesh's HTTPChaos.
//!
//! Fields mean what they mean in Chaos Mesh v1alpha1. The chaos is on the server's side: TCP
//! connections to `port` in the target's network namespace are intercepted. `target` says which
//! half is faulted: `Request` (before the server sees it) or `Response` (before the client does).
//! A request is matched when every given criterion holds: `path` (a wildcard pattern: `*` any run
//! of characters, `/` included, `?` one character), `method` (exact), `request_headers` (each
//! header present with exactly that value); with `target: Response` also `code` and
//! `response_headers`. The actions run in Chaos Mesh's order: `abort` (the connection is closed,
//! nothing more happens) -> `delay` -> `replace` -> `patch`.
//!
//! - `replace`: `path`, `method` and `queries` (a map: each key's value set) for requests, `code`
//!   for responses, `headers` (a map: each header set) and `body` (base64, as in Chaos Mesh,
//!   whose CRD field is `[]byte`) for both.
//! - `patch`: `headers` and `queries` (lists of `[name, value]` pairs, appended), and `body`
//!   `{type: JSON, value}`: a JSON merge patch (RFC 7386) applied to a JSON body.
//!
//! Havoc adds `percent` (100 by default): the share of the matching requests that are hit.
//!
//! Differences from Chaos Mesh: the `tls` block names a certificate and key *file* on the host
//! (`certFile`, `keyFile`, optional `caFile` to verify the server) instead of a Kubernetes
//! secret (`secretName`, `secretNamespace`, `certName`, `keyName`, `caName`, which are refused
//! in host mode by name); on Kubernetes the agent reads the secret and hands the files over.
//! `containerNames` and `remoteCluster` are refused by name. IPv4 connections are intercepted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::io::Present;
use crate::path::FieldPath;
use crate::selector::Selector;
use crate::units::{clip, HumanDuration, Percent};

/// The longest `delay`.
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(600);

/// Which half of an exchange is faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpTarget {
    Request,
    Response,
}

fn hundred() -> Percent {
    Percent(100.0)
}

fn is_hundred(p: &Percent) -> bool {
    p.0 == 100.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HTTPChaos {
    /// `Request` or `Response`.
    pub target: HttpTarget,
    /// The TCP port the server listens on.
    pub port: u16,
    /// Wildcard pattern for the request path (`*`, `?`); absent: every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Request method, exact (`GET`); absent: every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// With `target: Response`: only responses with this status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Headers the request must carry with exactly these values (Chaos Mesh spells the key
    /// `request_headers`).
    #[serde(
        default,
        rename = "request_headers",
        alias = "requestHeaders",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub request_headers: BTreeMap<String, String>,
    /// With `target: Response`: headers the response must carry with exactly these values.
    #[serde(
        default,
        rename = "response_headers",
        alias = "responseHeaders",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub response_headers: BTreeMap<String, String>,
    /// Close the connection instead of passing the hit request or response on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<bool>,
    /// Hold the hit request (or response) this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<HttpReplace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<HttpPatch>,
    /// Share of the matching requests that are hit (100 by default; a Havoc addition).
    #[serde(default = "hundred", skip_serializing_if = "is_hundred")]
    pub percent: Percent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HttpTls>,
    pub selector: Selector,
    /// Chaos Mesh's container filter: refused in host mode.
    #[serde(default, skip_serializing)]
    pub container_names: Option<Present>,
    /// Chaos Mesh's multi-cluster field: refused.
    #[serde(default, skip_serializing)]
    pub remote_cluster: Option<Present>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpReplace {
    /// Request target only: the new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Request target only: the new method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Response target only: the new status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The new body, base64 as in Chaos Mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Request target only: query parameters set to these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queries: BTreeMap<String, String>,
    /// Headers set to these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpPatchBody>,
    /// Request target only: `[name, value]` pairs appended to the query.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<Vec<String>>,
    /// `[name, value]` pairs appended to the headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpPatchBody {
    /// `JSON`, the only type Chaos Mesh defines.
    #[serde(rename = "type")]
    pub kind: String,
    /// The merge patch, JSON text.
    pub value: String,
}

/// TLS for an HTTPS server: Havoc terminates TLS with this certificate and key, and talks TLS
/// to the server. Host mode: file paths; Chaos Mesh's secret fields are refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpTls {
    /// PEM certificate chain presented to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key of `certFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// PEM CA bundle to verify the server with; absent: the server's certificate is not
    /// verified (it is the intercepted server itself, reached on its original address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing)]
    pub secret_name: Option<Present>,
    #[serde(default, skip_serializing)]
    pub secret_namespace: Option<Present>,
    #[serde(default, skip_serializing)]
    pub cert_name: Option<Present>,
    #[serde(default, skip_serializing)]
    pub key_name: Option<Present>,
    #[serde(default, skip_serializing)]
    pub ca_name: Option<Present>,
}

impl HTTPChaos {
    pub fn summary(&self) -> String {
        let mut acts = Vec::new();
        if self.abort == Some(true) {
            acts.push("abort".to_string());
        }
        if let Some(d) = self.delay {
            acts.push(format!("delay {d}"));
        }
        if self.replace.is_some() {
            acts.push("replace".into());
        }
        if self.patch.is_some() {
            acts.push("patch".into());
        }
        let what = match self.target {
            HttpTarget::Request => "requests",
            HttpTarget::Response => "responses",
        };
        let mut s = format!("http {} on {what} to port {}", acts.join("+"), self.port);
        if let Some(m) = &self.method {
            s.push_str(&format!(" {}", clip(m)));
        }
        if let Some(p) = &self.path {
            s.push_str(&format!(" path {}", clip(p)));
        }
        if let Some(c) = self.code {
            s.push_str(&format!(" code {c}"));
        }
        if !is_hundred(&self.percent) {
            s.push_str(&format!(" on {}%", self.percent));
        }
        s
    }

    /// The replacement body, decoded (validation guarantees it decodes).
    pub fn replace_body(&self) -> Option<Vec<u8>> {
        let b = self.replace.as_ref()?.body.as_ref()?;
        base64_decode(b).ok()
    }

    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        let sp = path.key("selector");
        self.selector.validate(&sp, true, p);
        if self.selector.host {
            p.add(
                &sp.key("host"),
                "HTTPChaos does not target the host's own network namespace: select the server's processes or its netns",
            );
        }
        if self.container_names.is_some() {
            p.add(&path.key("containerNames"), "containerNames selects containers of a Kubernetes pod and is not supported in host mode: select the container's processes with selector.containerIds (or run the manifest through the operator)");
        }
        if self.remote_cluster.is_some() {
            p.add(
                &path.key("remoteCluster"),
                "remoteCluster (Chaos Mesh multi-cluster) is not supported: run the experiment on the cluster itself",
            );
        }
        if self.port == 0 {
            p.add(
                &path.key("port"),
                "must be the server's TCP port, 1..=65535",
            );
        }
        if let Some(pat) = &self.path {
            if !pat.starts_with('/') && !pat.starts_with('*') {
                p.add(
                    &path.key("path"),
                    format!(
                        "`{}` never matches: request paths start with `/` (write e.g. `/api/*`, or `*` for every path)",
                        clip(pat)
                    ),
                );
            }
        }
        if let Some(m) = &self.method {
            check_token(m, &path.key("method"), "a method such as GET or POST", p);
        }
        let response = self.target == HttpTarget::Response;
        if let Some(c) = self.code {
            if !response {
                p.add(
                    &path.key("code"),
                    "code selects responses by status: it needs `target: Response`",
                );
            }
            check_code(c, &path.key("code"), p);
        }
        if !self.response_headers.is_empty() && !response {
            p.add(
                &path.key("response_headers"),
                "response_headers select responses: they need `target: Response`",
            );
        }
        check_headers(self.request_headers.iter(), &path.key("request_headers"), p);
        check_headers(
            self.response_headers.iter(),
            &path.key("response_headers"),
            p,
        );
        if self.abort != Some(true)
            && self.delay.is_none()
            && self.replace.is_none()
            && self.patch.is_none()
        {
            p.add(
                path,
                "no action: give at least one of abort: true, delay, replace, patch",
            );
        }
        if let Some(d) = self.delay {
            if d.0 > MAX_DELAY {
                p.add(&path.key("delay"), format!("must be at most 10m, got {d}"));
            }
        }
        if self.percent.0 <= 0.0 {
            p.add(&path.key("percent"), "must be greater than 0");
        }
        if let Some(r) = &self.replace {
            let rp = path.key("replace");
            if response {
                for (set, name) in [
                    (r.path.is_some(), "path"),
                    (r.method.is_some(), "method"),
                    (!r.queries.is_empty(), "queries"),
                ] {
                    if set {
                        p.add(&rp.key(name), format!("replace.{name} changes requests: it needs `target: Request` (a response has no {name})"));
                    }
                }
            } else if r.code.is_some() {
                p.add(
                    &rp.key("code"),
                    "replace.code changes responses: it needs `target: Response`",
                );
            }
            if let Some(np) = &r.path {
                if !np.starts_with('/') {
                    p.add(
                        &rp.key("path"),
                        format!(
                            "must be an absolute path such as `/v2/items`, got `{}`",
                            clip(np)
                        ),
                    );
                }
            }
            if let Some(m) = &r.method {
                check_token(m, &rp.key("method"), "a method such as PUT", p);
            }
            if let Some(c) = r.code {
                check_code(c, &rp.key("code"), p);
            }
            if let Some(b) = &r.body {
                if let Err(why) = base64_decode(b) {
                    p.add(&rp.key("body"), format!("{why}: Chaos Mesh's replace.body is base64 (e.g. `eyJvayI6ZmFsc2V9` for `{{\"ok\":false}}`)"));
                }
            }
            check_headers(r.headers.iter(), &rp.key("headers"), p);
            if r == &HttpReplace::default() {
                p.add(
                    &rp,
                    "replace is empty: give path, method, code, body, queries or headers",
                );
            }
        }
        if let Some(pa) = &self.patch {
            let pp = path.key("patch");
            if response && !pa.queries.is_empty() {
                p.add(
                    &pp.key("queries"),
                    "patch.queries changes requests: it needs `target: Request`",
                );
            }
            for (field, list) in [("queries", &pa.queries), ("headers", &pa.headers)] {
                for (i, pair) in list.iter().enumerate() {
                    if pair.len() != 2 {
                        p.add(
                            &pp.key(field).index(i),
                            format!("must be a pair `[name, value]`, got {} item(s)", pair.len()),
                        );
                    } else if field == "headers" {
                        check_headers(
                            std::iter::once((&pair[0], &pair[1])),
                            &pp.key(field).index(i),
                            p,
                        );
                    }
                }
            }
            if let Some(b) = &pa.body {
                let bp = pp.key("body");
                if b.kind != "JSON" {
                    p.add(
                        &bp.key("type"),
                        format!("`{}` is not a patch type: the only one is `JSON` (a JSON merge patch, RFC 7386)", clip(&b.kind)),
                    );
                }
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&b.value) {
                    p.add(
                        &bp.key("value"),
                        format!("is not JSON ({e}): write a merge patch such as `{{\"status\": \"degraded\"}}`"),
                    );
                }
            }
            if pa == &HttpPatch::default() {
                p.add(&pp, "patch is empty: give body, queries or headers");
            }
        }
        if let Some(t) = &self.tls {
            let tp = path.key("tls");
            for (set, name) in [
                (t.secret_name.is_some(), "secretName"),
                (t.secret_namespace.is_some(), "secretNamespace"),
                (t.cert_name.is_some(), "certName"),
                (t.key_name.is_some(), "keyName"),
                (t.ca_name.is_some(), "caName"),
            ] {
                if set {
                    p.add(&tp.key(name), format!("{name} names a Kubernetes secret and is not supported in host mode: give certFile and keyFile (PEM files on this host), and caFile to verify the server"));
                }
            }
            for (v, name) in [
                (&t.cert_file, "certFile"),
                (&t.key_file, "keyFile"),
                (&t.ca_file, "caFile"),
            ] {
                match v {
                    Some(f) if !f.starts_with('/') => p.add(
                        &tp.key(name),
                        format!("must be an absolute path to a PEM file, got `{}`", clip(f)),
                    ),
                    None if name != "caFile" => p.add(
                        &tp.key(name),
                        format!(
                            "{name} is required with tls: {}",
                            if name == "certFile" {
                                "the PEM certificate chain Havoc presents to clients"
                            } else {
                                "the PEM private key of certFile"
                            }
                        ),
                    ),
                    _ => {}
                }
            }
        }
    }
}

/// Chaos Mesh's path pattern: `*` matches any run of characters (including `/`), `?` one
/// character; everything else matches itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn check_code(c: u16, path: &FieldPath, p: &mut Problems) {
    if !(100..=599).contains(&c) {
        p.add(
            path,
            format!("must be an HTTP status code 100..=599, got {c}"),
        );
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_token(s: &str, path: &FieldPath, what: &str, p: &mut Problems) {
    if !is_token(s) {
        p.add(path, format!("`{}` is not {what}", clip(s)));
    }
}

fn check_headers<'a>(
    headers: impl Iterator<Item = (&'a String, &'a String)>,
    path: &FieldPath,
    p: &mut Problems,
) {
    for (k, v) in headers {
        if !is_token(k) {
            p.add(
                &path.key(k.as_str()),
                format!("`{}` is not a header name (letters, digits, `-`)", clip(k)),
            );
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            p.add(
                &path.key(k.as_str()),
                "a header value must not contain CR, LF or NUL",
            );
        }
    }
}

/// Standard base64 (RFC 4648, padding optional), as Go encodes `[]byte` in JSON.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    let trimmed = s.trim_end_matches('=');
    if s.len() - trimmed.len() > 2 {
        return Err("not base64: too much `=` padding".into());
    }
    for (i, c) in trimmed.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => {
                return Err(format!(
                    "not base64: character {} (`{}`) is outside A-Z a-z 0-9 + /",
                    i + 1,
                    c.escape_ascii()
                ))
            }
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if trimmed.len() % 4 == 1 {
        return Err("not base64: its length is not a whole number of bytes".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<HTTPChaos, String> {
        let v: serde_json::Value = serde_yaml_like(yaml);
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The tests write specs as JSON (a subset of YAML) to stay independent of the YAML layer.
    fn serde_yaml_like(json: &str) -> serde_json::Value {
        serde_json::from_str(json).expect("test spec is JSON")
    }

    fn problems(h: &HTTPChaos) -> Vec<String> {
        let mut p = Problems::new();
        h.validate(&FieldPath::root(), &mut p);
        p.into_vec()
            .into_iter()
            .map(|(path, m)| format!("{path}: {m}"))
            .collect()
    }

    #[test]
    fn wildcard_is_chaos_mesh_s() {
        assert!(wildcard_match("*", "/anything/at/all"));
        assert!(wildcard_match("/api/*", "/api/v1/items"));
        assert!(wildcard_match("/api/?", "/api/x"));
        assert!(!wildcard_match("/api/?", "/api/xy"));
        assert!(wildcard_match("/a*c", "/abbbc"));
        assert!(!wildcard_match("/a*c", "/abbbd"));
        assert!(wildcard_match("/exact", "/exact"));
        assert!(!wildcard_match("/exact", "/exact/"));
    }

    #[test]
    fn base64_decodes_as_go_encodes() {
        assert_eq!(
            base64_decode("eyJvayI6ZmFsc2V9").unwrap(),
            br#"{"ok":false}"#
        );
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert!(base64_decode("a$b").unwrap_err().contains("character 2"));
    }

    #[test]
    fn a_full_spec_parses_and_validates() {
        let h = parse(
            r#"{"target": "Response", "port": 8080, "path": "/api/*", "method": "GET", "code": 200,
                "request_headers": {"X-User": "a"}, "response_headers": {"Content-Type": "application/json"},
                "delay": "100ms", "replace": {"code": 503, "body": "eyJvayI6ZmFsc2V9", "headers": {"X-A": "b"}},
                "patch": {"body": {"type": "JSON", "value": "{\"degraded\": true}"}, "headers": [["X-Chaos", "1"]]},
                "percent": "50", "selector": {"netns": ["web"]}}"#,
        )
        .expect("parses");
        assert_eq!(problems(&h), Vec::<String>::new());
        assert_eq!(h.replace_body().unwrap(), br#"{"ok":false}"#);
        assert!(h.summary().contains("delay 100ms"), "{}", h.summary());
    }

    #[test]
    fn errors_name_the_field_and_what_would_be_right() {
        let h = parse(
            r#"{"target": "Request", "port": 0, "path": "api", "code": 200,
                "replace": {"code": 500, "body": "not base64!"},
                "patch": {"body": {"type": "TEXT", "value": "{"}, "queries": [["a"]]},
                "tls": {"secretName": "s", "certFile": "rel.pem"},
                "selector": {"netns": ["web"]}}"#,
        )
        .expect("parses");
        let all = problems(&h).join("\n");
        for want in [
            "port: must be the server's TCP port",
            "path: `api` never matches",
            "code: code selects responses by status: it needs `target: Response`",
            "replace.code: replace.code changes responses",
            "replace.body: not base64",
            "patch.body.type: `TEXT` is not a patch type",
            "patch.body.value: is not JSON",
            "patch.queries[0]: must be a pair",
            "tls.secretName: secretName names a Kubernetes secret",
            "tls.certFile: must be an absolute path",
            "tls.keyFile: keyFile is required",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
    }

    #[test]
    fn no_action_and_unknown_fields_are_refused() {
        let h = parse(r#"{"target": "Request", "port": 80, "selector": {"netns": ["a"]}}"#)
            .expect("parses");
        assert!(problems(&h).join("\n").contains("no action"));
        let e = parse(
            r#"{"target": "Request", "port": 80, "abrt": true, "selector": {"netns": ["a"]}}"#,
        )
        .expect_err("unknown field");
        assert!(e.contains("abrt"), "{e}");
        let h = parse(
            r#"{"target": "Request", "port": 80, "abort": true, "remoteCluster": "x", "selector": {"netns": ["a"]}}"#,
        )
        .expect("parses");
        assert!(problems(&h).join("\n").contains("remoteCluster"));
    }
}
