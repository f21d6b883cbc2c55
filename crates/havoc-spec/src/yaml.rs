//! A YAML document tree that remembers where every node came from.
//!
//! Havoc's error messages name the file, line, column and field path of every problem, for type
//! errors found while deserializing as much as for rules checked afterwards. General-purpose YAML
//! deserializers lose positions (notably around tagged enums), so the spec is first read into this
//! small tree with a position on each node, and then deserialized from it by [`crate::de`].

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
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

/// A syntax error in the YAML itself, or a document beyond [`Limits`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// How much a YAML stream may hold. Anchors and aliases are resolved into a tree, so a few hundred
/// bytes of nested aliases ("billion laughs") would otherwise expand to billions of nodes; these
/// budgets are checked *before* an alias is copied, so parsing stays within a few tens of MiB of
/// memory and linear time whatever the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of source text.
    pub max_bytes: usize,
    /// Nodes in the resolved trees of all documents: every scalar and collection, every node an
    /// alias copies, and every node an anchor keeps for later aliases.
    pub max_nodes: usize,
    /// Bytes of scalar text in the resolved trees, counted the same way.
    pub max_text_bytes: usize,
    /// Alias uses (`*name`) in the stream.
    pub max_aliases: usize,
    /// Nesting of collections, including what aliases bring in.
    pub max_depth: usize,
}

/// 4 MiB: a Havoc spec is a few KiB; Kubernetes refuses objects beyond 1.5 MiB and gRPC messages
/// beyond 4 MiB by default.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
pub const MAX_NODES: usize = 100_000;
pub const MAX_TEXT_BYTES: usize = 16 << 20;
pub const MAX_ALIASES: usize = 1_000;
pub const MAX_DEPTH: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: MAX_DOCUMENT_BYTES,
            max_nodes: MAX_NODES,
            max_text_bytes: MAX_TEXT_BYTES,
            max_aliases: MAX_ALIASES,
            max_depth: MAX_DEPTH,
        }
    }
}

/// The 1-based line and column of byte `offset` of `src` (clamped to a character boundary).
pub fn pos_at(src: &str, offset: usize) -> Pos {
    let mut at = offset.min(src.len());
    while !src.is_char_boundary(at) {
        at -= 1;
    }
    let before = &src[..at];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Pos {
        line,
        col: before[line_start..].chars().count() + 1,
    }
}

/// Human form of a byte count for messages: `4 MiB`, `1500 bytes`.
pub(crate) fn bytes_text(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Parses every document of a YAML stream within the default [`Limits`]. Anchors and aliases
/// are resolved; duplicate keys are an error (YAML forbids them and silently keeping one would
/// hide a mistake).
pub fn parse_documents(src: &str) -> Result<Vec<Node>, SyntaxError> {
    parse_documents_with(src, &Limits::default())
}

/// [`parse_documents`] with explicit limits.
pub fn parse_documents_with(src: &str, limits: &Limits) -> Result<Vec<Node>, SyntaxError> {
    if src.len() > limits.max_bytes {
        return Err(SyntaxError {
            pos: pos_at(src, limits.max_bytes),
            message: format!(
                "the document is {}, more than the limit of {}: a Havoc spec is a few KiB",
                bytes_text(src.len()),
                bytes_text(limits.max_bytes)
            ),
        });
    }
    let mut builder = Builder::new(*limits);
    let mut parser = Parser::new_from_str(src);
    // Events are pulled one by one (not `Parser::load`, which recurses once per nesting level)
    // so that the first exceeded budget stops the parse.
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| SyntaxError {
            pos: Pos::from(*e.marker()),
            message: e.info().to_string(),
        })?;
        let end = ev == Event::StreamEnd;
        builder.on_event(ev, mark);
        if let Some(err) = builder.error.take() {
            return Err(err);
        }
        if end {
            return Ok(builder.docs);
        }
    }
}

/// An anchored node kept for its aliases, with what copying it costs.
struct Anchored {
    node: Node,
    weight: Weight,
}

/// The size of a subtree: nodes, scalar bytes, and height (1 for a scalar).
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    text: usize,
    height: usize,
}

impl Weight {
    fn add_child(&mut self, child: Weight) {
        self.nodes += child.nodes;
        self.text += child.text;
        self.height = self.height.max(child.height + 1);
    }
}

/// An open collection.
struct Frame {
    node: Node,
    anchor: usize,
    weight: Weight,
    /// Pending key (mappings only).
    key: Option<Node>,
    /// Keys seen so far (mappings only): duplicate detection in O(1) per key.
    seen: std::collections::HashSet<String>,
}

