//! `havoc recover`: replay every journal whose owner is gone (after a crash, a kill -9 or a
//! reboot), then, if no run is alive, sweep the kernel for Havoc objects no journal names.
//!
//! Recovering means being sure: whatever could not be looked at (an unreadable journal directory
//! or journal, a namespace that cannot be entered, `/run/netns` itself) is named on stderr and
//! makes the exit code non-zero, never passes for "nothing left".

use havoc_engine::journal;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args, state_dir: &std::path::Path) -> anyhow::Result<u8> {
    // What could not be checked, each naming the thing and the cause.
    let mut unchecked: Vec<String> = Vec::new();
    let listing = match journal::list_report(state_dir) {
        Ok(l) => Some(l),
        Err(e) => {
            unchecked.push(havoc_engine::error_chain(&e));
            None
        }
    };
    let mut sweep_refused = None;
    let mut ok = true;
    match &listing {
        None => sweep_refused = Some("the journals could not be read".to_string()),
        Some(l) => {
            let live: Vec<_> = l.found.iter().filter(|f| f.owner_alive()).collect();
            for f in &live {
                eprintln!(
                    "havoc: run {} is still active (pid {}): left alone; stop it with Ctrl-C or SIGTERM",
                    f.data.run_id, f.data.owner_pid
                );
            }
            // Unreadable journals come back from the replay as failures naming their files.
            ok = super::recover_stale(state_dir)?;
            if !live.is_empty() {
                // Not a failure: the live run owns what is in the kernel.
            } else if !l.unreadable.is_empty() {
                sweep_refused = Some(format!(
                    "{} journal(s) could not be read, so their runs may be alive",
                    l.unreadable.len()
                ));
            } else {
                // Without a live run, anything of Havoc's left in the kernel is a leftover,
                // journal or not.
                unchecked.extend(sweep());
            }
        }
    }
    if let Some(why) = &sweep_refused {
        unchecked.push(format!(
            "the network namespaces: not swept for leftovers without a journal, because {why}"
        ));
    }
    for u in &unchecked {
        eprintln!("havoc: could not check {u}");
    }
    if !unchecked.is_empty() {
        eprintln!(
            "havoc: {} thing(s) could not be checked: Havoc's faults may be left there (fix the cause and run `havoc recover` again)",
            unchecked.len()
        );
        return Ok(super::EXIT_FAILED);
    }
    if ok {
        println!("nothing left to recover");
        Ok(0)
    } else {
        Ok(super::EXIT_FAILED)
    }
}

/// Sweeps every namespace for leftovers; returns what could not be checked.
fn sweep() -> Vec<String> {
    let mut unchecked = Vec::new();
    // The sweep goes through /run/netns too; if it cannot list it, it sees no namespace at all.
    match std::fs::read_dir("/run/netns") {
        Ok(rd) => {
            for e in rd {
                if let Err(e) = e {
                    unchecked.push(format!("the network namespaces in /run/netns: {e}"));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => unchecked.push(format!("the network namespaces in /run/netns: {e}")),
    }
    let mut host_unchecked = false;
    for line in havoc_faults::network::sweep_leftovers() {
        // The sweep reports what it could not look at as "cannot check WHAT in NETNS: cause".
        match line.strip_prefix("cannot check ") {
            Some(rest) if rest.contains(&format!(" in {HOST}: ")) && host_unreadable() => {
                host_unchecked = true;
            }
            Some(rest) if !vanished(rest) => unchecked.push(rest.to_string()),
            Some(_) => {}
            None => eprintln!("havoc: {line}"),
        }
    }
    if host_unchecked {
        unchecked.extend(sweep_own_namespace());
    }
    unchecked
}

/// How the sweep names the host's network namespace.
const HOST: &str = "/proc/1/ns/net";
const OWN: &str = "/proc/self/ns/net";

/// True if PID 1's namespace cannot be opened even by root (PID 1 of a VM or a container may be
/// undumpable): the host's namespace is then reached as this process's own.
fn host_unreadable() -> bool {
    matches!(std::fs::File::open(HOST), Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
}

/// Sweeps the namespace `havoc recover` runs in (on a host, the host's) for delay rules and
/// bandwidth limits; returns what could not be checked.
fn sweep_own_namespace() -> Vec<String> {
    let own = std::path::Path::new(OWN);
    let mut unchecked = Vec::new();
    eprintln!(
        "havoc: {HOST} cannot be opened: sweeping this process's namespace ({OWN}) as the host's"
    );
    match havoc_faults::network::remove_delay_rules(own, "") {
        Ok(0) => {}
        Ok(n) => eprintln!("havoc: removed {n} delay rule set(s) in {OWN}"),
        Err(e) => unchecked.push(format!("delay rules in {OWN}: {e}")),
    }
    match havoc_faults::network::remove_shaping(own) {
        Ok(0) => {}
        Ok(n) => eprintln!("havoc: removed {n} bandwidth limit object(s) in {OWN}"),
        Err(e) => unchecked.push(format!("bandwidth limits in {OWN}: {e}")),
    }
    unchecked
}

/// True if the namespace a "WHAT in NETNS: cause" line names was deleted during the sweep (a
/// namespace that is gone holds nothing).
fn vanished(line: &str) -> bool {
    let Some((_, after)) = line.split_once(" in /") else {
        return false;
    };
    let path = format!("/{}", after.split(": ").next().unwrap_or(after));
    matches!(std::fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_namespace_deleted_during_the_sweep_is_not_unchecked() {
        assert!(super::vanished(
            "delay rules in /run/netns/havoc-no-such-ns-4711: No such file or directory"
        ));
        assert!(!super::vanished(
            "delay rules in /proc/1/ns/net: Operation not permitted"
        ));
        assert!(!super::vanished("something without a path"));
    }
}
