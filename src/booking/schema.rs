//! The booking request of the seed (`POST /dir/appointments`): its schema and its validation.
//!
//! [`check`], the gateway's path, reads the body once against [`REQUEST`], a static description
//! of the seed's model, building no tree; [`validate`] does the same over a strict [`Node`] tree
//! and is the reference `check` is held equal to. Both collect *every* problem with its JSON path
//! before refusing. Reasons name the rule, never the value: a value may be patient data. Members
//! the schema does not name are allowed and reach the MIS untouched (the gateway forwards the
//! bytes it received).

use uuid::Uuid;

use crate::error::{FieldProblem, GatewayError};
use crate::wire::json::Node;

/// What a field must hold.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Str,
    /// A GUID in its 8-4-4-4-12 form, any letter case.
    Guid,
    /// An RFC 3339 date-time with a UTC offset (`2021-04-21T03:00:00+03:00`).
    DateTimeOffset,
    /// An ICD-10 code such as `A01.0`.
    Icd10,
    Obj(&'static [Field]),
    /// Anything, including null (e.g. `disability`, which the seed leaves unmodelled).
    Any,
}

/// One member of an object in the schema.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Which GUID of the [`Checked`] booking this field is, if any.
    pub capture: Option<Capture>,
}

/// The GUIDs the gateway acts on, by the field that holds each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    Slot,
    LpuTo,
    DirectionGuid,
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
        capture: None,
    }
}
const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
        capture: None,
    }
}
const fn captured(field: Field, capture: Capture) -> Field {
    Field {
        capture: Some(capture),
        ..field
    }
}

/// `{code, name}` pairs of the national classifiers (position, speciality, document type...).
const CODED: &[Field] = &[req("code", Kind::Str), opt("name", Kind::Str)];
const POLIS: &[Field] = &[
    opt("series", Kind::Str),
    req("number", Kind::Str),
    opt("type", Kind::Obj(CODED)),
];
const IDENTITY_DOCUMENT: &[Field] = &[
    opt("series", Kind::Str),
    req("number", Kind::Str),
    opt("type", Kind::Obj(CODED)),
];
const PATIENT: &[Field] = &[
    req("family", Kind::Str),
    req("name", Kind::Str),
    opt("patronymic", Kind::Str),
    opt("polis", Kind::Obj(POLIS)),
    opt("phone", Kind::Str),
    opt("identityDocument", Kind::Obj(IDENTITY_DOCUMENT)),
    opt("address", Kind::Str),
    opt("disability", Kind::Any),
];
const DOC_SENDER: &[Field] = &[
    req("guid", Kind::Guid),
    opt("family", Kind::Str),
    opt("name", Kind::Str),
    opt("patronymic", Kind::Str),
    opt("position", Kind::Obj(CODED)),
    opt("speciality", Kind::Obj(CODED)),
];
const DIAGNOSIS: &[Field] = &[req("code", Kind::Icd10), opt("name", Kind::Str)];
/// ConsultDirection, the referral.
pub const DIRECTION: &[Field] = &[
    captured(req("guid", Kind::Guid), Capture::DirectionGuid),
    req("number", Kind::Str),
    opt("reason", Kind::Str),
    opt("speciality", Kind::Obj(CODED)),
    req("lpuFromGuid", Kind::Guid),
    captured(req("lpuToGuid", Kind::Guid), Capture::LpuTo),
    req("dateDirection", Kind::DateTimeOffset),
    opt("diagnosis", Kind::Obj(DIAGNOSIS)),
];
/// The request body of `POST /dir/appointments`.
pub const REQUEST: &[Field] = &[
    captured(req("slot", Kind::Guid), Capture::Slot),
    req("patient", Kind::Obj(PATIENT)),
    req("docSender", Kind::Obj(DOC_SENDER)),
    req("direction", Kind::Obj(DIRECTION)),
];

/// Parses a request body strictly; syntax errors name their position, never the input.
pub fn parse(body: &[u8]) -> Result<Node<'_>, GatewayError> {
    Node::parse(body).map_err(|detail| GatewayError::MalformedJson { detail })
}

