//! Every class of validation error: the exact field path, line and column, and a message that
//! says what would be right. Plus a property test: arbitrary input never panics.

use havoc_spec::parse_experiment;

const HEADER: &str = "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: { name: t }\nspec:\n  duration: 10s\n  faults:\n";

/// Parses `HEADER + faults` and returns the rendered errors.
fn errors(faults: &str) -> Vec<String> {
    let src = format!("{HEADER}{faults}");
    match parse_experiment(&src) {
        Ok(_) => Vec::new(),
        Err(e) => e.render("x.yaml").lines().map(str::to_string).collect(),
    }
}

fn assert_error(faults: &str, expected: &str) {
    let errs = errors(faults);
    assert!(
        errs.iter().any(|e| e == expected),
        "expected `{expected}` among:\n{}",
        errs.join("\n")
    );
}

const STRESS_OK: &str = "    - name: burn\n      kind: StressChaos\n      selector: { pids: [42] }\n      stressors:\n        cpu: { workers: 2, load: 60 }\n";

#[test]
fn a_valid_experiment_parses() {
    let e = parse_experiment(&format!("{HEADER}{STRESS_OK}")).expect("valid");
    assert_eq!(e.spec.faults.len(), 1);
    assert_eq!(e.spec.faults[0].name, "burn");
}

#[test]
fn out_of_range_value_names_path_line_and_column() {
    assert_error(
        "    - name: p\n      kind: ProcessChaos\n      action: pause\n      selector: { pids: [1] }\n    - name: burn\n      kind: StressChaos\n      selector: { pids: [42] }\n      stressors:\n        cpu: { workers: 2, load: 150 }\n",
        "x.yaml:15:34: spec.faults[1].stressors.cpu.load: must be 0..=100, got 150",
    );
}

#[test]
fn unknown_field_is_an_error_with_a_suggestion() {
    assert_error(
        "    - name: burn\n      kind: StressChaos\n      selector: { pids: [42] }\n      stresors: {}\n",
        "x.yaml:10:7: spec.faults[0].stresors: unknown field `stresors`: did you mean `stressors`? expected one of `selector`, `stressors`",
    );
}

#[test]
fn unsupported_chaos_mesh_field_is_named_not_dropped() {
    let errs = errors("    - name: burn\n      kind: StressChaos\n      selector: { pids: [42] }\n      stressors:\n        cpu: { workers: 1, load: 10 }\n      stressngStressors: \"--cpu 1\"\n");
    assert!(
        errs.iter().any(|e| e.starts_with(
            "x.yaml:12:7: spec.faults[0].stressngStressors: unknown field `stressngStressors`"
        )),
        "{errs:?}"
    );
}

#[test]
fn wrong_type_is_an_error() {
    assert_error(
        "    - name: burn\n      kind: StressChaos\n      selector: { pids: [42] }\n      stressors:\n        cpu: { workers: two }\n",
        "x.yaml:11:25: spec.faults[0].stressors.cpu.workers: expected a whole number, got `two`",
    );
    assert_error(
        "    - name: burn\n      kind: StressChaos\n      selector: { pids: 42 }\n      stressors:\n        cpu: { workers: 2 }\n",
        "x.yaml:9:25: spec.faults[0].selector.pids: expected a list, got `42`",
    );
}

#[test]
fn bad_durations_are_errors() {
    assert_error(
        "    - name: burn\n      kind: StressChaos\n      duration: ten seconds\n      selector: { pids: [42] }\n      stressors:\n        cpu: { workers: 2 }\n",
        "x.yaml:9:17: spec.faults[0].duration: invalid duration `ten seconds`: expected a number with a unit (ns, us, ms, s, m, h), like `150ms`, `30s` or `1m30s`",
    );
    assert_error(
        "    - name: burn\n      kind: StressChaos\n      after: 5\n      selector: { pids: [42] }\n      stressors:\n        cpu: { workers: 2 }\n",
        "x.yaml:9:14: spec.faults[0].after: `5` has no unit: write e.g. `5s` or `5ms`",
    );
}

