//! A private containerd (Debian's, with runc) for tests, and containers in their own network
//! namespaces. Everything it creates is named uniquely and removed by the guards' `Drop`:
//! containers, tasks, snapshots, network namespaces, veths, cgroups, shims, mounts, the daemon
//! and its temp dir.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use crate::host;

/// The containerd namespace the testbed uses: kubelet's, so code written for Kubernetes nodes
/// finds the containers where it would look on a real node.
pub const NAMESPACE: &str = "k8s.io";

/// The reference of the image that [`Containerd::run`] uses.
pub const IMAGE: &str = "docker.io/library/havoc-busybox:local";

const CTR_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Where containerd 1.6 puts shim sockets and runc state, whatever its `state` setting says.
const RUN_CONTAINERD: &str = "/run/containerd";

/// What must be removed for one container, shared between its guard and the daemon's guard so
/// that whichever is dropped first cleans it up.
#[derive(Debug, Clone)]
struct Record {
    netns_name: String,
    host_veth: String,
    cgroups: Vec<PathBuf>,
}

#[derive(Debug)]
struct Shared {
    address: PathBuf,
    namespace: String,
    dir: PathBuf,
    records: Mutex<HashMap<String, Record>>,
}

impl Shared {
    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            // ctr reads these; make sure a caller's environment cannot redirect us.
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("CONTAINERD_SNAPSHOTTER");
        cmd
    }

    fn ctr_run(&self, args: &[&str]) -> anyhow::Result<Output> {
        host::run_cmd(self.ctr().args(args), CTR_TIMEOUT)
    }

    /// `(pid, status)` of a task, from `ctr task ls` (`None` if there is no task).
    fn task(&self, id: &str) -> anyhow::Result<Option<(i32, String)>> {
        let out = self.ctr_run(&["task", "ls"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .find_map(|line| {
                let mut cols = line.split_whitespace();
                (cols.next()? == id).then_some(())?;
                let pid = cols.next()?.parse().ok()?;
                Some((pid, cols.next()?.to_string()))
            }))
    }

    /// Removes the task, the container (with its snapshot), the netns, the veth and the cgroups
    /// of `id`. Best effort and idempotent; returns what failed.
    fn cleanup(&self, id: &str, record: &Record) -> Vec<String> {
        let mut errors = Vec::new();
        // `--force` kills the task with SIGKILL and waits for it before deleting it.
        if let Err(e) = self.ctr_run(&["task", "delete", "--force", id]) {
            if !is_not_found(&e) {
                errors.push(format!("{e:#}"));
            }
        }
        if let Err(e) = self.ctr_run(&["container", "delete", id]) {
            if !is_not_found(&e) {
                errors.push(format!("{e:#}"));
            }
        }
        if !record.netns_name.is_empty()
            && Path::new("/run/netns").join(&record.netns_name).exists()
        {
            if let Err(e) = host::ip(&["netns", "delete", &record.netns_name]) {
                errors.push(format!("{e:#}"));
            }
        }
        // The host end goes with its peer's namespace; delete it in case the netns was not ours.
        if !record.host_veth.is_empty()
            && Path::new("/sys/class/net").join(&record.host_veth).exists()
        {
            let _ = host::ip(&["link", "delete", &record.host_veth]);
        }
        for dir in &record.cgroups {
            if let Err(e) = host::remove_cgroup(dir) {
                errors.push(e);
            }
        }
        errors
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    let s = format!("{e:#}");
    s.contains("not found") || s.contains("connection refused") || s.contains("no such file")
}

/// A containerd started on a private socket, root and state dir under a unique temp dir. Dropping
/// it removes every container it still holds, stops the daemon and its shims, unmounts what is
/// left under the temp dir, removes the cgroups of its containers and the temp dir.
#[derive(Debug)]
pub struct Containerd {
    shared: Arc<Shared>,
    pid: i32,
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<std::thread::JoinHandle<()>>,
    tmp: Option<tempfile::TempDir>,
    image: Mutex<Option<String>>,
}

/// Live testbeds in this process, and which parts of /run/containerd existed before the first of
/// them started: the last one to stop removes the (empty) ones that did not.
static LIVE: Mutex<(usize, Vec<(PathBuf, bool)>)> = Mutex::new((0, Vec::new()));

fn live_enter() {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if live.0 == 0 {
        live.1 = run_containerd_dirs()
            .into_iter()
            .map(|d| {
                let existed = d.exists();
                (d, existed)
            })
            .collect();
    }
    live.0 += 1;
}

fn live_leave() {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.0 = live.0.saturating_sub(1);
    if live.0 == 0 {
        // Deepest first; only what did not exist before, and only if empty.
        for (dir, existed) in live.1.iter().rev() {
            if !existed {
                host::rmdir_if_empty(dir);
            }
        }
    }
}

impl Containerd {
    /// Starts containerd on a private socket/root/state under a unique temp dir; waits until it
    /// answers. The daemon gets SIGKILL if this process dies without dropping the guard.
    pub fn start() -> anyhow::Result<Containerd> {
        for tool in ["containerd", "ctr", "runc", "containerd-shim-runc-v2", "ip"] {
            ensure!(
                which(tool).is_some(),
                "`{tool}` is not on PATH: install Debian's containerd, runc and iproute2"
            );
        }
        for e in reap_stale() {
            eprintln!("havoc-testbed: cleanup of a crashed testbed: {e}");
        }
        let tmp = tempfile::Builder::new()
            .prefix("havoc-tb-")
            .tempdir()
            .context("failed to create the testbed temp dir")?;
        let dir = tmp.path().to_path_buf();
        let address = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir))
            .with_context(|| format!("failed to write {}", config.display()))?;
        let log = std::fs::File::create(dir.join("containerd.log"))
            .context("failed to create containerd.log")?;

        let (pid_tx, pid_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let exited = Arc::new(Mutex::new(None::<String>));
        let exited_k = Arc::clone(&exited);
        let config_k = config.clone();
        // The keeper thread spawns the daemon (so PR_SET_PDEATHSIG is tied to a thread that lives
        // exactly as long as this guard), reaps it, and stops it when the guard is dropped.
        let keeper = std::thread::Builder::new()
            .name("havoc-tb-containerd".into())
            .spawn(move || {
                let mut cmd = Command::new("containerd");
                cmd.arg("--config")
                    .arg(&config_k)
                    .stdin(std::process::Stdio::null());
                match log.try_clone() {
                    Ok(l) => cmd.stdout(l).stderr(log),
                    Err(_) => cmd.stdout(log),
                };
                havoc_sys::process::die_with_parent(&mut cmd, libc::SIGKILL);
                let mut child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = pid_tx.send(Err(e));
                        return;
                    }
                };
                let _ = pid_tx.send(Ok(child.id() as i32));
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(Duration::from_millis(50))
                {
                    if let Ok(Some(status)) = child.try_wait() {
                        *exited_k.lock().expect("exit lock") = Some(status.to_string());
                        return;
                    }
                }
                let pid = child.id() as i32;
                let _ = havoc_sys::process::send_signal(pid, libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            })
            .context("failed to spawn the containerd keeper thread")?;
        let pid = pid_rx
            .recv()
            .context("the containerd keeper thread died")?
            .context("failed to start containerd")?;
        // Lets a later start tell a crashed testbed from a live one (see `reap_stale`).
        let _ = std::fs::write(dir.join("containerd.pid"), pid.to_string());

        let shared = Arc::new(Shared {
            address,
            namespace: NAMESPACE.to_string(),
            dir: dir.clone(),
            records: Mutex::new(HashMap::new()),
        });
        let mut me = Containerd {
            shared,
            pid,
            stop: Some(stop_tx),
            keeper: Some(keeper),
            tmp: Some(tmp),
            image: Mutex::new(None),
        };
        live_enter();
        // Wait until it answers on its socket.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = exited.lock().expect("exit lock").clone() {
                let log = std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                me.shutdown();
                bail!(
                    "containerd exited during start-up ({status}); last log lines:\n{}",
                    tail.join("\n")
                );
            }
            let probe = host::run_cmd(me.shared.ctr().arg("version"), Duration::from_secs(5));
            if probe.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                me.shutdown();
                bail!(
                    "containerd did not answer on {} within {START_TIMEOUT:?}",
                    dir.join("containerd.sock").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    /// The containerd gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.shared.address
    }

    /// The containerd namespace the containers live in ([`NAMESPACE`]).
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// The host pid of the containerd daemon.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The private temp dir holding the config, socket, root, state and log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Builds the busybox image and imports it, once per daemon; returns its reference
    /// ([`IMAGE`]). [`Containerd::run`] calls it; call it first to time the import separately.
    pub fn ensure_image(&self) -> anyhow::Result<String> {
        let mut image = self.image.lock().expect("image lock");
        if let Some(name) = image.as_ref() {
            return Ok(name.clone());
        }
        let archive = self.shared.dir.join("busybox-oci.tar");
        crate::build_busybox_image(&archive, IMAGE)?;
        let path = archive.to_string_lossy().into_owned();
        self.shared
            .ctr_run(&["image", "import", &path])
            .context("failed to import the busybox image")?;
        *image = Some(IMAGE.to_string());
        Ok(IMAGE.to_string())
    }

    /// Imports the busybox image (built once per `Containerd`) and runs a container in its own new
    /// network namespace (`ip netns add`, a veth pair to the host side with a /30 of 10.2xx.x.x),
    /// detached, with `argv` as its process. Returns when the task is running.
    ///
    /// `name` (letters, digits, `-`, `_`, at most 40 characters) prefixes the container id, which
    /// gets a random suffix. The container's stdout and stderr go to
    /// [`Container::log_path`].
    pub fn run(&self, name: &str, argv: &[&str]) -> anyhow::Result<Container> {
        ensure!(!argv.is_empty(), "argv for container {name:?} is empty: give the process to run, e.g. [\"sleep\", \"3600\"]");
        let image = self.ensure_image()?;
        self.run_image(name, &image, argv)
    }

    /// Imports an OCI image archive (e.g. from [`crate::build_havoc_image`]) into this daemon's
    /// namespace.
    pub fn import_image(&self, archive: &Path) -> anyhow::Result<()> {
        let path = archive.to_string_lossy().into_owned();
        self.shared
            .ctr_run(&["image", "import", &path])
            .with_context(|| format!("failed to import the image archive {}", archive.display()))?;
        Ok(())
    }

    /// Like [`Containerd::run`], from an image already imported ([`Containerd::import_image`]).
    /// A non-empty `argv` replaces the image's entrypoint and command (as `ctr run` does): give
    /// the full command, e.g. `["/havoc", "agent", ...]`.
    pub fn run_image(&self, name: &str, image: &str, argv: &[&str]) -> anyhow::Result<Container> {
        ensure!(
            !name.is_empty()
                && name.len() <= 40
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "container name {name:?} is invalid: use 1 to 40 letters, digits, '-' or '_'"
        );
        let suffix = format!("{:08x}", rand::random::<u32>());
        let id = format!("{name}-{suffix}");
        let host_veth = format!("htb{suffix}");
        let record = Record {
            netns_name: id.clone(),
            host_veth: host_veth.clone(),
            cgroups: Vec::new(),
        };
        // Register first, so that a failure half-way is cleaned up like a finished container.
        self.shared
            .records
            .lock()
            .expect("records lock")
            .insert(id.clone(), record.clone());
        let mut container = Container {
            id: id.clone(),
            pid: 0,
            netns: Path::new("/run/netns").join(&id),
            host_ip: Ipv4Addr::UNSPECIFIED,
            container_ip: Ipv4Addr::UNSPECIFIED,
            host_veth,
            log: self.shared.dir.join(format!("{id}.log")),
            shared: Arc::clone(&self.shared),
        };
        let (host_ip, container_ip) = pick_subnet()?;
        container.host_ip = host_ip;
        container.container_ip = container_ip;
        setup_netns(&id, &container.host_veth, host_ip, container_ip)?;

        let with_ns = format!("network:{}", container.netns.display());
        let log_uri = format!("file://{}", container.log.display());
        let mut args = vec![
            "run",
            "--detach",
            "--log-uri",
            &log_uri,
            "--with-ns",
            &with_ns,
            image,
            &id,
        ];
        args.extend_from_slice(argv);
        // runc creates /sys/fs/cgroup/*/NS/ID with mkdir -p; another testbed dropping at that very
        // moment can remove the empty NS dir under it, so retry once.
        if let Err(first) = self.shared.ctr_run(&args) {
            let _ = self.shared.ctr_run(&["task", "delete", "--force", &id]);
            let _ = self.shared.ctr_run(&["container", "delete", &id]);
            self.shared.ctr_run(&args).with_context(|| {
                format!("failed to run container {id} (first attempt: {first:#})")
            })?;
        }
        let (pid, status) = self
            .shared
            .task(&id)?
            .with_context(|| format!("container {id} has no task after `ctr run`"))?;
        ensure!(
            status == "RUNNING",
            "container {id} is {status} right after start, not RUNNING"
        );
        container.pid = pid;
        let cgroups = host::cgroup_dirs_of(pid)
            .with_context(|| format!("failed to read the cgroups of container {id}"))?
            .into_iter()
            .filter(|d| d.ends_with(Path::new(&self.shared.namespace).join(&id)))
            .collect::<Vec<_>>();
        if let Some(r) = self
            .shared
            .records
            .lock()
            .expect("records lock")
            .get_mut(&id)
        {
            r.cgroups = cgroups;
        }
        Ok(container)
    }

    fn shutdown(&mut self) {
        let mut errors = Vec::new();
        // Containers first, while the daemon still answers: every record, and anything else
        // that is in this private daemon.
        let records: Vec<(String, Record)> = self
            .shared
            .records
            .lock()
            .expect("records lock")
            .drain()
            .collect();
        let mut ids: Vec<String> = records.iter().map(|(id, _)| id.clone()).collect();
        let mut cgroups: Vec<PathBuf> = Vec::new();
        for (id, record) in &records {
            errors.extend(self.shared.cleanup(id, record));
            cgroups.extend(record.cgroups.iter().cloned());
        }
        if let Ok(out) = self.shared.ctr_run(&["container", "ls", "--quiet"]) {
            for id in String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
            {
                let record = Record {
                    netns_name: String::new(),
                    host_veth: String::new(),
                    cgroups: Vec::new(),
                };
                errors.extend(self.shared.cleanup(id, &record));
                ids.push(id.to_string());
            }
        }
        // Shim socket addresses, from the task state dirs, before the temp dir goes.
        let shim_sockets = shim_sockets(&self.shared.dir, &self.shared.namespace);

        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
        let address = self.shared.address.to_string_lossy().into_owned();
        let shims = host::pids_with_arg("containerd-shim", &address);
        for &pid in &shims {
            let _ = havoc_sys::process::send_signal(pid, libc::SIGKILL);
        }
        if !host::wait_gone(&shims, Duration::from_secs(5)) {
            errors.push(format!("shims {shims:?} did not exit after SIGKILL"));
        }
        for root in host::cgroup_roots() {
            for id in &ids {
                cgroups.push(root.join(&self.shared.namespace).join(id));
            }
        }
        for dir in &cgroups {
            if let Err(e) = host::remove_cgroup(dir) {
                errors.push(e);
            }
        }
        for root in host::cgroup_roots() {
            host::rmdir_if_empty(&root.join(&self.shared.namespace));
        }
        for sock in shim_sockets {
            let _ = std::fs::remove_file(sock);
        }
        errors.extend(host::unmount_below(&self.shared.dir));
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().display().to_string();
            if let Err(e) = tmp.close() {
                errors.push(format!("failed to remove {path}: {e}"));
            }
        }
        for id in &ids {
            host::rmdir_if_empty(
                &Path::new(RUN_CONTAINERD)
                    .join("runc")
                    .join(&self.shared.namespace)
                    .join(id),
            );
        }
        live_leave();
        for e in errors {
            eprintln!("havoc-testbed: cleanup: {e}");
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.tmp.is_some() {
            self.shutdown();
        }
    }
}

