//! A YAML document tree that remembers where every node came from.
//!
//! Havoc's error messages name the file, line, column and field path of every problem, for type
//! errors found while deserializing as much as for rules checked afterwards. General-purpose YAML
//! deserializers lose positions (notably around tagged enums), so the spec is first read into this
//! small tree with a position on each node, and then deserialized from it by [`crate::de`].

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing at all.
    Null,
    /// A scalar, with whether it was quoted (a quoted scalar is always a string).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys are kept in source order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn new(pos: Pos, value: Value) -> Self {
        Self { pos, value }
    }

    /// The value under `key` if this is a mapping with a scalar key of that name.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_scalar() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key node of `key`, for errors that belong on the key itself.
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_scalar() == Some(key))
                .map(|(k, _)| k),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short description of the node's type for messages: "a string", "a list"...
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing (null)".into(),
            Value::Scalar { text, .. } => format!("`{}`", truncate(text, 40)),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    /// A copy of this mapping without the given keys.
    pub fn without_keys(&self, keys: &[&str]) -> Node {
        match &self.value {
            Value::Map(entries) => Node::new(
                self.pos,
                Value::Map(
                    entries
                        .iter()
                        .filter(|(k, _)| !k.as_scalar().is_some_and(|s| keys.contains(&s)))
                        .cloned()
                        .collect(),
                ),
            ),
            _ => self.clone(),
        }
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let t: String = s.chars().take(max).collect();
        format!("{t}…")
    }
}

/// A syntax error in the YAML itself.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses every document of a YAML stream. Anchors and aliases are resolved; duplicate keys are
/// an error (YAML forbids them and silently keeping one would hide a mistake).
pub fn parse_documents(src: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(src);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        pos: Pos::from(*e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.docs)
}

#[derive(Default)]
struct Builder {
    docs: Vec<Node>,
    stack: Vec<(Node, usize)>,
    /// Pending key for each open mapping on the stack.
    keys: Vec<Option<Node>>,
    anchors: HashMap<usize, Node>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        let Some((top, _)) = self.stack.last_mut() else {
            self.docs.push(node);
            return;
        };
        match &mut top.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => {
                let slot = self.keys.last_mut().expect("a key slot per open mapping");
                match slot.take() {
                    None => {
                        if let Some(name) = node.as_scalar() {
                            if entries.iter().any(|(k, _)| k.as_scalar() == Some(name))
                                && self.error.is_none()
                            {
                                self.error = Some(SyntaxError {
                                    pos: node.pos,
                                    message: format!("duplicate key `{name}`"),
                                });
                            }
                        }
                        *slot = Some(node);
                    }
                    Some(key) => entries.push((key, node)),
                }
            }
            _ => unreachable!("only collections are pushed on the stack"),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let value =
                    if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                        Value::Null
                    } else {
                        Value::Scalar { text, quoted }
                    };
                let node = Node::new(pos, value);
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_value(node);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack
                    .push((Node::new(pos, Value::Seq(Vec::new())), anchor));
                self.keys.push(None);
            }
            Event::MappingStart(anchor, _) => {
                self.stack
                    .push((Node::new(pos, Value::Map(Vec::new())), anchor));
                self.keys.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.keys.pop();
                if let Some((mut node, anchor)) = self.stack.pop() {
                    // A block mapping is reported where its first key is (the parser marks it
                    // at the first `:`).
                    if let Value::Map(entries) = &node.value {
                        if let Some((k, _)) = entries.first() {
                            if k.pos < node.pos {
                                node.pos = k.pos;
                            }
                        }
                    }
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push_value(node);
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => Node {
                        pos,
                        value: n.value.clone(),
                    },
                    None => Node::new(pos, Value::Null),
                };
                self.push_value(node);
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_the_value() {
        let docs = parse_documents("a: 1\nb:\n  c: [x, 'y']\n").expect("valid yaml");
        let root = &docs[0];
        let c = root.get("b").and_then(|b| b.get("c")).expect("c");
        assert_eq!(c.pos, Pos { line: 3, col: 6 });
        let Value::Seq(items) = &c.value else {
            panic!("seq")
        };
        assert_eq!(items[1].pos, Pos { line: 3, col: 10 });
        assert_eq!(
            items[1].value,
            Value::Scalar {
                text: "y".into(),
                quoted: true
            }
        );
        assert_eq!(
            root.key_node("b").expect("key").pos,
            Pos { line: 2, col: 1 }
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_with_position() {
        let err = parse_documents("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn aliases_resolve() {
        let docs = parse_documents("x: &d 5s\ny: *d\n").expect("valid yaml");
        assert_eq!(docs[0].get("y").and_then(Node::as_scalar), Some("5s"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse_documents("a: [1, 2\nb: 3\n").expect_err("unterminated");
        assert!(err.pos.line >= 1);
    }
}
