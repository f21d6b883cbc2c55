//! `havoc certs --out DIR`: a new CA and the agent's and the operator's mTLS certificates.

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write ca.pem, ca-key.pem, agent.pem, agent-key.pem, operator.pem and
    /// operator-key.pem into (created; private keys are written with mode 0600).
    #[arg(long, default_value = "./havoc-certs")]
    out: PathBuf,
    /// Names and IPs the agent's certificate is valid for. The operator dials agent pod IPs and
    /// verifies the name `havoc-agent`, so keep that one; add others (e.g. `127.0.0.1`) for
    /// calls made by hand.
    #[arg(long = "san", default_values_t = ["havoc-agent".to_string(), "localhost".to_string(), "127.0.0.1".to_string()])]
    sans: Vec<String>,
    /// Replace existing files in --out (by default an existing CA is never overwritten). Files
    /// are replaced by rename: a symlink in --out is replaced, its target left untouched.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let ca = args.out.join("ca.pem");
    // `symlink_metadata`: a symlink at ca.pem, even a dangling one, counts as existing. With
    // --force every file is written beside its path and renamed over it, so a symlink there is
    // replaced, never followed (see `havoc_api::pki::write_pem`).
    if std::fs::symlink_metadata(&ca).is_ok() && !args.force {
        anyhow::bail!(
            "{} already exists: certificates signed by it would stop working if it were replaced; \
             pass --force to replace it, or choose another --out",
            ca.display()
        );
    }
    let b = havoc_api::pki::write_bundle(&args.out, &args.sans)
        .with_context(|| format!("cannot write certificates into {}", args.out.display()))?;
    println!("CA:        {} (key {})", b.ca.display(), b.ca_key.display());
    println!(
        "agent:     {} (key {}), valid for {}",
        b.agent_cert.display(),
        b.agent_key.display(),
        args.sans.join(", ")
    );
    println!(
        "operator:  {} (key {})",
        b.operator_cert.display(),
        b.operator_key.display()
    );
    println!(
        "valid for {} days; keep ca-key.pem offline (it is needed only to issue more)",
        havoc_api::pki::BUNDLE_DAYS
    );
    Ok(0)
}
