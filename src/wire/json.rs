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
    /// UTF-8 is checked once over the whole input, then `Parser` builds the tree in one pass
    /// (strings without escapes are borrowed). Input that is not UTF-8 goes through
    /// `serde_json`'s byte parser, whose error names the line and column of the bad sequence.
    pub fn parse(input: &'a [u8]) -> Result<Node<'a>, String> {
        match std::str::from_utf8(input) {
            Ok(text) => Parser::new(text).document().map_err(|e| e.describe(text)),
            Err(_) => serde_json::from_slice::<Node>(input).map_err(|e| describe(&e)),
        }
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

    /// Compact JSON text, byte for byte what `serde_json::to_vec` writes for this tree, without
    /// going through a serializer.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Num(n) => {
                // Numbers are rare here; serde_json's own formatting keeps them identical.
                let _ = serde_json::to_writer(&mut *out, n);
            }
            Node::Str(s) => write_json_str(s, out),
            Node::Arr(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
            Node::Obj(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_str(k, out);
                    out.push(b':');
                    v.write_json(out);
                }
                out.push(b'}');
            }
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

/// `s` as a JSON string literal, escaped as [`escape_json`] escapes.
pub fn write_json_str(s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    if needs_no_escape(s.as_bytes()) {
        // The common string, found eight bytes at a time: copied in one piece.
        out.extend_from_slice(s.as_bytes());
    } else {
        let _ = escape_json(s, |piece| {
            out.extend_from_slice(piece.as_bytes());
            Ok::<(), std::convert::Infallible>(())
        });
    }
    out.push(b'"');
}

/// The inside of a JSON string literal for `s`, handed to `put` piece by piece, escaped as
/// `serde_json` escapes: `"`, `\` and control characters only (the short forms where JSON has
/// them, else `\u00XX`). Shared by [`Node::to_json`] and the JSON log lines.
pub fn escape_json<E>(s: &str, mut put: impl FnMut(&str) -> Result<(), E>) -> Result<(), E> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Per byte: 0 copies it; `u` writes `\u00XX`; anything else follows a backslash.
    const ESCAPE: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut i = 0;
        while i < 0x20 {
            t[i] = b'u';
            i += 1;
        }
        t[0x08] = b'b';
        t[0x09] = b't';
        t[0x0a] = b'n';
        t[0x0c] = b'f';
        t[0x0d] = b'r';
        t[b'"' as usize] = b'"';
        t[b'\\' as usize] = b'\\';
        t
    };
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        // Every escaped byte is ASCII, so `run..i` is on char boundaries.
        put(&s[run..i])?;
        let seq = [
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 15)],
        ];
        let short = [b'\\', escape];
        let piece: &[u8] = if escape == b'u' { &seq } else { &short };
        // ASCII by construction.
        put(std::str::from_utf8(piece).unwrap_or_default())?;
        run = i + 1;
    }
    put(&s[run..])
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

/// Where a key is in the text (between its quotes) and whether it has escapes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeySpan {
    start: usize,
    end: usize,
    escaped: bool,
}

/// Nesting deeper than this is refused (`serde_json`'s limit, kept for the same answers).
const MAX_DEPTH: usize = 128;

/// What went wrong, and where (a byte offset into the input).
#[derive(Debug, PartialEq)]
pub(crate) struct ParseError {
    kind: ErrorKind,
    at: usize,
}

#[derive(Debug, PartialEq)]
enum ErrorKind {
    Eof,
    Syntax,
    Depth,
}

