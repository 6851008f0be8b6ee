//! docs/mis-contract.md and the code agree: the requests the page shows (a booking, a
//! cancellation) are what a MIS receives, and every example MIS answer on the page, fed through
//! `normalize` (and the error table's rendering), gives the integrator exactly the answer the
//! page shows next to it.

mod support;

use std::collections::BTreeSet;

use http::StatusCode;
use mis_gateway::booking::normalize;
use mis_gateway::error::RequestId;
use support::*;

const PAGE: &str = include_str!("../docs/mis-contract.md");

/// The page's fenced blocks: (info string, content).
fn blocks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in PAGE.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    out
}

/// A block of HTTP text: the status code (or request line), the header lines, the body.
struct Http {
    first: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn http(text: &str) -> Http {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap().to_owned();
    let headers = lines
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("header line {l:?}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    Http {
        first,
        headers,
        body: body.trim_end().to_owned(),
    }
}

fn status(h: &Http) -> StatusCode {
    let code = h.first.split(' ').nth(1).unwrap();
    StatusCode::from_u16(code.parse().unwrap()).unwrap()
}

fn seed_direction() -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(SEED).unwrap()["direction"].clone()
}

#[test]
fn every_example_answer_gives_what_the_page_says() {
    let blocks = blocks();
    let slot: uuid::Uuid = SEED_SLOT.parse().unwrap();
    let (mut booked, mut refused) = (0, 0);
    let mut i = 0;
    while i < blocks.len() {
        let (info, text) = &blocks[i];
        if info.starts_with("http gateway-answer") {
            panic!("a gateway answer without the MIS answer before it:\n{text}");
        }
        let Some(args) = info.strip_prefix("http mis-answer") else {
            i += 1;
            continue;
        };
        let zone = args
            .split_whitespace()
            .find_map(|a| a.strip_prefix("timezone="))
            .expect("mis-answer timezone=…");
        let tz = jiff::tz::TimeZone::get(zone).unwrap();
        let mis = http(text);
        let (next_info, next) = blocks.get(i + 1).expect("a gateway answer after it");
        assert!(next_info.starts_with("http gateway-answer"), "{next_info}");
        let want = http(next);
        let ctx = normalize::Context {
            slot,
            timezone: &tz,
        };
        let what = format!("the page's answer\n{text}");
        match normalize::answer(status(&mis), mis.body.as_bytes(), &ctx) {
            Ok(n) => {
                let direction = n
                    .mis_direction
                    .unwrap_or_else(|| serde_json::to_vec(&seed_direction()).unwrap());
                let got: serde_json::Value =
                    serde_json::from_slice(&normalize::render_json(&n.fields, &direction)).unwrap();
                let mut expected: serde_json::Value = serde_json::from_str(&want.body).unwrap();
                if expected["direction"] == "<the request's direction>" {
                    expected["direction"] = seed_direction();
                }
                assert_eq!(status(&want), StatusCode::OK, "{what}");
                assert_eq!(got, expected, "{what}");
                booked += 1;
            }
            Err(e) => {
                let resp = e.into_response(&RequestId::new(), None);
                assert_eq!(resp.status(), status(&want), "{what}");
                for (name, value) in &want.headers {
                    let real = resp
                        .headers()
                        .get(name.as_str())
                        .unwrap_or_else(|| panic!("no {name} in the answer to {what}"));
                    if value != "…" {
                        assert_eq!(real, value.as_str(), "{name} for {what}");
                    }
                }
                let body = futures_body(resp);
                let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let expected: serde_json::Value = serde_json::from_str(&want.body).unwrap();
                for (k, v) in expected.as_object().unwrap() {
                    if v == "…" {
                        assert!(got.get(k).is_some(), "{k} in {got} for {what}");
                    } else {
                        assert_eq!(&got[k], v, "{k} for {what}");
                    }
                }
                refused += 1;
            }
        }
        i += 2;
    }
    assert!(
        booked >= 3 && refused >= 8,
        "{booked} booked, {refused} refused examples"
    );
}

fn futures_body(resp: http::Response<http_body_util::Full<bytes::Bytes>>) -> bytes::Bytes {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(resp.into_body().collect()).unwrap().to_bytes()
}

