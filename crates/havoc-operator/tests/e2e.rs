//! End-to-end against a real API server: runs only with `HAVOC_E2E_KUBECONFIG` set (a path to
//! a kubeconfig), and prints that it skipped otherwise. Needs no kubelet: the pods are bare and
//! unscheduled (they stay Pending), which pod-kill does not care about.
//!
//! Installs the CRDs, runs the controllers in-process (no leader election, a fake agent pool:
//! PodChaos goes through the API only), creates uniquely named namespaces and removes them in a
//! guard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use havoc_k8s::{NamespacePolicy, PodChaos};
use havoc_operator::controller::Context;
use havoc_operator::metrics::Metrics;
use havoc_operator::FakeAgentPool;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::json;

async fn client() -> Option<kube::Client> {
    let Ok(path) = std::env::var("HAVOC_E2E_KUBECONFIG") else {
        println!("skipped: HAVOC_E2E_KUBECONFIG not set");
        return None;
    };
    let kc = kube::config::Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    Some(kube::Client::try_from(cfg).expect("client"))
}

/// Deletes the test namespaces (and everything in them) on drop.
struct Namespaces {
    client: kube::Client,
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let client = self.client.clone();
        let names = std::mem::take(&mut self.names);
        // Best effort, bounded: a fresh runtime because Drop may run outside one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let api: Api<Namespace> = Api::all(client);
                for n in names {
                    let _ = api.delete(&n, &DeleteParams::default()).await;
                }
            });
        })
        .join();
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn bare_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "havoc.invalid/none:0"}]}
    }))
    .expect("pod")
}

