//! End-to-end test of a Workflow's Schedule template against a real API server (`../shared/k8s`;
//! no kubelet needed: the schedule's chaos is a pod-kill of pods that do not exist, so its runs
//! are objects created on time whatever they find).
//!
//! The node creates a child Schedule (deterministic name, owner reference, the workflow's child
//! labels); the Schedule controller creates runs on time; at the node's deadline the Schedule is
//! deleted (foreground: gone once its runs are) and the workflow goes on; an abort deletes it too.
//!
//! Runs with `HAVOC_E2E_KUBECONFIG` set; without it, it prints that it skipped, or fails when `CI`
//! is set. It removes the namespace it made, also from a guard's `Drop` if the test panicked.

use std::time::{Duration, Instant};

use havoc_k8s::schedule_crd::{Schedule, SCHEDULE_LABEL};
use havoc_k8s::workflow_crd::{Workflow, WorkflowPhase};
use havoc_k8s::PodChaos;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

#[path = "common/programs.rs"]
mod programs;
use programs::*;

async fn schedule_runs(client: &kube::Client, ns: &str, schedule: &str) -> Vec<PodChaos> {
    Api::<PodChaos>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={schedule}")))
        .await
        .expect("list runs")
        .items
}

fn workflow_with_schedule(name: &str, deadline: &str) -> Workflow {
    serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"entry": "main", "templates": [
            {"name": "main", "templateType": "Serial", "children": ["kill", "after"]},
            {"name": "kill", "templateType": "Schedule", "deadline": deadline,
             "schedule": {"schedule": "@every 3s", "type": "PodChaos",
                "concurrencyPolicy": "Allow", "historyLimit": 20,
                "podChaos": {"action": "pod-kill", "mode": "all",
                    "selector": {"labelSelectors": {"app": "nothing-has-this-label"}}}}},
            {"name": "after", "templateType": "Suspend", "deadline": "1s"}
        ]}
    }))
    .expect("workflow")
}

