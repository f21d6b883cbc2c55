//! The JSON Schema of `report.json` and validation against it.
//!
//! The schema is a document of its own (`report.schema.json`, draft 2020-12) so that people and
//! other tools can read it; it describes every field, and rejects unknown ones wherever the
//! shape is fixed, so that the report and its schema cannot drift apart silently.

use std::sync::OnceLock;

use serde_json::Value;

/// The JSON Schema (draft 2020-12) of a Havoc run report.
pub const SCHEMA: &str = include_str!("report.schema.json");

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(SCHEMA).expect("SCHEMA is JSON (checked by the crate's tests)");
        jsonschema::draft202012::new(&schema)
            .expect("SCHEMA is a valid draft 2020-12 schema (checked by the crate's tests)")
    })
}

/// Checks `report` against [`SCHEMA`].
///
/// Returns every violation, each as `PATH: MESSAGE`, where PATH is the JSON Pointer of the
/// offending value (`/faults/0/targets/0/injectedAtSeconds`; `/` for the report itself).
pub fn validate(report: &Value) -> Result<(), Vec<String>> {
    let errors: Vec<String> = validator()
        .iter_errors(report)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() { "/" } else { path.as_str() };
            format!("{path}: {e}")
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_a_valid_draft_2020_12_schema() {
        let schema: Value = serde_json::from_str(SCHEMA).expect("SCHEMA parses as JSON");
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("SCHEMA is not a valid schema: {e}");
        }
        validator();
    }
}
