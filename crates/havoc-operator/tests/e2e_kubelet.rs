//! End-to-end tests of the Schedule and Workflow controllers on a real node (`../shared/k8s`
//! started with `K8S_KUBELET=1`: real pods, a Deployment that recreates them):
//!
//! - a Deployment's pods under a pod-kill schedule (`examples/kubernetes/schedule-pod-kill.yaml`,
//!   every 8 s) come back each time: each run kills one pod and the Deployment is back to its
//!   replicas, all Ready, before the next run;
//! - task branches are taken by exit code: the custom-task example
//!   (`examples/kubernetes/workflow-custom-task.yaml`) really runs its Task pod, reads its exit
//!   code and log, and its CEL branches pick the next step (three variants: the probe fails,
//!   it prints `healthy`, it prints `sick` and exits 3);
//! - every Workflow and Schedule example under `examples/kubernetes` is accepted by the API server
//!   (server-side dry run) and stored as written.
//!
//! Runs with `HAVOC_E2E_KUBECONFIG` set; without it, or without a Ready node, it prints that it
//! skipped, or fails when `CI` is set (CI runs the e2e suite with a kubelet cluster). The operator
//! runs in this process; the namespace it made is removed at the end and from a guard's `Drop`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use havoc_k8s::schedule_crd::{Schedule, SCHEDULE_LABEL};
use havoc_k8s::workflow_crd::{Workflow, WorkflowStatus};
use havoc_k8s::PodChaos;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

