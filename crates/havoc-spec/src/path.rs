//! Field paths such as `spec.faults[1].stressors.cpu.load`, and finding the node they name.

use std::fmt;

use crate::yaml::{Node, Pos, Value};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path from the document root to a field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Key(k.into()));
        Self(v)
    }

    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Index(i));
        Self(v)
    }

    /// Parses the dotted form back (used for paths built by hand in messages and tests).
    pub fn parse(s: &str) -> Self {
        let mut out = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let (name, rest) = part.split_once('[').map_or((part, ""), |(a, b)| (a, b));
            if !name.is_empty() {
                out.push(Segment::Key(name.to_string()));
            }
            for idx in rest.split('[') {
                if let Ok(i) = idx.trim_end_matches(']').parse() {
                    out.push(Segment::Index(i));
                }
            }
        }
        Self(out)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The position of the deepest node of `root` along this path: the field's value if it
    /// exists, otherwise its closest existing parent (a missing field is reported where it belongs).
    pub fn locate(&self, root: &Node) -> Pos {
        let mut node = root;
        for seg in &self.0 {
            let next = match (seg, &node.value) {
                (Segment::Key(k), Value::Map(_)) => node.get(k),
                (Segment::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => write!(f, "{}", crate::units::clip(k))?,
                Segment::Key(k) => write!(f, ".{}", crate::units::clip(k))?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let p = FieldPath::root()
            .key("spec")
            .key("faults")
            .index(1)
            .key("stressors");
        assert_eq!(p.to_string(), "spec.faults[1].stressors");
        assert_eq!(FieldPath::parse("spec.faults[1].stressors"), p);
    }
}
