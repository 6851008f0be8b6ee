//! docs/openapi.json, the integrator API's contract, cannot drift from the code: the request
//! schema is compared with `booking::REQUEST`, the Appointment with `normalize::render` and
//! `SOURCES`, the error responses with `error::TABLE` and the responses the gateway renders, and
//! the admin listener must serve the file byte for byte. Checks are plain serde_json walks;
//! every mismatch is collected so one run names them all.

mod support;

use std::collections::BTreeSet;

use http::{Method, StatusCode, header};
use mis_gateway::booking::normalize;
use mis_gateway::booking::{self, Field, Kind};
use mis_gateway::error::{self, Api, Condition, GatewayError, MisRejection};
use mis_gateway::policy::idempotency;
use mis_gateway::wire::json::Node;
use serde_json::Value;
use support::*;

const PATH: &str = "/dir/appointments";
const GUID_PATTERN: &str =
    "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";
const ICD10_PATTERN: &str = r"^[A-Z][0-9]{2}(\.[0-9]{1,2})?$";
/// Visible ASCII, 0x21..=0x7E.
const KEY_PATTERN: &str = "^[!-~]+$";

fn file_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

fn doc() -> Value {
    let text = std::fs::read_to_string(file_path()).expect("docs/openapi.json is readable");
    serde_json::from_str(&text).expect("docs/openapi.json is valid JSON")
}

fn operation(doc: &Value) -> &Value {
    operation_of(doc, Api::Book)
}

/// The document's operation for `api`.
fn operation_of(doc: &Value, api: Api) -> &Value {
    let (path, method) = match api {
        Api::Book => (PATH, "post"),
        Api::Lookup => ("/dir/appointments/{guid}", "get"),
        Api::Cancel => ("/dir/appointments/{guid}", "delete"),
    };
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "the document has no {method} {path}");
    op
}

const APIS: [Api; 3] = [Api::Book, Api::Lookup, Api::Cancel];

/// Follows local `$ref`s (`#/components/...`) until a schema without one.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return v;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {r} does not resolve"));
    }
    panic!("$ref chain too long")
}

/// The JSON types a schema names, without "null".
fn types(s: &Value) -> BTreeSet<&str> {
    match &s["type"] {
        Value::String(t) => [t.as_str()].into(),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => BTreeSet::new(),
    }
    .into_iter()
    .filter(|t| *t != "null")
    .collect()
}

/// The non-null schema of a field (its `$ref`s followed) and whether the field may be null.
fn split_null<'a>(doc: &'a Value, s: &'a Value) -> (&'a Value, bool) {
    let branches = s
        .get("anyOf")
        .or_else(|| s.get("oneOf"))
        .and_then(Value::as_array);
    if let Some(branches) = branches {
        let (nulls, others): (Vec<_>, Vec<_>) = branches
            .iter()
            .map(|b| resolve(doc, b))
            .partition(|b| b["type"] == "null");
        let inner = others.first().copied().unwrap_or(&Value::Null);
        return (inner, !nulls.is_empty());
    }
    let s = resolve(doc, s);
    let nullable = match &s["type"] {
        Value::String(t) => t == "null",
        Value::Array(ts) => ts.iter().any(|t| t == "null"),
        _ => true,
    };
    (s, nullable)
}

fn names(fields: &[Field], only_required: bool) -> BTreeSet<&'static str> {
    fields
        .iter()
        .filter(|f| f.required || !only_required)
        .map(|f| f.name)
        .collect()
}

fn str_set(v: &Value) -> BTreeSet<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Compares an object schema with a `booking::Field` list, recursively.
fn check_object(doc: &Value, schema: &Value, fields: &[Field], at: &str, out: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if types(schema) != BTreeSet::from(["object"]) {
        out.push(format!("{at}: must be an object schema"));
        return;
    }
    if schema["additionalProperties"] == Value::Bool(false) {
        out.push(format!(
            "{at}: unmodelled members are forwarded, so additionalProperties may not be false"
        ));
    }
    let props = schema["properties"].as_object();
    let documented: BTreeSet<&str> = props
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let modelled = names(fields, false);
    if documented != modelled {
        out.push(format!(
            "{at}: properties {documented:?}, booking::REQUEST has {modelled:?}"
        ));
    }
    let required = str_set(&schema["required"]);
    if required != names(fields, true) {
        out.push(format!(
            "{at}: required {required:?}, booking::REQUEST requires {:?}",
            names(fields, true)
        ));
    }
    for f in fields {
        if let Some(s) = props.and_then(|p| p.get(f.name)) {
            let here = if at.is_empty() {
                f.name.to_owned()
            } else {
                format!("{at}.{}", f.name)
            };
            check_field(doc, s, f, &here, out);
        }
    }
}

