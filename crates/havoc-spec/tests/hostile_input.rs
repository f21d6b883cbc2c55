//! Hostile input gets a clear, positioned error within bounded time and memory: alias bombs,
//! deep nesting, oversized documents, huge durations, and huge values in messages.

use std::time::{Duration, Instant};

use havoc_spec::yaml::{parse_documents, parse_documents_with, Limits, Pos, MAX_NODES};
use havoc_spec::{parse_experiment, Experiment};

/// The classic "billion laughs": 9 levels of 9 aliases, 9^9 = 387 million scalars once expanded.
fn billion_laughs() -> String {
    let mut s = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        s.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    s
}

#[test]
fn billion_laughs_stops_at_the_node_budget_with_a_position() {
    let src = billion_laughs();
    assert!(src.len() < 400, "the bomb is small: {} bytes", src.len());
    let started = Instant::now();
    let err = parse_documents(&src).expect_err("the bomb is refused");
    // Generous bound: the budget is reached after about 10^5 node copies (milliseconds), while
    // the unbounded expansion ran for over 30 s and 10 GB before this fix.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.message
            .starts_with(&format!("alias expansion exceeds {MAX_NODES} nodes")),
        "{}",
        err.message
    );
    // Level e (line 5) holds 9^5 = 59,049 scalars; with the copy kept for its aliases the
    // document passes 100,000 nodes there.
    assert_eq!(err.pos.line, 5, "{err:?}");
    assert!(err.pos.col > 1);
}

#[test]
fn billion_laughs_through_parse_experiment_is_one_positioned_error() {
    let errs = parse_experiment(&billion_laughs()).expect_err("refused");
    let text = errs.render("bomb.yaml");
    assert_eq!(errs.len(), 1, "{text}");
    assert!(
        text.starts_with("bomb.yaml:5:") && text.contains("alias expansion exceeds 100000 nodes"),
        "{text}"
    );
}

#[test]
fn the_alias_budget_counts_uses() {
    let limits = Limits {
        max_aliases: 3,
        ..Limits::default()
    };
    let ok = "a: &x 1\nb: [*x, *x, *x]\n";
    parse_documents_with(ok, &limits).expect("three aliases are allowed");
    let err = parse_documents_with("a: &x 1\nb: [*x, *x, *x, *x]\n", &limits)
        .expect_err("the fourth alias is refused");
    assert_eq!(err.pos, Pos { line: 2, col: 17 });
    assert!(
        err.message.contains("more than 3 aliases"),
        "{}",
        err.message
    );
}

#[test]
fn a_long_string_copied_by_aliases_hits_the_text_budget() {
    let big = "x".repeat(1 << 20);
    let refs = vec!["*s"; 40].join(", ");
    let src = format!("s: &s \"{big}\"\nt: [{refs}]\n");
    let err = parse_documents(&src).expect_err("40 MiB of copies");
    assert_eq!(err.pos.line, 2);
    assert!(
        err.message.contains("exceeds 16 MiB of text"),
        "{}",
        err.message
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // Block sequences nest one level per `- `: 100,000 levels would recurse in a naive loader.
    let src = "- ".repeat(100_000) + "x\n";
    let err = parse_documents(&src).expect_err("too deep");
    assert!(
        err.message.contains("nested more than 64 levels"),
        "{}",
        err.message
    );
    assert_eq!(err.pos, Pos { line: 1, col: 129 });

    let flow = "[".repeat(200) + &"]".repeat(200);
    assert!(parse_documents(&flow).is_err());
}

#[test]
fn aliases_cannot_nest_past_the_depth_limit() {
    let limits = Limits {
        max_depth: 6,
        ..Limits::default()
    };
    let src = "a: &a [[[[1]]]]\nb: [[*a]]\n";
    let err = parse_documents_with(src, &limits).expect_err("4 + 3 levels");
    assert!(
        err.message.contains("alias expansion nests"),
        "{}",
        err.message
    );
    assert_eq!(err.pos.line, 2);
}

#[test]
fn an_oversized_document_is_refused_before_parsing() {
    let src = format!("a: 1\n{}", "#".repeat(5 << 20));
    let err = parse_documents(&src).expect_err("5 MiB");
    assert!(
        err.message.contains("more than the limit of 4 MiB"),
        "{}",
        err.message
    );
    assert_eq!(err.pos.line, 2);
}

#[test]
fn many_keys_are_checked_for_duplicates_in_linear_time() {
    let mut src = String::new();
    for i in 0..40_000 {
        src.push_str(&format!("k{i}: 1\n"));
    }
    src.push_str("k7: 2\n");
    let started = Instant::now();
    let err = parse_documents(&src).expect_err("duplicate");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.pos.line, 40_001);
    assert!(err.message.contains("duplicate key `k7`"));
}

#[test]
fn an_alias_to_another_documents_anchor_is_an_error() {
    let err = parse_documents("a: &x 1\n---\nb: *x\n").expect_err("cross-document alias");
    assert_eq!(err.pos.line, 3);
}

const EXP: &str = "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: { name: t }\nspec:\n  duration: 10s\n  faults:\n    - name: p\n      kind: ProcessChaos\n      action: pause\n      selector: { pids: [1] }\n";

