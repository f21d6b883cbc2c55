//! Cluster mode against a real API server (`../shared/k8s`, `HAVOC_E2E_KUBECONFIG`): create
//! (dry run, then for real), list, open with records and events, pause, resume and delete a
//! PodChaos through the dashboard's API; with token forwarding, a request without credentials
//! is refused before any call, and a user's RBAC decides what they see and may change.
//!
//! No operator runs here (the operator's own e2e suite may run at the same time in the same
//! cluster); the status and the event an operator would write are written by the test, as
//! admin, and the dashboard must show them. Without `HAVOC_E2E_KUBECONFIG` the tests say they
//! skipped, and fail when `CI` is set. Each test works in a namespace of its own, removed (with
//! any finalizer stripped first) by a guard.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{request, Server};
use havoc_k8s::PodChaos;
use k8s_openapi::api::core::v1::{Event, Namespace, ObjectReference, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var("HAVOC_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ if std::env::var_os("CI").is_some() => panic!(
            "CI is set but HAVOC_E2E_KUBECONFIG is not: the dashboard's cluster tests must run \
             in CI (start ../shared/k8s and source its env.sh)"
        ),
        _ => {
            println!("skipped: HAVOC_E2E_KUBECONFIG not set (start ../shared/k8s, source env.sh)");
            None
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn admin(path: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("read the kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(cfg).expect("client")
}

/// The namespace of one test and the CRDs; removes the namespace (finalizers of chaos objects
/// in it stripped first, in case an operator elsewhere added one) on drop.
struct Scratch {
    kubeconfig: PathBuf,
    namespace: String,
}

impl Scratch {
    fn new(kubeconfig: &Path, tag: &str) -> Scratch {
        let namespace = format!(
            "havoc-dash-{tag}-{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .subsec_nanos()
        );
        let s = Scratch {
            kubeconfig: kubeconfig.to_path_buf(),
            namespace,
        };
        runtime().block_on(async {
            let client = admin(kubeconfig).await;
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            for crd in havoc_k8s::crds() {
                let name = crd.metadata.name.clone().expect("crd name");
                crds.patch(
                    &name,
                    &PatchParams::apply("havoc-dashboard-test").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .expect("install CRD");
                let mut established = false;
                for _ in 0..100 {
                    established = crds
                        .get(&name)
                        .await
                        .ok()
                        .and_then(|c| c.status)
                        .and_then(|st| st.conditions)
                        .is_some_and(|c| {
                            c.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        });
                    if established {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert!(established, "CRD {name} not Established in 10 s");
            }
            let ns: Api<Namespace> = Api::all(client);
            let obj: Namespace = serde_json::from_value(json!({
                "metadata": { "name": s.namespace }
            }))
            .expect("namespace");
            ns.create(&PostParams::default(), &obj)
                .await
                .expect("create the test namespace");
        });
        s
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let kubeconfig = self.kubeconfig.clone();
        let namespace = self.namespace.clone();
        // Its own thread and runtime: this may run while a test's runtime unwinds.
        let _ = std::thread::spawn(move || {
            runtime().block_on(async {
                let client = admin(&kubeconfig).await;
                let pcs: Api<PodChaos> = Api::namespaced(client.clone(), &namespace);
                if let Ok(list) = pcs.list(&Default::default()).await {
                    for o in list.items {
                        let name = o.metadata.name.unwrap_or_default();
                        let _ = pcs
                            .patch(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                            )
                            .await;
                    }
                }
                let ns: Api<Namespace> = Api::all(client);
                let _ = ns.delete(&namespace, &DeleteParams::default()).await;
                for _ in 0..300 {
                    if ns.get_opt(&namespace).await.ok().flatten().is_none() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                eprintln!("namespace {namespace} still there after 30 s");
            })
        })
        .join();
    }
}

/// A status as the operator writes it: one target injected, one failed (records in their
/// compact wire form, made by the operator's own types).
fn operator_status() -> serde_json::Value {
    use havoc_k8s::status::{ChaosStatus, Phase, Record, RecordPhase};
    let record = |name: &str, phase, err: Option<&str>| Record {
        namespace: "shop".into(),
        name: name.into(),
        node: "node-1".into(),
        container_id: "0123456789ab".into(),
        pod_uid: String::new(),
        phase,
        injected: 1,
        recovered: 0,
        last_error: err.map(str::to_string),
        since_ms: None,
        served_ms: 0,
    };
    let st = ChaosStatus {
        phase: Phase::Running,
        records: vec![
            record("web-0", RecordPhase::Injected, None),
            record("web-1", RecordPhase::Failed, Some("agent unreachable")),
        ],
        ..Default::default()
    };
    let mut v = serde_json::to_value(st).expect("status");
    v["counts"]["injected"] = 1.into();
    v["counts"]["failed"] = 1.into();
    v["conditions"] = json!([{"type": "AllInjected", "status": "False", "reason": "Failed",
        "message": "1 of 2 failed", "lastTransitionTime": "2026-12-01T00:00:00Z"}]);
    v
}

const POD_CHAOS: &str = "apiVersion: havoc.dev/v1alpha1
kind: PodChaos
metadata:
  name: kill-web
spec:
  action: pod-kill
  mode: one
  selector:
    labelSelectors:
      app: web
";

#[test]
fn create_inspect_pause_resume_and_delete_a_pod_chaos_with_the_users_kubeconfig() {
    let Some(kc) = kubeconfig() else { return };
    let scratch = Scratch::new(&kc, "kc");
    let ns = scratch.namespace.clone();
    let s = Server::start_cluster(&kc, false);

    let info = s.get("/api/cluster").json();
    assert_eq!(info["enabled"], true);
    assert_eq!(info["mode"], "kubeconfig");
    assert!(
        info["kinds"]
            .as_array()
            .expect("kinds")
            .iter()
            .any(|k| k["plural"] == "podchaos"),
        "{info}"
    );

    // Havoc's own checks first: a wrong field is refused at its line and column, nothing created.
    let bad = POD_CHAOS.replace("mode: one", "mode: oen");
    let r = s.post(&format!("/api/cluster/objects?namespace={ns}"), &bad);
    assert_eq!(r.status, 422, "{}", r.body);
    let e = &r.json()["errors"][0];
    assert_eq!(e["line"], 7, "{}", r.body);
    assert!(
        e["path"].as_str().expect("path").contains("mode"),
        "{}",
        r.body
    );

    // A dry run: the API server checks it and nothing is created.
    let r = s.post(
        &format!("/api/cluster/objects?namespace={ns}&dryRun=true"),
        POD_CHAOS,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["dryRun"], true);
    let listed = s
        .get(&format!("/api/cluster/objects?namespace={ns}"))
        .json();
    assert_eq!(
        listed["objects"].as_array().expect("objects").len(),
        0,
        "{listed}"
    );

    let r = s.post(&format!("/api/cluster/objects?namespace={ns}"), POD_CHAOS);
    assert_eq!(r.status, 201, "{}", r.body);
    // A second create is the API server's conflict, passed on as it is.
    let again = s.post(&format!("/api/cluster/objects?namespace={ns}"), POD_CHAOS);
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.json()["error"]
        .as_str()
        .expect("error")
        .contains("already exists"));

    // What an operator would write: a status with records, and an event on the object.
    runtime().block_on(async {
        let client = admin(&kc).await;
        let pcs: Api<PodChaos> = Api::namespaced(client.clone(), &ns);
        let pc = pcs.get("kill-web").await.expect("get");
        pcs.patch_status(
            "kill-web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": operator_status() })),
        )
        .await
        .expect("status");
        let events: Api<Event> = Api::namespaced(client, &ns);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        events
            .create(
                &PostParams::default(),
                &Event {
                    metadata: ObjectMeta {
                        generate_name: Some("kill-web-".into()),
                        ..Default::default()
                    },
                    involved_object: ObjectReference {
                        api_version: Some("havoc.dev/v1alpha1".into()),
                        kind: Some("PodChaos".into()),
                        name: Some("kill-web".into()),
                        namespace: Some(ns.clone()),
                        uid: pc.metadata.uid.clone(),
                        ..Default::default()
                    },
                    reason: Some("Injected".into()),
                    message: Some("pod-kill on web-0".into()),
                    type_: Some("Normal".into()),
                    first_timestamp: Some(now.clone()),
                    last_timestamp: Some(now),
                    count: Some(1),
                    ..Default::default()
                },
            )
            .await
            .expect("event");
    });

    let listed = s
        .get(&format!("/api/cluster/objects?namespace={ns}"))
        .json();
    let objs = listed["objects"].as_array().expect("objects");
    assert_eq!(objs.len(), 1, "{listed}");
    assert_eq!(objs[0]["name"], "kill-web");
    assert_eq!(objs[0]["phase"], "Running");
    assert_eq!(objs[0]["paused"], false);
    // Across every namespace (admin may list cluster-wide): ours is among them.
    let all = s.get("/api/cluster/objects").json();
    assert!(
        all["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .any(|o| o["namespace"] == ns.as_str() && o["name"] == "kill-web"),
        "{all}"
    );

    let one = s
        .get(&format!("/api/cluster/objects/podchaos/{ns}/kill-web"))
        .json();
    assert_eq!(one["object"]["status"]["counts"]["injected"], 1, "{one}");
    // The records, decoded from the wire form into one row per target.
    let records = one["records"].as_array().expect("records");
    assert_eq!(records.len(), 2, "{one}");
    let failed = records.iter().find(|r| r["pod"] == "web-1").expect("web-1");
    assert_eq!(failed["phase"], "Failed");
    assert_eq!(failed["lastError"], "agent unreachable");
    assert_eq!(failed["node"], "node-1");
    assert_eq!(one["events"][0]["reason"], "Injected", "{one}");
    assert_eq!(one["events"][0]["message"], "pod-kill on web-0");

    let paused = s.post(
        &format!("/api/cluster/objects/podchaos/{ns}/kill-web/pause"),
        "",
    );
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.json()["summary"]["paused"], true);
    let annotations = runtime().block_on(async {
        let pcs: Api<PodChaos> = Api::namespaced(admin(&kc).await, &ns);
        pcs.get("kill-web").await.expect("get").metadata.annotations
    });
    assert_eq!(
        annotations
            .unwrap_or_default()
            .get("havoc.dev/pause")
            .map(String::as_str),
        Some("true")
    );
    let resumed = s.post(
        &format!("/api/cluster/objects/podchaos/{ns}/kill-web/resume"),
        "",
    );
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_eq!(resumed.json()["summary"]["paused"], false);
    let unknown = s.post(
        &format!("/api/cluster/objects/podchaos/{ns}/kill-web/explode"),
        "",
    );
    assert_eq!(unknown.status, 404);

    // State changes need the page's token: a cross-site DELETE is refused, the object stays.
    let cross = request(
        s.addr,
        "DELETE",
        &format!("/api/cluster/objects/podchaos/{ns}/kill-web"),
        &[("Host", &s.host()), ("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let deleted = s.send(
        "DELETE",
        &format!("/api/cluster/objects/podchaos/{ns}/kill-web"),
        "",
        None,
    );
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    let gone = runtime().block_on(async {
        let pcs: Api<PodChaos> = Api::namespaced(admin(&kc).await, &ns);
        for _ in 0..100 {
            if pcs.get_opt("kill-web").await.expect("get").is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert!(gone, "the PodChaos is still there 10 s after delete");
    let missing = s.get(&format!("/api/cluster/objects/podchaos/{ns}/kill-web"));
    assert_eq!(missing.status, 404, "{}", missing.body);
}

#[test]
fn forwarded_tokens_carry_the_users_rbac_and_no_token_is_refused() {
    let Some(kc) = kubeconfig() else { return };
    let scratch = Scratch::new(&kc, "rbac");
    let ns = scratch.namespace.clone();
    // A user who may read PodChaos in this namespace only, and change nothing.
    let token = runtime().block_on(async {
        let client = admin(&kc).await;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "viewer"}})).expect("sa");
        sas.create(&PostParams::default(), &sa).await.expect("sa");
        let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
        roles
            .create(
                &PostParams::default(),
                &Role {
                    metadata: ObjectMeta {
                        name: Some("chaos-viewer".into()),
                        ..Default::default()
                    },
                    rules: Some(vec![PolicyRule {
                        api_groups: Some(vec!["havoc.dev".into()]),
                        resources: Some(vec!["podchaos".into()]),
                        verbs: vec!["get".into(), "list".into()],
                        ..Default::default()
                    }]),
                },
            )
            .await
            .expect("role");
        let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
        rbs.create(
            &PostParams::default(),
            &RoleBinding {
                metadata: ObjectMeta {
                    name: Some("chaos-viewer".into()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "chaos-viewer".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "viewer".into(),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                }]),
            },
        )
        .await
        .expect("rolebinding");
        let pcs: Api<PodChaos> = Api::namespaced(client, &ns);
        let pc: PodChaos = serde_yaml_ng::from_str(POD_CHAOS).expect("podchaos");
        pcs.create(&PostParams::default(), &pc)
            .await
            .expect("create");
        let tr = sas
            .create_token_request(
                "viewer",
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"spec": {"audiences": [], "expirationSeconds": 600}}),
                )
                .expect("token request"),
            )
            .await
            .expect("token");
        tr.status.expect("token status").token
    });

    let s = Server::start_cluster(&kc, true);
    assert_eq!(s.get("/api/cluster").json()["mode"], "forward-token");

    // No token: refused before any call (the kubeconfig's admin credentials are never used).
    let r = s.get(&format!("/api/cluster/objects?namespace={ns}"));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = s.send(
        "POST",
        &format!("/api/cluster/objects/podchaos/{ns}/kill-web/pause"),
        "",
        None,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // A wrong token: the API server's 401, passed on.
    let r = s.send(
        "GET",
        &format!("/api/cluster/objects?namespace={ns}"),
        "",
        Some("not-a-token"),
    );
    assert_eq!(r.status, 401, "{}", r.body);

    // The viewer sees the object in its namespace.
    let r = s.send(
        "GET",
        &format!("/api/cluster/objects?namespace={ns}"),
        "",
        Some(&token),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let objs = v["objects"].as_array().expect("objects");
    assert_eq!(objs.len(), 1, "{v}");
    assert_eq!(objs[0]["name"], "kill-web");
    // Other kinds in this namespace, and everything cluster-wide, are named as forbidden.
    assert!(
        v["forbidden"]
            .as_array()
            .expect("forbidden")
            .iter()
            .any(|f| f["kind"] == "NetworkChaos"),
        "{v}"
    );
    let wide = s
        .send("GET", "/api/cluster/objects", "", Some(&token))
        .json();
    assert!(
        !wide["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .any(|o| o["namespace"] != ns.as_str()),
        "the viewer saw objects outside its namespace: {wide}"
    );
    assert!(
        !wide["forbidden"].as_array().expect("forbidden").is_empty(),
        "{wide}"
    );

    // It may not pause or delete: the API server's 403 comes back, nothing changes.
    let r = s.send(
        "POST",
        &format!("/api/cluster/objects/podchaos/{ns}/kill-web/pause"),
        "",
        Some(&token),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = s.send(
        "DELETE",
        &format!("/api/cluster/objects/podchaos/{ns}/kill-web"),
        "",
        Some(&token),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = s.send(
        "POST",
        &format!("/api/cluster/objects?namespace={ns}"),
        &POD_CHAOS.replace("kill-web", "kill-web-2"),
        Some(&token),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let still = runtime().block_on(async {
        let pcs: Api<PodChaos> = Api::namespaced(admin(&kc).await, &ns);
        let list = pcs.list(&Default::default()).await.expect("list");
        list.items
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.annotations.clone().unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(still.len(), 1, "{still:?}");
    assert!(!still[0].1.contains_key("havoc.dev/pause"), "{still:?}");
}
