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

/// The longest message shown, in characters: values are quoted clipped where the message is made
/// ([`crate::units::clip`]); this is the net under every other path.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// The most problems [`SpecErrors::render`] lists; the rest are counted.
pub const MAX_RENDERED: usize = 100;

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = match self.message.char_indices().nth(MAX_MESSAGE_CHARS) {
            None => std::borrow::Cow::Borrowed(self.message.as_str()),
            Some((at, _)) => std::borrow::Cow::Owned(format!(
                "{}… (message cut at {MAX_MESSAGE_CHARS} characters)",
                &self.message[..at]
            )),
        };
        if self.path.is_root() {
            write!(f, "{message}")
        } else {
            write!(f, "{}: {message}", self.path)
        }
    }
}

/// All problems found in one file, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// Renders the problems as `FILE:LINE:COL: path: message`, one per line: the first
    /// [`MAX_RENDERED`], then a line counting the others.
    pub fn render(&self, file: &str) -> String {
        let mut lines: Vec<String> = self
            .0
            .iter()
            .take(MAX_RENDERED)
            .map(|e| format!("{file}:{}:{}: {e}", e.pos.line, e.pos.col))
            .collect();
        if self.0.len() > MAX_RENDERED {
            let first = &self.0[MAX_RENDERED];
            lines.push(format!(
                "{file}:{}:{}: … and {} more problems",
                first.pos.line,
                first.pos.col,
                self.0.len() - MAX_RENDERED
            ));
        }
        lines.join("\n")
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
