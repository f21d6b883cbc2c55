//! Selection and record writing for one experiment over 5,000 pods, in memory.
//!
//! `cargo bench -p havoc-k8s` prints the time of: selecting (label selector, policy, mode all,
//! seeded), recording every chosen pod as injected, deriving conditions, and serializing the
//! status to JSON; and the size of that JSON. Goal: <= 2 s, status < 256 KiB.

use std::time::{Duration, Instant};

use havoc_k8s::selector::{select, Mode, PodSelector, SelectionInput};
use havoc_k8s::status::sample;
use havoc_k8s::NamespacePolicy;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

fn main() {
    let pods = sample::pods(5000);
    let namespaces: Vec<Namespace> = (0..10)
        .map(|i| Namespace {
            metadata: ObjectMeta {
                name: Some(format!("team-{i}")),
                labels: Some([("havoc.dev/chaos".to_string(), "enabled".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    let nodes: Vec<Node> = Vec::new();
    let input = SelectionInput {
        pods: &pods,
        nodes: &nodes,
        namespaces: &namespaces,
    };
    let selector = PodSelector {
        namespaces: namespaces
            .iter()
            .map(|n| n.metadata.name.clone().unwrap())
            .collect(),
        expression_selectors: vec![havoc_k8s::selector::ExpressionSelector {
            key: "app".into(),
            operator: havoc_k8s::selector::Operator::Exists,
            values: vec![],
        }],
        ..Default::default()
    };
    let policy = NamespacePolicy::default();
    let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
    let mut times = Vec::new();
    let mut size = 0;
    for round in 0..20u64 {
        let t = Instant::now();
        let sel =
            select(&selector, Mode::All, round, "team-0", &policy, &input).expect("valid selector");
        assert_eq!(sel.pods.len(), 5000);
        let status = sample::record_all(sel.pods.iter().copied(), &now);
        let json = serde_json::to_vec(&status).expect("status serializes");
        times.push(t.elapsed());
        size = json.len();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "select + record + serialize, 5000 pods: min {:.1} ms, median {:.1} ms, max {:.1} ms (20 rounds)",
        ms(times[0]),
        ms(times[10]),
        ms(times[19])
    );
    println!(
        "status JSON: {size} bytes ({:.1} KiB, {:.1} bytes per target; budget 256 KiB)",
        size as f64 / 1024.0,
        size as f64 / 5000.0
    );
}
