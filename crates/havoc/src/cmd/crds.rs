//! `havoc crds`: the CustomResourceDefinitions (generated from the Rust types) as YAML.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    print!("{}", havoc_k8s::crd::crds_yaml());
    Ok(0)
}
