//! `havoc recover`: replay every journal whose owner is gone (after a crash, a kill -9 or a reboot).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args, state_dir: &std::path::Path) -> anyhow::Result<u8> {
    let live: Vec<_> = havoc_engine::journal::list(state_dir)?
        .into_iter()
        .filter(|f| f.owner_alive())
        .collect();
    for f in &live {
        eprintln!(
            "havoc: run {} is still active (pid {}): left alone; stop it with Ctrl-C or SIGTERM",
            f.data.run_id, f.data.owner_pid
        );
    }
    let ok = super::recover_stale(state_dir)?;
    if live.is_empty() {
        // Without a live run, anything of Havoc's left in the kernel is a leftover, journal or not.
        for line in havoc_faults::network::sweep_leftovers() {
            eprintln!("havoc: {line}");
        }
    }
    if ok {
        println!("nothing left to recover");
        Ok(0)
    } else {
        Ok(super::EXIT_FAILED)
    }
}
