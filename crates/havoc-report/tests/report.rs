//! The schema against a report made by the real binary, and the HTML page as a reader (an XML
//! parser) finds it.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};
use serde_json::{json, Value};

const FIXTURE: &str = include_str!("fixture-report.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("the fixture is JSON")
}

/// One element of the page: its name, attributes and the text directly and deeply inside it.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
    text: String,
}

impl Element {
    fn has_class(&self, class: &str) -> bool {
        self.attrs
            .get("class")
            .is_some_and(|c| c.split_whitespace().any(|c| c == class))
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }
}

/// Parses `page` as XML (panicking on any well-formedness error) into its elements, in document
/// order.
fn parse(page: &str) -> Vec<Element> {
    let mut reader = Reader::from_str(page);
    reader.config_mut().check_end_names = true;
    let mut elements: Vec<Element> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let add_text = |elements: &mut Vec<Element>, open: &[usize], s: &str| {
        for &i in open {
            elements[i].text.push_str(s);
        }
    };
    loop {
        let event = reader.read_event().unwrap_or_else(|e| {
            panic!(
                "the page is not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            )
        });
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let mut attrs = BTreeMap::new();
                for a in e.attributes() {
                    let a = a.expect("attributes are well-formed");
                    let value = a
                        .normalized_value(XmlVersion::Implicit1_0)
                        .expect("attribute values unescape");
                    let key = a.key.as_ref().to_string();
                    assert!(
                        attrs.insert(key.clone(), value.into_owned()).is_none(),
                        "duplicate attribute {key}"
                    );
                }
                elements.push(Element {
                    name: e.name().as_ref().to_string(),
                    attrs,
                    text: String::new(),
                });
                if matches!(event, Event::Start(_)) {
                    open.push(elements.len() - 1);
                }
            }
            Event::End(_) => {
                open.pop().expect("an end tag closes an open element");
            }
            Event::Text(t) => add_text(&mut elements, &open, &t.xml10_content()),
            Event::GeneralRef(r) => {
                let c = match r
                    .resolve_char_ref()
                    .expect("character references are valid")
                {
                    Some(c) => c,
                    None => match &*r {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => panic!("&{other}; is not an XML entity"),
                    },
                };
                add_text(&mut elements, &open, c.encode_utf8(&mut [0; 4]));
            }
            Event::CData(_) => panic!("the page has no CDATA"),
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(open.is_empty(), "elements left open at the end of the page");
    elements
}

fn with_class<'a>(elements: &'a [Element], class: &str) -> Vec<&'a Element> {
    elements.iter().filter(|e| e.has_class(class)).collect()
}

// --- Schema -----------------------------------------------------------------------------------

#[test]
fn schema_accepts_the_fixture_made_by_the_real_binary() {
    if let Err(errors) = havoc_report::validate(&fixture()) {
        panic!("the fixture does not validate:\n{}", errors.join("\n"));
    }
}

fn errors_of(report: &Value) -> Vec<String> {
    havoc_report::validate(report).expect_err("the report must not validate")
}

fn assert_any(errors: &[String], path: &str, word: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(word)),
        "no error at {path} mentioning {word}: {errors:#?}"
    );
}

#[test]
fn missing_required_field_is_reported_with_its_path() {
    let mut r = fixture();
    r.as_object_mut().unwrap().remove("seed");
    assert_any(&errors_of(&r), "/", "\"seed\"");

    let mut r = fixture();
    r["faults"][1]["targets"][0]
        .as_object_mut()
        .unwrap()
        .remove("label");
    assert_any(&errors_of(&r), "/faults/1/targets/0", "\"label\"");

    let mut r = fixture();
    r["steadyState"]["verdicts"][2]
        .as_object_mut()
        .unwrap()
        .remove("pass");
    assert_any(&errors_of(&r), "/steadyState/verdicts/2", "\"pass\"");
}

