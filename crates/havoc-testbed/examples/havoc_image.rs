//! Builds the `havoc` container image without Docker: an OCI archive for `ctr image import`.
//!
//! `cargo run -p havoc-testbed --example havoc_image -- OUT.tar NAME [BINARY]`, e.g.
//! `... -- havoc.tar havoc.local/havoc:dev target/release/havoc`, then
//! `ctr -n k8s.io image import havoc.tar` on each node and set the image in `deploy/`
//! (kustomize `images:`) with `imagePullPolicy: IfNotPresent`.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, name, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: havoc_image OUT.tar NAME [BINARY (default target/release/havoc)]");
    };
    let binary = rest.first().map_or("target/release/havoc", String::as_str);
    let image = havoc_testbed::build_havoc_image(out.as_ref(), name, binary.as_ref())?;
    println!(
        "{out}: {name}, havoc {} bytes stripped, {}, archive {} bytes",
        image.binary_bytes,
        if image.is_static {
            "static".to_string()
        } else {
            format!("glibc-linked, with {}", image.libraries.join(", "))
        },
        image.archive_bytes
    );
    Ok(())
}
