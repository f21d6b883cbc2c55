//! Prometheus check: an instant query through the HTTP API, its value compared with a bound.

use std::io::Read;
use std::sync::atomic::AtomicBool;

use serde::Deserialize;
use ureq::Agent;

use super::{excerpt, Check, Outcome};
use crate::spec::{Comparison, PrometheusCheck};

/// How much of a query response is read.
pub const RESPONSE_LIMIT: u64 = 4 * 1024 * 1024;

pub struct PrometheusProbe {
    agent: Agent,
    endpoint: String,
    query: String,
    timeout: std::time::Duration,
    value: Comparison,
}

impl PrometheusProbe {
    pub fn new(spec: &PrometheusCheck) -> Self {
        PrometheusProbe {
            agent: super::http::agent(spec.timeout.0),
            endpoint: format!("{}/api/v1/query", spec.url.trim_end_matches('/')),
            query: spec.query.clone(),
            timeout: spec.timeout.0,
            value: spec.value,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

/// One value of a query result and the labels of its series (`{job="api"}`, or empty).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryValue {
    pub labels: String,
    pub value: f64,
}

fn number(text: &str) -> Result<f64, String> {
    // Prometheus writes NaN, +Inf and -Inf, which Rust parses case-insensitively.
    text.parse::<f64>()
        .map_err(|_| format!("`{text}` is not a number"))
}

/// Parses the JSON of `GET /api/v1/query`: a vector (one value per series) or a scalar.
pub fn parse_query_response(body: &[u8]) -> Result<Vec<QueryValue>, String> {
    let resp: ApiResponse = serde_json::from_slice(body).map_err(|e| {
        format!(
            "not a Prometheus API response ({e}): {}",
            excerpt(&String::from_utf8_lossy(body), 120)
        )
    })?;
    if resp.status != "success" {
        return Err(format!(
            "query failed: {}: {}",
            resp.error_type.as_deref().unwrap_or("error"),
            resp.error.as_deref().unwrap_or("(no message)")
        ));
    }
    let data = resp
        .data
        .ok_or_else(|| "the response has status success but no data".to_string())?;
    match data.result_type.as_str() {
        "vector" => {
            let series: Vec<VectorSample> = serde_json::from_value(data.result)
                .map_err(|e| format!("malformed vector result: {e}"))?;
            series
                .into_iter()
                .map(|s| {
                    let labels = if s.metric.is_empty() {
                        String::new()
                    } else {
                        let inner: Vec<String> = s
                            .metric
                            .iter()
                            .map(|(k, v)| format!("{k}={v:?}"))
                            .collect();
                        format!("{{{}}}", inner.join(", "))
                    };
                    Ok(QueryValue {
                        labels,
                        value: number(&s.value.1)?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| format!("malformed scalar result: {e}"))?;
            Ok(vec![QueryValue {
                labels: String::new(),
                value: number(&v)?,
            }])
        }
        other => Err(format!(
            "the query returned a {other}, expected an instant vector or a scalar (use an instant query, without a range selector at the top)"
        )),
    }
}

impl Check for PrometheusProbe {
    fn sample(&mut self, _stop: &AtomicBool) -> Outcome {
        let mut resp = match self
            .agent
            .get(&self.endpoint)
            .query("query", &self.query)
            .call()
        {
            Ok(r) => r,
            Err(e) => {
                return Outcome::fail(format!(
                    "GET {} failed: {}",
                    self.endpoint,
                    super::http::describe_error(&e, self.timeout)
                ))
            }
        };
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        if let Err(e) = resp
            .body_mut()
            .as_reader()
            .take(RESPONSE_LIMIT)
            .read_to_end(&mut body)
        {
            return Outcome::fail(format!("reading the query response failed: {e}"));
        }
        // Prometheus answers errors (bad query: 400, timeout: 503) with the same JSON shape.
        let values = match parse_query_response(&body) {
            Ok(v) => v,
            Err(e) if (200..300).contains(&status) => return Outcome::fail(e),
            Err(e) => return Outcome::fail(format!("HTTP {status}: {e}")),
        };
        if values.is_empty() {
            return Outcome::fail("the query returned no series");
        }
        let numbers: Vec<f64> = values.iter().map(|v| v.value).collect();
        let Some(worst) = self.value.worst(&numbers) else {
            return Outcome::fail("the query returned no series");
        };
        if self.value.holds(worst) {
            Outcome::pass(Some(worst))
        } else {
            let labels = values
                .iter()
                .find(|v| v.value.to_bits() == worst.to_bits())
                .map(|v| v.labels.as_str())
                .unwrap_or_default();
            let of = if labels.is_empty() {
                String::new()
            } else {
                format!(" of {labels}")
            };
            Outcome::fail_with(
                Some(worst),
                format!("value {worst}{of} violates {}", self.value),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vectors_scalars_and_errors() {
        let v = parse_query_response(
            br#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"job":"api"},"value":[1700000000.123,"1.5"]},
                {"metric":{},"value":[1700000000.123,"NaN"]}]}}"#,
        )
        .expect("a vector");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].labels, r#"{job="api"}"#);
        assert_eq!(v[0].value, 1.5);
        assert!(v[1].value.is_nan());
        let s = parse_query_response(
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"+Inf"]}}"#,
        )
        .expect("a scalar");
        assert_eq!(s[0].value, f64::INFINITY);
        let e = parse_query_response(
            br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
        )
        .expect_err("an error");
        assert!(e.contains("bad_data") && e.contains("parse error"), "{e}");
        let m = parse_query_response(
            br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        )
        .expect_err("a matrix");
        assert!(m.contains("matrix"), "{m}");
        assert!(parse_query_response(b"<html>").is_err());
    }
}