/// A running container made by [`Containerd::run`]. Dropping it kills and deletes the task, the
/// container and its snapshot, its network namespace and veth, and its cgroups.
#[derive(Debug)]
pub struct Container {
    /// The containerd container id: the given name and a random suffix.
    pub id: String,
    /// The host pid of the container's init process.
    pub pid: i32,
    /// Its network namespace, `/run/netns/<id>`.
    pub netns: PathBuf,
    /// The host end's address, in the same /30 as `container_ip`.
    pub host_ip: Ipv4Addr,
    /// The container's address on its `eth0`; its default route goes to `host_ip`.
    pub container_ip: Ipv4Addr,
    /// The host end of the veth pair (in the host's network namespace).
    pub host_veth: String,
    log: PathBuf,
    shared: Arc<Shared>,
}

impl Container {
    /// True while containerd reports the task as running.
    pub fn is_running(&self) -> bool {
        matches!(self.shared.task(&self.id), Ok(Some((_, status))) if status == "RUNNING")
    }

    /// Polls [`Container::is_running`] until it is false or `timeout` passes; true if it stopped.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pids in the container's cgroup (its init process and everything it started).
    pub fn cgroup_procs(&self) -> Vec<i32> {
        let records = self.shared.records.lock().expect("records lock");
        let Some(record) = records.get(&self.id) else {
            return Vec::new();
        };
        // Prefer a v1 controller everything is attached to, else whatever hierarchy there is.
        let dir = record
            .cgroups
            .iter()
            .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
            .or_else(|| record.cgroups.first());
        let mut pids = dir.map(|d| host::cgroup_procs(d)).unwrap_or_default();
        pids.sort_unstable();
        pids
    }

