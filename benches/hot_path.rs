//! The booking's hot functions, one by one: check the seed's request in one pass (the
//! gateway's path) and, as the reference it replaced, parse + validate it over a tree; normalize a
//! MIS answer, render an error. Run: `cargo bench --bench hot_path`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, StatusCode};
use mis_gateway::booking;
use mis_gateway::booking::normalize;
use mis_gateway::error::{FieldProblem, GatewayError, RequestId};

const SEED: &str = include_str!("../tests/data/seed_request.json");
const ANSWER: &str = r#"{"guid":"EE5AE221-DDC8-40CF-A61B-4E7926A2501C","number":17,"slot":"766998fb-1915-4d54-a3f3-934f60125aac","createTime":"2023-04-05 14:00:00.000"}"#;

fn bench(c: &mut Criterion) {
    c.bench_function("check_seed", |b| {
        b.iter(|| black_box(booking::check(black_box(SEED.as_bytes())).unwrap()))
    });
    c.bench_function("parse_validate_seed", |b| {
        b.iter(|| {
            let root = booking::parse(black_box(SEED.as_bytes())).unwrap();
            let booking = booking::validate(&root).unwrap();
            black_box(booking.lpu_to);
        })
    });
    c.bench_function("parse_seed", |b| {
        b.iter(|| black_box(booking::parse(black_box(SEED.as_bytes())).unwrap()))
    });
    c.bench_function("serde_json_value_baseline", |b| {
        b.iter(|| {
            black_box(
                serde_json::from_slice::<serde_json::Value>(black_box(SEED.as_bytes())).unwrap(),
            )
        })
    });

    let root = booking::parse(SEED.as_bytes()).unwrap();
    let booking = booking::validate(&root).unwrap();
    let direction = root.get("direction").unwrap().to_json();
    let tz = jiff::tz::TimeZone::get("Asia/Novosibirsk").unwrap();
    let ctx = normalize::Context {
        slot: booking.slot,
        timezone: &tz,
    };
    c.bench_function("normalize_and_render_answer", |b| {
        b.iter(|| {
            let n = normalize::answer(StatusCode::OK, black_box(ANSWER.as_bytes()), &ctx).unwrap();
            black_box(normalize::render_json(
                &n.fields,
                n.mis_direction.as_ref().unwrap_or(&direction),
            ))
        })
    });

    let request_id = RequestId::from(HeaderValue::from_static(
        "01a22608-1b6e-76ed-a226-2d8f0d995a82",
    ));
    c.bench_function("render_validation_error", |b| {
        b.iter(|| {
            let e = GatewayError::Invalid {
                problems: vec![FieldProblem {
                    path: "direction.lpuToGuid".into(),
                    reason: "must be a GUID",
                }],
            };
            black_box(e.into_response(&request_id, None))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
