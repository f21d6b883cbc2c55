//! Problems found in a spec, each with a field path and a source position.

use std::fmt;

use crate::path::FieldPath;
use crate::yaml::Pos;

/// One problem in a spec: where it is and what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: FieldPath,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_root() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found in one file, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// Renders every problem as `FILE:LINE:COL: path: message`, one per line.
    pub fn render(&self, file: &str) -> String {
        self.0
            .iter()
            .map(|e| format!("{file}:{}:{}: {e}", e.pos.line, e.pos.col))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn iter(&self) -> impl Iterator<Item = &SpecError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("<input>"))
    }
}

/// Collects validation problems by field path; positions are filled in from the document tree.
#[derive(Debug, Default)]
pub struct Problems {
    items: Vec<(FieldPath, String)>,
}

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.items.push((path.clone(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn into_vec(self) -> Vec<(FieldPath, String)> {
        self.items
    }
}
