//! Container id -> host pid of the container's init process, and pid -> fault target.
//!
//! A container is resolved through its runtime's API when that runtime's socket is on this node
//! (containerd: the tasks service `Get`, in `k8s.io`, the configured namespaces, then every other
//! namespace), and otherwise by scanning `/proc/*/cgroup` for the id, which works for any runtime
//! and both cgroup v1 and v2 (`cri-containerd-ID.scope`, `docker-ID.scope`, `crio-ID.scope`,
//! `/kubepods/.../ID`, `/NAMESPACE/ID`). The runtime is detected per node from the sockets
//! present; nothing is configured cluster-wide.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use havoc_engine::resolve::Protection;
use havoc_faults::procinfo::{self, ProcInfo};
use havoc_faults::Target;
use havoc_spec::FaultSpec;

/// Where this node's container runtimes listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtimes {
    pub containerd_socket: PathBuf,
    /// containerd namespaces searched after `k8s.io` (then every other namespace is).
    pub containerd_namespaces: Vec<String>,
    pub crio_socket: PathBuf,
    pub docker_socket: PathBuf,
}

impl Default for Runtimes {
    fn default() -> Self {
        Runtimes {
            containerd_socket: "/run/containerd/containerd.sock".into(),
            containerd_namespaces: vec!["k8s.io".into(), "default".into(), "moby".into()],
            crio_socket: "/var/run/crio/crio.sock".into(),
            docker_socket: "/var/run/docker.sock".into(),
        }
    }
}

impl Runtimes {
    /// The runtimes whose socket exists on this node, e.g. `["containerd"]`.
    pub fn detect(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (name, p) in [
            ("containerd", &self.containerd_socket),
            ("cri-o", &self.crio_socket),
            ("docker", &self.docker_socket),
        ] {
            if is_socket(p) {
                v.push(name.to_string());
            }
        }
        v
    }
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResolveError {
    #[error("invalid container id `{given}`: {why}")]
    InvalidId { given: String, why: String },
    #[error("container `{id}` not found ({searched})")]
    NotFound { id: String, searched: String },
    #[error("pid {pid} does not exist")]
    NoPid { pid: i32 },
    #[error("pid {pid} ({comm}) is protected and never a target: {why}")]
    Protected { pid: i32, comm: String, why: String },
}

/// A parsed container reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// `containerd`, `cri-o`, `docker`, or None for a bare id.
    pub runtime: Option<&'static str>,
    pub id: String,
}

