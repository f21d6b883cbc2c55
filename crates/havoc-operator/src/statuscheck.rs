//! The StatusCheck controller: probes an HTTP endpoint at its interval and judges the results
//! with host mode's pure [`havoc_spec::statuscheck::Tracker`].
//!
//! Each reconcile runs at most one probe (when the interval since the last one has passed),
//! records it in the bounded history, and sets Chaos Mesh's conditions (`Completed`,
//! `SuccessThresholdExceed`, `FailureThresholdExceed`, `DurationExceed`). The consecutive counts
//! live in status, so a restarted operator judges the next probe as the previous one would.
//!
//! The probe is plain HTTP/1.1 over a TCP connection (no TLS: the operator has no HTTP client
//! crate; `https://` URLs fail the probe with that reason).

use std::sync::Arc;
use std::time::Duration;

use havoc_k8s::statuscheck_crd::{
    CheckRecord, StatusCheck, StatusCheckStatus, COMPLETED, DURATION_EXCEED,
    FAILURE_THRESHOLD_EXCEED, SUCCESS_THRESHOLD_EXCEED,
};
use havoc_spec::statuscheck::{CheckMode, CheckVerdict, HttpMethod, Record, Tracker};
use havoc_spec::FieldPath;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::controller::{chain, Context, Error};
use crate::schedule::{conflict, kube_err, micro_of, ms_of, now_ms, publish, time_of};

/// One HTTP request; `Ok(status code)` or why it failed.
pub async fn http_probe(
    spec: &havoc_spec::statuscheck::HttpStatusCheck,
    timeout: Duration,
) -> Result<u16, String> {
    let fut = async {
        let uri: http::Uri = spec
            .url
            .parse()
            .map_err(|e| format!("bad url `{}`: {e}", spec.url))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "`{}`: only http:// is probed by the operator",
                spec.url
            ));
        }
        let host = uri.host().ok_or("url without a host")?;
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut s = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let method = match spec.method {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        };
        let body = spec.body.clone().unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: havoc-operator\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, vs) in &spec.headers {
            for v in vs {
                if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
                    return Err(format!("header `{k}` has a line break"));
                }
                req.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        req.push_str("\r\n");
        req.push_str(&body);
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send the request: {e}"))?;
        let mut buf = vec![0u8; 1024];
        let mut n = 0;
        while n < buf.len() {
            let k = s
                .read(&mut buf[n..])
                .await
                .map_err(|e| format!("read the response: {e}"))?;
            if k == 0 {
                break;
            }
            n += k;
            if buf[..n].contains(&b'\n') {
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        let code = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| {
                format!(
                    "not an HTTP response: `{}`",
                    line.lines().next().unwrap_or("")
                )
            })?;
        Ok(code)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no response within {timeout:?}")),
    }
}

/// One probe judged by the criteria: a record.
pub async fn probe_once(spec: &havoc_spec::statuscheck::StatusCheckSpec) -> Record {
    let at = now_ms();
    let (ok, message) = match (
        http_probe(&spec.http, spec.timeout()).await,
        spec.http.criteria.range(),
    ) {
        (Ok(code), Ok((lo, hi))) if (lo..=hi).contains(&code) => (true, None),
        (Ok(code), Ok((lo, hi))) => (false, Some(format!("status {code} not in {lo}-{hi}"))),
        (Ok(_), Err(e)) | (Err(e), _) => (false, Some(e)),
    };
    Record {
        at_unix_ms: at as u64,
        ok,
        message,
    }
}

