//! End-to-end tests of the Schedule, Workflow and StatusCheck controllers against a real API
//! server (`../shared/k8s`; no kubelet needed: the steps used here are suspends, status checks
//! and workflows, which need no running pods).
//!
//! Runs with `HAVOC_E2E_KUBECONFIG` set (the cluster's admin kubeconfig); without it, it prints
//! that it skipped, or fails when `CI` is set (CI must run it).
//!
//! The operators run in this process (the library's `run_controllers`, what `havoc operator` runs
//! once it leads), two at once without leader election where the test is that two operators
//! never duplicate a run, and stopped and started again where the test is a restart.
//!
//! It leaves nothing behind: the namespace it made (and with it every object) is removed and
//! waited for, finalizers stripped first; the cleanup runs at the end and again from a guard's
//! `Drop` if the test panicked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use havoc_k8s::schedule_crd::{Schedule, SCHEDULE_LABEL};
use havoc_k8s::statuscheck_crd::{StatusCheck, FAILURE_THRESHOLD_EXCEED};
use havoc_k8s::workflow_crd::{Workflow, WorkflowNode, WorkflowPhase};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common/programs.rs"]
mod programs;
use programs::*;

fn suspend_workflow(secs: u32) -> serde_json::Value {
    json!({"entry": "wait", "templates": [
        {"name": "wait", "templateType": "Suspend", "deadline": format!("{secs}s")}
    ]})
}

/// A plain HTTP server on 127.0.0.1 answering every request with `code`, counting requests.
async fn http_server(code: u16) -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            });
        }
    });
    (port, hits)
}

