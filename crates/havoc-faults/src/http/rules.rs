//! What an HTTPChaos rule matches and how it rewrites: pure functions over `http` types, so the
//! proxy only moves bytes and the semantics are unit-tested here.

use std::sync::atomic::{AtomicU64, Ordering};

use havoc_spec::http::{wildcard_match, HTTPChaos, HttpTarget};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Uri};

/// A validated spec, prepared for the datapath.
#[derive(Debug)]
pub struct Rule {
    pub spec: HTTPChaos,
    method: Option<Method>,
    replace_body: Option<bytes::Bytes>,
    patch_body: Option<serde_json::Value>,
    /// `percent` as a threshold on a uniform u64.
    threshold: u64,
    rng: AtomicU64,
}

impl Rule {
    pub fn new(spec: HTTPChaos, seed: u64) -> Self {
        let method = spec.method.as_deref().and_then(|m| m.parse().ok());
        let replace_body = spec.replace_body().map(bytes::Bytes::from);
        let patch_body = spec
            .patch
            .as_ref()
            .and_then(|p| p.body.as_ref())
            .and_then(|b| serde_json::from_str(&b.value).ok());
        let f = spec.percent.fraction().clamp(0.0, 1.0);
        let threshold = if f >= 1.0 {
            u64::MAX
        } else {
            (f * u64::MAX as f64) as u64
        };
        Rule {
            spec,
            method,
            replace_body,
            patch_body,
            threshold,
            rng: AtomicU64::new(seed),
        }
    }

    pub fn target(&self) -> HttpTarget {
        self.spec.target
    }

