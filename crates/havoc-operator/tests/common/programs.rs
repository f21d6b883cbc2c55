//! What the API-server e2e suites of Schedules and Workflows share (`e2e_schedule`,
//! `e2e_workflow_schedule`, `e2e_kubelet`): the kubeconfig (a failure under `CI`), a client, the
//! in-process operator, namespace cleanup that strips finalizers and waits, and waits on a
//! Workflow's status. Each suite takes what it uses.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use havoc_k8s::schedule_crd::Schedule;
use havoc_k8s::statuscheck_crd::StatusCheck;
use havoc_k8s::workflow_crd::{Workflow, WorkflowNode, WorkflowStatus};
use havoc_k8s::{NamespacePolicy, NetworkChaos, PodChaos, StressChaos};
use havoc_operator::controller::Context;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::ResourceExt;
use serde_json::json;

pub const WAIT: Duration = Duration::from_secs(60);

pub fn kubeconfig() -> Option<String> {
    match std::env::var("HAVOC_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => panic!(
            "CI is set but HAVOC_E2E_KUBECONFIG is not: the e2e suite must run in CI \
             (start ../shared/k8s and source its env.sh)"
        ),
        _ => {
            println!("skipped: HAVOC_E2E_KUBECONFIG not set (start ../shared/k8s, source env.sh)");
            None
        }
    }
}

pub async fn client_from(path: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("read the kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(cfg).expect("client")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// Operators in this process.

pub struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    pub async fn start(path: &str, namespace: &str, identity: &str) -> Operator {
        let client = client_from(path).await;
        let policy = NamespacePolicy {
            allowed: vec![namespace.to_string()],
            opt_in_label: String::new(),
            operator_namespace: "havoc-system".into(),
            allow_protected: false,
        };
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "havoc-operator".into(),
                instance: Some(identity.into()),
            },
        );
        let ctx = Context::new(
            client,
            Arc::new(havoc_operator::DisabledAgentPool::new("e2e: no agents")),
            policy,
            recorder,
            havoc_operator::metrics::Metrics::new(),
            Duration::from_secs(30),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let signal = havoc_operator::shutdown_signal(async move {
            let _ = rx.await;
        });
        let task = tokio::spawn(havoc_operator::run_controllers(Arc::new(ctx), signal));
        Operator {
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .is_err()
            {
                abort.abort();
                panic!("the operator did not stop within 15 s of its shutdown signal");
            }
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cleanup.

pub async fn remove_namespace(client: &kube::Client, ns: &str) -> Result<(), String> {
    let strip = json!({"metadata": {"finalizers": null}});
    macro_rules! unfinalize {
        ($k:ty) => {{
            let api: Api<$k> = Api::namespaced(client.clone(), ns);
            if let Ok(list) = api.list(&ListParams::default()).await {
                for o in list.items {
                    let _ = api
                        .patch(
                            &o.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&strip),
                        )
                        .await;
                    let _ = api.delete(&o.name_any(), &DeleteParams::default()).await;
                }
            }
        }};
    }
    unfinalize!(Schedule);
    unfinalize!(Workflow);
    unfinalize!(StatusCheck);
    unfinalize!(PodChaos);
    unfinalize!(NetworkChaos);
    unfinalize!(StressChaos);
    let nss: Api<Namespace> = Api::all(client.clone());
    let _ = nss.delete(ns, &DeleteParams::default()).await;
    let start = Instant::now();
    loop {
        match nss.get_opt(ns).await {
            Ok(None) => return Ok(()),
            _ if start.elapsed() > Duration::from_secs(90) => {
                return Err(format!("namespace {ns} still there after 90 s"))
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

pub struct Cleanup {
    pub kubeconfig: String,
    pub namespace: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(ns) = self.namespace.take() else {
            return;
        };
        let path = self.kubeconfig.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let r = rt.block_on(async move {
                let client = client_from(&path).await;
                remove_namespace(&client, &ns).await
            });
            let _ = tx.send(r);
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("e2e cleanup: {e}"),
            Err(_) => eprintln!("e2e cleanup: timed out"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

pub async fn wait_workflow(
    api: &Api<Workflow>,
    name: &str,
    what: &str,
    pred: impl Fn(&WorkflowStatus) -> bool,
) -> WorkflowStatus {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < WAIT {
        last = api.get(name).await.ok().and_then(|o| o.status);
        if last.as_ref().is_some_and(&pred) {
            return last.expect("status");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("workflow {name}: timed out waiting for {what}; last status: {last:#?}");
}

pub fn node<'a>(st: &'a WorkflowStatus, template: &str) -> &'a WorkflowNode {
    st.nodes
        .iter()
        .find(|n| n.template == template)
        .unwrap_or_else(|| panic!("no node of template {template}: {:#?}", st.nodes))
}

pub fn ms(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>) -> i64 {
    t.as_ref().expect("a time").0.as_millisecond()
}
