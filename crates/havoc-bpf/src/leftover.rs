//! Finding Havoc's BPF programs that are still loaded, for `havoc recover`.
//!
//! Havoc attaches only through TCX links owned by a file descriptor of the agent, so the kernel
//! detaches and frees them when the agent exits, even by SIGKILL: nothing should ever be left
//! over. This module lets recovery *verify* that. A program listed here is still referenced by a
//! live process (another Havoc agent, or a pinned object someone created by hand) and is removed
//! by stopping that process or unpinning it; there is no way to force-detach a link one does not
//! hold.

use aya::programs::{loaded_links, loaded_programs};

use crate::datapath::{BpfError, NAME_PREFIX};

/// A loaded BPF program whose name starts with `havoc_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftoverProgram {
    pub id: u32,
    pub name: String,
    /// Ids of the BPF links that attach it (as in `bpftool link show`).
    pub link_ids: Vec<u32>,
}

/// All loaded BPF programs named `havoc_*`, with the links attaching them.
pub fn leftover_programs() -> Result<Vec<LeftoverProgram>, BpfError> {
    let mut found = Vec::new();
    for info in loaded_programs() {
        let info = match info {
            Ok(info) => info,
            // A program can be unloaded between listing its id and opening it.
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc_enoent()) =>
            {
                continue
            }
            Err(e) => {
                return Err(BpfError::List {
                    what: "programs",
                    source: Box::new(e),
                })
            }
        };
        if let Some(name) = info.name_as_str().filter(|n| n.starts_with(NAME_PREFIX)) {
            found.push(LeftoverProgram {
                id: info.id(),
                name: name.to_owned(),
                link_ids: Vec::new(),
            });
        }
    }
    if found.is_empty() {
        return Ok(found);
    }
    for link in loaded_links() {
        let Ok(link) = link else { continue };
        if let Some(p) = found.iter_mut().find(|p| p.id == link.program_id()) {
            p.link_ids.push(link.id());
        }
    }
    Ok(found)
}

const fn libc_enoent() -> i32 {
    2
}
