//! The Kubernetes examples that say they were converted from Chaos Mesh are what `havoc convert`
//! makes of the same document under `chaos-mesh.org/v1alpha1`: converting it gives an object
//! equal to the example, so the example's claim (and the conversion) cannot drift.

use havoc_k8s::convert::{convert, validate_manifest};

#[test]
fn examples_marked_converted_are_what_convert_writes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes");
    let mut checked = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/kubernetes")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("read example");
        if !text.contains("Converted from Chaos Mesh") {
            continue;
        }
        let name = path.display().to_string();
        let example = validate_manifest(&text).unwrap_or_else(|e| panic!("{}", e.render(&name)));
        let chaos_mesh = text.replace(
            "apiVersion: havoc.dev/v1alpha1",
            "apiVersion: chaos-mesh.org/v1alpha1",
        );
        let out = convert(&chaos_mesh).unwrap_or_else(|e| panic!("{}", e.render(&name)));
        let converted = validate_manifest(out.trim_start_matches("---\n"))
            .unwrap_or_else(|e| panic!("{}\n{out}", e.render("converted")));
        assert_eq!(converted, example, "{name}: the conversion differs:\n{out}");
        checked.push(example.kind());
    }
    checked.sort();
    checked.dedup();
    assert_eq!(
        checked,
        ["DNSChaos", "HTTPChaos", "IOChaos", "TimeChaos"],
        "converted examples of every kind"
    );
}
