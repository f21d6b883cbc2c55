//! `HTTPChaos`: skeleton, being built (issue 14). Only the selector is read for now.

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::selector::Selector;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HTTPChaos {
    pub selector: Selector,
}

impl HTTPChaos {
    pub fn summary(&self) -> String {
        "http".into()
    }

    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        self.selector.validate(&path.key("selector"), false, p);
        p.add(path, "HTTPChaos is not implemented yet");
    }
}