/// The runs of a schedule: name -> (start time in unix seconds, done).
async fn runs(api: &Api<Workflow>, schedule: &str) -> BTreeMap<String, (i64, bool)> {
    api.list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={schedule}")))
        .await
        .expect("list runs")
        .items
        .into_iter()
        .map(|w| {
            let t = w
                .name_any()
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("a run named <schedule>-<unix seconds>");
            let done = w.status.as_ref().is_some_and(|s| s.phase.is_done());
            (w.name_any(), (t, done))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The suite.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_workflows_and_status_checks_on_a_real_api_server() {
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
        "havoc-e2e-sched-{:x}{:x}",
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
    let checks: Api<StatusCheck> = Api::namespaced(client.clone(), &ns);

    // --- The API server refuses what the CEL rules refuse. ------------------------------------
    let bad: Schedule = serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "Schedule",
        "metadata": {"name": "bad"},
        "spec": {"schedule": "@every 5s", "type": "Workflow"}
    }))
    .expect("schedule");
    let e = schedules
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("a Workflow schedule without workflow is refused");
    assert!(
        e.to_string().contains("type Workflow needs workflow"),
        "{e}"
    );

    // Two operators reconcile at once (no leader election): neither may duplicate a run.
    let op_a = Operator::start(&path, &ns, "e2e-a").await;
    let op_b = Operator::start(&path, &ns, "e2e-b").await;
    step("two operators running");

    // --- @every 5s: runs on time, once each; historyLimit keeps 2. -----------------------------
    let every: Schedule = serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "Schedule",
        "metadata": {"name": "every"},
        "spec": {"schedule": "@every 5s", "type": "Workflow", "historyLimit": 2,
                 "workflow": suspend_workflow(1)}
    }))
    .expect("schedule");
    let created = schedules
        .create(&PostParams::default(), &every)
        .await
        .expect("create schedule");
    let created_s = created
        .metadata
        .creation_timestamp
        .as_ref()
        .expect("created")
        .0
        .as_second();
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    // A run that just finished is pruned by the schedule's next reconcile (its watch on runs), so
    // a third finished run may be seen for a moment; more than 2 must never last.
    let mut most_finished = 0;
    let (mut over_since, mut longest_over) = (None::<Instant>, Duration::ZERO);
    let watch_until = Instant::now() + Duration::from_secs(23);
    while Instant::now() < watch_until {
        let rs = runs(&workflows, "every").await;
        let at = now_ms();
        for (name, (t, _)) in &rs {
            seen.entry(name.clone()).or_insert_with(|| at - t * 1000);
        }
        let finished = rs.values().filter(|(_, done)| *done).count();
        most_finished = most_finished.max(finished);
        if finished > 2 {
            let since = *over_since.get_or_insert_with(Instant::now);
            longest_over = longest_over.max(since.elapsed());
        } else {
            over_since = None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let times: Vec<i64> = seen
        .keys()
        .map(|n| {
            n.rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("time")
        })
        .collect();
    eprintln!("every: runs {seen:?} (ms late when first seen)");
    assert!(times.len() >= 4, "at least 4 runs in 23 s: {seen:?}");
    assert_eq!(times[0], created_s + 5, "the first run 5 s after creation");
    for w in times.windows(2) {
        assert_eq!(
            w[1] - w[0],
            5,
            "runs 5 s apart, none missed or doubled: {times:?}"
        );
    }
    for (name, late) in &seen {
        // On time within 1 s, plus this test's 100 ms poll.
        assert!(
            (-100..=1_100).contains(late),
            "{name} first seen {late} ms after its start time"
        );
    }
    assert!(
        longest_over < Duration::from_secs(2),
        "historyLimit 2: more than 2 finished runs kept for {longest_over:?} (at most {most_finished})"
    );
    let settled = Instant::now() + Duration::from_secs(10);
    loop {
        let kept = runs(&workflows, "every")
            .await
            .values()
            .filter(|(_, done)| *done)
            .count();
        if kept <= 2 {
            break;
        }
        assert!(
            Instant::now() < settled,
            "historyLimit 2: {kept} finished runs kept 10 s after"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = schedules
        .get("every")
        .await
        .expect("schedule")
        .status
        .expect("status");
    // Counted once per run although two operators decided each one.
    let runs_now = runs(&workflows, "every").await;
    let last_name = runs_now.keys().max().cloned().unwrap_or_default();
    assert!(
        st.runs as usize >= times.len() && st.runs as usize <= times.len() + 1,
        "status.runs {} for {} runs seen (and maybe one started since): {st:?}",
        st.runs,
        times.len()
    );
    step(&format!(
        "@every 5s: {} runs, lateness {:?} ms, last {last_name}",
        times.len(),
        seen.values().collect::<Vec<_>>()
    ));

    // --- pause / resume. -----------------------------------------------------------------------
    let pause = |on: bool| json!({"metadata": {"annotations": {"havoc.dev/pause": if on { json!("true") } else { json!(null) }}}});
    schedules
        .patch(
            "every",
            &PatchParams::default(),
            &Patch::Merge(&pause(true)),
        )
        .await
        .expect("pause");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = runs(&workflows, "every").await.into_keys().max();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = runs(&workflows, "every").await.into_keys().max();
    assert_eq!(before, after, "no run while paused");
    let st = schedules
        .get("every")
        .await
        .expect("schedule")
        .status
        .expect("status");
    assert!(st.paused, "status says paused: {st:?}");
    schedules
        .patch(
            "every",
            &PatchParams::default(),
            &Patch::Merge(&pause(false)),
        )
        .await
        .expect("resume");
    let resumed = Instant::now();
    loop {
        let latest = runs(&workflows, "every").await.into_keys().max();
        if latest != after {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_millis(6_200),
            "no run within 5 s (+1.2 s) of resuming"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    step(&format!(
        "pause/resume: none for 7 s paused, a run {:.1} s after resuming",
        resumed.elapsed().as_secs_f64()
    ));
    schedules
        .delete("every", &DeleteParams::default())
        .await
        .expect("delete schedule");

    // --- Forbid: a run lasting 5 s under @every 2s never overlaps the next. ---------------------
    let forbid: Schedule = serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "Schedule",
        "metadata": {"name": "forbid"},
        "spec": {"schedule": "@every 2s", "type": "Workflow", "historyLimit": 10,
                 "workflow": suspend_workflow(5)}
    }))
    .expect("schedule");
    schedules
        .create(&PostParams::default(), &forbid)
        .await
        .expect("create schedule");
    let until = Instant::now() + Duration::from_secs(14);
    let mut most_active = 0;
    while Instant::now() < until {
        let rs = runs(&workflows, "forbid").await;
        most_active = most_active.max(rs.values().filter(|(_, done)| !*done).count());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = runs(&workflows, "forbid").await.len();
    let st = schedules
        .get("forbid")
        .await
        .expect("schedule")
        .status
        .expect("status");
    assert_eq!(most_active, 1, "Forbid: never two runs at once");
    assert!(
        (2..=4).contains(&total),
        "runs of 5 s every 2 s in 14 s: {total}"
    );
    assert!(
        st.skipped >= 3,
        "start times skipped while a run ran: {st:?}"
    );
    step(&format!(
        "Forbid: {total} runs, {} start times skipped, never 2 at once",
        st.skipped
    ));
    schedules
        .delete("forbid", &DeleteParams::default())
        .await
        .expect("delete schedule");
    op_b.stop().await;
    step("operator b stopped");

    // --- Serial and parallel order, and suspend, from the node timestamps. ----------------------
    let order: Workflow = serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "order"},
        "spec": {"entry": "main", "templates": [
            {"name": "main", "templateType": "Serial", "children": ["both", "last"]},
            {"name": "both", "templateType": "Parallel", "children": ["one", "two"]},
            {"name": "one", "templateType": "Suspend", "deadline": "1s"},
            {"name": "two", "templateType": "Suspend", "deadline": "2s"},
            {"name": "last", "templateType": "Suspend", "deadline": "1s"}
        ]}
    }))
    .expect("workflow");
    workflows
        .create(&PostParams::default(), &order)
        .await
        .expect("create workflow");
    let st = wait_workflow(&workflows, "order", "Succeeded", |s| s.phase.is_done()).await;
    assert_eq!(st.phase, WorkflowPhase::Succeeded, "{st:#?}");
    let (one, two, both, last) = (
        node(&st, "one"),
        node(&st, "two"),
        node(&st, "both"),
        node(&st, "last"),
    );
    let d = |n: &WorkflowNode| ms(&n.end_time) - ms(&n.start_time);
    assert!(
        (ms(&one.start_time) - ms(&two.start_time)).abs() <= 50,
        "parallel children start together"
    );
    assert!(
        (1_000..=1_600).contains(&d(one)),
        "suspend 1s took {} ms",
        d(one)
    );
    assert!(
        (2_000..=2_600).contains(&d(two)),
        "suspend 2s took {} ms",
        d(two)
    );
    assert!(
        ms(&both.end_time) >= ms(&two.end_time),
        "parallel ends with its last child"
    );
    assert!(
        ms(&last.start_time) >= ms(&both.end_time),
        "serial: last after both"
    );
    assert!(
        ms(&last.start_time) - ms(&two.end_time) <= 600,
        "serial: the next step starts promptly ({} ms)",
        ms(&last.start_time) - ms(&two.end_time)
    );
    // Events are recorded asynchronously: wait a little for the last transition's.
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    let mut reasons: Vec<String> = Vec::new();
    for _ in 0..50 {
        let evs = events
            .list(&ListParams::default().fields("regarding.name=order"))
            .await
            .expect("events");
        reasons = evs.items.iter().filter_map(|e| e.reason.clone()).collect();
        if reasons.iter().any(|r| r == "NodeSucceeded")
            && reasons.iter().any(|r| r == "WorkflowSucceeded")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        reasons.iter().any(|r| r == "NodeSucceeded")
            && reasons.iter().any(|r| r == "WorkflowSucceeded"),
        "events on transitions: {reasons:?}"
    );
    step(&format!(
        "serial/parallel/suspend: one {} ms, two {} ms, last started {} ms after two ended",
        d(one),
        d(two),
        ms(&last.start_time) - ms(&two.end_time)
    ));

    // --- A failing status check aborts the workflow and stops what it started. ------------------
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let (ok_port, ok_hits) = http_server(200).await;
    let abort: Workflow = serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "abort"},
        "spec": {"entry": "main", "templates": [
            {"name": "main", "templateType": "Parallel", "children": ["hold", "watch", "check"]},
            {"name": "hold", "templateType": "Suspend", "deadline": "60s"},
            {"name": "watch", "templateType": "StatusCheck", "deadline": "60s", "statusCheck": {
                "mode": "Continuous", "intervalSeconds": 1,
                "http": {"url": format!("http://127.0.0.1:{ok_port}/"), "criteria": {"statusCode": "200"}}}},
            {"name": "check", "templateType": "StatusCheck", "abortWithStatusCheck": true, "statusCheck": {
                "mode": "Synchronous", "intervalSeconds": 1, "failureThreshold": 2,
                "http": {"url": format!("http://127.0.0.1:{closed}/"), "criteria": {"statusCode": "200"}}}}
        ]}
    }))
    .expect("workflow");
    let t_abort = Instant::now();
    workflows
        .create(&PostParams::default(), &abort)
        .await
        .expect("create workflow");
    let st = wait_workflow(&workflows, "abort", "done", |s| s.phase.is_done()).await;
    let took = t_abort.elapsed();
    assert_eq!(st.phase, WorkflowPhase::Aborted, "{st:#?}");
    assert_eq!(node(&st, "check").phase, "Failed", "{st:#?}");
    assert_eq!(node(&st, "hold").phase, "Aborted", "{st:#?}");
    assert_eq!(node(&st, "watch").phase, "Aborted", "{st:#?}");
    assert!(
        took < Duration::from_secs(10),
        "aborted within 10 s: {took:?}"
    );
    let failed_check = checks
        .get(
            node(&st, "check")
                .child
                .as_deref()
                .expect("child")
                .trim_start_matches("StatusCheck/"),
        )
        .await
        .expect("the failed check is kept")
        .status
        .expect("status");
    assert!(
        failed_check.is(FAILURE_THRESHOLD_EXCEED),
        "{failed_check:?}"
    );
    // The running check the workflow started was stopped (deleted): no more probes.
    let watch_child = node(&st, "watch").child.clone().expect("child");
    let watch_name = watch_child.trim_start_matches("StatusCheck/").to_string();
    let start = Instant::now();
    while checks.get_opt(&watch_name).await.expect("get").is_some() {
        assert!(start.elapsed() < WAIT, "{watch_name} not deleted on abort");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hits = ok_hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        ok_hits.load(Ordering::SeqCst),
        hits,
        "no probe after the abort"
    );
    step(&format!(
        "status check failed: aborted in {:.1} s, the running check removed ({hits} probes)",
        took.as_secs_f64()
    ));

    // --- Abort by annotation. -------------------------------------------------------------------
    let by_hand: Workflow = serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "by-hand"},
        "spec": {"entry": "main", "templates": [
            {"name": "main", "templateType": "Serial", "children": ["hold", "never"]},
            {"name": "hold", "templateType": "Suspend", "deadline": "60s"},
            {"name": "never", "templateType": "Suspend", "deadline": "1s"}
        ]}
    }))
    .expect("workflow");
    workflows
        .create(&PostParams::default(), &by_hand)
        .await
        .expect("create workflow");
    wait_workflow(&workflows, "by-hand", "Running", |s| {
        s.phase == WorkflowPhase::Running
    })
    .await;
    workflows
        .patch(
            "by-hand",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"havoc.dev/abort": "true"}}})),
        )
        .await
        .expect("annotate");
    let st = wait_workflow(&workflows, "by-hand", "done", |s| s.phase.is_done()).await;
    assert_eq!(st.phase, WorkflowPhase::Aborted);
    assert_eq!(node(&st, "hold").phase, "Aborted");
    assert_eq!(node(&st, "never").phase, "Skipped");
    step("abort by annotation: running step aborted, the rest skipped");

    // --- Operator restart mid-workflow: resumes, no step twice. ---------------------------------
    let (port, hits) = http_server(200).await;
    let check = |name: &str| {
        json!({"name": name, "templateType": "StatusCheck", "statusCheck": {
            "mode": "Synchronous", "intervalSeconds": 1, "successThreshold": 1,
            "http": {"url": format!("http://127.0.0.1:{port}/"), "criteria": {"statusCode": "200"}}}})
    };
    let resume: Workflow = serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "resume"},
        "spec": {"entry": "main", "templates": [
            {"name": "main", "templateType": "Serial", "children": ["first", "wait", "second"]},
            check("first"),
            {"name": "wait", "templateType": "Suspend", "deadline": "4s"},
            check("second")
        ]}
    }))
    .expect("workflow");
    workflows
        .create(&PostParams::default(), &resume)
        .await
        .expect("create workflow");
    let st = wait_workflow(&workflows, "resume", "wait running", |s| {
        s.nodes
            .iter()
            .any(|n| n.template == "wait" && n.phase == "Running")
    })
    .await;
    let first_child = node(&st, "first")
        .child
        .clone()
        .expect("child")
        .trim_start_matches("StatusCheck/")
        .to_string();
    let first_uid = checks.get(&first_child).await.expect("first check").uid();
    op_a.stop().await;
    step("operator a stopped mid-workflow");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let op_c = Operator::start(&path, &ns, "e2e-c").await;
    let st = wait_workflow(&workflows, "resume", "done", |s| s.phase.is_done()).await;
    assert_eq!(st.phase, WorkflowPhase::Succeeded, "{st:#?}");
    let first = checks.get(&first_child).await.expect("first check");
    assert_eq!(first.uid(), first_uid, "the first step was not made again");
    assert_eq!(
        first.status.as_ref().map(|s| s.count),
        Some(1),
        "probed once"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "one probe per check step, none repeated"
    );
    let finishes = st.journal.iter().filter(|e| e.op == "succeeded").count();
    assert_eq!(
        finishes, 2,
        "each check step finished once: {:?}",
        st.journal
    );
    step("restart: resumed from status, no step twice");

    op_c.stop().await;
    remove_namespace(&client, &ns)
        .await
        .expect("remove the namespace");
    cleanup.namespace = None;
    step("cleaned up");
}