#[test]
fn empty_selector_is_an_error() {
    assert_error(
        "    - name: burn\n      kind: StressChaos\n      selector: {}\n      stressors:\n        cpu: { workers: 2 }\n",
        "x.yaml:9:17: spec.faults[0].selector: selector is empty: give at least one of pids, processNames, cmdlineRegex, cgroups or containerIds",
    );
}

#[test]
fn impossible_combinations_are_errors() {
    // pause with a signal
    assert_error(
        "    - name: p\n      kind: ProcessChaos\n      action: pause\n      signal: SIGTERM\n      selector: { pids: [42] }\n",
        "x.yaml:10:15: spec.faults[0].signal: action pause always uses SIGSTOP/SIGCONT: remove signal, or use action signal",
    );
    // mode fixed without value
    assert_error(
        "    - name: p\n      kind: ProcessChaos\n      action: kill\n      selector: { processNames: [w], mode: fixed }\n",
        "x.yaml:10:17: spec.faults[0].selector.value: is required with mode `fixed`",
    );
    // loss fields on a delay action
    let errs = errors("    - name: n\n      kind: NetworkChaos\n      action: delay\n      selector: { netns: [x] }\n      loss: { loss: \"10\" }\n      delay: { latency: 10ms, jitter: 20ms }\n");
    assert!(errs.iter().any(|e| e == "x.yaml:11:13: spec.faults[0].loss: loss does not apply to action delay: use action netem to combine faults"), "{errs:?}");
    assert!(errs.iter().any(|e| e == "x.yaml:12:39: spec.faults[0].delay.jitter: must not exceed latency (10ms), got 20ms"), "{errs:?}");
    // netns on a process fault
    assert_error(
        "    - name: p\n      kind: ProcessChaos\n      action: kill\n      selector: { netns: [x] }\n",
        "x.yaml:10:26: spec.faults[0].selector.netns: netns selects network namespaces and only applies to NetworkChaos, DNSChaos and HTTPChaos",
    );
}

#[test]
fn unknown_enum_values_and_kinds_suggest_the_closest() {
    assert_error(
        "    - name: p\n      kind: ProcessChaos\n      action: puase\n      selector: { pids: [42] }\n",
        "x.yaml:9:15: spec.faults[0].action: unknown value `puase`: did you mean `pause`? expected one of kill | pause | signal",
    );
    assert_error(
        "    - name: p\n      kind: ProcesChaos\n      action: pause\n      selector: { pids: [42] }\n",
        "x.yaml:8:13: spec.faults[0].kind: unknown fault kind `ProcesChaos`: did you mean `ProcessChaos`? expected one of ProcessChaos, StressChaos, NetworkChaos, IOChaos, TimeChaos, SyscallChaos, DNSChaos, HTTPChaos",
    );
    assert_error(
        "    - name: p\n      kind: ProcessChaos\n      action: signal\n      signal: SIGTREM\n      selector: { pids: [42] }\n",
        "x.yaml:10:15: spec.faults[0].signal: unknown signal `SIGTREM` (did you mean SIGTERM?): use a name like SIGTERM, SIGKILL, SIGUSR1, or a number",
    );
}

#[test]
fn missing_required_fields_are_reported_where_they_belong() {
    assert_error(
        "    - kind: StressChaos\n      selector: { pids: [42] }\n      stressors:\n        cpu: { workers: 2 }\n",
        "x.yaml:7:7: spec.faults[0].name: is required: a short name for this fault, e.g. `pause-worker`",
    );
    assert_error(
        "    - name: p\n      kind: ProcessChaos\n      selector: { pids: [42] }\n",
        "x.yaml:7:7: spec.faults[0].action: is required",
    );
}