#[path = "common/programs.rs"]
mod programs;
use programs::*;
/// Skips (or fails under CI) unless a node is Ready within 30 s: the steps here need real pods.
async fn ready_node(client: &kube::Client) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let ready = nodes
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items.iter().any(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
            })
            .unwrap_or(false);
        if ready {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but the cluster has no Ready node: this suite needs a kubelet \
             (K8S_KUBELET=1 ../shared/k8s/start.sh)"
        );
    }
    println!("skipped: no Ready node (start ../shared/k8s with K8S_KUBELET=1)");
    false
}

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The `app=web` pods: (uid, ready) of each one not being deleted.
async fn web_pods(pods: &Api<Pod>) -> Vec<(String, bool)> {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .expect("list web pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.uid().unwrap_or_default(), pod_ready(p)))
        .collect()
}

/// Waits until `replicas` web pods are Ready and none is being deleted; their uids.
async fn web_ready(pods: &Api<Pod>, replicas: usize, what: &str) -> BTreeSet<String> {
    let start = Instant::now();
    loop {
        let all = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("list web pods")
            .items;
        let ready: BTreeSet<String> = all
            .iter()
            .filter(|p| pod_ready(p))
            .map(|p| p.uid().unwrap_or_default())
            .collect();
        if ready.len() == replicas && all.len() == replicas {
            return ready;
        }
        assert!(
            start.elapsed() < WAIT,
            "{what}: {} of {replicas} web pods Ready after {WAIT:?} ({} listed)",
            ready.len(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_workflow_on_node(
    api: &Api<Workflow>,
    name: &str,
    what: &str,
    pred: impl Fn(&WorkflowStatus) -> bool,
) -> WorkflowStatus {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(90) {
        last = api.get(name).await.ok().and_then(|o| o.status);
        if last.as_ref().is_some_and(&pred) {
            return last.expect("status");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("workflow {name}: timed out waiting for {what}; last status: {last:#?}");
}

fn example(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/kubernetes")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// An example as an object of namespace `ns`.
fn in_namespace<K: serde::de::DeserializeOwned + kube::Resource>(text: &str, ns: &str) -> K {
    let mut o: K = serde_yaml_ng::from_str(text).expect("an example object");
    o.meta_mut().namespace = Some(ns.to_string());
    o
}

/// The custom-task example, named `name`, its probe running `script` in the local busybox.
fn custom_task(ns: &str, name: &str, script: Option<&str>) -> Workflow {
    let mut w: Workflow = in_namespace(&example("workflow-custom-task.yaml"), ns);
    w.metadata.name = Some(name.into());
    let probe = w
        .spec
        .templates
        .iter_mut()
        .find(|t| t.name == "probe")
        .expect("a probe template");
    let c = &mut probe.task.as_mut().expect("a task").container;
    c.image = "havoc.local/busybox:1".into();
    c.image_pull_policy = Some("Never".into());
    if let Some(s) = script {
        c.command = vec!["sh".into(), "-c".into(), s.into()];
    }
    w
}

// ---------------------------------------------------------------------------------------------
// The suite.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pod_kill_schedules_and_task_branches_on_a_real_node() {
    let Some(path) = kubeconfig() else { return };
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let client = client_from(&path).await;
    if !ready_node(&client).await {
        return;
    }

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in havoc_k8s::crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &PatchParams::apply("havoc-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("install CRD {name}: {e}"));
        let start = Instant::now();
        loop {
            let est = crds
                .get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if est {
                break;
            }
            assert!(start.elapsed() < WAIT, "CRD {name} not Established");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    step("CRDs installed");

    let ns = format!(
        "havoc-e2e-node-{:x}{:x}",
        std::process::id(),
        now_ms() & 0xfff
    );
    let mut cleanup = Cleanup {
        kubeconfig: path.clone(),
        namespace: Some(ns.clone()),
    };
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
    )
    .await
    .expect("create namespace");
    let schedules: Api<Schedule> = Api::namespaced(client.clone(), &ns);
    let workflows: Api<Workflow> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let podchaos: Api<PodChaos> = Api::namespaced(client.clone(), &ns);

    // --- Every Workflow and Schedule example is accepted as written (server-side dry run). ----
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut examples = 0;
    for e in std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes"),
    )
    .expect("examples/kubernetes")
    {
        let p = e.expect("entry").path();
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(&p).expect("read example");
        if n.starts_with("workflow-") {
            let w: Workflow = in_namespace(&text, &ns);
            let stored = workflows
                .create(&dry, &w)
                .await
                .unwrap_or_else(|e| panic!("{n}: refused by the API server: {e}"));
            assert_eq!(stored.spec, w.spec, "{n}: stored as something else");
        } else if n.starts_with("schedule-") {
            let s: Schedule = in_namespace(&text, &ns);
            let stored = schedules
                .create(&dry, &s)
                .await
                .unwrap_or_else(|e| panic!("{n}: refused by the API server: {e}"));
            assert_eq!(stored.spec, s.spec, "{n}: stored as something else");
        } else {
            continue;
        }
        examples += 1;
    }
    assert!(
        examples >= 6,
        "the workflow and schedule examples: {examples}"
    );
    step(&format!(
        "{examples} workflow and schedule examples accepted (dry run)"
    ));

    let op = Operator::start(&path, &ns, "e2e-node").await;

    // --- A Deployment's pods under a pod-kill schedule come back each time. --------------------
    let replicas = 2usize;
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "web",
                        "image": "havoc.local/busybox:1",
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
                    }]
                }
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create deployment");
    let mut ready = web_ready(&pods, replicas, "the Deployment").await;
    step("Deployment web: 2 pods Ready");

    let mut sched: Schedule = in_namespace(&example("schedule-pod-kill.yaml"), &ns);
    sched.spec.schedule = "@every 8s".into();
    schedules
        .create(&PostParams::default(), &sched)
        .await
        .expect("create the pod-kill schedule");
    let sname = sched.name_any();
    let mut seen_runs: BTreeSet<String> = BTreeSet::new();
    let mut killed_total = 0;
    for round in 1..=3 {
        // A new run...
        let start = Instant::now();
        let run = loop {
            let runs: BTreeSet<String> = podchaos
                .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={sname}")))
                .await
                .expect("list runs")
                .items
                .iter()
                .map(|o| o.name_any())
                .collect();
            if let Some(r) = runs.difference(&seen_runs).next() {
                break r.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "round {round}: no new run of {sname} within 20 s (runs {runs:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        seen_runs.insert(run.clone());
        // ...kills one of the Ready pods...
        let start = Instant::now();
        let gone = loop {
            let now: BTreeSet<String> = web_pods(&pods).await.into_iter().map(|(u, _)| u).collect();
            let gone: Vec<&String> = ready.difference(&now).collect();
            if !gone.is_empty() {
                break gone.len();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "round {round}: run {run} killed no web pod within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(gone, 1, "round {round}: mode one kills one pod");
        killed_total += gone;
        // ...and the Deployment is back to its replicas, all Ready, with a new pod.
        let back = web_ready(&pods, replicas, &format!("round {round}")).await;
        assert_eq!(
            back.intersection(&ready).count(),
            replicas - 1,
            "round {round}: one pod replaced, the other kept"
        );
        step(&format!(
            "round {round}: run {run} killed 1 pod; {replicas} Ready again"
        ));
        ready = back;
    }
    assert_eq!(killed_total, 3);
    let s = schedules.get(&sname).await.expect("schedule");
    let st = s.status.expect("schedule status");
    assert!(st.runs >= 3, "{st:?}");
    // historyLimit 3: never more than 3 finished runs kept (+1 that may be running).
    let kept = podchaos
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={sname}")))
        .await
        .expect("list runs")
        .items
        .len();
    assert!(
        kept <= 4,
        "historyLimit 3 keeps at most 3 finished runs: {kept}"
    );
    schedules
        .delete(&sname, &DeleteParams::default())
        .await
        .expect("delete the schedule");
    let ready = web_ready(&pods, replicas, "after the schedule").await;
    step("schedule deleted");

    // --- Task branches taken by exit code (and stdout). ----------------------------------------
    let cases = [
        // The example as written: the probe's wget cannot reach the service -> `wait`.
        ("probe-fails", None, "wait", "kill-one", None),
        (
            "probe-healthy",
            Some("echo healthy"),
            "kill-one",
            "wait",
            Some((0, "healthy")),
        ),
        (
            "probe-sick",
            Some("echo sick; exit 3"),
            "wait",
            "kill-one",
            Some((3, "sick")),
        ),
    ];
    for (name, script, _, _, _) in &cases {
        workflows
            .create(&PostParams::default(), &custom_task(&ns, name, *script))
            .await
            .unwrap_or_else(|e| panic!("create workflow {name}: {e}"));
    }
    for (name, _, taken, not_taken, exit) in &cases {
        let st = wait_workflow_on_node(&workflows, name, "the end", |s| s.phase.is_done()).await;
        assert_eq!(
            st.phase,
            havoc_k8s::workflow_crd::WorkflowPhase::Succeeded,
            "{name}: {st:#?}"
        );
        let probe = st
            .nodes
            .iter()
            .find(|n| n.template == "probe")
            .unwrap_or_else(|| panic!("{name}: no probe node"));
        assert_eq!(probe.phase, "Succeeded", "{name}: {probe:?}");
        assert!(
            probe
                .child
                .as_deref()
                .is_some_and(|c| c.starts_with(&format!("Pod/{name}-")) && c.ends_with("-probe")),
            "{name}: the probe ran as a pod: {probe:?}"
        );
        let taken_node = st
            .nodes
            .iter()
            .find(|n| n.template == *taken)
            .unwrap_or_else(|| panic!("{name}: branch {taken} not taken: {:#?}", st.nodes));
        assert_eq!(taken_node.phase, "Succeeded", "{name}: {taken_node:?}");
        assert!(
            st.nodes.iter().all(|n| n.template != *not_taken),
            "{name}: branch {not_taken} taken too: {:#?}",
            st.nodes
        );
        let exited = st
            .journal
            .iter()
            .find(|e| e.op == "exited")
            .unwrap_or_else(|| panic!("{name}: no task exit in the journal"));
        match exit {
            Some((code, stdout)) => {
                assert_eq!(exited.exit_code, Some(*code), "{name}: {exited:?}");
                assert_eq!(exited.text.as_deref(), Some(*stdout), "{name}: {exited:?}");
            }
            None => assert!(
                exited.exit_code.is_some_and(|c| c != 0),
                "{name}: the probe should fail: {exited:?}"
            ),
        }
        step(&format!(
            "{name}: exit {:?} stdout {:?} -> {taken}",
            exited.exit_code, exited.text
        ));
    }
    // The healthy branch's pod-kill really killed a web pod; the Deployment brought it back.
    let after = web_ready(&pods, replicas, "after the healthy branch").await;
    assert_eq!(
        after.intersection(&ready).count(),
        replicas - 1,
        "the kill-one branch killed exactly one web pod"
    );
    // Task pods ran to completion on the node.
    let task_pods = pods
        .list(&ListParams::default().labels("havoc.dev/workflow"))
        .await
        .expect("list task pods")
        .items;
    assert_eq!(task_pods.len(), 3, "one pod per task");
    for p in &task_pods {
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        assert!(
            matches!(phase.as_deref(), Some("Succeeded") | Some("Failed")),
            "{}: {phase:?}",
            p.name_any()
        );
    }

    op.stop().await;
    let c = client_from(&path).await;
    let ns_name = cleanup.namespace.take().expect("namespace");
    remove_namespace(&c, &ns_name)
        .await
        .unwrap_or_else(|e| panic!("cleanup: {e}"));
    step("namespace removed");
}