#[test]
fn wrong_type_is_reported_with_its_path() {
    let mut r = fixture();
    r["durationSeconds"] = json!("6s");
    assert_any(&errors_of(&r), "/durationSeconds", "number");

    let mut r = fixture();
    r["steadyState"]["probes"][1]["samples"][3]["latencyMs"] = json!("5ms");
    assert_any(
        &errors_of(&r),
        "/steadyState/probes/1/samples/3/latencyMs",
        "number",
    );

    let mut r = fixture();
    r["faults"][1]["targets"][0]["effect"]["metrics"]["workers"] = json!("one");
    assert_any(
        &errors_of(&r),
        "/faults/1/targets/0/effect/metrics/workers",
        "number",
    );

    let mut r = fixture();
    r["verdict"] = json!("exploded");
    assert_any(&errors_of(&r), "/verdict", "exploded");

    let mut r = fixture();
    r["faults"][0]["targets"][0]["target"]["pid"] = json!(-3);
    assert_any(&errors_of(&r), "/faults/0/targets/0/target/pid", "-3");
}

#[test]
fn unknown_fields_are_rejected_where_the_shape_is_fixed() {
    let mut r = fixture();
    r["timing"]["applyLatencyMS"] = json!(3.0);
    assert_any(&errors_of(&r), "/timing", "applyLatencyMS");
}

#[test]
fn optional_parts_may_be_absent() {
    let mut r = fixture();
    let o = r.as_object_mut().unwrap();
    o.remove("steadyState");
    o.remove("reason");
    o["timing"] = json!({});
    o["faults"] = json!([]);
    if let Err(errors) = havoc_report::validate(&r) {
        panic!("a minimal report does not validate:\n{}", errors.join("\n"));
    }
}

#[test]
fn every_schema_property_is_described() {
    fn walk(v: &Value, path: &str) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (name, p) in props {
                let here = format!("{path}/{name}");
                // A bare `$ref` is described by the definition it points to.
                let described = p.get("description").is_some() || p.get("$ref").is_some();
                assert!(described, "{here} has no description");
                walk(p, &here);
            }
        }
        if let Some(defs) = v.get("$defs").and_then(Value::as_object) {
            for (name, d) in defs {
                let here = format!("{path}/$defs/{name}");
                assert!(d.get("description").is_some(), "{here} has no description");
                walk(d, &here);
            }
        }
    }
    let schema: Value = serde_json::from_str(havoc_report::SCHEMA).expect("SCHEMA is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    walk(&schema, "");
}

#[test]
fn the_schema_document_names_every_field() {
    let doc = include_str!("../../../docs/report-schema.md");
    fn names(v: &Value, out: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (name, p) in props {
                out.push(name.clone());
                names(p, out);
            }
        }
        if let Some(defs) = v.get("$defs").and_then(Value::as_object) {
            for d in defs.values() {
                names(d, out);
            }
        }
    }
    let schema: Value = serde_json::from_str(havoc_report::SCHEMA).expect("SCHEMA is JSON");
    let mut all = Vec::new();
    names(&schema, &mut all);
    for name in all {
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/report-schema.md does not describe `{name}`"
        );
    }
}

// --- HTML -------------------------------------------------------------------------------------

#[test]
fn fixture_page_is_well_formed_and_self_contained() {
    let page = havoc_report::render_html(&fixture());
    assert!(page.starts_with("<!DOCTYPE html>"));
    let elements = parse(&page);
    assert_eq!(elements[0].name, "html");
    for e in &elements {
        assert_ne!(e.name, "script", "the page has no script");
        assert!(
            e.attr("src").is_none(),
            "<{}> loads {:?}",
            e.name,
            e.attr("src")
        );
        assert!(
            e.attr("href").is_none(),
            "<{}> links {:?}",
            e.name,
            e.attr("href")
        );
    }
    // Only the XHTML and SVG namespace names: nothing is fetched.
    assert_eq!(
        page.matches("http").count(),
        page.matches("http://www.w3.org/").count()
    );
}

