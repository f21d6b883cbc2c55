//! Undo records: what must be done to remove a fault if the process that injected it is gone.
//!
//! Each record is self-contained (it names the process by pid *and* start time, the namespace by
//! path...), idempotent, and safe to replay any number of times by any Havoc process: the engine's
//! journal, the watchdog, `havoc recover` and the agent all replay the same records.

use serde::{Deserialize, Serialize};

use crate::procinfo::ProcInfo;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "camelCase")]
pub enum UndoAction {
    /// SIGCONT a process that Havoc stopped.
    #[serde(rename_all = "camelCase")]
    Resume { pid: i32, start_time: u64 },
    /// SIGKILL a helper process Havoc started (a stress worker).
    #[serde(rename_all = "camelCase")]
    KillHelper { pid: i32, start_time: u64 },
    /// Remove the iptables chains of a delay engine from a network namespace.
    RemoveDelayRules {
        netns: std::path::PathBuf,
        tag: String,
    },
    /// Remove Havoc's TBF qdiscs and IFB devices from a network namespace.
    RemoveShaping { netns: std::path::PathBuf },
    /// Delete a clsact qdisc Havoc added, if it holds no filter.
    RemoveEmptyClsact {
        netns: std::path::PathBuf,
        dev: String,
    },
    /// Turn TX checksum offload of a device back on (turned off for `checksum: break`).
    RestoreTxOffload {
        netns: std::path::PathBuf,
        dev: String,
    },
    /// Write the original bytes back into a vDSO patched by TimeChaos, in the target and in every
    /// process that carries the same patch at the same address (its forks), and compare them.
    #[serde(rename_all = "camelCase")]
    RestoreVdso {
        pid: i32,
        start_time: u64,
        vdso_start: u64,
        edits: Vec<crate::time::VdsoEdit>,
    },
    /// Lazily unmount an IOChaos FUSE mount (found by its unique `source` in the mount table of
    /// the mount namespace `mnt_ns`, entered through `pid` or any process still in it).
    #[serde(rename_all = "camelCase")]
    UnmountFuse {
        pid: i32,
        start_time: u64,
        mnt_ns: u64,
        mount_point: std::path::PathBuf,
        source: String,
    },
}

/// What replaying one record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoOutcome {
    Done(String),
    /// Nothing to do (already undone, or the process is gone): still a success.
    NothingLeft(String),
}

impl UndoAction {
    pub fn describe(&self) -> String {
        match self {
            UndoAction::Resume { pid, .. } => format!("resume pid {pid}"),
            UndoAction::KillHelper { pid, .. } => format!("stop helper pid {pid}"),
            UndoAction::RemoveDelayRules { netns, tag } => {
                format!("remove delay rules {tag} in {}", netns.display())
            }
            UndoAction::RemoveShaping { netns } => {
                format!("remove bandwidth limits in {}", netns.display())
            }
            UndoAction::RemoveEmptyClsact { netns, dev } => {
                format!("remove the empty clsact of {dev} in {}", netns.display())
            }
            UndoAction::RestoreTxOffload { netns, dev } => {
                format!(
                    "turn TX checksum offload of {dev} in {} back on",
                    netns.display()
                )
            }
            UndoAction::RestoreVdso { pid, .. } => {
                format!("restore the vDSO clock functions of pid {pid} and its forks")
            }
            UndoAction::UnmountFuse {
                mount_point, pid, ..
            } => format!(
                "unmount the IOChaos mount at {} (mount namespace of pid {pid})",
                mount_point.display()
            ),
        }
    }