/// Validates a parsed body against [`REQUEST`] and extracts its GUIDs: the reference for
/// [`check`], over a tree.
pub fn validate(root: &Node) -> Result<Checked, GatewayError> {
    let mut problems = Vec::new();
    check_object(root, REQUEST, &Path::Root, &mut problems);
    if !problems.is_empty() {
        return Err(GatewayError::Invalid { problems });
    }
    // Validation guarantees every `expect`-free lookup below succeeds; stay total anyway.
    let guid = |node: Option<&Node>| node.and_then(Node::as_str).and_then(parse_guid);
    let direction = root.get("direction");
    match (
        guid(root.get("slot")),
        guid(direction.and_then(|d| d.get("lpuToGuid"))),
        guid(direction.and_then(|d| d.get("guid"))),
    ) {
        (Some(slot), Some(lpu_to), Some(direction_guid)) => Ok(Checked {
            slot,
            lpu_to,
            direction_guid,
        }),
        _ => Err(GatewayError::Internal),
    }
}

/// The facts of a valid booking the gateway acts on; the rest of the body is only forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub slot: Uuid,
    pub lpu_to: Uuid,
    pub direction_guid: Uuid,
}

/// [`parse`] then [`validate`] in one pass over the body, building no tree: the same
/// [`GatewayError`] for every input (the same syntax error and position, or the same problems
/// in the same order; a property test holds them equal), with the booking's GUIDs.
///
/// Members the schema does not model are checked for syntax and skipped; a modelled object's
/// problems are gathered per field and listed as [`validate`] lists them: repeated keys first,
/// then the fields in schema order.
pub fn check(body: &[u8]) -> Result<Checked, GatewayError> {
    let Ok(text) = std::str::from_utf8(body) else {
        // Not UTF-8: the tree parser's error names the bad sequence (it never accepts one).
        parse(body)?;
        return Err(GatewayError::Internal);
    };
    let mut walk = Walk {
        p: crate::wire::json::Parser::new(text),
        guids: [None; 3],
    };
    let mut problems = Vec::new();
    walk.document(&mut problems)
        .map_err(|e| GatewayError::MalformedJson {
            detail: e.describe(text),
        })?;
    if !problems.is_empty() {
        return Err(GatewayError::Invalid { problems });
    }
    match walk.guids {
        [Some(slot), Some(lpu_to), Some(direction_guid)] => Ok(Checked {
            slot,
            lpu_to,
            direction_guid,
        }),
        // Validation guarantees every capture; stay total anyway.
        _ => Err(GatewayError::Internal),
    }
}

/// Most members a modelled object has (a `u8` bitmask per object).
const MAX_FIELDS: usize = 8;
const _: () = {
    let all = [
        REQUEST,
        PATIENT,
        POLIS,
        IDENTITY_DOCUMENT,
        CODED,
        DOC_SENDER,
        DIAGNOSIS,
        DIRECTION,
    ];
    let mut i = 0;
    while i < all.len() {
        assert!(all[i].len() <= MAX_FIELDS);
        i += 1;
    }
};

/// [`check`]'s walk: the parser, and the GUIDs captured so far (by [`Capture`] order).
struct Walk<'a> {
    p: crate::wire::json::Parser<'a>,
    guids: [Option<Uuid>; 3],
}

type Step<T = ()> = Result<T, crate::wire::json::ParseError>;