#[tokio::test]
async fn the_request_the_page_shows_is_what_a_mis_receives() {
    let (info, text) = blocks()
        .into_iter()
        .find(|(info, _)| info == "http gateway-request")
        .expect("the page shows the request");
    assert_eq!(info, "http gateway-request");
    let page = http(&text);
    assert_eq!(page.first, "POST /dir/appointments HTTP/1.1");

    let mis = MockMis::spawn(echo_mis()).await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let body = fresh_booking();
    let r = gw
        .send(gw.traced(
            body.clone(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let got = &mis.received()[0];
    assert_eq!(got.method, http::Method::POST);
    assert_eq!(got.path, "/dir/appointments");
    assert_eq!(got.version, http::Version::HTTP_11);
    assert_eq!(
        got.body,
        body.as_bytes(),
        "the integrator's body, byte for byte"
    );

    let names: BTreeSet<String> = got.headers.keys().map(|k| k.as_str().to_owned()).collect();
    let on_page: BTreeSet<String> = page.headers.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(names, on_page, "the headers a MIS receives");
    let value = |name: &str| {
        page.headers
            .iter()
            .find(|(k, _)| k == name)
            .unwrap()
            .1
            .clone()
    };
    for fixed in ["content-type", "accept"] {
        assert_eq!(got.headers[fixed], value(fixed).as_str(), "{fixed}");
    }
    assert_eq!(got.headers["tracestate"], value("tracestate").as_str());
    assert_eq!(
        got.headers["authorization"],
        backend_auth("MIS_A_PASSWORD").as_str()
    );
    assert!(value("authorization").starts_with("Basic "));
    let id = got.headers["x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert_eq!(
        r.headers["x-request-id"], id,
        "the integrator's answer names it too"
    );
    let tp = got.headers["traceparent"].to_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    gw.shutdown().await;
}

/// The integrator's answer the page shows for `mis` (a cancellation's answer), checked like a
/// booking's error: status, the headers it names, the body fields it gives.
#[test]
fn every_example_cancel_answer_gives_what_the_page_says() {
    let blocks = blocks();
    let mut seen = 0;
    for pair in blocks.windows(2) {
        let [(info, text), (next_info, next)] = pair else {
            continue;
        };
        if info != "http mis-cancel-answer" {
            continue;
        }
        assert!(
            next_info.starts_with("http gateway-cancel-answer"),
            "{next_info}"
        );
        let (mis, want) = (http(text), http(next));
        let what = format!("the page's cancel answer\n{text}");
        match normalize::cancellation(status(&mis), mis.body.as_bytes(), true) {
            Ok(()) => assert_eq!(status(&want), StatusCode::OK, "{what}"),
            Err(e) => {
                let resp = e.into_response(&RequestId::new(), None);
                assert_eq!(resp.status(), status(&want), "{what}");
                for (name, value) in &want.headers {
                    let real = &resp.headers()[name.as_str()];
                    if value != "…" {
                        assert_eq!(real, value.as_str(), "{name} for {what}");
                    }
                }
                let got: serde_json::Value = serde_json::from_slice(&futures_body(resp)).unwrap();
                let expected: serde_json::Value = serde_json::from_str(&want.body).unwrap();
                for (k, v) in expected.as_object().unwrap() {
                    if v == "…" {
                        assert!(got.get(k).is_some(), "{k} in {got} for {what}");
                    } else {
                        assert_eq!(&got[k], v, "{k} for {what}");
                    }
                }
            }
        }
        seen += 1;
    }
    assert!(seen >= 4, "{seen} cancel examples");
}

#[tokio::test]
async fn the_cancel_request_the_page_shows_is_what_a_mis_receives() {
    let page = blocks()
        .into_iter()
        .find(|(info, _)| info == "http cancel-request")
        .map(|(_, text)| http(&text))
        .expect("the page shows the cancel request");
    let mis = MockMis::spawn(cancelling_mis(cancelled_reply())).await;
    let dir = tempfile::tempdir().unwrap();
    let mut toml = config_toml(
        &[BackendSpec::new("mis-a", mis.url())],
        &[(SEED_LPU, "mis-a")],
    );
    toml.push_str(&format!(
        "\n[journal]\npath = \"{}\"\n",
        dir.path().join("journal.db").display()
    ));
    let gw = TestGateway::start(&toml).await;
    let booked = gw.book(&fresh_booking(), PORTAL).await;
    assert_eq!(booked.status, StatusCode::OK);
    let guid = booked.json()["guid"].as_str().unwrap().to_owned();
    let req = http::Request::delete(gw.url(&format!("/dir/appointments/{guid}")))
        .header(http::header::AUTHORIZATION, basic(PORTAL.0, PORTAL.1))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(http_body_util::Full::default())
        .unwrap();
    let r = gw.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = mis
        .received()
        .into_iter()
        .find(|r| r.method == http::Method::DELETE)
        .expect("the MIS got the cancel");
    let (method, target) = page.first.split_once(' ').unwrap();
    assert_eq!(method, "DELETE");
    let (path, query) = target
        .trim_end_matches(" HTTP/1.1")
        .split_once('?')
        .unwrap();
    assert!(path.starts_with("/dir/appointments/"), "{path}");
    assert_eq!(got.path, format!("/dir/appointments/{guid}"));
    assert_eq!(got.query.as_deref(), Some(query));
    let names: BTreeSet<String> = got.headers.keys().map(|k| k.as_str().to_owned()).collect();
    let on_page: BTreeSet<String> = page.headers.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(names, on_page, "the headers a MIS receives with a cancel");
    assert_eq!(got.headers["accept"], "application/json");
    assert_eq!(got.headers["content-length"], "0");
    assert_eq!(
        got.headers["authorization"],
        backend_auth("MIS_A_PASSWORD").as_str()
    );
    assert_eq!(r.headers["x-request-id"], got.headers["x-request-id"]);
    assert!(
        got.headers["traceparent"]
            .to_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    );
    gw.shutdown().await;
}