    /// Whether a request matches the request-side criteria (path, method, request headers).
    pub fn matches_request(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        if let Some(p) = &self.spec.path {
            if !wildcard_match(p, uri.path()) {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if m != method {
                return false;
            }
        }
        headers_match(&self.spec.request_headers, headers)
    }

    /// Whether a response matches the response-side criteria (code, response headers).
    pub fn matches_response(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        if let Some(c) = self.spec.code {
            if status.as_u16() != c {
                return false;
            }
        }
        headers_match(&self.spec.response_headers, headers)
    }

    /// Draws whether a matching exchange is hit (`percent`): SplitMix64 over a shared counter,
    /// so the draws are independent across connections and reproducible from the seed.
    pub fn draw(&self) -> bool {
        if self.threshold == u64::MAX {
            return true;
        }
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        z < self.threshold
    }

    pub fn abort(&self) -> bool {
        self.spec.abort == Some(true)
    }

    pub fn delay(&self) -> Option<std::time::Duration> {
        self.spec.delay.map(|d| d.0)
    }

    /// Whether rewriting needs the whole body in memory.
    pub fn touches_body(&self) -> bool {
        self.replace_body.is_some() || self.patch_body.is_some()
    }

    pub fn replaces(&self) -> bool {
        self.spec.replace.is_some()
    }

    pub fn patches(&self) -> bool {
        self.spec.patch.is_some()
    }

    /// Applies `replace` then `patch` to a request's head. The body is handled by
    /// [`Rule::rewrite_body`].
    pub fn rewrite_request(&self, method: &mut Method, uri: &mut Uri, headers: &mut HeaderMap) {
        if let Some(r) = &self.spec.replace {
            if let Some(m) = r.method.as_deref().and_then(|m| m.parse().ok()) {
                *method = m;
            }
            let mut path = uri.path().to_string();
            let mut query = parse_query(uri.query().unwrap_or(""));
            if let Some(p) = &r.path {
                path = p.clone();
            }
            for (k, v) in &r.queries {
                match query.iter_mut().find(|(qk, _)| qk == k) {
                    Some(e) => e.1 = v.clone(),
                    None => query.push((k.clone(), v.clone())),
                }
                // A key given several times ends up once, with the new value.
                let mut seen = false;
                query.retain(|(qk, _)| {
                    if qk != k {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            set_path_and_query(uri, &path, &query);
            set_headers(headers, r.headers.iter(), false);
        }
        if let Some(p) = &self.spec.patch {
            if !p.queries.is_empty() {
                let mut query = parse_query(uri.query().unwrap_or(""));
                for pair in &p.queries {
                    query.push((pair[0].clone(), pair[1].clone()));
                }
                let path = uri.path().to_string();
                set_path_and_query(uri, &path, &query);
            }
            set_headers(headers, p.headers.iter().map(|v| (&v[0], &v[1])), true);
        }
    }

    /// Applies `replace` then `patch` to a response's head.
    pub fn rewrite_response(&self, status: &mut StatusCode, headers: &mut HeaderMap) {
        if let Some(r) = &self.spec.replace {
            if let Some(c) = r.code.and_then(|c| StatusCode::from_u16(c).ok()) {
                *status = c;
            }
            set_headers(headers, r.headers.iter(), false);
        }
        if let Some(p) = &self.spec.patch {
            set_headers(headers, p.headers.iter().map(|v| (&v[0], &v[1])), true);
        }
    }

    /// The new body: replaced, then JSON-merge-patched. `None` when the body stays as it was
    /// (the patch applies only to a JSON body; an empty body counts as JSON `null`).
    pub fn rewrite_body(&self, body: &[u8]) -> Option<bytes::Bytes> {
        let mut out: Option<bytes::Bytes> = self.replace_body.clone();
        if let Some(patch) = &self.patch_body {
            let current = out.as_deref().unwrap_or(body);
            let mut doc = if current.iter().all(u8::is_ascii_whitespace) {
                Some(serde_json::Value::Null)
            } else {
                serde_json::from_slice(current).ok()
            };
            if let Some(d) = doc.as_mut() {
                merge_patch(d, patch);
                out = Some(
                    serde_json::to_vec(d)
                        .expect("a JSON value serializes")
                        .into(),
                );
            }
        }
        out
    }
}

/// Sets the framing headers for a body of `len` bytes that replaced the original.
pub fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
}

fn headers_match(want: &std::collections::BTreeMap<String, String>, have: &HeaderMap) -> bool {
    want.iter().all(|(k, v)| {
        have.get_all(k.as_str())
            .iter()
            .any(|h| h.as_bytes() == v.as_bytes())
    })
}

fn set_headers<'a>(
    headers: &mut HeaderMap,
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
    append: bool,
) {
    for (k, v) in pairs {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            continue; // validation refused such names and values
        };
        if append {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(serde_json::Map::new());
        }
        let t = target.as_object_mut().expect("made an object above");
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

/// Percent-encodes what would break a query (keys and values from the spec are plain text;
/// those already in the request are kept as they came).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~%+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn set_path_and_query(uri: &mut Uri, path: &str, query: &[(String, String)]) {
    let mut pq = path.to_string();
    if !query.is_empty() {
        pq.push('?');
        let parts: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        pq.push_str(&parts.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(p) = pq.parse() {
        parts.path_and_query = Some(p);
        if let Ok(u) = Uri::from_parts(parts) {
            *uri = u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        let spec: HTTPChaos = serde_json::from_str(json).expect("spec");
        Rule::new(spec, 1)
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The RFC's own example (section 3).
        let mut t: serde_json::Value = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &serde_json::json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, serde_json::json!({"a": "z", "c": {"d": "e"}}));
        let mut t = serde_json::json!([1, 2]);
        merge_patch(&mut t, &serde_json::json!({"a": 1}));
        assert_eq!(t, serde_json::json!({"a": 1}));
    }

    #[test]
    fn request_match_and_rewrite() {
        let r = rule(
            r#"{"target": "Request", "port": 80, "path": "/api/*", "method": "GET",
                "request_headers": {"x-user": "a"},
                "replace": {"path": "/v2/x", "method": "PUT", "queries": {"k": "new value"}, "headers": {"x-a": "1"}},
                "patch": {"queries": [["p", "1"]], "headers": [["x-a", "2"]]},
                "selector": {"netns": ["n"]}}"#,
        );
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("a"));
        let uri: Uri = "/api/items?k=old&z=1&k=dup".parse().unwrap();
        assert!(r.matches_request(&Method::GET, &uri, &h));
        assert!(!r.matches_request(&Method::POST, &uri, &h));
        assert!(!r.matches_request(&Method::GET, &"/other".parse().unwrap(), &h));
        assert!(!r.matches_request(&Method::GET, &uri, &HeaderMap::new()));
        let (mut m, mut u) = (Method::GET, uri);
        r.rewrite_request(&mut m, &mut u, &mut h);
        assert_eq!(m, Method::PUT);
        assert_eq!(u.to_string(), "/v2/x?k=new%20value&z=1&p=1");
        let xa: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(xa, vec!["1", "2"]);
    }

    #[test]
    fn body_replace_then_patch() {
        let r = rule(
            r#"{"target": "Response", "port": 80, "replace": {"body": "eyJhIjoxfQ=="},
                "patch": {"body": {"type": "JSON", "value": "{\"b\": 2}"}}, "selector": {"netns": ["n"]}}"#,
        );
        let out = r.rewrite_body(b"ignored").unwrap();
        assert_eq!(&out[..], br#"{"a":1,"b":2}"#);
        let p = rule(
            r#"{"target": "Response", "port": 80,
                "patch": {"body": {"type": "JSON", "value": "{\"b\": null}"}}, "selector": {"netns": ["n"]}}"#,
        );
        assert_eq!(
            &p.rewrite_body(br#"{"a":1,"b":2}"#).unwrap()[..],
            br#"{"a":1}"#
        );
        assert!(p.rewrite_body(b"not json").is_none());
    }

    #[test]
    fn draws_hit_the_percent() {
        let r = rule(
            r#"{"target": "Request", "port": 80, "abort": true, "percent": "30", "selector": {"netns": ["n"]}}"#,
        );
        let hits = (0..100_000).filter(|_| r.draw()).count();
        assert!((29_000..=31_000).contains(&hits), "{hits}");
    }
}
