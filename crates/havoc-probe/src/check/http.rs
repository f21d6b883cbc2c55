//! HTTP check over plain http (ureq without TLS): status, and optionally a body pattern.

use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use regex::Regex;
use ureq::Agent;

use super::{excerpt, Check, Outcome};
use crate::spec::HttpCheck;
use havoc_spec::units::HumanDuration;

/// How much of a response body is read (and matched against `bodyMatches`).
pub const BODY_LIMIT: u64 = 64 * 1024;

pub struct HttpProbe {
    agent: Agent,
    spec: HttpCheck,
    body_re: Option<Regex>,
}

/// An agent for probes: one overall timeout, statuses returned rather than turned into errors,
/// no redirects, no proxy from the environment, no pooled connections (each sample connects
/// anew, as a new client would).
pub(crate) fn agent(timeout: Duration) -> Agent {
    let config = Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(None)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .user_agent(concat!("havoc-probe/", env!("CARGO_PKG_VERSION")))
        .build();
    Agent::new_with_config(config)
}

/// A request error in words: a timeout says how long it waited.
pub(crate) fn describe_error(e: &ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => format!("timed out after {}", HumanDuration(timeout)),
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

impl HttpProbe {
    pub fn new(spec: &HttpCheck, body_re: Option<Regex>) -> Self {
        HttpProbe {
            agent: agent(spec.timeout.0),
            spec: spec.clone(),
            body_re,
        }
    }

    fn status_ok(&self, status: u16) -> bool {
        if self.spec.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.spec.expect_status.contains(&status)
        }
    }

    fn expected(&self) -> String {
        if self.spec.expect_status.is_empty() {
            "2xx".into()
        } else {
            self.spec
                .expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        }
    }
}

impl Check for HttpProbe {
    fn sample(&mut self, _stop: &AtomicBool) -> Outcome {
        let mut req = ureq::http::Request::builder()
            .method(self.spec.method.as_str())
            .uri(&self.spec.url);
        for (k, v) in &self.spec.headers {
            req = req.header(k, v);
        }
        let sent = match &self.spec.body {
            Some(body) => req.body(body.clone()).map(|r| self.agent.run(r)),
            None => req.body(()).map(|r| self.agent.run(r)),
        };
        let mut resp = match sent {
            Err(e) => return Outcome::fail(format!("invalid request: {e}")),
            Ok(Err(e)) => {
                return Outcome::fail(format!(
                    "{} {} failed: {}",
                    self.spec.method.as_str(),
                    self.spec.url,
                    describe_error(&e, self.spec.timeout.0)
                ))
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        if let Err(e) = resp
            .body_mut()
            .as_reader()
            .take(BODY_LIMIT)
            .read_to_end(&mut body)
        {
            return Outcome::fail(format!("HTTP {status}, reading the body failed: {e}"));
        }
        if !self.status_ok(status) {
            let text = String::from_utf8_lossy(&body);
            let shown = excerpt(&text, 120);
            let detail = if shown.is_empty() {
                String::new()
            } else {
                format!(": {shown}")
            };
            return Outcome::fail(format!(
                "HTTP {status} (expected {}){detail}",
                self.expected()
            ));
        }
        if let Some(re) = &self.body_re {
            let text = String::from_utf8_lossy(&body);
            if !re.is_match(&text) {
                return Outcome::fail(format!(
                    "HTTP {status}, but the body does not match `{re}`: {}",
                    excerpt(&text, 120)
                ));
            }
        }
        Outcome::pass(None)
    }
}
