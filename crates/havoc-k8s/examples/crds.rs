//! Prints the CRDs (what `havoc crds` prints).
fn main() {
    print!("{}", havoc_k8s::crds_yaml());
}