    /// The container's cgroup directories, one per mounted hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let records = self.shared.records.lock().expect("records lock");
        records
            .get(&self.id)
            .map(|r| r.cgroups.clone())
            .unwrap_or_default()
    }

    /// UDP counters of the container's network namespace (the `Udp:` lines of
    /// `/proc/PID/net/snmp`): what reached its stack, listener or not.
    pub fn udp_counters(&self) -> anyhow::Result<UdpCounters> {
        let path = format!("/proc/{}/net/snmp", self.pid);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
        UdpCounters::parse(&text).with_context(|| format!("no Udp counters in {path}"))
    }

    /// Where the container's stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Runs `argv` inside the container (`ctr task exec`) and returns its output; fails if it
    /// exits non-zero or takes longer than 30 s.
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        ensure!(
            !argv.is_empty(),
            "argv to exec in container {} is empty",
            self.id
        );
        let exec_id = format!("exec-{:08x}", rand::random::<u32>());
        let mut args = vec!["task", "exec", "--exec-id", &exec_id, &self.id];
        args.extend_from_slice(argv);
        self.shared
            .ctr_run(&args)
            .with_context(|| format!("failed to exec {argv:?} in container {}", self.id))
    }
}

/// Kernel UDP counters of one network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpCounters {
    /// Datagrams delivered to a socket.
    pub in_datagrams: u64,
    /// Datagrams to a port nobody listens on (they reached the stack all the same).
    pub no_ports: u64,
    /// Datagrams dropped on receive (bad checksum, full buffer, ...).
    pub in_errors: u64,
    /// Datagrams sent.
    pub out_datagrams: u64,
}