#[test]
fn fixture_page_has_one_window_per_fault_target() {
    let r = fixture();
    let elements = parse(&havoc_report::render_html(&r));
    let windows = with_class(&elements, "fault-window");
    let planned = with_class(&elements, "planned-window");
    for f in r["faults"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let targets = f["targets"].as_array().unwrap();
        let mine: Vec<_> = windows
            .iter()
            .filter(|w| w.attr("data-fault") == Some(name))
            .collect();
        assert_eq!(mine.len(), targets.len(), "fault windows of {name}");
        for (w, t) in mine.iter().zip(targets) {
            assert_eq!(w.attr("data-target"), t["label"].as_str());
        }
        assert_eq!(
            planned
                .iter()
                .filter(|w| w.attr("data-fault") == Some(name))
                .count(),
            1,
            "planned window of {name}"
        );
    }
    // Phase bands: one per phase, in the timeline and in each probe chart.
    let bands = with_class(&elements, "phase-band");
    assert_eq!(bands.len(), 3 * (1 + 2));
}

#[test]
fn fixture_page_plots_every_sample_of_every_probe() {
    let r = fixture();
    let elements = parse(&havoc_report::render_html(&r));
    let series = with_class(&elements, "probe-series");
    let probes = r["steadyState"]["probes"].as_array().unwrap();
    assert_eq!(series.len(), probes.len());
    for p in probes {
        let name = p["probe"].as_str().unwrap();
        assert!(
            series.iter().any(|s| s.attr("data-probe") == Some(name)),
            "no series for {name}"
        );
    }
    // Samples appear in document order, one group per sample, coloured by outcome.
    let samples = with_class(&elements, "sample");
    let expected: Vec<bool> = probes
        .iter()
        .flat_map(|p| p["samples"].as_array().unwrap())
        .map(|s| s["ok"].as_bool().unwrap())
        .collect();
    let got: Vec<bool> = samples.iter().map(|s| s.has_class("ok")).collect();
    assert_eq!(got, expected);
    assert!(samples
        .iter()
        .all(|s| s.has_class("ok") != s.has_class("fail")));
    // Each point says what the sample was, including its error.
    assert!(
        samples[0].text.contains("Connection refused"),
        "{:?}",
        samples[0].text
    );
}

#[test]
fn fixture_page_shows_verdict_seed_and_tables() {
    let elements = parse(&havoc_report::render_html(&fixture()));
    let badge = with_class(&elements, "verdict-badge");
    assert_eq!(badge.len(), 1);
    assert_eq!(badge[0].attr("data-verdict"), Some("deviated"));
    assert_eq!(badge[0].text, "DEVIATED");
    let seed = with_class(&elements, "seed");
    assert_eq!(seed[0].text, "42");
    assert_eq!(
        with_class(&elements, "run-id")[0].text,
        "fixture-6980-1795403283903"
    );
    assert!(with_class(&elements, "started")[0]
        .text
        .starts_with("2026-11-23 03:08:03.903 UTC"));
    assert!(with_class(&elements, "recovered")[0]
        .text
        .starts_with("yes"));
    // Requested beside measured.
    let cpu = elements
        .iter()
        .find(|e| e.name == "tr" && e.attr("data-metric") == Some("cpu_load_percent_per_worker"))
        .expect("a row for cpu_load_percent_per_worker");
    assert!(
        cpu.text.contains("30%") && cpu.text.contains("29.87%"),
        "{}",
        cpu.text
    );
    // One verdict row per probe per phase, failures marked.
    let rows: Vec<_> = elements
        .iter()
        .filter(|e| e.name == "tr" && e.attr("data-phase").is_some())
        .collect();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows.iter().filter(|r| r.has_class("fail")).count(), 3);
    // Timing, by field name.
    let apply = elements
        .iter()
        .find(|e| e.attr("data-timing") == Some("applyLatencyMs"))
        .expect("an applyLatencyMs row");
    assert!(apply.text.contains("1026 ms"), "{}", apply.text);
    let errors = elements
        .iter()
        .find(|e| e.has_class("errors"))
        .expect("an errors list");
    assert!(errors.text.contains("probe `port-open` not steady"));
}

