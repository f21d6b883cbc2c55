//! nftables tables owned by a live process, and the socket options of a transparent redirect.
//!
//! A table created with `flags owner` belongs to the netlink socket that created it: the kernel
//! deletes it, rules and all, when that socket closes, for whatever reason (clean exit, SIGKILL,
//! crash). [`OwnedTable`] keeps one `nft -i` session open in a network namespace: its stdin is a
//! pipe from us, so when Havoc dies the pipe closes, `nft` reads end-of-file and exits, its socket
//! closes and the table is gone; if `nft` itself is killed, the table goes with it. Nothing of
//! the table can outlive both processes, which is what the fail-open of the DNS and HTTP
//! interceptors rests on: no redirect is ever left pointing at a port nobody listens on.
//!
//! Commands are passed to `nft` as lines of its own language over the pipe, never through a
//! shell; names and numbers put into them must come from Havoc, not from user text.
//!
//! [`original_dst`] and [`set_mark`] are the two socket options an interceptor behind a
//! `redirect` rule needs: where the client meant to connect, and a mark on the interceptor's own
//! upstream connection so the redirect rule (`meta mark != MARK`) does not send it back.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a command batch may take to be confirmed before the session is declared stuck.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("failed to open network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start `nft -i` in network namespace {netns}")]
    Spawn {
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to talk to the `nft -i` session of table {table}")]
    Pipe {
        table: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nft refused a command for table {table}: {stderr}")]
    Refused { table: String, stderr: String },
    #[error("the `nft -i` session of table {table} ended unexpectedly: {stderr}")]
    Ended { table: String, stderr: String },
    #[error("the `nft -i` session of table {table} did not confirm within {timeout:?}")]
    Timeout { table: String, timeout: Duration },
}

/// An nftables table with `flags owner`, alive exactly as long as this value and our process.
///
/// Dropping it (or [`OwnedTable::close`]) ends the `nft` session, and the kernel removes the
/// table. The table name should be unique on the namespace (e.g. carry our pid and a counter).
pub struct OwnedTable {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: ChildStderr,
    family: String,
    name: String,
    /// stderr read while waiting for a listing, not yet reported.
    pending_err: String,
}

impl std::fmt::Debug for OwnedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedTable")
            .field("family", &self.family)
            .field("name", &self.name)
            .field("nft_pid", &self.child.id())
            .finish()
    }
}