impl UdpCounters {
    fn parse(snmp: &str) -> Option<UdpCounters> {
        let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
        let values: Vec<u64> = lines
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        let get = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .and_then(|i| values.get(i).copied())
        };
        Some(UdpCounters {
            in_datagrams: get("InDatagrams")?,
            no_ports: get("NoPorts")?,
            in_errors: get("InErrors")?,
            out_datagrams: get("OutDatagrams")?,
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let record = self
            .shared
            .records
            .lock()
            .expect("records lock")
            .remove(&self.id);
        if let Some(record) = record {
            for e in self.shared.cleanup(&self.id, &record) {
                eprintln!("havoc-testbed: cleanup of {}: {e}", self.id);
            }
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn run_containerd_dirs() -> Vec<PathBuf> {
    let base = Path::new(RUN_CONTAINERD);
    vec![
        base.to_path_buf(),
        base.join("s"),
        base.join("fifo"),
        base.join("runc"),
        base.join("runc").join(NAMESPACE),
    ]
}

fn config_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
    )
}

/// Removes what testbeds of processes that died without dropping their guard (SIGKILL, abort)
/// left behind: their daemon died with them (PR_SET_PDEATHSIG), but shims, containers, network
/// namespaces, cgroups, mounts and the temp dir survive. A testbed is dead when the containerd
/// of its pid file is gone; one without a pid file counts only after 60 s (it may be starting).
/// Returns what failed.
pub(crate) fn reap_stale() -> Vec<String> {
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return errors;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        let is_testbed = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("havoc-tb-"))
            && dir.join("config.toml").is_file();
        if !is_testbed {
            continue;
        }
        let config = dir.join("config.toml").to_string_lossy().into_owned();
        let alive = match std::fs::read_to_string(dir.join("containerd.pid")) {
            Ok(pid) => pid.trim().parse::<i32>().is_ok_and(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == config.as_bytes()))
            }),
            Err(_) => std::fs::metadata(dir.join("config.toml"))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60)),
        };
        if alive || !host::pids_with_arg("containerd", &config).is_empty() {
            continue;
        }
        let address = dir.join("containerd.sock").to_string_lossy().into_owned();
        let shims = host::pids_with_arg("containerd-shim", &address);
        for &pid in &shims {
            let _ = havoc_sys::process::send_signal(pid, libc::SIGKILL);
        }
        host::wait_gone(&shims, Duration::from_secs(5));
        let tasks = dir
            .join("state/io.containerd.runtime.v2.task")
            .join(NAMESPACE);
        let ids: Vec<String> = std::fs::read_dir(&tasks)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for sock in shim_sockets(&dir, NAMESPACE) {
            let _ = std::fs::remove_file(sock);
        }
        for id in &ids {
            for root in host::cgroup_roots() {
                if let Err(e) = host::remove_cgroup(&root.join(NAMESPACE).join(id)) {
                    errors.push(e);
                }
            }
            if Path::new("/run/netns").join(id).exists() {
                if let Err(e) = host::ip(&["netns", "delete", id]) {
                    errors.push(format!("{e:#}"));
                }
            }
            let runc_state = Path::new(RUN_CONTAINERD)
                .join("runc")
                .join(NAMESPACE)
                .join(id);
            let _ = std::fs::remove_dir_all(runc_state);
        }
        for root in host::cgroup_roots() {
            host::rmdir_if_empty(&root.join(NAMESPACE));
        }
        errors.extend(host::unmount_below(&dir));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            errors.push(format!("failed to remove {}: {e}", dir.display()));
        }
        for dir in run_containerd_dirs().iter().rev() {
            // Only empty ones: a live testbed elsewhere keeps its entries there.
            host::rmdir_if_empty(dir);
        }
    }
    errors
}

