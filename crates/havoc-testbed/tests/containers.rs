//! Real containerd + runc containers: identity, network, traffic, exit and kill detection.
//! Each test starts its own private containerd (they run in parallel, which also tests that
//! several testbeds coexist).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use havoc_testbed::{root_or_skip, Container, Containerd};

fn inode(path: impl AsRef<std::path::Path>) -> u64 {
    let path = path.as_ref();
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

fn ping(ip: std::net::Ipv4Addr) -> String {
    let out = Command::new("ping")
        .args(["-c", "3", "-W", "1", "-i", "0.2", &ip.to_string()])
        .output()
        .expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ping {ip} failed: {text}");
    text
}

fn check_identity(c: &Container) {
    assert!(c.pid > 1, "{}: pid {}", c.id, c.pid);
    assert!(c.is_running(), "{} is running", c.id);
    assert_eq!(
        inode(&c.netns),
        inode(format!("/proc/{}/ns/net", c.pid)),
        "{}: the task lives in the netns the testbed made",
        c.id
    );
    assert_ne!(
        inode(&c.netns),
        inode("/proc/self/ns/net"),
        "not the host netns"
    );
    assert!(
        c.cgroup_procs().contains(&c.pid),
        "{}: init pid {} in its cgroup {:?}",
        c.id,
        c.pid,
        c.cgroup_dirs()
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid)).expect("read cgroup");
    assert!(cgroup.contains(&format!("/k8s.io/{}", c.id)), "{cgroup}");
    assert!(
        std::path::Path::new("/sys/class/net")
            .join(&c.host_veth)
            .exists(),
        "host veth {} exists",
        c.host_veth
    );
}

#[test]
fn two_containers_run_in_their_own_netns_and_answer_ping_and_tcp() {
    if !root_or_skip("two_containers_run_in_their_own_netns_and_answer_ping_and_tcp") {
        return;
    }
    let t = Instant::now();
    let ctrd = Containerd::start().expect("start containerd");
    eprintln!("timing: containerd start {:?}", t.elapsed());
    let t = Instant::now();
    ctrd.ensure_image()
        .expect("build and import the busybox image");
    eprintln!("timing: image build + import {:?}", t.elapsed());
    assert!(ctrd.socket().exists(), "socket {}", ctrd.socket().display());
    assert_eq!(ctrd.namespace(), "k8s.io");

    let t = Instant::now();
    let a = ctrd
        .run("tb-a", &["sleep", "3600"])
        .expect("run container a");
    eprintln!("timing: container start {:?}", t.elapsed());
    let t = Instant::now();
    let b = ctrd
        .run("tb-b", &["nc", "-ll", "-p", "8080", "-e", "cat"])
        .expect("run container b");
    eprintln!("timing: container start {:?}", t.elapsed());

    for c in [&a, &b] {
        check_identity(c);
        let out = ping(c.container_ip);
        assert!(out.contains("3 received"), "{out}");
    }
    assert_ne!(a.id, b.id);
    assert!(a.id.starts_with("tb-a-") && b.id.starts_with("tb-b-"));
    assert_ne!(inode(&a.netns), inode(&b.netns));
    assert_ne!(a.container_ip, b.container_ip);
    assert_ne!(a.host_veth, b.host_veth);

    // The container reaches the host end, too.
    a.exec(&["ping", "-c", "1", "-W", "1", &a.host_ip.to_string()])
        .expect("ping the host from inside a");
    // A real process in the container serves TCP: busybox nc echoes what we send.
    let addr = SocketAddr::from((b.container_ip, 8080));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}, retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect to nc in {} at {addr}: {e}", b.id),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    stream.write_all(b"hello havoc\n").expect("send");
    let mut buf = [0u8; 12];
    stream.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"hello havoc\n");
}

#[test]
fn udp_datagrams_from_the_host_reach_the_container_stack() {
    if !root_or_skip("udp_datagrams_from_the_host_reach_the_container_stack") {
        return;
    }
    let ctrd = Containerd::start().expect("start containerd");
    let c = ctrd
        .run("tb-udp", &["sleep", "3600"])
        .expect("run container");
    let before = c.udp_counters().expect("counters before");
    let sock = UdpSocket::bind((c.host_ip, 0)).expect("bind on the host end");
    const N: u64 = 500;
    for i in 0..N {
        sock.send_to(&i.to_be_bytes(), (c.container_ip, 9000))
            .expect("send");
    }
    // No listener in the container: every datagram shows up as NoPorts in its netns.
    let deadline = Instant::now() + Duration::from_secs(3);
    let got = loop {
        let now = c.udp_counters().expect("counters after");
        let got = now.no_ports - before.no_ports + now.in_datagrams - before.in_datagrams;
        if got >= N || Instant::now() >= deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(got, N, "datagrams counted in the container's netns");
    let host = std::fs::read_to_string("/proc/self/net/snmp").expect("host snmp");
    assert!(host.contains("Udp:"));
}

#[test]
fn exit_and_kill_are_detected_and_bad_input_is_refused() {
    if !root_or_skip("exit_and_kill_are_detected_and_bad_input_is_refused") {
        return;
    }
    let ctrd = Containerd::start().expect("start containerd");
    let short = ctrd
        .run("tb-exit", &["sleep", "1"])
        .expect("run short-lived");
    let victim = ctrd.run("tb-kill", &["sleep", "3600"]).expect("run victim");
    assert!(victim.is_running());

    assert!(short.wait_stopped(Duration::from_secs(10)), "exit detected");
    assert!(
        short.cgroup_procs().is_empty(),
        "{:?}",
        short.cgroup_procs()
    );

    havoc_sys::process::send_signal(victim.pid, libc::SIGKILL)
        .expect("kill the victim from the host");
    assert!(victim.wait_stopped(Duration::from_secs(5)), "kill detected");
    assert!(victim.cgroup_procs().is_empty());
    assert!(victim.exec(&["true"]).is_err(), "no exec into a dead task");

    let err = ctrd.run("bad name!", &["true"]).expect_err("bad name");
    assert!(err.to_string().contains("letters, digits"), "{err}");
    let err = ctrd.run("ok", &[]).expect_err("empty argv");
    assert!(err.to_string().contains("empty"), "{err}");
    let err = ctrd
        .run("tb-nosuch", &["/no/such/binary"])
        .expect_err("missing binary");
    eprintln!("missing binary: {err:#}");
}
