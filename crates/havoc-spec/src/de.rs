//! A serde `Deserializer` over the positioned YAML tree, tracking the field path as it descends.
//!
//! Every error carries the path and position of the innermost node it concerns, so that
//! "unknown field", "invalid type" and custom messages from newtypes (durations, percentages)
//! all read `FILE:LINE:COL: spec.faults[0].duration: ...`.
//!
//! Scalars are typed by what the target type asks for: a plain `10` and a quoted `"10"` both
//! deserialize into a number field, and either into a string field. This follows Kubernetes and
//! Chaos Mesh manifests, which quote numbers freely.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::error::SpecError;
use crate::path::FieldPath;
use crate::units::clip;
use crate::yaml::{Node, Pos, Value};

/// A deserialization error; path and position are attached by the innermost node that saw it.
#[derive(Debug, Clone)]
pub struct DeError {
    pub path: Option<FieldPath>,
    pub pos: Option<Pos>,
    pub message: String,
}

impl DeError {
    fn at(mut self, path: &FieldPath, pos: Pos) -> Self {
        if self.path.is_none() {
            // serde reports a missing field on the mapping: name the field itself.
            let missing = self
                .message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(field, _)| field.to_string());
            let path = match missing {
                Some(field) => {
                    self.message = "is required".to_string();
                    path.key(field)
                }
                None => path.clone(),
            };
            self.path = Some(path);
            self.pos = Some(pos);
        }
        self
    }

    pub fn into_spec_error(self) -> SpecError {
        SpecError {
            path: self.path.unwrap_or_default(),
            pos: self.pos.unwrap_or_default(),
            message: self.message,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            path: None,
            pos: None,
            message: msg.to_string(),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let message = if expected.is_empty() {
            format!(
                "unknown field `{}`: this mapping takes no fields",
                clip(field)
            )
        } else {
            let close = closest(field, expected)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            format!(
                "unknown field `{}`: {close}expected one of {}",
                clip(field),
                expected
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        de::Error::custom(message)
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let close = closest(variant, expected)
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        de::Error::custom(format!(
            "unknown value `{}`: {close}expected one of {}",
            clip(variant),
            expected.join(" | ")
        ))
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // The distance table is len(word) x len(candidate): a long word is no typo of a field name.
    if word.len() > 64 {
        return None;
    }
    candidates
        .iter()
        .map(|c| (levenshtein(&word.to_lowercase(), &c.to_lowercase()), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting a swap of two neighbours as one edit (optimal string alignment).
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Deserializes `T` from `node`, whose path from the document root is `path`.
pub fn from_node<T: de::DeserializeOwned>(node: &Node, path: &FieldPath) -> Result<T, SpecError> {
    T::deserialize(NodeDe {
        node,
        path: path.clone(),
    })
    .map_err(DeError::into_spec_error)
}

pub struct NodeDe<'a> {
    node: &'a Node,
    path: FieldPath,
}

impl<'a> NodeDe<'a> {
    pub fn new(node: &'a Node, path: FieldPath) -> Self {
        Self { node, path }
    }

    fn fail(&self, message: String) -> DeError {
        DeError {
            path: Some(self.path.clone()),
            pos: Some(self.node.pos),
            message,
        }
    }

    fn scalar(&self, expected: &str) -> Result<&'a str, DeError> {
        match &self.node.value {
            Value::Scalar { text, .. } => Ok(text),
            _ => Err(self.fail(format!("expected {expected}, got {}", self.node.describe()))),
        }
    }

    fn wrap<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(&self.path, self.node.pos))
    }
}

macro_rules! de_number {
    ($method:ident, $visit:ident, $ty:ty, $what:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let text = self.scalar($what)?;
            let cleaned = text.trim().replace('_', "");
            match cleaned.parse::<$ty>() {
                Ok(v) => self.wrap(visitor.$visit(v)),
                Err(_) => Err(self.fail(format!(
                    "expected {}, got `{}`",
                    $what,
                    crate::units::clip(text)
                ))),
            }
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Scalar { text, quoted: true } => visitor.visit_str(text),
            Value::Scalar {
                text,
                quoted: false,
            } => {
                if text == "true" || text == "True" || text == "TRUE" {
                    visitor.visit_bool(true)
                } else if text == "false" || text == "False" || text == "FALSE" {
                    visitor.visit_bool(false)
                } else if let Ok(v) = text.parse::<u64>() {
                    visitor.visit_u64(v)
                } else if let Ok(v) = text.parse::<i64>() {
                    visitor.visit_i64(v)
                } else if let Ok(v) = text.parse::<f64>() {
                    visitor.visit_f64(v)
                } else {
                    visitor.visit_str(text)
                }
            }
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                path: &self.path,
                i: 0,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                path: &self.path,
                value: None,
            }),
        };
        self.wrap(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar("true or false")? {
            "true" | "True" | "TRUE" => self.wrap(visitor.visit_bool(true)),
            "false" | "False" | "FALSE" => self.wrap(visitor.visit_bool(false)),
            other => Err(self.fail(format!("expected true or false, got `{}`", clip(other)))),
        }
    }

    de_number!(deserialize_i8, visit_i8, i8, "an integer");
    de_number!(deserialize_i16, visit_i16, i16, "an integer");
    de_number!(deserialize_i32, visit_i32, i32, "an integer");
    de_number!(deserialize_i64, visit_i64, i64, "an integer");
    de_number!(deserialize_u8, visit_u8, u8, "a whole number (0..=255)");
    de_number!(
        deserialize_u16,
        visit_u16,
        u16,
        "a whole number (0..=65535)"
    );
    de_number!(deserialize_u32, visit_u32, u32, "a whole number");
    de_number!(deserialize_u64, visit_u64, u64, "a whole number");
    de_number!(deserialize_f32, visit_f32, f32, "a number");
    de_number!(deserialize_f64, visit_f64, f64, "a number");

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.scalar("a string")?;
        self.wrap(visitor.visit_str(text))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => self.wrap(visitor.visit_none()),
            _ => {
                let (path, pos) = (self.path.clone(), self.node.pos);
                visitor.visit_some(self).map_err(|e| e.at(&path, pos))
            }
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => self.wrap(visitor.visit_unit()),
            _ => Err(self.fail(format!("expected nothing, got {}", self.node.describe()))),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (path, pos) = (self.path.clone(), self.node.pos);
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.at(&path, pos))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => self.wrap(visitor.visit_seq(SeqDe {
                items: items.iter(),
                path: &self.path,
                i: 0,
            })),
            _ => Err(self.fail(format!("expected a list, got {}", self.node.describe()))),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => self.wrap(visitor.visit_map(MapDe {
                entries: entries.iter(),
                path: &self.path,
                value: None,
            })),
            _ => Err(self.fail(format!("expected a mapping, got {}", self.node.describe()))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, .. } => {
                self.wrap(visitor.visit_enum(text.as_str().into_deserializer()))
            }
            Value::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                let variant = k.as_scalar().unwrap_or_default().to_string();
                let path = self.path.key(&variant);
                self.wrap(visitor.visit_enum(EnumDe {
                    variant,
                    value: v,
                    path,
                }))
            }
            _ => Err(self.fail(format!(
                "expected one of the allowed values, got {}",
                self.node.describe()
            ))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqDe<'a, I> {
    items: I,
    path: &'a FieldPath,
    i: usize,
}

