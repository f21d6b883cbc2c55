//! Scale on the real API server (`../shared/k8s`, `HAVOC_E2E_KUBECONFIG`; no kubelet needed):
//! `HAVOC_SCALE_EXPERIMENTS` PodChaos pod-failure objects (default 1) at once over
//! `HAVOC_SCALE_PODS` pods (default 5,000) bound to a fake node, split evenly between them, with
//! the operator's controllers in this process. Prints the time from create to AllInjected and to
//! Finished for every object, the largest status, how long each pod was held (from its record's
//! measured clock: never less than the duration), and the operator's CPU time and peak memory
//! over the run (this process's, from /proc: the pods are created before the counters start;
//! the benchmark's own polling of the objects is included).
//! A benchmark, not a test; run alone:
//!
//! ```sh
//! HAVOC_E2E_KUBECONFIG=... cargo test --release -p havoc-operator --test scale -- --ignored --nocapture
//! HAVOC_SCALE_EXPERIMENTS=100 HAVOC_SCALE_PODS=1000 ...   # 100 experiments over 1,000 pods
//! ```
//!
//! It leaves nothing: its namespace (pods and chaos objects, finalizers stripped) and fake node
//! are removed on every exit.

use std::time::{Duration, Instant};

use futures::StreamExt;
use havoc_k8s::status::{ChaosStatus, Phase};
use havoc_k8s::PodChaos;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn client_from(path: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("read the kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(cfg).expect("client")
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// Peak resident memory (VmHWM) in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kb / 1024.0
}

/// Removes the namespace (finalizers of its chaos objects stripped) and the fake node.
struct Cleanup {
    kubeconfig: String,
    namespace: String,
    node: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (path, ns, node) = (
            self.kubeconfig.clone(),
            self.namespace.clone(),
            self.node.clone(),
        );
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = client_from(&path).await;
                let chaos: Api<PodChaos> = Api::namespaced(client.clone(), &ns);
                if let Ok(list) = chaos.list(&ListParams::default()).await {
                    for o in list.items {
                        let _ = chaos
                            .patch(
                                &o.metadata.name.unwrap_or_default(),
                                &PatchParams::default(),
                                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                            )
                            .await;
                    }
                }
                // No kubelet acts on the fake node's pods: delete them at once, not gracefully.
                let _ = Api::<Pod>::namespaced(client.clone(), &ns)
                    .delete_collection(
                        &DeleteParams {
                            grace_period_seconds: Some(0),
                            ..DeleteParams::default()
                        },
                        &ListParams::default(),
                    )
                    .await;
                let nss: Api<Namespace> = Api::all(client.clone());
                let _ = nss.delete(&ns, &DeleteParams::default()).await;
                let _ = Api::<Node>::all(client.clone())
                    .delete(&node, &DeleteParams::default())
                    .await;
                for _ in 0..3000 {
                    if nss.get_opt(&ns).await.ok().flatten().is_none() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                eprintln!("namespace {ns} still there after 300 s");
            })
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run alone with --ignored"]
async fn scale_experiments_over_many_pods() {
    let Ok(path) = std::env::var("HAVOC_E2E_KUBECONFIG") else {
        panic!("HAVOC_E2E_KUBECONFIG is not set: start ../shared/k8s and source its env.sh");
    };
    let pods_n = env_or("HAVOC_SCALE_PODS", 5000);
    let exps = env_or("HAVOC_SCALE_EXPERIMENTS", 1).max(1);
    let hold = Duration::from_secs(env_or("HAVOC_SCALE_HOLD_SECONDS", 20) as u64);
    let client = client_from(&path).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in havoc_k8s::crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &PatchParams::apply("havoc-scale").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("install CRD");
    }
    let suffix = format!("{:x}", std::process::id());
    let ns = format!("havoc-scale-{suffix}");
    let node = format!("havoc-scale-fake-{suffix}");
    let _cleanup = Cleanup {
        kubeconfig: path.clone(),
        namespace: ns.clone(),
        node: node.clone(),
    };
    Api::<Node>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node}})).expect("node"),
        )
        .await
        .expect("create fake node");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns,
                "labels": {"havoc.dev/chaos": "enabled"}}}))
            .expect("ns"),
        )
        .await
        .expect("create namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let t = Instant::now();
    futures::stream::iter(0..pods_n)
        .map(|i| {
            let (pods, node) = (pods.clone(), node.clone());
            async move {
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p-{i}"),
                                 "labels": {"app": "scale", "group": format!("g{}", i % exps)}},
                    "spec": {"nodeName": node, "containers": [{"name": "main",
                             "image": "havoc.local/busybox:1", "imagePullPolicy": "Never"}]}
                }))
                .expect("pod");
                pods.create(&PostParams::default(), &p)
                    .await
                    .expect("create pod");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    eprintln!("created {pods_n} pods in {:.1?}", t.elapsed());

    // The operator's share of the process from here on.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let (cpu0, rss0) = (cpu_seconds(), peak_rss_mib());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ctx = std::sync::Arc::new(havoc_operator::controller::Context::new(
        client.clone(),
        std::sync::Arc::new(havoc_operator::FakeAgentPool::new()),
        havoc_k8s::NamespacePolicy::default(),
        kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "havoc-scale".into(),
                instance: None,
            },
        ),
        havoc_operator::metrics::Metrics::new(),
        Duration::from_secs(30),
    ));
    let controllers = tokio::spawn(havoc_operator::run_controllers(
        ctx,
        havoc_operator::shutdown_signal(async move {
            let _ = stop_rx.await;
        }),
    ));
    let chaos: Api<PodChaos> = Api::namespaced(client.clone(), &ns);
    let t = Instant::now();
    let hold_s = format!("{}s", hold.as_secs());
    futures::stream::iter(0..exps)
        .map(|i| {
            let chaos = chaos.clone();
            let hold_s = hold_s.clone();
            async move {
                let o: PodChaos = serde_json::from_value(json!({
                    "apiVersion": "havoc.dev/v1alpha1", "kind": "PodChaos",
                    "metadata": {"name": format!("scale-{i}")},
                    "spec": {"action": "pod-failure", "mode": "all", "duration": hold_s,
                             "selector": {"labelSelectors": {"group": format!("g{i}")}}}
                }))
                .expect("PodChaos");
                chaos
                    .create(&PostParams::default(), &o)
                    .await
                    .expect("create");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let created = t.elapsed();

    // Poll every object until all are Finished; note when each became AllInjected.
    let mut injected_at: Vec<Option<Duration>> = vec![None; exps];
    let mut finished_at: Vec<Option<Duration>> = vec![None; exps];
    let mut max_status = 0usize;
    // Least and most time a target was held (ms), first and last injection (unix ms).
    let mut held = (u64::MAX, 0u64);
    let mut spread = (i64::MAX, i64::MIN);
    let limit = hold + Duration::from_secs(300);
    while finished_at.iter().any(Option::is_none) {
        assert!(
            t.elapsed() < limit,
            "not all Finished in {limit:?}: {} injected, {} finished",
            injected_at.iter().flatten().count(),
            finished_at.iter().flatten().count()
        );
        let list = chaos.list(&ListParams::default()).await.expect("list");
        for o in list.items {
            let Some(i) = o
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix("scale-"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let Some(st) = o.status.as_ref() else {
                continue;
            };
            max_status = max_status.max(serde_json::to_vec(st).expect("json").len());
            let all: fn(&ChaosStatus) -> bool = |s| {
                s.condition("AllInjected")
                    .is_some_and(|c| c.status == "True")
            };
            if injected_at[i].is_none() && all(st) {
                injected_at[i] = Some(t.elapsed());
            }
            if finished_at[i].is_none() && st.phase == Phase::Finished {
                assert_eq!(
                    st.counts.recovered as usize,
                    pods_n / exps + usize::from(i < pods_n % exps),
                    "scale-{i}: {:?}",
                    st.counts
                );
                finished_at[i] = Some(t.elapsed());
                // Each pod held for the duration from its own injection: the records' clocks.
                for r in &st.records {
                    held = (held.0.min(r.served_ms), held.1.max(r.served_ms));
                    if let Some(since) = st.since_unix_ms(r) {
                        spread = (spread.0.min(since), spread.1.max(since));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (cpu1, rss1) = (cpu_seconds(), peak_rss_mib());
    let last_injected = injected_at
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_default();
    let first_finished = finished_at
        .iter()
        .flatten()
        .min()
        .copied()
        .unwrap_or_default();
    let last_finished = finished_at
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_default();
    eprintln!(
        "{exps} experiment(s) over {pods_n} pods ({} each), hold {hold:?}: created in {created:.1?}; \
         all AllInjected {last_injected:.1?} after the first create; Finished between \
         {first_finished:.1?} and {last_finished:.1?}; largest status {max_status} bytes; \
         operator CPU {:.1} s ({:.0} % of a core over the run); peak RSS {:.0} MiB (at start {rss0:.0} MiB); \
         injections spread over {} ms; each pod held {}..{} ms (duration {} ms)",
        pods_n / exps,
        cpu1 - cpu0,
        100.0 * (cpu1 - cpu0) / t.elapsed().as_secs_f64(),
        rss1,
        spread.1 - spread.0,
        held.0,
        held.1,
        hold.as_millis()
    );
    assert!(max_status < 256 * 1024, "status {max_status} bytes");
    assert!(
        u128::from(held.0) >= hold.as_millis(),
        "a pod was held {} ms, less than the duration",
        held.0
    );
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
}