#[tokio::test]
async fn pod_kill_modes_conditions_pause_duration_deletion_and_refusal() {
    let Some(client) = client().await else { return };
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in havoc_k8s::crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &PatchParams::apply("havoc-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("install CRD");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let suffix = format!(
        "{:x}",
        std::process::id() ^ (Instant::now().elapsed().as_nanos() as u32)
    );
    let open = format!("havoc-e2e-open-{suffix}");
    let closed = format!("havoc-e2e-closed-{suffix}");
    let nss: Api<Namespace> = Api::all(client.clone());
    let _guard = Namespaces {
        client: client.clone(),
        names: vec![open.clone(), closed.clone()],
    };
    for (n, label) in [(&open, true), (&closed, false)] {
        let mut ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": n}})).expect("ns");
        if label {
            ns.metadata.labels = Some([("havoc.dev/chaos".into(), "enabled".into())].into());
        }
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "havoc-operator-e2e".into(),
            instance: None,
        },
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(FakeAgentPool::new()),
        NamespacePolicy::default(),
        recorder,
        Metrics::new(),
        Duration::from_secs(30),
    ));
    let operator = tokio::spawn(havoc_operator::run_controllers(ctx));

    let pods: Api<Pod> = Api::namespaced(client.clone(), &open);
    let chaos: Api<PodChaos> = Api::namespaced(client.clone(), &open);
    // Each mode over a fresh set of 10 pods: how many get killed.
    for (i, (mode, value, killed)) in [
        ("one", None, 1usize),
        ("all", None, 10),
        ("fixed", Some("3"), 3),
        ("fixed-percent", Some("50"), 5),
    ]
    .into_iter()
    .enumerate()
    {
        for p in 0..10 {
            pods.create(&PostParams::default(), &bare_pod(&format!("web-{i}-{p}")))
                .await
                .expect("create pod");
        }
        let mut spec = json!({"action": "pod-kill", "mode": mode, "gracePeriod": 0,
                              "selector": {"labelSelectors": {"app": "web"}}});
        if let Some(v) = value {
            spec["value"] = json!(v);
        }
        let obj: PodChaos = serde_json::from_value(json!({
            "apiVersion": "havoc.dev/v1alpha1", "kind": "PodChaos",
            "metadata": {"name": format!("kill-{i}")}, "spec": spec
        }))
        .expect("PodChaos");
        chaos
            .create(&PostParams::default(), &obj)
            .await
            .expect("create chaos");
        let name = format!("kill-{i}");
        wait_for("the experiment to finish", Duration::from_secs(60), || {
            let chaos = chaos.clone();
            let name = name.clone();
            async move {
                chaos
                    .get(&name)
                    .await
                    .ok()
                    .and_then(|o| o.status)
                    .is_some_and(|s| s.phase == havoc_k8s::status::Phase::Finished)
            }
        })
        .await;
        let st = chaos.get(&name).await.expect("get").status.expect("status");
        assert_eq!(st.records.len(), killed, "mode {mode}: {st:?}");
        for c in ["Selected", "AllInjected", "AllRecovered"] {
            assert_eq!(
                st.condition(c).map(|c| c.status.as_str()),
                Some("True"),
                "mode {mode}: {c}"
            );
        }
        // Deletion removes the finalizer.
        chaos
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete");
        wait_for("the chaos object to go", Duration::from_secs(30), || {
            let chaos = chaos.clone();
            let name = name.clone();
            async move { chaos.get_opt(&name).await.ok().flatten().is_none() }
        })
        .await;
        // Clean the remaining pods for the next mode.
        let _ = pods
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default(),
            )
            .await;
        wait_for("pods to go", Duration::from_secs(60), || {
            let pods = pods.clone();
            async move {
                pods.list(&ListParams::default())
                    .await
                    .is_ok_and(|l| l.items.is_empty())
            }
        })
        .await;
    }

    // A namespace that did not opt in is refused with a condition message.
    let closed_chaos: Api<PodChaos> = Api::namespaced(client.clone(), &closed);
    let obj: PodChaos = serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "PodChaos",
        "metadata": {"name": "refused"},
        "spec": {"action": "pod-kill", "mode": "all", "selector": {}}
    }))
    .expect("PodChaos");
    closed_chaos
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    wait_for("the refusal", Duration::from_secs(30), || {
        let c = closed_chaos.clone();
        async move {
            c.get("refused")
                .await
                .ok()
                .and_then(|o| o.status)
                .is_some_and(|s| {
                    s.condition("Selected").is_some_and(|c| {
                        c.status == "False" && c.message.contains("not open to chaos")
                    })
                })
        }
    })
    .await;
    closed_chaos
        .delete("refused", &DeleteParams::default())
        .await
        .expect("delete");

    // pod-failure with a duration: the pod's images are swapped, pause restores them, resume
    // swaps them again, and the duration end restores them for good.
    pods.create(&PostParams::default(), &bare_pod("held"))
        .await
        .expect("create pod");
    let obj: PodChaos = serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "PodChaos",
        "metadata": {"name": "fail"},
        "spec": {"action": "pod-failure", "mode": "all", "duration": "20s",
                 "selector": {"pods": {(open.clone()): ["held"]}}}
    }))
    .expect("PodChaos");
    chaos
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    let image = |pods: Api<Pod>| async move {
        pods.get("held")
            .await
            .ok()
            .and_then(|p| p.spec)
            .and_then(|s| s.containers[0].image.clone())
    };
    wait_for("the failure image", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            image(pods)
                .await
                .is_some_and(|i| i.starts_with("havoc.invalid/pod-failure"))
        }
    })
    .await;
    chaos
        .patch(
            "fail",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"havoc.dev/pause": "true"}}})),
        )
        .await
        .expect("pause");
    wait_for(
        "pause to restore the image",
        Duration::from_secs(30),
        || {
            let pods = pods.clone();
            async move { image(pods).await.as_deref() == Some("havoc.invalid/none:0") }
        },
    )
    .await;
    chaos
        .patch(
            "fail",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"havoc.dev/pause": null}}})),
        )
        .await
        .expect("resume");
    wait_for("the duration to end", Duration::from_secs(90), || {
        let chaos = chaos.clone();
        async move {
            chaos
                .get("fail")
                .await
                .ok()
                .and_then(|o| o.status)
                .is_some_and(|s| s.phase == havoc_k8s::status::Phase::Finished)
        }
    })
    .await;
    assert_eq!(
        image(pods.clone()).await.as_deref(),
        Some("havoc.invalid/none:0")
    );
    chaos
        .delete("fail", &DeleteParams::default())
        .await
        .expect("delete");
    operator.abort();
}