    /// Carries the record out. Idempotent.
    pub fn undo(&self) -> Result<UndoOutcome, crate::FaultError> {
        match self {
            UndoAction::Resume { pid, start_time } => {
                if !ProcInfo::is_same(*pid, *start_time) {
                    return Ok(UndoOutcome::NothingLeft(format!("pid {pid} has exited")));
                }
                let Some(_last) = crate::process::take_if_last(*pid, *start_time) else {
                    return Ok(UndoOutcome::NothingLeft(format!(
                        "pid {pid} left stopped: another Havoc run still holds a pause of it"
                    )));
                };
                signal(*pid, 18, "resume")?;
                Ok(UndoOutcome::Done(format!("resumed pid {pid}")))
            }
            UndoAction::KillHelper { pid, start_time } => {
                if !ProcInfo::is_same(*pid, *start_time) {
                    return Ok(UndoOutcome::NothingLeft(format!(
                        "helper pid {pid} has exited"
                    )));
                }
                signal(*pid, 9, "stop helper")?;
                Ok(UndoOutcome::Done(format!("stopped helper pid {pid}")))
            }
            UndoAction::RemoveDelayRules { netns, tag } => {
                match crate::network::remove_delay_rules(netns, tag) {
                    Ok(0) => Ok(UndoOutcome::NothingLeft(format!(
                        "no delay rules {tag} in {}",
                        netns.display()
                    ))),
                    Ok(n) => Ok(UndoOutcome::Done(format!(
                        "removed {n} delay rule set(s) {tag} in {}",
                        netns.display()
                    ))),
                    Err(e) => Err(crate::FaultError::Other(format!(
                        "cannot remove delay rules {tag} in {}: {e}",
                        netns.display()
                    ))),
                }
            }
            UndoAction::RemoveShaping { netns } => match crate::network::remove_shaping(netns) {
                Ok(0) => Ok(UndoOutcome::NothingLeft(format!(
                    "no bandwidth limits in {}",
                    netns.display()
                ))),
                Ok(n) => Ok(UndoOutcome::Done(format!(
                    "removed {n} bandwidth limit object(s) in {}",
                    netns.display()
                ))),
                Err(e) => Err(crate::FaultError::Other(format!(
                    "cannot remove bandwidth limits in {}: {e}",
                    netns.display()
                ))),
            },
            UndoAction::RemoveEmptyClsact { netns, dev } => {
                match crate::network::remove_empty_clsact(netns, dev) {
                    Ok(true) => Ok(UndoOutcome::Done(format!(
                        "removed the empty clsact of {dev}"
                    ))),
                    Ok(false) => Ok(UndoOutcome::NothingLeft(format!(
                        "no empty clsact on {dev}"
                    ))),
                    Err(e) => Err(crate::FaultError::Other(format!(
                        "cannot remove the clsact of {dev}: {e}"
                    ))),
                }
            }
            UndoAction::RestoreTxOffload { netns, dev } => {
                match crate::network::restore_tx_offload(netns, dev) {
                    Ok(true) => Ok(UndoOutcome::Done(format!(
                        "turned TX checksum offload of {dev} back on"
                    ))),
                    Ok(false) => Ok(UndoOutcome::NothingLeft(format!(
                        "TX checksum offload of {dev} is on"
                    ))),
                    Err(e) => Err(crate::FaultError::Other(format!(
                        "cannot turn TX checksum offload of {dev} back on: {e}"
                    ))),
                }
            }
            UndoAction::RestoreVdso {
                pid,
                vdso_start,
                edits,
                ..
            } => match crate::time::replay_restore(*vdso_start, edits)? {
                0 => Ok(UndoOutcome::NothingLeft(format!(
                    "no process carries the vDSO patch of pid {pid}"
                ))),
                n => Ok(UndoOutcome::Done(format!(
                    "restored the vDSO of {n} process(es) (pid {pid} and its forks)"
                ))),
            },
            UndoAction::UnmountFuse {
                pid,
                start_time,
                mnt_ns,
                mount_point,
                source,
            } => match crate::io::unmount_journaled(*pid, *start_time, *mnt_ns, source)? {
                Some(done) => Ok(UndoOutcome::Done(done)),
                None => Ok(UndoOutcome::NothingLeft(format!(
                    "no IOChaos mount at {}",
                    mount_point.display()
                ))),
            },
        }
    }
}

fn signal(pid: i32, signo: i32, action: &'static str) -> Result<(), crate::FaultError> {
    match havoc_sys::process::send_signal(pid, signo) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(3) => Ok(()), // ESRCH: gone in the meantime
        Err(source) => Err(crate::FaultError::Sys {
            action,
            target: format!("pid {pid}"),
            source,
        }),
    }
}