impl OwnedTable {
    /// Creates table `family name` with `flags owner` in the network namespace at `netns`
    /// (`/run/netns/NAME`, `/proc/PID/ns/net`), then applies `commands` (lines such as
    /// `add chain ip NAME pre { type nat hook prerouting priority dstnat; }`), and returns once
    /// `nft` has confirmed all of them. Any refused command is an error and nothing is left.
    pub fn create(
        netns: &Path,
        family: &str,
        name: &str,
        commands: &[String],
    ) -> Result<Self, NftError> {
        let ns = File::open(netns).map_err(|source| NftError::OpenNetns {
            path: netns.to_path_buf(),
            source,
        })?;
        let mut cmd = Command::new("nft");
        cmd.arg("-i")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        enter_netns_before_exec(&mut cmd, ns);
        crate::process::new_session(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| NftError::Spawn {
            netns: netns.to_path_buf(),
            source,
        })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let stderr = child.stderr.take().expect("stderr is piped");
        set_nonblocking(stderr.as_raw_fd());
        let mut table = OwnedTable {
            child,
            stdin: Some(stdin),
            stdout,
            stderr,
            family: family.to_string(),
            name: name.to_string(),
            pending_err: String::new(),
        };
        let mut all = vec![format!("add table {family} {name} {{ flags owner; }}")];
        all.extend(commands.iter().cloned());
        table.apply(&all)?;
        Ok(table)
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid of the `nft -i` process holding the table (for a journal record).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `commands` in the session and waits until `nft` has processed them: the table is
    /// listed after them, and any message on nft's stderr means one was refused.
    pub fn apply(&mut self, commands: &[String]) -> Result<(), NftError> {
        let mut batch = String::new();
        for c in commands {
            debug_assert!(!c.contains('\n'), "one command per line");
            batch.push_str(c);
            batch.push('\n');
        }
        self.list_after(&batch)?;
        let err = std::mem::take(&mut self.pending_err) + &self.drain_stderr();
        if !err.trim().is_empty() {
            return Err(NftError::Refused {
                table: self.name.clone(),
                stderr: err.trim().to_string(),
            });
        }
        Ok(())
    }

    /// The table as `nft list table` prints it (rules with their counters).
    pub fn list(&mut self) -> Result<String, NftError> {
        self.list_after("")
    }

    fn list_after(&mut self, batch: &str) -> Result<String, NftError> {
        let list_cmd = format!("list table {} {}\n", self.family, self.name);
        let line = format!("{batch}{list_cmd}");
        let table = self.name.clone();
        let stdin = self.stdin.as_mut().ok_or_else(|| NftError::Ended {
            table: table.clone(),
            stderr: "closed".into(),
        })?;
        stdin
            .write_all(line.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|source| NftError::Pipe {
                table: table.clone(),
                source,
            })?;
        // The listing ends with a `}` alone at the start of a line. A listing that never comes
        // (the table is missing) shows up as an error on stderr, which is checked while waiting.
        let start = Instant::now();
        let mut out = String::new();
        loop {
            if start.elapsed() > CONFIRM_TIMEOUT {
                return Err(NftError::Timeout {
                    table,
                    timeout: CONFIRM_TIMEOUT,
                });
            }
            if !wait_readable(self.stdout.get_ref().as_raw_fd(), 100)
                && self.stdout.buffer().is_empty()
            {
                // A refused command writes to stderr but the listing still follows; only a
                // refused listing (the table is gone) means no listing will come.
                let more = self.drain_stderr();
                self.pending_err.push_str(&more);
                if self.pending_err.contains(list_cmd.trim_end()) {
                    return Err(NftError::Refused {
                        table,
                        stderr: std::mem::take(&mut self.pending_err).trim().to_string(),
                    });
                }
                if let Ok(Some(_)) = self.child.try_wait() {
                    return Err(NftError::Ended {
                        table,
                        stderr: std::mem::take(&mut self.pending_err),
                    });
                }
                continue;
            }
            let mut l = String::new();
            let n = self
                .stdout
                .read_line(&mut l)
                .map_err(|source| NftError::Pipe {
                    table: table.clone(),
                    source,
                })?;
            if n == 0 {
                let err = std::mem::take(&mut self.pending_err) + &self.drain_stderr();
                return Err(NftError::Ended { table, stderr: err });
            }
            let done = l.trim_end() == "}";
            out.push_str(&l);
            if done {
                return Ok(out);
            }
        }
    }

    fn drain_stderr(&mut self) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match self.stderr.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => break, // WouldBlock: nothing more for now
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Ends the session and waits (up to 2 s, then kills `nft`) until the table is gone.
    pub fn close(mut self) -> Result<(), NftError> {
        self.shutdown();
        Ok(())
    }

    fn shutdown(&mut self) {
        if self.stdin.take().is_none() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}

impl Drop for OwnedTable {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Makes the child spawned by `cmd` enter the network namespace `ns` before it executes.
fn enter_netns_before_exec(cmd: &mut Command, ns: File) {
    use std::os::unix::process::CommandExt;
    let fd = ns.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls `setns`, which is
    // async-signal-safe, on a descriptor that stays open in the child (it is moved into the
    // closure, which the Command keeps alive until spawn); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &ns;
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Whether `fd` becomes readable (or hung up) within `ms` milliseconds.
fn wait_readable(fd: i32, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, its length is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0
}

/// The destination a client originally connected to, before a `redirect`/`dnat` rule sent the
/// connection to us (`SO_ORIGINAL_DST`, IPv4).
pub fn original_dst(fd: BorrowedFd<'_>) -> std::io::Result<SocketAddrV4> {
    let mut addr: libc::sockaddr_in = libc::sockaddr_in {
        sin_family: 0,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is a writable sockaddr_in and `len` its exact size; the kernel writes at most
    // `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(SocketAddrV4::new(
        std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    ))
}

/// Sets `SO_MARK` on a socket: packets it sends carry `mark`, which nftables matches with
/// `meta mark`. Needs CAP_NET_ADMIN.
pub fn set_mark(fd: BorrowedFd<'_>, mark: u32) -> std::io::Result<()> {
    let v: libc::c_uint = mark;
    // SAFETY: passes a pointer to a c_uint and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&v as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn table_exists(family: &str, name: &str) -> bool {
        Command::new("nft")
            .args(["list", "table", family, name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn owned_table_lives_with_its_session() {
        if !root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: needs root");
            return;
        }
        let name = format!("havoc_nfttest_{}", std::process::id());
        let mut t = OwnedTable::create(
            Path::new("/proc/self/ns/net"),
            "ip",
            &name,
            &[format!(
                "add chain ip {name} c {{ type filter hook output priority 0; }}"
            )],
        )
        .expect("create table");
        assert!(table_exists("ip", &name));
        assert!(t.list().expect("list").contains("chain c"));
        let err = t
            .apply(&[format!("add rule ip {name} c tcp dportx 1")])
            .expect_err("a bad rule is refused");
        assert!(err.to_string().contains("syntax error"), "{err}");
        // The session survives a refused command.
        t.apply(&[format!("add rule ip {name} c tcp dport 9 counter")])
            .expect("good rule");
        t.close().expect("close");
        assert!(!table_exists("ip", &name), "table removed with its session");
    }

    #[test]
    fn killed_nft_takes_the_table_with_it() {
        if !root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: needs root");
            return;
        }
        let name = format!("havoc_nftkill_{}", std::process::id());
        let t = OwnedTable::create(Path::new("/proc/self/ns/net"), "ip", &name, &[])
            .expect("create table");
        assert!(table_exists("ip", &name));
        crate::process::send_signal(t.pid() as i32, libc::SIGKILL).expect("kill nft");
        let start = Instant::now();
        while table_exists("ip", &name) && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !table_exists("ip", &name),
            "table gone after nft was killed"
        );
    }
}