/// The shim sockets of the tasks under our state dir (`unix:///run/containerd/s/<hash>`).
fn shim_sockets(dir: &Path, namespace: &str) -> Vec<PathBuf> {
    let tasks = dir
        .join("state/io.containerd.runtime.v2.task")
        .join(namespace);
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
        .filter_map(|a| a.trim().strip_prefix("unix://").map(PathBuf::from))
        .filter(|p| p.starts_with(RUN_CONTAINERD))
        .collect()
}

/// A random /30 in 10.200.0.0–10.249.255.255 that no local address is in: `.1` for the host,
/// `.2` for the container.
fn pick_subnet() -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    let out = host::run_cmd(
        Command::new("ip").args(["-4", "-o", "addr", "show"]),
        Duration::from_secs(10),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let taken: Vec<u32> = text
        .split_whitespace()
        .filter_map(|w| w.split_once('/')?.0.parse::<Ipv4Addr>().ok())
        .map(|a| u32::from(a) & !3)
        .collect();
    for _ in 0..100 {
        let second = 200 + rand::random::<u8>() % 50;
        let base = u32::from(Ipv4Addr::new(
            10,
            second,
            rand::random(),
            rand::random::<u8>() & !3,
        ));
        if !taken.contains(&base) {
            return Ok((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)));
        }
    }
    bail!("found no free /30 in 10.200.0.0/8..10.249.255.255 after 100 tries")
}