impl Walk<'_> {
    fn document(&mut self, out: &mut Vec<FieldProblem>) -> Step {
        if self.p.peek_value() == Some(b'{') {
            self.object(REQUEST, &Path::Root, out)?;
        } else {
            out.push(Path::Root.problem("must be an object"));
            self.p.skip_value()?;
        }
        self.p.end()
    }

    /// The object at the current byte against `fields`.
    fn object(&mut self, fields: &[Field], path: &Path, out: &mut Vec<FieldProblem>) -> Step {
        let mut seen = 0u8;
        let mut present = 0u8;
        // Each field's own problems, by field: usually none, so nothing is allocated.
        let mut own: Vec<(usize, Vec<FieldProblem>)> = Vec::new();
        let mut repeated = Vec::new();
        let mut unmodelled = Vec::new();
        // Members usually come in the schema's order: the field after the last one matched
        // is tried first, and the others only when it is not the key.
        let mut next = 0;
        if self.p.open(b'}')? {
            loop {
                let span = self.p.key()?;
                let key = self.p.key_text(span);
                let found = if fields.get(next).is_some_and(|f| same_name(f.name, &key)) {
                    Some(next)
                } else {
                    fields.iter().position(|f| same_name(f.name, &key))
                };
                match found {
                    Some(i) if seen & 1 << i == 0 => {
                        seen |= 1 << i;
                        next = i + 1;
                        let here = Path::Member(path, fields[i].name);
                        let mut problems = Vec::new();
                        if self.value(&fields[i], &here, &mut problems)? {
                            present |= 1 << i;
                        }
                        if !problems.is_empty() {
                            own.push((i, problems));
                        }
                    }
                    Some(i) => {
                        repeated.push(
                            Path::Member(path, fields[i].name).problem("appears more than once"),
                        );
                        self.p.skip_value()?;
                    }
                    None => {
                        if unmodelled.contains(&key) {
                            repeated.push(path.problem("has a member that appears more than once"));
                        } else {
                            unmodelled.push(key);
                        }
                        self.p.skip_value()?;
                    }
                }
                if !self.p.next(b'}')? {
                    break;
                }
            }
        }
        out.append(&mut repeated);
        for (i, f) in fields.iter().enumerate() {
            if present & 1 << i != 0 {
                if let Some((_, problems)) = own.iter_mut().find(|(at, _)| *at == i) {
                    out.append(problems);
                }
            } else if f.required {
                out.push(Path::Member(path, f.name).problem("is required"));
            }
        }
        Ok(())
    }

    /// The value of field `f`; whether it is there (anything but `null`).
    fn value(&mut self, f: &Field, path: &Path, out: &mut Vec<FieldProblem>) -> Step<bool> {
        let first = self.p.peek_value();
        if first == Some(b'n') {
            // `null`, or a syntax error the skip reports.
            self.p.skip_value()?;
            return Ok(false);
        }
        match f.kind {
            Kind::Any => self.p.skip_value()?,
            Kind::Obj(fields) if first == Some(b'{') => self.object(fields, path, out)?,
            Kind::Obj(_) => {
                out.push(path.problem("must be an object"));
                self.p.skip_value()?;
            }
            kind if first == Some(b'"') => {
                let s = self.p.string_value()?;
                match check_string(&s, kind) {
                    Err(reason) => out.push(path.problem(reason)),
                    Ok(guid) => {
                        if let Some(c) = f.capture {
                            self.guids[c as usize] = guid;
                        }
                    }
                }
            }
            _ => {
                out.push(path.problem("must be a string"));
                self.p.skip_value()?;
            }
        }
        Ok(true)
    }
}

/// `a == b` for member names without a call into libc's `memcmp` for every candidate: a
/// schema name is 4 to 16 bytes, compared as two overlapping words (other lengths as slices).
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    fn word<const N: usize>(s: &[u8], at: usize) -> [u8; N] {
        let mut w = [0; N];
        w.copy_from_slice(&s[at..at + N]);
        w
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        8..=16 => {
            u64::from_ne_bytes(word(a, 0)) == u64::from_ne_bytes(word(b, 0))
                && u64::from_ne_bytes(word(a, n - 8)) == u64::from_ne_bytes(word(b, n - 8))
        }
        4..=7 => {
            u32::from_ne_bytes(word(a, 0)) == u32::from_ne_bytes(word(b, 0))
                && u32::from_ne_bytes(word(a, n - 4)) == u32::from_ne_bytes(word(b, n - 4))
        }
        _ => a == b,
    }
}

/// A GUID in the 8-4-4-4-12 form, any letter case; braces, URNs and the 32-digit form are refused
/// so that what the MIS receives is what the gateway authorized.
pub fn parse_guid(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    Uuid::try_parse(s).ok()
}

/// A JSON path built only when a problem needs it.
enum Path<'p> {
    Root,
    Member(&'p Path<'p>, &'p str),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Member(Path::Root, name) => (*name).to_owned(),
            Path::Member(parent, name) => format!("{}.{name}", parent.render()),
        }
    }
    fn problem(&self, reason: &'static str) -> FieldProblem {
        let path = match self.render() {
            p if p.is_empty() => "$".to_owned(),
            p => p,
        };
        FieldProblem { path, reason }
    }
}