fn check_field(doc: &Value, s: &Value, f: &Field, at: &str, out: &mut Vec<String>) {
    let (inner, nullable) = split_null(doc, s);
    if let Kind::Any = f.kind {
        let constrained = ["type", "anyOf", "oneOf", "allOf", "$ref", "enum", "const"]
            .iter()
            .any(|k| s.get(k).is_some());
        if constrained {
            out.push(format!(
                "{at}: accepts any JSON value, so its schema may not constrain it"
            ));
        }
        return;
    }
    match (f.required, nullable) {
        (true, true) => out.push(format!("{at}: required, and null is refused as missing")),
        (false, false) => out.push(format!(
            "{at}: optional, and the gateway takes null as absent: the schema must allow null"
        )),
        _ => {}
    }
    let string = |format: Option<&str>, pattern: Option<&str>, out: &mut Vec<String>| {
        if types(inner) != BTreeSet::from(["string"]) {
            out.push(format!("{at}: must be a string"));
        }
        if inner["format"].as_str() != format {
            out.push(format!(
                "{at}: format {:?}, want {format:?}",
                inner["format"]
            ));
        }
        if inner["pattern"].as_str() != pattern {
            out.push(format!(
                "{at}: pattern {:?}, want {pattern:?}",
                inner["pattern"]
            ));
        }
    };
    match f.kind {
        Kind::Str => string(None, None, out),
        Kind::Guid => string(Some("uuid"), Some(GUID_PATTERN), out),
        Kind::DateTimeOffset => string(Some("date-time"), None, out),
        Kind::Icd10 => string(None, Some(ICD10_PATTERN), out),
        Kind::Obj(fields) => check_object(doc, inner, fields, at, out),
        Kind::Any => unreachable!(),
    }
}