/// Parses `containerd://ID`, `cri-o://ID`, `docker://ID` or a bare `ID`.
pub fn parse_container_id(s: &str) -> Result<ContainerRef, ResolveError> {
    let invalid = |why: &str| ResolveError::InvalidId {
        given: s.to_string(),
        why: why.to_string(),
    };
    let (runtime, id) = match s.split_once("://") {
        Some(("containerd", id)) => (Some("containerd"), id),
        Some(("cri-o", id)) => (Some("cri-o"), id),
        Some(("docker", id)) => (Some("docker"), id),
        Some((other, _)) => {
            return Err(invalid(&format!(
            "unknown runtime `{other}`: expected containerd://, cri-o://, docker:// or a bare id"
        )))
        }
        None => (None, s),
    };
    if id.is_empty() || id.len() > 128 {
        return Err(invalid("the id must be 1..=128 characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || id.starts_with('.')
    {
        return Err(invalid(
            "the id may contain only letters, digits, `-`, `_` and `.`",
        ));
    }
    Ok(ContainerRef {
        runtime,
        id: id.to_string(),
    })
}

/// True if a cgroup path belongs to container `id`: one path segment is the id, optionally with a
/// runtime's prefix and `.scope` suffix (a full id may be abbreviated to 12+ characters).
/// cri-o's `crio-conmon-ID` (the monitor, not the container) never matches.
pub fn cgroup_matches(path: &str, id: &str) -> bool {
    path.split('/').any(|seg| {
        if seg.starts_with("crio-conmon-") {
            return false;
        }
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let seg = ["cri-containerd-", "docker-", "crio-", "libpod-"]
            .iter()
            .find_map(|p| seg.strip_prefix(p))
            .unwrap_or(seg);
        seg == id || (id.len() >= 12 && seg.len() >= 64 && seg.starts_with(id))
    })
}

/// The init process among `members` (pid, ppid) of one container: a member whose parent is not
/// a member (the runtime shim's child). With several, the lowest pid.
pub fn init_of(members: &[(i32, i32)]) -> Option<i32> {
    let set: HashSet<i32> = members.iter().map(|(p, _)| *p).collect();
    members
        .iter()
        .filter(|(_, ppid)| !set.contains(ppid))
        .map(|(p, _)| *p)
        .min()
}

/// Finds a container's init pid by scanning `/proc/*/cgroup` (any runtime, cgroup v1 or v2).
pub fn via_proc(id: &str) -> Option<i32> {
    let members: Vec<(i32, i32)> = procinfo::all_processes()
        .into_iter()
        .filter(|p| !p.kernel_thread && !p.is_dead())
        .filter(|p| {
            procinfo::cgroups_of(p.pid)
                .iter()
                .any(|(_, _, path)| cgroup_matches(path, id))
        })
        .map(|p| (p.pid, p.ppid))
        .collect();
    init_of(&members)
}

/// Asks containerd (tasks `Get`) for the pid of container `id`: in `k8s.io`, in `namespaces`,
/// then in every namespace containerd lists. Returns the pid and the namespace it was found in.
pub async fn via_containerd(
    socket: &Path,
    namespaces: &[String],
    id: &str,
) -> Result<Option<(i32, String)>, String> {
    use containerd_client::services::v1::namespaces_client::NamespacesClient;
    use containerd_client::services::v1::tasks_client::TasksClient;
    use containerd_client::services::v1::{GetRequest, ListNamespacesRequest};
    use tonic::Request;

    let channel = tokio::time::timeout(
        Duration::from_secs(3),
        containerd_client::connect(socket.to_path_buf()),
    )
    .await
    .map_err(|_| format!("containerd at {} did not answer in 3s", socket.display()))?
    .map_err(|e| format!("cannot connect to containerd at {}: {e}", socket.display()))?;
    let mut order: Vec<String> = vec!["k8s.io".into()];
    for n in namespaces {
        if !order.contains(n) {
            order.push(n.clone());
        }
    }
    let listed = NamespacesClient::new(channel.clone())
        .list(ListNamespacesRequest::default())
        .await
        .map(|r| r.into_inner().namespaces)
        .unwrap_or_default();
    for n in listed {
        if !order.contains(&n.name) {
            order.push(n.name);
        }
    }
    let mut tasks = TasksClient::new(channel);
    for ns in order {
        let mut req = Request::new(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        });
        let Ok(v) = ns.parse() else { continue };
        req.metadata_mut().insert("containerd-namespace", v);
        match tasks.get(req).await {
            Ok(r) => {
                if let Some(p) = r.into_inner().process {
                    if p.pid > 0 {
                        return Ok(Some((p.pid as i32, ns)));
                    }
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(format!("containerd tasks Get in {ns}: {}", s.message())),
        }
    }
    Ok(None)
}

/// How a container was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub pid: i32,
    /// e.g. `containerd API (namespace k8s.io)`, `/proc cgroup scan`.
    pub via: String,
}

/// Resolves a container reference to its init pid: the runtime's API first when its socket is
/// here (containerd), else (or when the API does not know it) the /proc scan.
pub async fn resolve_container(rt: &Runtimes, s: &str) -> Result<Resolved, ResolveError> {
    let c = parse_container_id(s)?;
    let mut searched = Vec::new();
    let try_containerd = matches!(c.runtime, None | Some("containerd"));
    if try_containerd && is_socket(&rt.containerd_socket) {
        match via_containerd(&rt.containerd_socket, &rt.containerd_namespaces, &c.id).await {
            Ok(Some((pid, ns))) => {
                return Ok(Resolved {
                    pid,
                    via: format!("containerd API (namespace {ns})"),
                })
            }
            Ok(None) => searched.push("containerd API: no such task".to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "containerd API failed; falling back to /proc");
                searched.push(format!("containerd API: {e}"));
            }
        }
    }
    let id = c.id.clone();
    let found = tokio::task::spawn_blocking(move || via_proc(&id))
        .await
        .ok()
        .flatten();
    match found {
        Some(pid) => Ok(Resolved {
            pid,
            via: "/proc cgroup scan".into(),
        }),
        None => {
            searched.push("no process in /proc has it in its cgroup path".into());
            Err(ResolveError::NotFound {
                id: c.id,
                searched: searched.join("; "),
            })
        }
    }
}

/// Checks `pid` exists and is not protected, and returns its identity.
pub fn checked_process(pid: i32, protect: &Protection) -> Result<ProcInfo, ResolveError> {
    let p = ProcInfo::read(pid).ok_or(ResolveError::NoPid { pid })?;
    if p.is_dead() {
        return Err(ResolveError::NoPid { pid });
    }
    if let Some(why) = protect.reason(&p) {
        return Err(ResolveError::Protected {
            pid,
            comm: p.comm,
            why: why.into(),
        });
    }
    Ok(p)
}

/// The fault target for a process: its network namespace for network faults, the process itself
/// otherwise. `label` names it in reports (e.g. `container 0123456789ab`).
///
/// For a container the process is its init process, so: TimeChaos patches the vDSO of every
/// thread of it (and of the children it forks afterwards), SyscallChaos traces it (and its
/// later children), IOChaos mounts in its mount namespace, which is the container's: the
/// FUSE mount is made from a thread that gave itself a private fs context first
/// (`havoc_sys::mount::MountNs::run`), as `setns(CLONE_NEWNS)` requires. Other processes
/// already running in the container (a second process started by a shell, a `kubectl exec`)
/// are not TimeChaos or SyscallChaos targets: one injection holds one target.
pub fn target_for(spec: &FaultSpec, p: &ProcInfo, label: &str) -> Target {
    match spec {
        // DNSChaos and HTTPChaos intercept in the pod's network namespace (shared by all its
        // containers), as host mode does with a netns selector.
        FaultSpec::NetworkChaos(_) | FaultSpec::DNSChaos(_) | FaultSpec::HTTPChaos(_) => {
            Target::Netns {
                path: procinfo::netns_path(p.pid),
                label: label.to_string(),
            }
        }
        FaultSpec::ProcessChaos(_)
        | FaultSpec::StressChaos(_)
        | FaultSpec::IOChaos(_)
        | FaultSpec::TimeChaos(_)
        | FaultSpec::SyscallChaos(_) => Target::Process {
            pid: p.pid,
            start_time: p.start_time,
            name: p.comm.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "3f1a9c0d2b7e4f6a8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b";

    #[test]
    fn ids_parse_with_and_without_runtime() {
        assert_eq!(
            parse_container_id("containerd://abc").expect("ok"),
            ContainerRef {
                runtime: Some("containerd"),
                id: "abc".into()
            }
        );
        assert_eq!(parse_container_id("abc").expect("ok").runtime, None);
        let e = parse_container_id("rkt://abc").expect_err("unknown runtime");
        assert!(e.to_string().contains("unknown runtime `rkt`"), "{e}");
        assert!(parse_container_id("docker://").is_err());
        assert!(parse_container_id("a/../b").is_err());
    }

    #[test]
    fn cgroup_layouts_match() {
        for path in [
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{FULL}.scope"),
            format!("/system.slice/docker-{FULL}.scope"),
            format!("/kubepods/besteffort/pod1234/{FULL}"),
            format!("/kubepods.slice/kubepods-pod1.slice/crio-{FULL}.scope"),
            format!("/default/{FULL}"),
        ] {
            assert!(cgroup_matches(&path, FULL), "{path}");
            assert!(cgroup_matches(&path, &FULL[..12]), "short id in {path}");
            assert!(!cgroup_matches(&path, "ffffffffffff"), "{path}");
        }
        assert!(!cgroup_matches(
            &format!("/kubepods.slice/crio-conmon-{FULL}.scope"),
            FULL
        ));
        assert!(cgroup_matches("/default/web-1", "web-1"));
        assert!(
            !cgroup_matches("/default/web-10", "web-1"),
            "short names match whole"
        );
    }

    #[test]
    fn process_kinds_target_the_process_and_network_its_netns() {
        let me = ProcInfo::read(std::process::id() as i32).expect("own process");
        for json in [
            r#"{"kind": "TimeChaos", "spec": {"timeOffset": "-5m"}}"#,
            r#"{"kind": "SyscallChaos", "spec": {"syscalls": ["openat"], "errno": "EIO"}}"#,
            r#"{"kind": "IOChaos", "spec": {"action": "fault", "volumePath": "/data", "errno": 5}}"#,
        ] {
            let f = crate::fault::parse_fault_json(json)
                .unwrap_or_else(|e| panic!("{}", e.render("fault_json")));
            match target_for(&f.spec, &me, "container x") {
                Target::Process {
                    pid, start_time, ..
                } => {
                    assert_eq!((pid, start_time), (me.pid, me.start_time), "{json}")
                }
                other => panic!("{json}: {other:?}"),
            }
        }
        for json in [
            r#"{"kind": "NetworkChaos", "spec": {"action": "loss", "loss": {"loss": "5"}}}"#,
            r#"{"kind": "DNSChaos", "spec": {"action": "error", "patterns": ["example.com"]}}"#,
            r#"{"kind": "HTTPChaos", "spec": {"target": "Request", "port": 80, "abort": true}}"#,
        ] {
            let f = crate::fault::parse_fault_json(json)
                .unwrap_or_else(|e| panic!("{}", e.render("fault_json")));
            match target_for(&f.spec, &me, "container x") {
                Target::Netns { path, .. } => {
                    assert_eq!(path, procinfo::netns_path(me.pid), "{json}")
                }
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn init_is_the_member_whose_parent_is_outside() {
        // shim 100 (outside) -> init 200 -> children 300, 301 -> 400
        let members = [(300, 200), (200, 100), (301, 200), (400, 300)];
        assert_eq!(init_of(&members), Some(200));
        assert_eq!(init_of(&[]), None);
    }
}
