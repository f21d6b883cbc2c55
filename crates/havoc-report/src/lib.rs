//! Havoc's run report for people and programs: the JSON Schema of `report.json` ([`SCHEMA`],
//! [`validate`]) and a self-contained `report.html` ([`render_html`]).
//!
//! Both work on the report's JSON (`serde_json::Value`) rather than on the engine's Rust types,
//! so that the engine, the operator and the agent can all use them on a report they wrote, read
//! back or received, and so that this crate depends on none of them.

mod charts;
mod html;
mod markup;
mod model;
mod schema;

pub use html::render_html;
pub use schema::{validate, SCHEMA};