#[test]
fn the_request_schema_is_booking_request() {
    let doc = doc();
    let body = &operation(&doc)["requestBody"];
    assert_eq!(body["required"], true, "the booking body is required");
    let media = body["content"].as_object().expect("requestBody.content");
    assert_eq!(
        media.keys().collect::<Vec<_>>(),
        ["application/json"],
        "the gateway accepts application/json only"
    );
    let mut problems = Vec::new();
    check_object(
        &doc,
        &media["application/json"]["schema"],
        booking::REQUEST,
        "",
        &mut problems,
    );
    assert!(
        problems.is_empty(),
        "docs/openapi.json disagrees with booking::REQUEST:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_request_example_is_the_seed_and_is_valid() {
    let doc = doc();
    let example =
        &operation(&doc)["requestBody"]["content"]["application/json"]["examples"]["seed"]["value"];
    let seed: Value = serde_json::from_str(SEED).unwrap();
    assert_eq!(example, &seed, "the example is the API page's booking");
    let text = example.to_string();
    let root = Node::parse(text.as_bytes()).unwrap();
    booking::validate(&root).expect("the documented example passes validation");
}

/// What the GUID pattern accepts, spelled out: 8-4-4-4-12 hexadecimal digits.
fn guid_pattern_matches(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[test]
fn the_guid_and_key_patterns_agree_with_the_code() {
    for s in [
        "766998fb-1915-4d54-a3f3-934f60125aac",
        "766998FB-1915-4D54-A3F3-934F60125AAC",
        "766998fB-1915-4d54-A3f3-934f60125aac",
        "{766998fb-1915-4d54-a3f3-934f60125aac}",
        "766998fb19154d54a3f3934f60125aac",
        "urn:uuid:766998fb-1915-4d54-a3f3-934f60125aac",
        " 766998fb-1915-4d54-a3f3-934f60125aa",
        "766998fb-1915-4d54-a3f3-934f60125aag",
        "766998fb-1915-4d54a-3f3-934f60125aac",
        "",
    ] {
        assert_eq!(
            guid_pattern_matches(s),
            booking::parse_guid(s).is_some(),
            "{s:?}"
        );
    }
    let doc = doc();
    let key = resolve(&doc, &operation(&doc)["parameters"][0]);
    assert_eq!(
        (key["name"].as_str(), key["in"].as_str()),
        (Some("Idempotency-Key"), Some("header"))
    );
    assert_eq!(key["required"], false);
    let schema = &key["schema"];
    assert_eq!(schema["minLength"], 1);
    assert_eq!(schema["maxLength"], idempotency::MAX_KEY_LEN);
    assert_eq!(schema["pattern"], KEY_PATTERN);
    for b in 0..=u8::MAX {
        assert_eq!(
            idempotency::valid_key(&[b]),
            (b'!'..=b'~').contains(&b),
            "byte {b:#04x}"
        );
    }
}

#[test]
fn the_appointment_schema_is_what_render_produces() {
    let doc = doc();
    let ok = &operation(&doc)["responses"]["200"]["content"]["application/json"]["schema"];
    let schema = resolve(&doc, ok);
    let props = schema["properties"]
        .as_object()
        .expect("Appointment.properties");
    let documented: BTreeSet<&str> = props.keys().map(String::as_str).collect();
    assert_eq!(
        str_set(&schema["required"]),
        documented,
        "every member is always present"
    );

    let direction =
        serde_json::to_string(&serde_json::from_str::<Value>(SEED).unwrap()["direction"]).unwrap();
    let direction = Node::parse(direction.as_bytes()).unwrap();
    let tz = jiff::tz::TimeZone::get("Asia/Novosibirsk").unwrap();
    let fields = normalize::Fields {
        guid: uuid::Uuid::new_v4(),
        number: "01".into(),
        slot: SEED_SLOT.parse().unwrap(),
        source: normalize::SOURCES[0].into(),
        create_time: normalize::rfc3339("2023-04-05 14:00:00.000", &tz).unwrap(),
    };
    let rendered: Value = serde_json::from_slice(&normalize::render(&fields, &direction)).unwrap();
    let rendered = rendered.as_object().expect("an Appointment is an object");
    let keys: BTreeSet<&str> = rendered.keys().map(String::as_str).collect();
    assert_eq!(
        keys, documented,
        "Appointment properties vs normalize::render"
    );

    let source = resolve(&doc, &props["source"]);
    let documented_sources: Vec<&str> = source["enum"]
        .as_array()
        .expect("source is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(documented_sources, normalize::SOURCES);

    // Each rendered value has the documented type and format.
    for (name, value) in rendered {
        let (s, nullable) = split_null(&doc, &props[name]);
        let ty = match value {
            Value::Null => {
                assert!(nullable, "{name}: rendered null, documented non-null");
                continue;
            }
            Value::String(_) => "string",
            Value::Object(_) => "object",
            other => panic!("{name}: unexpected {other}"),
        };
        assert!(types(s).contains(ty), "{name}: rendered a {ty}");
        let text = value.as_str().unwrap_or_default();
        match s["format"].as_str() {
            Some("uuid") => assert!(guid_pattern_matches(text), "{name}: {text}"),
            Some("date-time") => assert!(text.parse::<jiff::Timestamp>().is_ok(), "{name}"),
            _ => {}
        }
    }
    assert_eq!(rendered["createTime"], "2023-04-05T14:00:00+07:00");
}

fn gateway_codes(doc: &Value, api: Api) -> Vec<(u16, String, String, String)> {
    let mut out = Vec::new();
    let responses = operation_of(doc, api)["responses"]
        .as_object()
        .expect("responses");
    for (status, r) in responses {
        let Some(codes) = r.get("x-message-codes") else {
            continue;
        };
        let status: u16 = status
            .parse()
            .unwrap_or_else(|_| panic!("x-message-codes under the non-numeric response {status}"));
        for c in codes.as_array().expect("x-message-codes is an array") {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            out.push((status, s("code"), s("error"), s("message")));
        }
    }
    out
}

/// The table's rows that can answer `api`.
fn rows_of(api: Api) -> impl Iterator<Item = &'static (&'static str, error::ErrorKind)> {
    error::TABLE.iter().filter(move |(name, _)| {
        Condition::ALL
            .iter()
            .any(|c| c.name() == *name && c.answers(api))
    })
}

#[test]
fn every_gateway_error_is_documented_under_its_status_and_nothing_else() {
    let doc = doc();
    for api in APIS {
        gateway_errors_of(&doc, api);
    }
}

/// Each operation documents exactly the conditions that can answer it.
fn gateway_errors_of(doc: &Value, api: Api) {
    let responses = operation_of(doc, api)["responses"].as_object().unwrap();
    let documented = gateway_codes(doc, api);
    let mut problems = Vec::new();
    for (name, kind) in rows_of(api) {
        let status = kind.status.as_u16();
        let want = (
            status,
            kind.code.to_owned(),
            (*name).to_owned(),
            kind.message.to_owned(),
        );
        if !documented.contains(&want) {
            problems.push(format!("missing or different: {want:?}"));
        }
        let description = responses
            .get(&status.to_string())
            .and_then(|r| r["description"].as_str())
            .unwrap_or_default();
        if !description.contains(kind.code) {
            problems.push(format!(
                "the {status} description does not name {}",
                kind.code
            ));
        }
    }
    for d in &documented {
        let in_table = rows_of(api).any(|(name, k)| {
            (k.status.as_u16(), k.code, *name, k.message)
                == (d.0, d.1.as_str(), d.2.as_str(), d.3.as_str())
        });
        if !in_table {
            problems.push(format!("not in error::TABLE for {api:?}: {d:?}"));
        }
    }
    for status in responses.keys() {
        let known = status == "200"
            || status == "default"
            || rows_of(api).any(|(_, k)| k.status.as_str() == status.as_str());
        if !known {
            problems.push(format!(
                "{api:?}: response {status} is not a status of its error::TABLE rows"
            ));
        }
    }
    // A lookup never reaches a MIS; a booking and a cancellation pass the MIS's statuses on.
    assert_eq!(
        responses.contains_key("default"),
        api != Api::Lookup,
        "{api:?}: a MIS's own statuses pass through: `default` documents them"
    );
    assert!(
        problems.is_empty(),
        "docs/openapi.json vs error::TABLE ({api:?}):\n  {}",
        problems.join("\n  ")
    );
}

/// One error of the table row `name`.
fn variant(name: &str) -> GatewayError {
    GatewayError::examples()
        .into_iter()
        .find(|e| e.name() == name)
        .unwrap_or_else(|| {
            panic!("error::TABLE has a row {name} that GatewayError::examples() lacks")
        })
}

/// Checks one rendered error against the document's response for its status (or `default`).
fn check_rendered(doc: &Value, e: GatewayError, out: &mut Vec<String>) {
    check_rendered_for(doc, Api::Book, e, out)
}

/// As [`check_rendered`], against `api`'s responses.
fn check_rendered_for(doc: &Value, api: Api, e: GatewayError, out: &mut Vec<String>) {
    let label = format!("{api:?} {e:?}");
    let r = e.into_response(
        &mis_gateway::error::RequestId::from(http::HeaderValue::from_static(
            "01936f4e-8a2b-7c3d-9e4f-5a6b7c8d9e0f",
        )),
        Some("4bf92f3577b34da6a3ce929d0e0e4736"),
    );
    let responses = &operation_of(doc, api)["responses"];
    let documented = responses
        .get(r.status().as_str())
        .unwrap_or(&responses["default"]);
    let declared: Vec<(String, &Value)> = documented["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), resolve(doc, v)))
                .collect()
        })
        .unwrap_or_default();
    for name in r.headers().keys() {
        if name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH {
            continue;
        }
        if !declared.iter().any(|(k, _)| k == name.as_str()) {
            out.push(format!(
                "{label}: sends {name}, not declared for {}",
                r.status()
            ));
        }
    }
    for (k, h) in &declared {
        if h["required"] == true && !r.headers().contains_key(k.as_str()) {
            out.push(format!(
                "{label}: {k} is required by the document but not sent"
            ));
        }
    }
    let ct = r.headers()[header::CONTENT_TYPE].to_str().unwrap();
    let media = ct.split(';').next().unwrap().trim();
    let content = &documented["content"][media];
    if !content.is_object() {
        out.push(format!("{label}: content type {media} not documented"));
        return;
    }
    let schema = resolve(doc, &content["schema"]);
    let body = http_body_util::BodyExt::collect(r.into_body());
    let body = futures_executor_block_on(body).unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let props: BTreeSet<&str> = schema["properties"]
        .as_object()
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if !keys.is_subset(&props) {
        out.push(format!(
            "{label}: body members {keys:?}, documented {props:?}"
        ));
    }
    if !str_set(&schema["required"]).is_subset(&keys) {
        out.push(format!("{label}: body lacks a required member: {keys:?}"));
    }
}

/// The error bodies are `Full`: ready at once, so polling once is enough.
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a Full body is ready at once"),
    }
}

