//! A strict JSON tree that keeps duplicate keys visible and borrows strings from the input.
//!
//! `serde_json::Value` silently keeps the last of two equal keys; a booking whose
//! `direction.lpuToGuid` appears twice could then be authorized on one value and read by the MIS
//! as the other. [`Node`] keeps every member in order so validation can refuse duplicates by path.
//! Parse errors are rendered from their category and position only, never from input text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// One JSON value. Objects keep members in input order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// Parses `input` strictly (one value, nothing after it but white space).
    ///
    /// UTF-8 is checked once over the whole input, so strings need no check of their own (a
    /// booking has about a hundred of them); input that is not UTF-8 goes through the byte
    /// parser, whose error names the line and column of the bad sequence.
    pub fn parse(input: &'a [u8]) -> Result<Node<'a>, String> {
        match std::str::from_utf8(input) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(input),
        }
        .map_err(|e| describe(&e))
    }

    /// The first member named `key`, when `self` is an object.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Every repeat of a key within this object (each later occurrence once); empty for
    /// anything but an object. Objects here have a handful of members, so this is cheap.
    pub fn duplicate_keys(&self) -> impl Iterator<Item = &str> {
        let members: &[(Cow<'a, str>, Node<'a>)] = match self {
            Node::Obj(m) => m,
            _ => &[],
        };
        members
            .iter()
            .enumerate()
            .filter(move |(i, (k, _))| members[..*i].iter().any(|(prev, _)| prev == k))
            .map(|(_, (k, _))| k.as_ref())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The JSON type name, for error reasons that must not show the value itself.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Num(_) => "a number",
            Node::Str(_) => "a string",
            Node::Arr(_) => "an array",
            Node::Obj(_) => "an object",
        }
    }
}

/// A parse error as a sentence without any of the input's text.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Eof => "it ends before the JSON value is complete",
        Category::Syntax if e.to_string().contains("recursion limit") => {
            "it is nested deeper than 128 levels"
        }
        Category::Syntax => "it has a syntax error",
        Category::Data | Category::Io => "it could not be read",
    };
    format!(
        "Problem: {what} (line {}, column {}).",
        e.line(),
        e.column()
    )
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Node::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Node::Num(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v)
            .map(Node::Num)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(8);
        while let Some(Key(k)) = map.next_key()? {
            let v = map.next_value()?;
            members.push((k, v));
        }
        Ok(Node::Obj(members))
    }
}

/// An object key that borrows from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Num(n) => n.serialize(s),
            Node::Str(v) => s.serialize_str(v),
            Node::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Node::Obj(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_duplicates_and_borrows() {
        let n = Node::parse(br#"{"a":"x","a":"y","b":[1,2.5,null,true]}"#).unwrap();
        let Node::Obj(m) = &n else { panic!() };
        assert_eq!(m.len(), 3);
        assert!(matches!(&m[0].1, Node::Str(Cow::Borrowed("x"))));
        assert_eq!(n.get("a").and_then(Node::as_str), Some("x"));
    }

    #[test]
    fn errors_never_contain_input_text() {
        for bad in [
            &br#"{"name": "Canary-Ivanov" "#[..],
            br#"{"name": Canary}"#,
            br#"{"a":1} trailing-Canary"#,
            br#"{"a":"\q-Canary"}"#,
        ] {
            let e = Node::parse(bad).unwrap_err();
            assert!(!e.contains("Canary"), "{e}");
            assert!(e.contains("line 1"), "{e}");
        }
    }

    #[test]
    fn invalid_utf8_is_named_by_position_and_escapes_still_decode() {
        let e = Node::parse(b"{\"a\":\n \"x\xff\"}").unwrap_err();
        assert_eq!(e, "Problem: it has a syntax error (line 2, column 4).");
        let n = Node::parse("{\"a\":\"\\u0416\\n\",\"b\":\"Ж\"}".as_bytes()).unwrap();
        assert_eq!(n.get("a").and_then(Node::as_str), Some("Ж\n"));
        assert_eq!(n.get("b").and_then(Node::as_str), Some("Ж"));
        assert!(matches!(n.get("b"), Some(Node::Str(Cow::Borrowed(_)))));
    }

    #[test]
    fn depth_bomb_is_an_error_not_a_crash() {
        let bomb = "[".repeat(100_000);
        let e = Node::parse(bomb.as_bytes()).unwrap_err();
        assert!(e.contains("nested deeper"), "{e}");
    }

    #[test]
    fn round_trips() {
        let text = r#"{"a":"é\"","b":[1,-2,3.5],"c":{"d":null,"e":false}}"#;
        let n = Node::parse(text.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), text);
    }
}