impl<'de, 'a, I: Iterator<Item = &'a Node>> de::SeqAccess<'de> for SeqDe<'a, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some(node) => {
                let path = self.path.index(self.i);
                self.i += 1;
                seed.deserialize(NodeDe {
                    node,
                    path: path.clone(),
                })
                .map(Some)
                .map_err(|e| e.at(&path, node.pos))
            }
        }
    }
}

struct MapDe<'a, I> {
    entries: I,
    path: &'a FieldPath,
    value: Option<(&'a Node, FieldPath)>,
}

impl<'de, 'a, I: Iterator<Item = &'a (Node, Node)>> de::MapAccess<'de> for MapDe<'a, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            None => Ok(None),
            Some((k, v)) => {
                let path = match k.as_scalar() {
                    Some(name) => self.path.key(name),
                    None => self.path.clone(),
                };
                self.value = Some((v, path.clone()));
                seed.deserialize(NodeDe {
                    node: k,
                    path: path.clone(),
                })
                .map(Some)
                .map_err(|e| e.at(&path, k.pos))
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, path) = self.value.take().expect("value follows key");
        seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        })
        .map_err(|e| e.at(&path, node.pos))
    }
}

struct EnumDe<'a> {
    variant: String,
    value: &'a Node,
    path: FieldPath,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let v = seed.deserialize(self.variant.as_str().into_deserializer())?;
        Ok((
            v,
            NodeDe {
                node: self.value,
                path: self.path,
            },
        ))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_documents;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        workers: u32,
        #[serde(default)]
        #[allow(dead_code)]
        load_pct: Option<u8>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
    }

    fn parse(src: &str) -> Result<Outer, SpecError> {
        let doc = parse_documents(src).expect("yaml").remove(0);
        from_node(&doc, &FieldPath::root())
    }

    #[test]
    fn unknown_field_names_path_position_and_suggestion() {
        let e = parse("items:\n  - workers: 1\n    loadPtc: 3\n").expect_err("unknown");
        assert_eq!(e.path.to_string(), "items[0].loadPtc");
        assert_eq!(e.pos, Pos { line: 3, col: 5 });
        assert!(
            e.message.contains("did you mean `loadPct`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse("items:\n  - workers: many\n").expect_err("type");
        assert_eq!(e.path.to_string(), "items[0].workers");
        assert_eq!(e.pos, Pos { line: 2, col: 14 });
        assert_eq!(e.message, "expected a whole number, got `many`");
    }

    #[test]
    fn missing_field_is_reported_on_the_field() {
        let e = parse("items:\n  - loadPct: 3\n").expect_err("missing");
        assert_eq!(e.path.to_string(), "items[0].workers");
        assert_eq!(e.message, "is required");
    }

    #[test]
    fn quoted_numbers_are_numbers() {
        let o = parse("items:\n  - workers: \"4\"\n").expect("ok");
        assert_eq!(o.items[0].workers, 4);
    }
}