#[test]
fn rendered_errors_match_their_documented_responses() {
    let doc = doc();
    let mut problems = Vec::new();
    for api in APIS {
        for (name, kind) in rows_of(api) {
            let e = variant(name);
            assert_eq!(e.status_and_code(), (kind.status, kind.code), "{name}");
            check_rendered_for(&doc, api, e, &mut problems);
        }
    }
    // A MIS's own rejections: under a documented status and under `default`.
    for (status, code) in [(400, "4002"), (404, "4040"), (418, "teapot"), (500, "5000")] {
        let e = GatewayError::Mis(MisRejection {
            status: StatusCode::from_u16(status).unwrap(),
            message: "The slot is already taken".into(),
            code: code.into(),
        });
        check_rendered(&doc, e, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "rendered errors vs docs/openapi.json:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_document_is_openapi_3_1_with_basic_auth_and_resolvable_refs() {
    let doc = doc();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    let servers = doc["servers"].as_array().expect("servers");
    assert!(
        servers
            .iter()
            .all(|s| s["url"].as_str().is_some_and(|u| u.starts_with('/'))),
        "servers are relative"
    );
    let basic = &doc["components"]["securitySchemes"]["basicAuth"];
    assert_eq!(basic["type"], "http");
    assert_eq!(basic["scheme"], "basic");
    assert_eq!(doc["security"], serde_json::json!([{"basicAuth": []}]));

    fn walk<'a>(v: &'a Value, refs: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    refs.push(r);
                }
                m.values().for_each(|v| walk(v, refs));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let target = r.strip_prefix('#').and_then(|p| doc.pointer(p));
        assert!(target.is_some(), "$ref {r} does not resolve");
    }
}