fn check_object(node: &Node, fields: &[Field], path: &Path, out: &mut Vec<FieldProblem>) {
    let Node::Obj(_) = node else {
        out.push(path.problem("must be an object"));
        return;
    };
    // Duplicate keys anywhere in a modelled object are refused: the gateway and the MIS must not
    // read two different values.
    for k in node.duplicate_keys() {
        match fields.iter().find(|f| f.name == k) {
            Some(f) => out.push(Path::Member(path, f.name).problem("appears more than once")),
            None => out.push(path.problem("has a member that appears more than once")),
        }
    }
    for f in fields {
        let here = Path::Member(path, f.name);
        match node.get(f.name) {
            None | Some(Node::Null) if f.required => out.push(here.problem("is required")),
            None | Some(Node::Null) => {}
            Some(v) => check_value(v, f.kind, &here, out),
        }
    }
}

fn check_value(v: &Node, kind: Kind, path: &Path, out: &mut Vec<FieldProblem>) {
    match kind {
        Kind::Any => {}
        Kind::Obj(fields) => check_object(v, fields, path, out),
        Kind::Str | Kind::Guid | Kind::DateTimeOffset | Kind::Icd10 => match v.as_str() {
            None => out.push(path.problem("must be a string")),
            Some(s) => {
                if let Err(reason) = check_string(s, kind) {
                    out.push(path.problem(reason));
                }
            }
        },
    }
}

/// String `s` as a `kind` field: the GUID it holds (for [`Kind::Guid`]), or what is wrong.
#[inline(always)]
fn check_string(s: &str, kind: Kind) -> Result<Option<Uuid>, &'static str> {
    match kind {
        Kind::Guid => match parse_guid(s) {
            Some(guid) => Ok(Some(guid)),
            None => Err("must be a GUID (8-4-4-4-12 hexadecimal digits)"),
        },
        Kind::DateTimeOffset if !is_datetime_with_offset(s) => {
            Err("must be a date-time with a UTC offset (RFC 3339, e.g. 2021-04-21T03:00:00+03:00)")
        }
        Kind::Icd10 if !is_icd10(s) => Err("must be an ICD-10 code (e.g. A01.0)"),
        _ if s.len() > MAX_STRING => Err("is longer than 1024 bytes"),
        _ => Ok(None),
    }
}

/// Longest string a modelled field may hold; real names, numbers and reasons are far shorter.
const MAX_STRING: usize = 1024;

/// RFC 3339 `date-time` exactly (`2021-04-21T03:00:00+03:00`, `...00.5Z`), with a real
/// calendar date and time: `YYYY-MM-DD`, `T`, `hh:mm:ss`, an optional fraction of 1–9 digits,
/// then `Z` or `±hh:mm`. Looser ISO 8601 shapes (no seconds, `+03`, `+0300`, a zone name, a
/// space) are refused: the MIS receives the text as sent and must read it the same way.
fn is_datetime_with_offset(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let head = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !head {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        let frac = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&frac) {
            return false;
        }
        i += 1 + frac;
    }
    let offset_ok = match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    };
    // The shape is right; jiff checks the calendar (month 13, February 30, hour 24...).
    offset_ok && s.parse::<jiff::Timestamp>().is_ok()
}

