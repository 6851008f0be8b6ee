//! Properties of the pure parts of the gateway: GUID spelling, time normalization, request
//! validation on arbitrary JSON, and the Appointment fixed point.

// `assert_fixed_point` is shared with the `normalize` fuzz target.
#[path = "../fuzz/checks.rs"]
mod checks;

use http::StatusCode;
use jiff::tz::TimeZone;
use mis_gateway::booking::normalize::{self, Context, SOURCES};
use mis_gateway::booking::{self, parse_guid};
use mis_gateway::error::GatewayError;
use proptest::prelude::*;
use serde_json::{Map, Value};
use uuid::Uuid;

const SEED: &str = include_str!("data/seed_request.json");
const SEED_SLOT: &str = "766998fb-1915-4d54-a3f3-934f60125aac";
/// Every generated string value starts with this; no error text may contain it.
const ECHO: &str = "ZqxEcho";
/// Zones with odd offsets, DST, past offset changes and none at all.
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Moscow",
    "Europe/Kaliningrad",
    "Asia/Novosibirsk",
    "Asia/Kamchatka",
    "Asia/Kathmandu",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
];
/// Member names of the request schema, so generated trees sometimes look like a booking.
const SCHEMA_NAMES: &[&str] = &[
    "slot",
    "patient",
    "docSender",
    "direction",
    "family",
    "name",
    "patronymic",
    "polis",
    "series",
    "number",
    "type",
    "code",
    "phone",
    "identityDocument",
    "address",
    "disability",
    "guid",
    "position",
    "speciality",
    "reason",
    "lpuFromGuid",
    "lpuToGuid",
    "dateDirection",
    "diagnosis",
];

fn seed() -> Value {
    serde_json::from_str(SEED).unwrap()
}

fn zone() -> impl Strategy<Value = TimeZone> {
    prop::sample::select(ZONES).prop_map(|z| TimeZone::get(z).unwrap())
}

/// Each character of `s` upper-cased where `flips` says so.
fn recase(s: &str, flips: &[bool]) -> String {
    s.chars()
        .zip(flips.iter().chain(std::iter::repeat(&false)))
        .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
        .collect()
}

/// A GUID and its 8-4-4-4-12 spelling in some mix of letter cases.
fn guid_any_case() -> impl Strategy<Value = (Uuid, String)> {
    (any::<[u8; 16]>(), prop::collection::vec(any::<bool>(), 36)).prop_map(|(b, flips)| {
        let u = Uuid::from_bytes(b);
        (u, recase(&u.hyphenated().to_string(), &flips))
    })
}

/// A date-time a MIS might send: local (`T` or space), `Z`, or a numeric offset; with or
/// without a fraction. Returns the text and whether it names an instant by itself.
fn mis_time() -> impl Strategy<Value = (String, bool)> {
    // Before the 1920s zones used local mean time, with offsets in seconds (Moscow +02:30:17)
    // that RFC 3339 cannot write; see fuzz/regressions/normalize/lmt-offset-seconds.json.
    let date = (1800i16..=2100, 1i8..=12, 1i8..=28);
    let time = (0i8..=23, 0i8..=59, 0i8..=59);
    let fraction = prop::option::of("[0-9]{1,9}");
    let suffix = prop_oneof![
        Just(String::new()),
        Just("Z".to_owned()),
        (any::<bool>(), 0u8..=14, 0u8..=59)
            .prop_map(|(neg, h, m)| format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' })),
    ];
    (date, time, fraction, any::<bool>(), suffix).prop_map(
        |((y, mo, d), (h, mi, s), frac, space, suffix)| {
            let sep = if space && suffix.is_empty() { ' ' } else { 'T' };
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let absolute = !suffix.is_empty();
            (
                format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{suffix}"),
                absolute,
            )
        },
    )
}

/// A JSON leaf; strings carry the [`ECHO`] prefix. Floats must read back exactly (see
/// fuzz/regressions/normalize/float-not-read-back.json).
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "[ -~]{0,12}".prop_map(|s| Value::String(format!("{ECHO}{s}"))),
        // Strings that are nearly a GUID, a date or an ICD-10 code still carry the prefix.
        prop::sample::select(
            &[
                "-766998fb-1915-4d54-a3f3-934f60125aac",
                "2021-04-21T03:00:00+03:00",
                "A01.0",
            ][..]
        )
        .prop_map(|s| Value::String(format!("{ECHO}{s}"))),
    ]
}

/// A member name: a schema name (so validation goes deeper) or an [`ECHO`]-prefixed one.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(SCHEMA_NAMES).prop_map(str::to_owned),
        "[a-zA-Z]{0,6}".prop_map(|s| format!("{ECHO}{s}")),
    ]
}