fn errors(src: &str) -> String {
    parse_experiment(src).expect_err("invalid").render("x.yaml")
}

#[test]
fn a_duration_beyond_u64_seconds_is_a_positioned_error_not_a_panic() {
    let src = EXP.replace(
        "action: pause",
        "action: pause\n      after: 18446744073709551615s",
    );
    let text = errors(&src);
    assert!(
        text.contains("x.yaml:10:14: spec.faults[0].after: `18446744073709551615s` is too long: durations are at most 365 days"),
        "{text}"
    );
}

#[test]
fn after_and_durations_have_upper_bounds() {
    let text = errors(&EXP.replace("action: pause", "action: pause\n      after: 8d"));
    assert!(
        text.contains("x.yaml:10:14: spec.faults[0].after: must be at most 7 days, got 8days"),
        "{text}"
    );
    let text = errors(&EXP.replace("duration: 10s", "duration: 400d"));
    assert!(
        text.contains("x.yaml:5:13: spec.duration: `400d` is too long"),
        "{text}"
    );
    let text = errors(&EXP.replace("duration: 10s", "duration: 30d"));
    assert!(
        text.contains("spec.duration: must be at most 7 days"),
        "{text}"
    );
}

#[test]
fn fault_end_of_the_largest_valid_values_does_not_overflow() {
    let src = EXP.replace(
        "action: pause",
        "action: pause\n      after: 7d\n      duration: 7d",
    );
    let e: Experiment = parse_experiment(&src).expect("7 days each is valid");
    assert_eq!(e.chaos_length(), Duration::from_secs(14 * 24 * 3600));
    // An experiment built by hand, never validated, still cannot overflow.
    let mut e = e;
    e.spec.faults[0].after = Some(Duration::MAX.into());
    assert_eq!(e.chaos_length(), Duration::MAX);
}

#[test]
fn probe_timing_delays_rates_and_sizes_are_bounded() {
    let net = |fields: &str| {
        errors(
            &EXP.replace(
                "      action: pause\n      selector: { pids: [1] }\n",
                &format!("      action: netem\n      selector: {{ netns: [x] }}\n{fields}"),
            )
            .replace("kind: ProcessChaos", "kind: NetworkChaos"),
        )
    };
    let text = net("      delay: { latency: 61s, jitter: 1s }\n");
    assert!(
        text.contains("delay.latency: must be at most 60s"),
        "{text}"
    );
    let text = net("      delay: { latency: 1s, jitter: 2s }\n");
    assert!(
        text.contains("delay.jitter: must not exceed latency"),
        "{text}"
    );
    let text = net("      bandwidth: { rate: 99999999999999999999gbit }\n");
    assert!(
        text.contains("bandwidth.rate: `99999999999999999999gbit` is too fast"),
        "{text}"
    );
    let text = net("      bandwidth: { rate: 1mbit, limit: 99999999TiB }\n");
    assert!(
        text.contains("bandwidth.limit: `99999999TiB` is too large"),
        "{text}"
    );
    let text = net("      bandwidth: { rate: 1mbit, buffer: 2GiB }\n");
    assert!(
        text.contains("bandwidth.buffer: must be at most 1GiB, got 2GiB"),
        "{text}"
    );

    let probes = "  steadyState:\n    probes:\n      - name: a\n        tcp: { address: \"127.0.0.1:1\", timeout: 11m }\n        interval: 2h\n";
    let text = errors(&format!("{EXP}{probes}"));
    assert!(text.contains("tcp.timeout: must be at most 10m"), "{text}");
    assert!(
        text.contains("probes[0].interval: must be at most 1h"),
        "{text}"
    );
}

#[test]
fn a_huge_name_is_quoted_clipped() {
    let name = "A".repeat(1 << 20);
    let src = EXP.replace("name: t", &format!("name: {name}"));
    let text = errors(&src);
    assert!(text.len() < 2_000, "the message is {} bytes", text.len());
    assert!(
        text.contains(&format!(
            "`{}… ({} bytes)` is not a valid name",
            "A".repeat(64),
            1 << 20
        )),
        "{text}"
    );
}

#[test]
fn huge_keys_and_values_are_clipped_everywhere() {
    let key = "k".repeat(1 << 20);
    let text = errors(&EXP.replace("action: pause", &format!("action: pause\n      {key}: 1")));
    assert!(
        text.len() < 2_000,
        "unknown field message is {} bytes",
        text.len()
    );
    let val = "9".repeat(1 << 20) + "x";
    let text = errors(&EXP.replace("duration: 10s", &format!("duration: {val}")));
    assert!(
        text.len() < 2_000,
        "duration message is {} bytes",
        text.len()
    );
    let text = errors(&EXP.replace("pids: [1]", &format!("pids: [{val}]")));
    assert!(text.len() < 2_000, "number message is {} bytes", text.len());
}

#[test]
fn thousands_of_problems_render_as_a_bounded_list() {
    let mut src = EXP.to_string();
    for i in 0..5_000 {
        src.push_str(&format!("    - {{ name: f{i}, kind: Nope }}\n"));
    }
    let text = errors(&src);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 101, "{}", lines.len());
    assert!(
        lines[100].contains("and 4900 more problems"),
        "{}",
        lines[100]
    );
}