/// ICD-10: a letter, two digits, optionally a dot and one or two more digits (A01, A01.0, M54.16).
fn is_icd10(s: &str) -> bool {
    let b = s.as_bytes();
    let head =
        b.len() >= 3 && b[0].is_ascii_uppercase() && b[1].is_ascii_digit() && b[2].is_ascii_digit();
    match b.len() {
        3 => head,
        5 | 6 => head && b[3] == b'.' && b[4..].iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_compare_as_strings_do() {
        let names = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abce",
            "bbcd",
            "abcde",
            "slot",
            "name",
            "number",
            "numbeR",
            "Number",
            "guid",
            "direction",
            "docSender",
            "direction1",
            "lpuToGuid",
            "lpuFromGuid",
            "identityDocument",
            "identityDocumenT",
            "IdentityDocument",
            "identityDocuments",
            "дата",
            "ж",
        ];
        for a in names {
            for b in names {
                assert_eq!(same_name(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    pub const SEED: &str = include_str!("../../tests/data/seed_request.json");

    fn problems(body: &str) -> Vec<FieldProblem> {
        let root = Node::parse(body.as_bytes()).unwrap();
        match validate(&root) {
            Err(GatewayError::Invalid { problems }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(SEED).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn the_seed_example_is_valid() {
        let root = Node::parse(SEED.as_bytes()).unwrap();
        let b = validate(&root).unwrap();
        assert_eq!(b.slot.to_string(), "766998fb-1915-4d54-a3f3-934f60125aac");
        assert_eq!(b.lpu_to.to_string(), "1dadf64c-f34a-4023-98a6-3e7b7be4f243");
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let body = with(|v| {
            v["slot"] = "not-a-guid".into();
            v["patient"].as_object_mut().unwrap().remove("family");
            v["direction"]["dateDirection"] = "2021-04-21T03:00:00".into();
            v["direction"]["lpuToGuid"] = 42.into();
            v["direction"]["diagnosis"]["code"] = "Canary".into();
            v["docSender"] = serde_json::Value::Null;
        });
        let p = problems(&body);
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "slot",
                "patient.family",
                "docSender",
                "direction.lpuToGuid",
                "direction.dateDirection",
                "direction.diagnosis.code"
            ]
        );
        assert!(p.iter().all(|p| !p.reason.contains("Canary")));
    }

    #[test]
    fn guid_letter_case_is_accepted_but_other_spellings_are_not() {
        let upper = with(|v| v["slot"] = "766998FB-1915-4D54-A3F3-934F60125AAC".into());
        let root = Node::parse(upper.as_bytes()).unwrap();
        assert!(validate(&root).is_ok());
        for spelling in [
            "{766998fb-1915-4d54-a3f3-934f60125aac}",
            "766998fb19154d54a3f3934f60125aac",
            " 766998fb-1915-4d54-a3f3-934f60125aac",
            "urn:uuid:766998fb-1915-4d54-a3f3-934f60125aac",
        ] {
            let body = with(|v| v["direction"]["lpuToGuid"] = spelling.into());
            assert_eq!(problems(&body)[0].path, "direction.lpuToGuid", "{spelling}");
        }
    }

    #[test]
    fn duplicate_routing_key_is_refused() {
        let body = SEED.replacen(
            r#""lpuToGuid": "1dadf64c-f34a-4023-98a6-3e7b7be4f243","#,
            r#""lpuToGuid": "1dadf64c-f34a-4023-98a6-3e7b7be4f243", "lpuToGuid": "00000000-0000-0000-0000-000000000001","#,
            1,
        );
        assert_ne!(body, SEED);
        let p = problems(&body);
        assert_eq!(p[0].path, "direction.lpuToGuid");
        assert_eq!(p[0].reason, "appears more than once");
    }

    #[test]
    fn wrong_top_level_types() {
        assert_eq!(problems("[]")[0].path, "$");
        let p = problems("{}");
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn date_times_are_rfc_3339() {
        for ok in [
            "2021-04-21T03:00:00+03:00",
            "2021-04-21T03:00:00Z",
            "2021-04-21t03:00:00.5z",
            "2021-04-21T03:00:00.123456789-02:30",
        ] {
            assert!(is_datetime_with_offset(ok), "{ok}");
        }
        for bad in [
            "2021-04-21T03:00:00",
            "2021-04-21T03:00:00+03",
            "2021-04-21T03:00+03:00",
            "2021-04-21 03:00:00+03:00",
            "2021-04-21T03:00:00+03:00[Europe/Moscow]",
            "20210421T030000Z",
            "2021-04-21T03:00:00,5Z",
            "2021-04-21T03:00:00+0300",
            "2021-04-21T03:00:00+24:00",
            "2021-04-21T03:00:00.1234567891+03:00",
            "2021-02-30T03:00:00Z",
            "2021-04-21T25:00:00Z",
            "",
        ] {
            assert!(!is_datetime_with_offset(bad), "{bad}");
        }
    }

    #[test]
    fn icd10_shapes() {
        for ok in ["A01", "A01.0", "M54.16"] {
            assert!(is_icd10(ok), "{ok}");
        }
        for bad in ["a01.0", "A1", "A01.", "A01.123", "AA1.0", ""] {
            assert!(!is_icd10(bad), "{bad}");
        }
    }
}