/// A JSON tree at most 5 levels deep.
fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// The seed request with one member somewhere in it replaced (or added) by an arbitrary tree.
fn mutated_seed() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(prop::sample::select(SCHEMA_NAMES), 1..4),
        tree(),
    )
        .prop_map(|(path, value)| {
            let mut v = seed();
            let mut at = &mut v;
            for (i, name) in path.iter().enumerate() {
                let Some(obj) = at.as_object_mut() else { break };
                if i + 1 == path.len() || !obj.get(*name).is_some_and(Value::is_object) {
                    obj.insert((*name).to_owned(), value);
                    break;
                }
                at = obj.get_mut(*name).unwrap();
            }
            v
        })
}

/// Validates `body` and checks that no problem text carries a generated string.
fn validate_without_echo(body: &Value) -> Result<(), TestCaseError> {
    let text = serde_json::to_vec(body).unwrap();
    let root = booking::parse(&text).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    match booking::validate(&root) {
        Ok(_) => {}
        Err(GatewayError::Invalid { problems }) => {
            prop_assert!(!problems.is_empty());
            for p in &problems {
                prop_assert!(!p.path.contains(ECHO), "path echoes: {:?}", p.path);
                prop_assert!(!p.reason.contains(ECHO), "reason echoes: {:?}", p.reason);
            }
        }
        Err(other) => prop_assert!(false, "validate returned {other:?}"),
    }
    Ok(())
}

/// `booking::check` (one pass, no tree) answers exactly as `parse` then `validate`: the same
/// syntax error, the same problems in the same order, or the same GUIDs.
fn check_agrees(text: &[u8]) -> Result<(), TestCaseError> {
    let reference = booking::parse(text).and_then(|root| booking::validate(&root));
    let streamed = booking::check(text);
    prop_assert_eq!(format!("{reference:?}"), format!("{streamed:?}"));
    Ok(())
}

/// A mutated seed as text, with one more member (`"key": value,`) written just inside one of
/// its objects: a repeated key whenever the key is already there.
fn seed_with_repeat() -> impl Strategy<Value = Vec<u8>> {
    (mutated_seed(), any::<prop::sample::Index>(), key(), leaf()).prop_map(
        |(body, at, key, value)| {
            let text = serde_json::to_string_pretty(&body).unwrap();
            let opens: Vec<usize> = text.match_indices('{').map(|(i, _)| i + 1).collect();
            let i = opens[at.index(opens.len())];
            let member = format!("{}: {},", Value::String(key), value);
            format!("{}{member}{}", &text[..i], &text[i..]).into_bytes()
        },
    )
}

/// The seed as text with one byte replaced by a byte JSON gives meaning to, or cut short.
fn broken_seed() -> impl Strategy<Value = Vec<u8>> {
    let bytes = b"{}[]\",:0-.eEtn \\u\n".to_vec();
    (
        any::<prop::sample::Index>(),
        prop::sample::select(bytes),
        any::<bool>(),
    )
        .prop_map(|(at, byte, cut)| {
            let mut text = SEED.as_bytes().to_vec();
            let i = at.index(text.len());
            if cut {
                text.truncate(i);
            } else {
                text[i] = byte;
            }
            text
        })
}