/// Reconciles one StatusCheck.
pub async fn reconcile(c: Arc<StatusCheck>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = c.namespace().ok_or(Error::NoNamespace)?;
    let name = c.name_any();
    let old = c.status.clone().unwrap_or_default();
    if old.is(COMPLETED) || c.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = match c.spec.to_spec() {
        Ok(s) => {
            let mut p = havoc_spec::error::Problems::new();
            s.validate(&FieldPath::root().key("spec"), &mut p);
            if !p.is_empty() {
                let m: Vec<String> = p
                    .into_vec()
                    .into_iter()
                    .map(|(f, m)| format!("{f}: {m}"))
                    .collect();
                publish(&ctx, &*c, EventType::Warning, "Invalid", m.join("; ")).await;
                return Ok(Action::await_change());
            }
            s
        }
        Err(e) => {
            publish(&ctx, &*c, EventType::Warning, "Invalid", e).await;
            return Ok(Action::await_change());
        }
    };
    if spec.mode == CheckMode::Continuous && spec.duration.is_none() {
        // In a workflow the node's deadline bounds it (the workflow sets its duration).
        publish(
            &ctx,
            &*c,
            EventType::Warning,
            "Invalid",
            "spec.duration: a standalone Continuous check needs duration (it would never end)"
                .into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let now = now_ms();
    let mut st = old.clone();
    let started = ms_of(st.start_time.get_or_insert_with(|| time_of(now)));
    let interval = spec.interval().as_millis() as i64;
    let last = st.records.last().map(|r| r.start_time.0.as_millisecond());
    let mut verdict: Option<(CheckVerdict, &str, String)> = None;
    let ends = spec
        .duration
        .filter(|_| spec.mode == CheckMode::Continuous)
        .map(|d| started + d.0.as_millis() as i64);
    if ends.is_some_and(|e| now >= e) {
        verdict = Some((
            CheckVerdict::Succeeded,
            DURATION_EXCEED,
            "the check ran for its duration without reaching the failure threshold".into(),
        ));
    } else if last.is_none_or(|l| now - l >= interval) {
        // The tracker starts from the counts in status (the history may be shorter than a threshold).
        let mut tracker = Tracker::new(&spec);
        tracker.consecutive_ok = st.consecutive_successes;
        tracker.consecutive_failed = st.consecutive_failures;
        let rec = probe_once(&spec).await;
        let v = tracker.record(rec.clone());
        st.count += 1;
        st.consecutive_successes = tracker.consecutive_ok;
        st.consecutive_failures = tracker.consecutive_failed;
        st.records.push(CheckRecord {
            start_time: micro_of(rec.at_unix_ms as i64),
            outcome: if rec.ok { "Success" } else { "Failure" }.into(),
            message: rec.message.clone(),
        });
        let limit = spec
            .records_history_limit
            .clamp(1, havoc_spec::statuscheck::MAX_HISTORY) as usize;
        if st.records.len() > limit {
            let extra = st.records.len() - limit;
            st.records.drain(..extra);
        }
        verdict = match v {
            Some(CheckVerdict::Failed) => Some((
                CheckVerdict::Failed,
                FAILURE_THRESHOLD_EXCEED,
                format!(
                    "{} consecutive failures (threshold {}): {}",
                    tracker.consecutive_failed,
                    spec.failure_threshold,
                    rec.message.unwrap_or_default()
                ),
            )),
            Some(CheckVerdict::Succeeded) => Some((
                CheckVerdict::Succeeded,
                SUCCESS_THRESHOLD_EXCEED,
                format!(
                    "{} consecutive successes (threshold {})",
                    tracker.consecutive_ok, spec.success_threshold
                ),
            )),
            None => None,
        };
    }
    let t = time_of(now_ms());
    if let Some((v, type_, msg)) = &verdict {
        st.set(type_, true, type_, msg.clone(), &t);
        st.set(
            COMPLETED,
            true,
            if *v == CheckVerdict::Succeeded {
                "Succeeded"
            } else {
                "Failed"
            },
            msg.clone(),
            &t,
        );
        st.completion_time = Some(t.clone());
    } else if !st.conditions.iter().any(|x| x.type_ == COMPLETED) {
        st.set(
            COMPLETED,
            false,
            "Running",
            "the check is running".into(),
            &t,
        );
    }
    if st != old {
        let mut fresh = (*c).clone();
        fresh.status = Some(st);
        let api: Api<StatusCheck> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .replace_status(&name, &PostParams::default(), &fresh)
            .await
        {
            Ok(_) => {}
            Err(e) if conflict(&e) => return Ok(Action::requeue(Duration::from_millis(100))),
            Err(e) => {
                return Err(kube_err(format!(
                    "write status of status check {ns}/{name}"
                ))(e))
            }
        }
    }
    if let Some((v, _, msg)) = verdict {
        let (ty, reason) = match v {
            CheckVerdict::Succeeded => (EventType::Normal, "Succeeded"),
            CheckVerdict::Failed => (EventType::Warning, "Failed"),
        };
        publish(&ctx, &*c, ty, reason, msg).await;
        return Ok(Action::await_change());
    }
    let next = last.map_or(now, |_| now) + interval;
    let next = ends.map_or(next, |e| next.min(e));
    Ok(Action::requeue(Duration::from_millis(
        (next - now_ms()).clamp(20, 3_600_000) as u64,
    )))
}

/// The controller of this kind, until `shutdown` resolves.
pub fn controller(
    ctx: Arc<Context>,
    shutdown: crate::ShutdownSignal,
) -> futures::future::BoxFuture<'static, ()> {
    use futures::{FutureExt as _, StreamExt as _};
    use kube::runtime::{watcher, Controller};
    let c = ctx.client.clone();
    Controller::new(
        Api::<StatusCheck>::all(c.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %chain(&e), "controller event");
        }
    })
    .boxed()
}

/// Requeues a failed reconcile after a short pause.
pub fn error_policy(c: Arc<StatusCheck>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(check = %c.name_any(), error = %chain(err), "status check reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// Whether a finished check passed (`None`: still running).
pub fn verdict(st: Option<&StatusCheckStatus>) -> Option<bool> {
    st.and_then(StatusCheckStatus::verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_http_probe_reads_the_status_code_of_a_real_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.expect("read");
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .await
                .expect("write");
            req
        });
        let spec: havoc_spec::statuscheck::HttpStatusCheck =
            serde_json::from_value(serde_json::json!({
                "url": format!("http://127.0.0.1:{port}/health?x=1"),
                "headers": {"X-Test": ["a"]},
                "criteria": {"statusCode": "200-299"}
            }))
            .expect("spec");
        let code = http_probe(&spec, Duration::from_secs(5))
            .await
            .expect("probe");
        assert_eq!(code, 503);
        let req = server.await.expect("server");
        assert!(req.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("X-Test: a\r\n"), "{req}");
    }

    #[tokio::test]
    async fn a_closed_port_fails_the_probe_with_the_reason() {
        // Bind then drop: the port is (almost certainly) closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let spec: havoc_spec::statuscheck::HttpStatusCheck =
            serde_json::from_value(serde_json::json!({
                "url": format!("http://127.0.0.1:{port}/"),
                "criteria": {"statusCode": "200"}
            }))
            .expect("spec");
        let e = http_probe(&spec, Duration::from_secs(5))
            .await
            .expect_err("refused");
        assert!(e.contains("connect 127.0.0.1"), "{e}");
    }
}