impl ParseError {
    /// The sentence [`describe`] writes for `serde_json`'s errors, with the same line and
    /// column numbering (1-based; columns count bytes).
    pub(crate) fn describe(&self, text: &str) -> String {
        let what = match self.kind {
            ErrorKind::Eof => "it ends before the JSON value is complete",
            ErrorKind::Syntax => "it has a syntax error",
            ErrorKind::Depth => "it is nested deeper than 128 levels",
        };
        let before = &text.as_bytes()[..self.at.min(text.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = before.len() - line_start + 1;
        format!("Problem: {what} (line {line}, column {column}).")
    }
}

/// A strict RFC 8259 parser over text already known to be UTF-8, building [`Node`]s directly:
/// the same trees and the same refusals as going through `serde_json` with [`NodeVisitor`]
/// (a property test holds them equal), without serde's visitor machinery.
pub(crate) struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
        }
    }

    fn error(&self, kind: ErrorKind) -> ParseError {
        ParseError { kind, at: self.at }
    }

    /// A syntax error at the current byte, or the end of input if there is none.
    fn unexpected(&self) -> ParseError {
        if self.at >= self.bytes.len() {
            self.error(ErrorKind::Eof)
        } else {
            self.error(ErrorKind::Syntax)
        }
    }

    /// One value and nothing after it but white space.
    fn document(mut self) -> Result<Node<'a>, ParseError> {
        let value = self.value()?;
        self.end()?;
        Ok(value)
    }

    // ---- The steps of the grammar's containers, shared by the tree (`value`) and the walks
    // that build none (`skip_value`, `transcode`, `crate::booking::check`,
    // `crate::booking::normalize`): the same errors at the same positions whichever way a document is
    // read.

    /// The first byte of the next value, after white space.
    #[inline]
    pub(crate) fn peek_value(&mut self) -> Option<u8> {
        self.skip_ws();
        self.peek()
    }

    /// Past the `{` or `[` at the current byte (see [`Parser::peek_value`]), `close` being
    /// its `}` or `]`; whether a member or item follows (`false`: it was empty and is closed).
    #[inline]
    pub(crate) fn open(&mut self, close: u8) -> Result<bool, ParseError> {
        self.enter()?;
        self.skip_ws();
        if self.peek() == Some(close) {
            self.leave();
            return Ok(false);
        }
        Ok(true)
    }

    /// The next member's key, past its `:`: where it is, for [`Parser::key_text`]. (A span,
    /// not the text, so that the common borrowed key is not moved around as a `Cow`.)
    #[inline(always)]
    pub(crate) fn key(&mut self) -> Result<KeySpan, ParseError> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(self.unexpected());
        }
        self.at += 1;
        let start = self.at;
        let escaped = matches!(self.string()?, Cow::Owned(_));
        let span = KeySpan {
            start,
            end: self.at - 1,
            escaped,
        };
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.unexpected());
        }
        self.at += 1;
        Ok(span)
    }

    /// The text of a key [`Parser::key`] returned, its escapes decoded.
    #[inline(always)]
    pub(crate) fn key_text(&self, span: KeySpan) -> Cow<'a, str> {
        if !span.escaped {
            return Cow::Borrowed(&self.text[span.start..span.end]);
        }
        self.escaped_key_text(span)
    }

    #[cold]
    #[inline(never)]
    fn escaped_key_text(&self, span: KeySpan) -> Cow<'a, str> {
        let mut again = Parser::new(self.text);
        again.at = span.start;
        // The same bytes parsed a second time: cannot fail.
        again.string().unwrap_or_default()
    }

    /// After a member's value or an item: whether another follows (`false`: the container
    /// is closed by `close`).
    #[inline]
    pub(crate) fn next(&mut self, close: u8) -> Result<bool, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.leave();
                Ok(false)
            }
            _ => Err(self.unexpected()),
        }
    }

    /// The string at the current byte (a `"`, see [`Parser::peek_value`]).
    #[inline]
    pub(crate) fn string_value(&mut self) -> Result<Cow<'a, str>, ParseError> {
        self.at += 1;
        self.string()
    }

    /// Checks the next value as [`Parser::value`] would, building nothing.
    pub(crate) fn skip_value(&mut self) -> Result<(), ParseError> {
        match self.peek_value() {
            Some(b'{') => {
                let mut more = self.open(b'}')?;
                while more {
                    self.key()?;
                    self.skip_value()?;
                    more = self.next(b'}')?;
                }
                Ok(())
            }
            Some(b'[') => {
                let mut more = self.open(b']')?;
                while more {
                    self.skip_value()?;
                    more = self.next(b']')?;
                }
                Ok(())
            }
            Some(b'"') => self.string_value().map(drop),
            _ => self.value().map(drop),
        }
    }

    /// Checks the next value as [`Parser::value`] would and writes it to `out` as
    /// [`Node::to_json`] writes the tree that would give, building none: the same errors at the
    /// same positions, the same bytes.
    pub(crate) fn transcode(&mut self, out: &mut Vec<u8>) -> Result<(), ParseError> {
        match self.peek_value() {
            Some(open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                out.push(open);
                let mut more = self.open(close)?;
                let mut first = true;
                while more {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    if open == b'{' {
                        let key = self.key()?;
                        write_json_str(&self.key_text(key), out);
                        out.push(b':');
                    }
                    self.transcode(out)?;
                    more = self.next(close)?;
                }
                out.push(close);
                Ok(())
            }
            Some(b'"') => {
                let s = self.string_value()?;
                write_json_str(&s, out);
                Ok(())
            }
            _ => {
                self.value()?.write_json(out);
                Ok(())
            }
        }
    }

    /// Nothing but white space after the document's value.
    pub(crate) fn end(&mut self) -> Result<(), ParseError> {
        self.skip_ws();
        if self.at < self.bytes.len() {
            return Err(self.error(ErrorKind::Syntax));
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// The next value as a tree.
    pub(crate) fn value(&mut self) -> Result<Node<'a>, ParseError> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.error(ErrorKind::Eof)),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                self.at += 1;
                Ok(Node::Str(self.string()?))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true", Node::Bool(true)),
            Some(b'f') => self.literal(b"false", Node::Bool(false)),
            Some(b'n') => self.literal(b"null", Node::Null),
            Some(_) => Err(self.error(ErrorKind::Syntax)),
        }
    }

    fn literal(&mut self, word: &[u8], node: Node<'a>) -> Result<Node<'a>, ParseError> {
        for &expected in word {
            match self.peek() {
                Some(b) if b == expected => self.at += 1,
                _ => return Err(self.unexpected()),
            }
        }
        Ok(node)
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return Err(self.error(ErrorKind::Depth));
        }
        self.at += 1;
        Ok(())
    }

    /// Past the closing bracket of an array or object.
    fn leave(&mut self) {
        self.at += 1;
        self.depth -= 1;
    }

    fn array(&mut self) -> Result<Node<'a>, ParseError> {
        let mut items = Vec::new();
        let mut more = self.open(b']')?;
        while more {
            items.push(self.value()?);
            more = self.next(b']')?;
        }
        Ok(Node::Arr(items))
    }

    fn object(&mut self) -> Result<Node<'a>, ParseError> {
        let mut members = Vec::with_capacity(8);
        let mut more = self.open(b'}')?;
        while more {
            let key = self.key()?;
            members.push((self.key_text(key), self.value()?));
            more = self.next(b'}')?;
        }
        Ok(Node::Obj(members))
    }

    /// The rest of a string whose opening quote was consumed; borrowed unless it has escapes.
    /// The common string has none: this path stays small, and a backslash hands the string
    /// over to [`Parser::string_escaped`].
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        let start = self.at;
        loop {
            self.at += plain_prefix(&self.bytes[self.at..]);
            match self.bytes.get(self.at) {
                Some(b'"') => {
                    // Every byte that ends a run is ASCII, so the slice is on char boundaries.
                    let text = &self.text[start..self.at];
                    self.at += 1;
                    return Ok(Cow::Borrowed(text));
                }
                Some(b'\\') => return self.string_escaped(start).map(Cow::Owned),
                Some(0..=0x1f) => return Err(self.error(ErrorKind::Syntax)),
                Some(_) => self.at += 1,
                None => return Err(self.error(ErrorKind::Eof)),
            }
        }
    }

    /// [`Parser::string`] from the first backslash on (the string began at `start`): the text
    /// with its escapes decoded.
    #[cold]
    #[inline(never)]
    fn string_escaped(&mut self, start: usize) -> Result<String, ParseError> {
        let mut s = String::with_capacity(self.at - start + 16);
        let mut run = start;
        loop {
            self.at += plain_prefix(&self.bytes[self.at..]);
            // Every byte that ends a run is ASCII, so the slices below are on char boundaries.
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(self.error(ErrorKind::Eof));
            };
            match b {
                b'"' => {
                    s.push_str(&self.text[run..self.at]);
                    self.at += 1;
                    return Ok(s);
                }
                b'\\' => {
                    s.push_str(&self.text[run..self.at]);
                    self.at += 1;
                    let Some(&e) = self.bytes.get(self.at) else {
                        return Err(self.error(ErrorKind::Eof));
                    };
                    self.at += 1;
                    match e {
                        b'"' => s.push('"'),
                        b'\\' => s.push('\\'),
                        b'/' => s.push('/'),
                        b'b' => s.push('\u{8}'),
                        b'f' => s.push('\u{c}'),
                        b'n' => s.push('\n'),
                        b'r' => s.push('\r'),
                        b't' => s.push('\t'),
                        b'u' => s.push(self.unicode_escape()?),
                        _ => {
                            self.at -= 1;
                            return Err(self.error(ErrorKind::Syntax));
                        }
                    }
                    run = self.at;
                }
                0..=0x1f => return Err(self.error(ErrorKind::Syntax)),
                _ => self.at += 1,
            }
        }
    }

    /// The character of a `\uXXXX` escape (the `\u` consumed), joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                for expected in [b'\\', b'u'] {
                    match self.peek() {
                        Some(b) if b == expected => self.at += 1,
                        _ => return Err(self.unexpected()),
                    }
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error(ErrorKind::Syntax));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error(ErrorKind::Syntax)),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.error(ErrorKind::Syntax))
    }

    /// Four hex digits; fewer than four bytes left is the end of input, whatever they are.
    fn hex4(&mut self) -> Result<u32, ParseError> {
        let Some(digits) = self.bytes.get(self.at..self.at + 4) else {
            self.at = self.bytes.len();
            return Err(self.error(ErrorKind::Eof));
        };
        let mut v = 0u32;
        for &b in digits {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(self.error(ErrorKind::Syntax)),
            };
            v = v * 16 + u32::from(d);
            self.at += 1;
        }
        Ok(v)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, as `serde_json` types it: an
    /// integer that fits u64 (or, negative, i64) stays an integer; `-0` and everything else
    /// is the nearest f64 (out of range: refused).
    fn number(&mut self) -> Result<Node<'a>, ParseError> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(self.error(ErrorKind::Syntax));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.unexpected()),
        }
        let int_end = self.at;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.at += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.unexpected());
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.unexpected());
            }
            self.digits();
        }
        let token = &self.text[start..self.at];
        if integer {
            let magnitude = &self.text[start + usize::from(negative)..int_end];
            if let Ok(m) = magnitude.parse::<u64>() {
                if !negative {
                    return Ok(Node::Num(m.into()));
                }
                if m != 0 && m <= 1 << 63 {
                    return Ok(Node::Num((m.wrapping_neg() as i64).into()));
                }
            }
        }
        match token
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            Some(n) => Ok(Node::Num(n)),
            None => Err(ParseError {
                kind: ErrorKind::Syntax,
                at: start,
            }),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }
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

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes of the word `w` that a JSON string cannot hold as they are (`"`, `\`, control
/// characters), as the high bit of each: exact for the lowest such byte and for whether there is
/// any (a borrow can only mark a byte above one that is marked rightly).
#[inline(always)]
fn special(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let slash = w ^ (ONES * u64::from(b'\\'));
    (quote.wrapping_sub(ONES) & !quote
        | slash.wrapping_sub(ONES) & !slash
        | w.wrapping_sub(ONES * 0x20) & !w)
        & HIGH
}

/// How many leading bytes of `bytes` a JSON string holds as they are ([`special`]), found eight
/// at a time: exact when one of those bytes lies in the first `len - len % 8`, else a lower bound
/// that leaves at most the last seven bytes to look at one by one.
#[inline]
fn plain_prefix(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let found = special(word(chunk));
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at
}

/// Whether every byte of `s` is printable ASCII (space to `~`) other than `"` and `\`: a text
/// log line quotes such a string as it is.
pub(crate) fn printable_unquoted(s: &[u8]) -> bool {
    // Above 0x7e, as the high bit of each byte (exact as to whether there is any).
    all_words(s, |w| (special(w) | (w.wrapping_add(ONES) | w) & HIGH) == 0)
}

/// Whether a JSON string holds `s` as it is (no `"`, `\` or control character).
fn needs_no_escape(s: &[u8]) -> bool {
    all_words(s, |w| special(w) == 0)
}

/// Whether `ok` holds for `s` taken eight bytes at a time, the last word padded with spaces
/// (which every test here passes). The padding is shifted in, not copied: a copy of a few bytes
/// is a call to `memcpy` for each string.
#[inline(always)]
fn all_words(s: &[u8], ok: impl Fn(u64) -> bool) -> bool {
    let mut chunks = s.chunks_exact(8);
    if !chunks.all(|c| ok(word(c))) {
        return false;
    }
    let rest = chunks.remainder();
    if rest.is_empty() {
        return true;
    }
    let mut last = ONES * u64::from(b' ');
    for (i, &b) in rest.iter().enumerate() {
        let shift = 8 * i;
        last = last & !(0xff << shift) | u64::from(b) << shift;
    }
    ok(last)
}

/// Eight bytes as a little-endian word (`chunk` is eight bytes long).
#[inline]
fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
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

    /// Our parser against `serde_json` driving [`NodeVisitor`]: the same tree, or a refusal of
    /// the same kind; and [`Parser::transcode`] against our tree.
    fn same_as_serde(text: &str) -> Result<(), String> {
        // The transcoder first: it reads as the tree parser reads (the same errors at the same
        // positions) and writes what `to_json` writes for the tree.
        let mut written = Vec::new();
        let mut p = Parser::new(text);
        let transcoded = p.transcode(&mut written).and_then(|()| p.end());
        let tree = Parser::new(text).document();
        match (&tree, &transcoded) {
            (Ok(node), Ok(())) if node.to_json() == written => {}
            (Err(a), Err(b)) if a == b => {}
            _ => {
                return Err(format!(
                    "{text:?}: tree {tree:?}, transcoded {transcoded:?} to {:?}",
                    String::from_utf8_lossy(&written)
                ));
            }
        }
        let ours = Parser::new(text).document();
        let theirs = serde_json::from_str::<Node>(text);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            (Err(a), Err(b)) => {
                use serde_json::error::Category;
                let same = match a.kind {
                    ErrorKind::Eof => b.classify() == Category::Eof,
                    ErrorKind::Depth => b.to_string().contains("recursion limit"),
                    ErrorKind::Syntax => {
                        b.classify() == Category::Syntax && !b.to_string().contains("recursion")
                    }
                };
                if same {
                    Ok(())
                } else {
                    Err(format!("{text:?}: ours {a:?}, serde_json {b}"))
                }
            }
            _ => Err(format!("{text:?}: ours {ours:?}, serde_json {theirs:?}")),
        }
    }

    #[test]
    fn parser_agrees_with_serde_json_on_edge_cases() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "-0.0",
            "1.0",
            "1e2",
            "1E+2",
            "2.5E-3",
            "0.1",
            "-1",
            "123456789",
            "-9223372036854775808",
            "-9223372036854775809",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "1e400",
            "-1e400",
            "1e-400",
            "01",
            "-01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "1e+",
            "1.5e-",
            "0x10",
            "1_000",
            "\"\"",
            "\"a\\\"b\"",
            "\"\\/\\b\\f\\n\\r\\t\"",
            "\"\\u0416\\u00e9\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud83d\"",
            "\"\\ude00\"",
            "\"\\ud83dx\"",
            "\"\\ud83d\\u0041\"",
            "\"\\uZZZZ\"",
            "\"\\u12\"",
            "\"\\x\"",
            "\"a\tb\"",
            "\"a\u{1}b\"",
            "\"unterminated",
            "\"Ж\"",
            "true",
            "false",
            "null",
            "tru",
            "nul",
            "truex",
            "True",
            "",
            "   ",
            "\n",
            "[]",
            "{}",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{\"a\":}",
            "{1:2}",
            "{\"a\":1}x",
            "{\"a\":1} ",
            " {\"a\":[1,{\"b\":null}]}\r\n",
            "[",
            "{",
            "{\"a\"",
            "{\"a\":1,\"a\":2}",
            "[[[]]]",
            "\u{feff}1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for depth in 125..=130 {
            cases.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
            cases.push(format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)));
        }
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|c| same_as_serde(c).err())
            .collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The word-at-a-time tests (a string written in one piece, a log value quoted as it
        /// is) answer as byte-by-byte ones, for any bytes and for printable ASCII strings with
        /// one byte replaced.
        #[test]
        fn word_tests_are_the_byte_by_byte_tests(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            text in "[ -~]{0,40}",
            bad in proptest::prelude::any::<u8>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let plain = |s: &[u8]| s.iter().all(|&b| b >= b' ' && b != b'"' && b != b'\\');
            let printable = |s: &[u8]| plain(s) && s.iter().all(|&b| b <= b'~');
            let text = text.into_bytes();
            let mut changed = text.clone();
            if !changed.is_empty() {
                let i = at.index(changed.len());
                changed[i] = bad;
            }
            for s in [bytes, text, changed] {
                proptest::prop_assert_eq!(super::needs_no_escape(&s), plain(&s));
                proptest::prop_assert_eq!(super::printable_unquoted(&s), printable(&s));
            }
        }

        #[test]
        fn parser_agrees_with_serde_json_on_valid_json(v in json_value(), pretty: bool) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            proptest::prop_assert_eq!(same_as_serde(&text), Ok(()));
        }

        #[test]
        fn to_json_writes_what_serde_json_writes(v in json_value()) {
            let text = serde_json::to_string(&v).unwrap();
            let node = Node::parse(text.as_bytes()).unwrap();
            proptest::prop_assert_eq!(
                String::from_utf8(node.to_json()).unwrap(),
                serde_json::to_string(&node).unwrap()
            );
        }

        #[test]
        fn parser_agrees_with_serde_json_on_mutated_json(
            v in json_value(),
            edits in proptest::collection::vec((0usize..1000, 0usize..3, 0usize..ALPHABET.len()), 1..4),
        ) {
            let mut chars: Vec<char> = serde_json::to_string(&v).unwrap().chars().collect();
            for (at, op, c) in edits {
                let at = at % (chars.len() + 1);
                let c = ALPHABET[c];
                match op {
                    0 => chars.insert(at, c),
                    1 if at < chars.len() => { chars.remove(at); }
                    _ if at < chars.len() => chars[at] = c,
                    _ => chars.push(c),
                }
            }
            let text: String = chars.into_iter().collect();
            proptest::prop_assert_eq!(same_as_serde(&text), Ok(()));
        }
    }

    /// Characters that make JSON interesting when inserted anywhere.
    const ALPHABET: &[char] = &[
        '{', '}', '[', ']', '"', ':', ',', '\\', 'u', 'd', '8', 'D', 'c', '0', '1', '9', '-', '+',
        '.', 'e', 'E', 't', 'n', 'f', ' ', '\n', '\t', '\u{1}', 'Ж', '😀',
    ];

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
            "[a-z\"\\\\/\\u{0}-\\u{1f}\\u{7f}-\\u{ffff}😀]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\"\\\\]{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn to_json_escapes_every_character_as_serde_json_does() {
        let every: String = (0u32..0x800).filter_map(char::from_u32).collect();
        let node = Node::Obj(vec![(
            Cow::Borrowed("k\"\\\u{1}"),
            Node::Arr(vec![
                Node::Str(Cow::Owned(every)),
                Node::Null,
                Node::Bool(true),
            ]),
        )]);
        assert_eq!(node.to_json(), serde_json::to_vec(&node).unwrap());
    }

    #[test]
    fn round_trips() {
        let text = r#"{"a":"é\"","b":[1,-2,3.5],"c":{"d":null,"e":false}}"#;
        let n = Node::parse(text.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), text);
    }
}