/// What `normalize::answer` read a 2xx body as when it built a tree first: the reference the
/// one-pass reading is held to (fields, and the MIS's `direction` as compact JSON).
fn appointment_from_tree(
    body: &[u8],
    ctx: &Context,
) -> Option<(normalize::Fields, Option<Vec<u8>>)> {
    use mis_gateway::wire::json::Node;
    let root = Node::parse(body).ok()?;
    if !matches!(root, Node::Obj(_)) || root.duplicate_keys().next().is_some() {
        return None;
    }
    let guid = parse_guid(root.get("guid")?.as_str()?)?;
    let number = match root.get("number")? {
        Node::Str(s) if !s.is_empty() && s.len() <= 64 => s.to_string(),
        Node::Num(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return None,
    };
    let slot = match root.get("slot") {
        None | Some(Node::Null) => ctx.slot,
        Some(Node::Str(s)) => parse_guid(s)?,
        Some(_) => return None,
    };
    if slot != ctx.slot {
        return None;
    }
    let source = match root.get("source") {
        None | Some(Node::Null) => "Internet",
        Some(Node::Str(s)) => SOURCES.iter().find(|c| c.eq_ignore_ascii_case(s))?,
        Some(_) => return None,
    };
    let create_time = normalize::rfc3339(root.get("createTime")?.as_str()?, ctx.timezone)?;
    let direction = match root.get("direction") {
        None | Some(Node::Null) => None,
        Some(d @ Node::Obj(_)) => Some(d.to_json()),
        Some(_) => return None,
    };
    let fields = normalize::Fields {
        guid,
        number,
        slot,
        source: (*source).to_owned(),
        create_time,
    };
    Some((fields, direction))
}

/// A top-level member of a MIS answer: mostly the Appointment's own names with values of the
/// right shape, sometimes of any shape, often one of two unknown names (so that they repeat).
fn answer_member() -> impl Strategy<Value = (String, Value)> {
    let name = prop::sample::select(
        &[
            "guid",
            "number",
            "slot",
            "source",
            "createTime",
            "direction",
            "x",
            "x",
            "y",
        ][..],
    );
    let right = prop_oneof![
        Just(Value::from(SEED_SLOT)),
        Just(Value::from("ee5ae221-DDC8-40cf-a61b-4e7926a2501c")),
        Just(Value::from("01")),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(SOURCES).prop_map(Value::from),
        mis_time().prop_map(|(t, _)| Value::from(t)),
        tree().prop_map(|t| serde_json::json!({ "guid": "a\u{416}\"", "nested": t })),
        Just(Value::Null),
    ];
    (name, prop_oneof![3 => right, 1 => tree()]).prop_map(|(n, v)| (n.to_owned(), v))
}

/// The members of a valid Appointment, each left out now and then; `direction` is an object
/// with every kind of value in it, or `null`.
fn valid_answer() -> impl Strategy<Value = Vec<(String, Value)>> {
    let object = serde_json::json!({
        "guid": "2d793f84-26c9-496d-bd64-745095eb1f80",
        "n": [1, -2.5, 1e300, true, null, "Ж\"\\\n"],
        "o": {},
    });
    let direction = prop_oneof![3 => Just(object), 1 => Just(Value::Null)];
    (
        prop::collection::vec(prop::bool::weighted(0.9), 4),
        direction,
    )
        .prop_map(|(keep, direction)| {
            let all = [
                ("guid", Value::from("ee5ae221-ddc8-40cf-a61b-4e7926a2501c")),
                ("number", Value::from("01")),
                ("createTime", Value::from("2019-07-23T12:50:00+03:00")),
                ("direction", direction),
            ];
            all.into_iter()
                .zip(keep)
                .filter(|(_, k)| *k)
                .map(|((name, v), _)| (name.to_owned(), v))
                .collect()
        })
}

/// `members` as an object's text, repeats kept; compact, or spread over lines with `Ж`
/// written as the escape `\u0416` (it only ever appears inside strings).
fn object_text(members: &[(String, Value)], spread: bool) -> Vec<u8> {
    let sep = if spread { ",\n  " } else { "," };
    let inner: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
        .collect();
    let text = format!("{{{}}}", inner.join(sep));
    if spread {
        text.replace('Ж', "\\u0416").into_bytes()
    } else {
        text.into_bytes()
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        // Report the shrunk case; write nothing into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (a) Letter case does not change which LPU a booking routes to.
    #[test]
    fn guid_letter_case_does_not_change_lpu_to((lpu, spelling) in guid_any_case()) {
        let mut v = seed();
        v["direction"]["lpuToGuid"] = spelling.clone().into();
        let text = v.to_string();
        let root = booking::parse(text.as_bytes()).unwrap();
        let b = booking::validate(&root)
            .map_err(|e| TestCaseError::fail(format!("{spelling}: {e:?}")))?;
        prop_assert_eq!(b.lpu_to, lpu);
    }

    /// (a) `parse_guid` ignores letter case but refuses every other spelling.
    #[test]
    fn parse_guid_accepts_case_only(
        (u, spelling) in guid_any_case(),
        flips in prop::collection::vec(any::<bool>(), 32),
        pad in prop::sample::select(&[" ", "\t", "\n", "\u{a0}"][..]),
    ) {
        prop_assert_eq!(parse_guid(&spelling), Some(u));
        let refused = [
            format!("{{{spelling}}}"),
            format!("{pad}{spelling}"),
            format!("{spelling}{pad}"),
            format!("{}{pad}{}", &spelling[..18], &spelling[18..]),
            recase(&u.simple().to_string(), &flips),
            format!("urn:uuid:{spelling}"),
        ];
        for r in &refused {
            prop_assert_eq!(parse_guid(r), None, "{:?} was accepted", r);
        }
    }

    /// (b) Output of `rfc3339` is a Timestamp, keeps the instant, and is a fixed point.
    #[test]
    fn rfc3339_is_a_fixed_point((text, absolute) in mis_time(), tz in zone()) {
        let out = normalize::rfc3339(&text, &tz);
        let Some(out) = out else {
            return Err(TestCaseError::fail(format!("{text} was refused")));
        };
        let ts: jiff::Timestamp = out
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{out}: {e}")))?;
        let want = if absolute {
            text.parse::<jiff::Timestamp>().unwrap()
        } else {
            let local: jiff::civil::DateTime = text.parse().unwrap();
            tz.to_ambiguous_timestamp(local).compatible().unwrap()
        };
        prop_assert_eq!(ts, want, "{} became {}", text, out);
        prop_assert_eq!(normalize::rfc3339(&out, &tz), Some(out.clone()));
    }

    /// (c) Arbitrary JSON never panics validation, and problems never echo string values.
    #[test]
    fn validate_survives_arbitrary_trees(body in tree()) {
        validate_without_echo(&body)?;
    }

    /// (c) The same on the seed request with one part replaced, to reach deeper rules.
    #[test]
    fn validate_survives_mutated_seeds(body in mutated_seed()) {
        validate_without_echo(&body)?;
    }

    /// (c) The one-pass check the gateway runs agrees with parse + validate on arbitrary
    /// trees, mutated seeds, repeated keys and broken syntax.
    #[test]
    fn check_agrees_with_parse_and_validate(
        tree in tree(),
        seed in mutated_seed(),
        repeat in seed_with_repeat(),
        broken in broken_seed(),
    ) {
        check_agrees(&serde_json::to_vec(&tree).unwrap())?;
        check_agrees(serde_json::to_string_pretty(&seed).unwrap().as_bytes())?;
        check_agrees(&repeat)?;
        check_agrees(&broken)?;
    }

    /// (d) Any object with a valid guid, number and createTime normalizes to a fixed point.
    #[test]
    fn appointments_normalize_to_a_fixed_point(
        (guid, guid_text) in guid_any_case(),
        number in prop_oneof![
            ".{1,16}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
        ],
        (time, _) in mis_time(),
        slot_flips in prop::option::of(prop::collection::vec(any::<bool>(), 36)),
        source in prop::option::of((prop::sample::select(SOURCES), any::<bool>())),
        direction in prop::option::of(tree()),
        extra in prop::collection::vec(("[a-z]{1,8}", tree()), 0..4),
        tz in zone(),
    ) {
        let mut body = Map::new();
        for (k, v) in extra {
            body.insert(format!("x-{k}"), v);
        }
        body.insert("guid".into(), guid_text.into());
        body.insert("number".into(), number.clone());
        body.insert("createTime".into(), time.clone().into());
        if let Some(flips) = slot_flips {
            body.insert("slot".into(), recase(SEED_SLOT, &flips).into());
        }
        if let Some((s, lower)) = source {
            let s = if lower { s.to_lowercase() } else { s.to_uppercase() };
            body.insert("source".into(), s.into());
        }
        if let Some(d) = direction {
            // Anything but an object or null is refused; keep the object case.
            let d = match d {
                Value::Object(_) => d,
                other => serde_json::json!({ "value": other }),
            };
            body.insert("direction".into(), d);
        }
        let bytes = serde_json::to_vec(&Value::Object(body)).unwrap();
        let ctx = Context { slot: Uuid::parse_str(SEED_SLOT).unwrap(), timezone: &tz };
        let n = normalize::answer(StatusCode::OK, &bytes, &ctx).map_err(|e| {
            TestCaseError::fail(format!("{e:?}: {}", String::from_utf8_lossy(&bytes)))
        })?;
        prop_assert_eq!(n.fields.guid, guid);
        let want_number = match &number {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        prop_assert_eq!(&n.fields.number, &want_number);
        prop_assert_eq!(Some(n.fields.create_time.clone()), normalize::rfc3339(&time, &tz));
        prop_assert!(SOURCES.contains(&n.fields.source.as_str()));
        checks::assert_fixed_point(&n, &ctx);
    }

    /// (e) The one-pass reading of a MIS answer agrees with reading it as a tree: the same
    /// Appointment and the same `direction` text, or the same refusal, for answers with repeated,
    /// missing, mistyped and unknown members, broken at a random byte or not.
    #[test]
    fn answers_read_in_one_pass_as_from_a_tree(
        members in (
            valid_answer(),
            prop_oneof![
                2 => prop::collection::vec(answer_member(), 0..2),
                1 => prop::collection::vec(answer_member(), 2..6),
            ],
        )
            .prop_flat_map(|(mut base, extra)| { base.extend(extra); Just(base).prop_shuffle() }),
        spread: bool,
        cut in prop::option::of(any::<prop::sample::Index>()),
        tz in zone(),
    ) {
        let mut bytes = object_text(&members, spread);
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        let ctx = Context { slot: Uuid::parse_str(SEED_SLOT).unwrap(), timezone: &tz };
        let got = match normalize::answer(StatusCode::OK, &bytes, &ctx) {
            Ok(n) => Some((n.fields, n.mis_direction)),
            Err(GatewayError::OutcomeUnknown) => None,
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        };
        prop_assert_eq!(got, appointment_from_tree(&bytes, &ctx), "{}", String::from_utf8_lossy(&bytes));
    }
}