#[test]
fn duplicate_names_and_missing_durations() {
    let src = "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: { name: t }\nspec:\n  faults:\n    - name: a\n      kind: ProcessChaos\n      action: pause\n      selector: { pids: [42] }\n    - name: a\n      kind: ProcessChaos\n      action: pause\n      duration: 1s\n      selector: { pids: [43] }\n";
    let errs = parse_experiment(src).expect_err("invalid").render("y.yaml");
    assert!(
        errs.contains("y.yaml:6:7: spec.faults[0].duration: is required here or as spec.duration"),
        "{errs}"
    );
    assert!(errs.contains("y.yaml:10:13: spec.faults[1].name: `a` is used by another fault: fault names must be unique"), "{errs}");
}

#[test]
fn several_problems_are_all_reported_in_order() {
    let errs = errors("    - name: a\n      kind: ProcessChaos\n      action: pause\n      selector: {}\n    - name: b\n      kind: StressChaos\n      selector: { pids: [1] }\n      stressors: { cpu: { workers: 0, load: 101 } }\n");
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].contains("spec.faults[0].selector"));
    assert!(errs[1].contains("spec.faults[1].stressors.cpu.workers"));
    assert!(errs[2].contains("spec.faults[1].stressors.cpu.load"));
}

#[test]
fn document_level_errors() {
    let e = parse_experiment("apiVersion: v1\nkind: Pod\nmetadata: { name: x }\nspec: {}\n")
        .expect_err("invalid")
        .render("z.yaml");
    assert!(
        e.contains("z.yaml:1:13: apiVersion: unsupported apiVersion `v1`"),
        "{e}"
    );
    assert!(e.contains("z.yaml:2:7: kind: unknown kind `Pod`"), "{e}");
    let e = parse_experiment("a: [1, 2\n")
        .expect_err("yaml")
        .render("z.yaml");
    assert!(e.starts_with("z.yaml:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
    let e = parse_experiment("").expect_err("empty").render("z.yaml");
    assert!(e.contains("the file is empty"), "{e}");
}

#[test]
fn single_fault_manifest_is_an_experiment_of_one_fault() {
    let src = "apiVersion: havoc.dev/v1alpha1\nkind: StressChaos\nmetadata: { name: burn }\nspec:\n  mode: one\n  selector: { pids: [42] }\n  stressors:\n    memory: { workers: 1, size: 256MiB }\n  duration: 30s\n";
    let e = parse_experiment(src).expect("valid");
    assert_eq!(e.spec.faults.len(), 1);
    assert_eq!(e.spec.faults[0].name, "burn");
    assert_eq!(
        e.fault_duration(&e.spec.faults[0]),
        Some(std::time::Duration::from_secs(30))
    );
    let bad = src
        .replace("load", "x")
        .replace("size: 256MiB", "size: 256 parsecs");
    let errs = parse_experiment(&bad)
        .expect_err("invalid")
        .render("s.yaml");
    assert!(
        errs.contains("s.yaml:8:33: spec.stressors.memory.size: invalid size `256 parsecs`"),
        "{errs}"
    );
}

mod fuzz {
    use proptest::prelude::*;

    fn yamlish() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "apiVersion: havoc.dev/v1alpha1\n",
            "kind: Experiment\n",
            "kind: StressChaos\n",
            "metadata: { name: x }\n",
            "spec:\n",
            "  faults:\n",
            "    - name: a\n",
            "      kind: ProcessChaos\n",
            "      action: pause\n",
            "      selector: { pids: [1] }\n",
            "  duration: 5s\n",
            "  selector: {}\n",
            "    - [\n",
            "&a x: *a\n",
            "]]\n",
            "  stressors: { cpu: { workers: 1 } }\n",
            ": : :\n",
            "\t\n",
            "- - -\n",
            "'unterminated\n",
            "{ a: b\n",
            "  seed: -1\n",
            "      after: 1e99s\n",
            "      duration: 18446744073709551616s\n",
            "  mode: fixed\n  value: \"x\"\n",
            "\"\\u\n",
        ]);
        prop::collection::vec(atoms, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]
        #[test]
        fn arbitrary_bytes_never_panic(s in "\\PC*") {
            let _ = havoc_spec::parse_experiment(&s);
        }

        #[test]
        fn yaml_shaped_input_never_panics(s in yamlish()) {
            let _ = havoc_spec::parse_experiment(&s);
        }
    }
}