async fn wait_until<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_schedule_template_runs_a_child_schedule_until_its_deadline() {
    let Some(path) = kubeconfig() else { return };
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let client = client_from(&path).await;

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
        "havoc-e2e-wfsched-{:x}{:x}",
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

    // The API server refuses a nested Workflow in a Schedule template (CEL).
    let mut bad = workflow_with_schedule("bad", "10s");
    bad.spec.templates[1].schedule.as_mut().expect("s").type_ =
        havoc_k8s::schedule_crd::ScheduleType::Workflow;
    let e = workflows
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("embeds a chaos kind"), "{e}");

    let op = Operator::start(&path, &ns, "op-a").await;
    step("operator started");

    // --- Runs until the deadline, then the child Schedule is gone. ----------------------------
    let deadline_s = 12;
    workflows
        .create(
            &PostParams::default(),
            &workflow_with_schedule("wfs", &format!("{deadline_s}s")),
        )
        .await
        .expect("create workflow");
    let st = wait_workflow(&workflows, "wfs", "the schedule node running", |s| {
        s.nodes
            .iter()
            .any(|n| n.template == "kill" && n.phase == "Running")
    })
    .await;
    let child = "wfs-1-kill";
    assert_eq!(
        node(&st, "kill").child.as_deref(),
        Some("Schedule/wfs-1-kill")
    );
    let sch = schedules
        .get(child)
        .await
        .expect("the child Schedule exists");
    let owner = &sch.metadata.owner_references.as_ref().expect("owners")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Workflow", "wfs", Some(true))
    );
    let labels = sch.labels();
    assert_eq!(
        labels.get("havoc.dev/workflow").map(String::as_str),
        Some("wfs")
    );
    assert_eq!(
        labels.get("havoc.dev/workflow-node").map(String::as_str),
        Some("1")
    );
    assert_eq!(sch.spec.schedule, "@every 3s");
    assert!(sch.spec.workflow.is_none() && sch.spec.pod_chaos.is_some());
    step("child Schedule created");

    // Runs on time: each run's start time is on the 3 s grid and it was created within 1 s.
    wait_until("3 runs of the child schedule", || {
        let c = client.clone();
        let ns = ns.clone();
        async move { schedule_runs(&c, &ns, child).await.len() >= 3 }
    })
    .await;
    let runs = schedule_runs(&client, &ns, child).await;
    let mut times: Vec<i64> = Vec::new();
    for r in &runs {
        let t: i64 = r
            .name_any()
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("a run named <schedule>-<unix seconds>");
        let created = r
            .metadata
            .creation_timestamp
            .as_ref()
            .expect("created")
            .0
            .as_second();
        assert!(
            (created - t).abs() <= 1,
            "run {} created at {created}, due at {t}",
            r.name_any()
        );
        times.push(t);
    }
    times.sort();
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], 3, "runs every 3 s: {times:?}");
    }
    step(&format!("{} runs on time: {times:?}", runs.len()));

    let st = wait_workflow(&workflows, "wfs", "the workflow done", |s| {
        s.phase.is_done()
    })
    .await;
    assert_eq!(st.phase, WorkflowPhase::Succeeded, "{st:#?}");
    let k = node(&st, "kill");
    assert_eq!(k.phase, "DeadlineExceeded");
    let ran = ms(&k.end_time) - ms(&k.start_time);
    // Never short. The node ends when its Schedule is gone, deleted in the foreground: the
    // API server's garbage collector removes it after its runs, and when a run was being
    // created at the deadline that took up to ~10 s more here (seen 21,957 ms for 12 s).
    assert!(
        ran >= deadline_s * 1000 && ran < deadline_s * 1000 + 15_000,
        "the schedule node ran {ran} ms for a {deadline_s} s deadline"
    );
    assert!(ms(&node(&st, "after").start_time) >= ms(&k.end_time));
    assert!(
        schedules.get_opt(child).await.expect("get").is_none(),
        "the child Schedule is gone when its node ends"
    );
    assert!(
        schedule_runs(&client, &ns, child).await.is_empty(),
        "its runs are gone with it (foreground deletion)"
    );
    step(&format!(
        "node ended after {ran} ms; Schedule and runs gone"
    ));

    // --- An abort deletes the child Schedule. --------------------------------------------------
    workflows
        .create(
            &PostParams::default(),
            &workflow_with_schedule("wfa", "10m"),
        )
        .await
        .expect("create workflow");
    let child = "wfa-1-kill";
    wait_until("a run of the aborted workflow's schedule", || {
        let c = client.clone();
        let ns = ns.clone();
        async move { !schedule_runs(&c, &ns, child).await.is_empty() }
    })
    .await;
    assert!(schedules.get_opt(child).await.expect("get").is_some());
    let t_abort = now_ms();
    workflows
        .patch(
            "wfa",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"havoc.dev/abort": "true"}}})),
        )
        .await
        .expect("annotate");
    let st = wait_workflow(&workflows, "wfa", "the abort", |s| s.phase.is_done()).await;
    assert_eq!(st.phase, WorkflowPhase::Aborted, "{st:#?}");
    assert_eq!(node(&st, "kill").phase, "Aborted");
    assert_eq!(node(&st, "after").phase, "Skipped", "{st:#?}");
    assert!(schedules.get_opt(child).await.expect("get").is_none());
    // A run the Schedule controller was creating as its Schedule went away is collected by the
    // garbage collector right after (its owner is gone).
    wait_until("the aborted schedule's runs gone", || {
        let c = client.clone();
        let ns = ns.clone();
        async move { schedule_runs(&c, &ns, child).await.is_empty() }
    })
    .await;
    step(&format!(
        "aborted: Schedule gone, runs gone {} ms after the annotation",
        now_ms() - t_abort
    ));

    op.stop().await;
    let ns = cleanup.namespace.take().expect("namespace");
    remove_namespace(&client, &ns)
        .await
        .unwrap_or_else(|e| panic!("cleanup: {e}"));
}