struct Builder {
    limits: Limits,
    docs: Vec<Node>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    nodes: usize,
    text: usize,
    aliases: usize,
    error: Option<SyntaxError>,
    /// Set once an error is recorded: later events are ignored.
    failed: bool,
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            limits,
            docs: Vec::new(),
            stack: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            text: 0,
            aliases: 0,
            error: None,
            failed: false,
        }
    }

    fn fail(&mut self, pos: Pos, message: String) {
        if !self.failed {
            self.failed = true;
            self.error = Some(SyntaxError { pos, message });
        }
    }

    /// Charges `w` to the budgets; false (with the error recorded) if that exceeds one.
    fn charge(&mut self, w: Weight, pos: Pos, what: &str) -> bool {
        let nodes = self.nodes.saturating_add(w.nodes);
        let text = self.text.saturating_add(w.text);
        if nodes > self.limits.max_nodes {
            self.fail(
                pos,
                format!(
                    "{what} exceeds {} nodes: the document would have at least {nodes} (nested anchors and aliases multiply; a Havoc spec needs a few hundred)",
                    self.limits.max_nodes
                ),
            );
            return false;
        }
        if text > self.limits.max_text_bytes {
            self.fail(
                pos,
                format!(
                    "{what} exceeds {} of text: the document would have at least {}",
                    bytes_text(self.limits.max_text_bytes),
                    bytes_text(text)
                ),
            );
            return false;
        }
        self.nodes = nodes;
        self.text = text;
        true
    }

    fn push_value(&mut self, node: Node, weight: Weight) {
        let Some(top) = self.stack.last_mut() else {
            self.docs.push(node);
            return;
        };
        top.weight.add_child(weight);
        match &mut top.node.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match top.key.take() {
                None => {
                    if let Some(name) = node.as_scalar() {
                        if !top.seen.insert(name.to_string()) {
                            let message = format!("duplicate key `{}`", truncate(name, 64));
                            let pos = node.pos;
                            self.fail(pos, message);
                            return;
                        }
                    }
                    top.key = Some(node);
                }
                Some(key) => entries.push((key, node)),
            },
            _ => unreachable!("only collections are pushed on the stack"),
        }
    }

    fn open(&mut self, pos: Pos, value: Value, anchor: usize) {
        if self.stack.len() >= self.limits.max_depth {
            self.fail(
                pos,
                format!(
                    "collections are nested more than {} levels deep",
                    self.limits.max_depth
                ),
            );
            return;
        }
        if !self.charge(
            Weight {
                nodes: 1,
                ..Weight::default()
            },
            pos,
            "the document",
        ) {
            return;
        }
        self.stack.push(Frame {
            node: Node::new(pos, value),
            anchor,
            weight: Weight {
                nodes: 1,
                text: 0,
                height: 1,
            },
            key: None,
            seen: Default::default(),
        });
    }

    /// Keeps a copy of an anchored node for later aliases; the copy counts against the budgets.
    fn keep_anchor(&mut self, anchor: usize, node: &Node, weight: Weight) {
        if anchor > 0 && self.charge(weight, node.pos, "alias expansion") {
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    weight,
                },
            );
        }
    }

    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.failed {
            return;
        }
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let weight = Weight {
                    nodes: 1,
                    text: text.len(),
                    height: 1,
                };
                if !self.charge(weight, pos, "the document") {
                    return;
                }
                let quoted = !matches!(style, TScalarStyle::Plain);
                let value =
                    if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                        Value::Null
                    } else {
                        Value::Scalar { text, quoted }
                    };
                let node = Node::new(pos, value);
                self.keep_anchor(anchor, &node, weight);
                self.push_value(node, weight);
            }
            Event::SequenceStart(anchor, _) => self.open(pos, Value::Seq(Vec::new()), anchor),
            Event::MappingStart(anchor, _) => self.open(pos, Value::Map(Vec::new()), anchor),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(Frame {
                    mut node,
                    anchor,
                    weight,
                    ..
                }) = self.stack.pop()
                {
                    // A block mapping is reported where its first key is (the parser marks it
                    // at the first `:`).
                    if let Value::Map(entries) = &node.value {
                        if let Some((k, _)) = entries.first() {
                            if k.pos < node.pos {
                                node.pos = k.pos;
                            }
                        }
                    }
                    self.keep_anchor(anchor, &node, weight);
                    self.push_value(node, weight);
                }
            }
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > self.limits.max_aliases {
                    self.fail(
                        pos,
                        format!(
                            "more than {} aliases: a Havoc spec needs a few",
                            self.limits.max_aliases
                        ),
                    );
                    return;
                }
                let Some(weight) = self.anchors.get(&id).map(|a| a.weight) else {
                    self.fail(pos, "the alias refers to no anchor of this document".into());
                    return;
                };
                if self.stack.len() + weight.height > self.limits.max_depth {
                    self.fail(
                        pos,
                        format!(
                            "alias expansion nests collections more than {} levels deep",
                            self.limits.max_depth
                        ),
                    );
                    return;
                }
                // Checked before the copy is made.
                if !self.charge(weight, pos, "alias expansion") {
                    return;
                }
                let value = self.anchors[&id].node.value.clone();
                self.push_value(Node { pos, value }, weight);
            }
            Event::DocumentStart => self.anchors.clear(),
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
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