#[tokio::test]
async fn the_admin_listener_serves_the_file() {
    let mis = closed_port().await;
    let gw = TestGateway::start(&config_toml(
        &[BackendSpec::new("mis-a", format!("http://{mis}"))],
        &[(SEED_LPU, "mis-a")],
    ))
    .await;
    let r = gw.admin(Method::GET, "/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    let file = std::fs::read(file_path()).unwrap();
    assert!(
        r.body == file,
        "GET /openapi.json differs from docs/openapi.json"
    );
    gw.shutdown().await;
}

#[test]
fn the_appointment_state_is_the_appointment_and_its_state_and_reasons_are_the_codes() {
    use mis_gateway::booking::appointment::REASONS;
    let doc = doc();
    let mut problems = Vec::new();
    for api in [Api::Lookup, Api::Cancel] {
        let ok = &operation_of(&doc, api)["responses"]["200"]["content"]["application/json"];
        let state = resolve(&doc, &ok["schema"]);
        let appointment = &doc["components"]["schemas"]["Appointment"];
        let mut want: BTreeSet<&str> = appointment["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        want.extend(["status", "cancelTime", "cancelReason"]);
        let got: BTreeSet<&str> = state["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        if got != want {
            problems.push(format!("{api:?}: {got:?} vs {want:?}"));
        }
        let reasons: Vec<&str> = state["properties"]["cancelReason"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if reasons != REASONS {
            problems.push(format!("{api:?}: cancelReason {reasons:?}"));
        }
        // The example is a body the gateway could give: every member documented.
        for (_, ex) in ok["examples"].as_object().unwrap() {
            for k in ex["value"].as_object().unwrap().keys() {
                if !got.contains(k.as_str()) {
                    problems.push(format!("{api:?}: example member {k}"));
                }
            }
        }
    }
    let query = &operation_of(&doc, Api::Cancel)["parameters"][0];
    assert_eq!(query["name"], "reason");
    let reasons: Vec<&str> = query["schema"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(reasons, REASONS);
    assert_eq!(
        query["schema"]["default"],
        mis_gateway::booking::appointment::DEFAULT_REASON
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