/// `ip netns add ID`, a veth pair `host_veth` <-> `eth0` (inside), addresses, default route.
fn setup_netns(
    id: &str,
    host_veth: &str,
    host_ip: Ipv4Addr,
    container_ip: Ipv4Addr,
) -> anyhow::Result<()> {
    let host_cidr = format!("{host_ip}/30");
    let cont_cidr = format!("{container_ip}/30");
    let host_ip = host_ip.to_string();
    let steps: [&[&str]; 8] = [
        &["netns", "add", id],
        &[
            "link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", id,
        ],
        &["-n", id, "link", "set", "lo", "up"],
        &["-n", id, "addr", "add", &cont_cidr, "dev", "eth0"],
        &["-n", id, "link", "set", "eth0", "up"],
        &["-n", id, "route", "add", "default", "via", &host_ip],
        &["addr", "add", &host_cidr, "dev", host_veth],
        &["link", "set", host_veth, "up"],
    ];
    for step in steps {
        host::ip(step)
            .with_context(|| format!("failed to set up the network of container {id}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_counters_are_read_by_name() {
        let snmp = "Tcp: RtoAlgorithm InSegs\nTcp: 1 5\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                    Udp: 7 3 1 9 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let c = UdpCounters::parse(snmp).expect("parsed");
        assert_eq!(
            c,
            UdpCounters {
                in_datagrams: 7,
                no_ports: 3,
                in_errors: 1,
                out_datagrams: 9
            }
        );
        assert_eq!(UdpCounters::parse("Tcp: A\nTcp: 1\n"), None);
    }

    #[test]
    fn config_keeps_everything_under_the_temp_dir() {
        let toml = config_toml(Path::new("/tmp/havoc-tb-x"));
        for line in toml.lines().filter(|l| l.contains('/')) {
            assert!(
                line.contains("/tmp/havoc-tb-x/"),
                "{line} leaves the temp dir"
            );
        }
        assert!(
            toml.contains("io.containerd.grpc.v1.cri"),
            "CRI is disabled"
        );
    }
}
