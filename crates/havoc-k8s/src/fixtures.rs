//! Test data builders: pods, nodes and namespaces as the API server would return them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Namespace, Node, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::stable_seed;

fn map(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    (!kv.is_empty()).then(|| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// A uid that looks like the API server's, stable for a name.
pub fn uid_for(s: &str) -> String {
    let h = stable_seed(s);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        stable_seed(&format!("{s}/x")) & 0xffff_ffff_ffff
    )
}

/// A containerd id: 64 hex digits.
pub fn container_id_for(s: &str) -> String {
    format!(
        "containerd://{:016x}{:016x}{:016x}{:016x}",
        stable_seed(s),
        stable_seed(&format!("{s}1")),
        stable_seed(&format!("{s}2")),
        stable_seed(&format!("{s}3"))
    )
}

/// A running pod with one container `app`, on `node`, with these labels.
pub fn pod(ns: &str, name: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
    let key = format!("{ns}/{name}");
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(uid_for(&key)),
            labels: map(labels),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            service_account_name: Some("default".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.1.2.3".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                container_id: Some(container_id_for(&key)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// A node with these labels.
pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: map(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A namespace with these labels.
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: map(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A time `secs` seconds after the epoch.
pub fn time(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("a valid timestamp"))
}