#[test]
fn text_from_the_report_is_escaped() {
    let mut r = fixture();
    let evil = "<script>alert(\"x\")</script> & 'quotes' \u{1b}[31m\u{0}";
    r["steadyState"]["probes"][0]["samples"][0]["error"] = json!(evil);
    r["errors"] = json!([evil]);
    r["faults"][0]["name"] = json!("</svg><b>");
    r["experiment"] = json!("<i>exp</i>");
    let page = havoc_report::render_html(&r);
    assert!(!page.contains("<script"), "unescaped script tag");
    assert!(!page.contains("<i>exp"));
    let elements = parse(&page);
    assert!(elements
        .iter()
        .all(|e| e.name != "script" && e.name != "b" && e.name != "i"));
    let shown = "<script>alert(\"x\")</script> & 'quotes' \u{fffd}[31m\u{fffd}";
    let errors = elements.iter().find(|e| e.has_class("errors")).unwrap();
    assert_eq!(errors.text, shown);
    let windows = with_class(&elements, "fault-window");
    assert_eq!(windows[0].attr("data-fault"), Some("</svg><b>"));
    assert!(with_class(&elements, "sample")[0].text.contains(shown));
}

#[test]
fn report_without_steady_state_renders() {
    let mut r = fixture();
    r.as_object_mut().unwrap().remove("steadyState");
    let elements = parse(&havoc_report::render_html(&r));
    assert!(with_class(&elements, "probe-series").is_empty());
    assert_eq!(with_class(&elements, "fault-window").len(), 2);
    assert!(elements
        .iter()
        .any(|e| e.has_class("note") && e.text.contains("no steadyState")));
}

#[test]
fn a_bare_or_broken_report_still_renders() {
    for r in [
        json!({}),
        json!(null),
        json!({"faults": "none", "steadyState": {"probes": [{"samples": [{"tSeconds": "x"}]}]}}),
        json!({
            "experiment": "half",
            "verdict": "failed",
            "durationSeconds": 0.0,
            "faults": [{"name": "f", "targets": [
                {"label": "pid 1 (a)", "injectedAtSeconds": 0.5},
                {"label": "pid 2 (b)", "error": "no such process"}
            ]}],
            "allRecovered": false
        }),
    ] {
        let page = havoc_report::render_html(&r);
        parse(&page);
    }
    let r = json!({
        "faults": [{"name": "f", "targets": [
            {"label": "pid 1 (a)", "injectedAtSeconds": 0.5},
            {"label": "pid 2 (b)", "error": "no such process"}
        ]}],
        "allRecovered": false
    });
    let elements = parse(&havoc_report::render_html(&r));
    let windows = with_class(&elements, "fault-window");
    assert_eq!(windows.len(), 1);
    assert!(windows[0].has_class("not-recovered"));
    assert_eq!(with_class(&elements, "not-injected").len(), 1);
    assert!(with_class(&elements, "recovered")[0].text.starts_with("NO"));
}

#[test]
fn abort_moment_is_marked() {
    let mut r = fixture();
    r["verdict"] = json!("aborted");
    r["steadyState"]["breaches"] = json!([{
        "probe": "port-open",
        "phase": "chaos",
        "tSeconds": 1.6,
        "reason": "3 failures in a row"
    }]);
    r["timing"]["abortToRecoveredMs"] = json!(12.5);
    if let Err(e) = havoc_report::validate(&r) {
        panic!("{e:#?}");
    }
    let elements = parse(&havoc_report::render_html(&r));
    let markers = with_class(&elements, "abort-marker");
    // In the timeline and in both probe charts.
    assert_eq!(markers.len(), 3);
    assert!(markers
        .iter()
        .all(|m| m.attr("data-t-seconds") == Some("1.6")));
    let abort = elements
        .iter()
        .find(|e| e.attr("data-timing") == Some("abortToRecoveredMs"))
        .unwrap();
    assert!(abort.text.contains("12.5 ms"), "{}", abort.text);
}
