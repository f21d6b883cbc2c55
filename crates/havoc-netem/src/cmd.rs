//! Running the system tools this crate drives (`iptables`, `tc`, `ip`) inside a network namespace.
//!
//! Tools always run from an argv array, never through a shell. The child is forked from a thread
//! that has entered the target namespace ([`NetNs::run`]), so it inherits that namespace without
//! `ip netns exec` and works for any nsfs path (`/proc/PID/ns/net` too).

use std::process::{Command, Stdio};

use havoc_sys::netns::{NetNs, NetNsError};

/// A tool that could not be run or that reported failure.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("failed to enter the network namespace to run {program}")]
    Netns {
        program: String,
        #[source]
        source: NetNsError,
    },
    #[error("failed to start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` exited with {status}: {stderr}")]
    Failed {
        argv: String,
        status: String,
        stderr: String,
    },
}

/// Captured output of a tool that exited successfully.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args...` inside `netns` and returns its output; a non-zero exit is an error.
pub fn run(netns: &NetNs, program: &str, args: &[&str]) -> Result<CmdOutput, CmdError> {
    let out = run_status(netns, program, args)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(CmdError::Failed {
            argv: render(program, args),
            status: out.status.to_string(),
            stderr: out.stderr.trim().to_string(),
        })
    }
}

/// Runs `program args...` inside `netns` and returns its exit status and output, whatever the
/// status.
pub fn run_status(netns: &NetNs, program: &str, args: &[&str]) -> Result<CmdOutput, CmdError> {
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let prog = program.to_string();
    let result = netns
        .run(move || {
            let mut cmd = Command::new(&prog);
            // A tool must not outlive us: if Havoc dies mid-change, the tool dies too instead
            // of finishing the change after the watchdog has cleaned up.
            havoc_sys::process::die_with_parent(&mut cmd, 9);
            cmd.args(&owned)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
        })
        .map_err(|source| CmdError::Netns {
            program: program.to_string(),
            source,
        })?;
    let output = result.map_err(|source| CmdError::Spawn {
        program: program.to_string(),
        source,
    })?;
    tracing::trace!(argv = %render(program, args), status = ?output.status, "ran tool");
    Ok(CmdOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The argv joined for messages (never executed).
pub(crate) fn render(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}
