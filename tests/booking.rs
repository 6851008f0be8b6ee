//! End to end: the real gateway on 127.0.0.1:0 in front of recording mock MIS servers.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn the_seed_example_books_and_the_mis_gets_its_own_credentials() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Asia/Novosibirsk").await;
    let spec = BackendSpec::new("mis-a", mis.url()).tz("Asia/Novosibirsk");
    let gw = TestGateway::start(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])).await;

    let r = gw.book(SEED, PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let a = r.json();
    assert_eq!(a["slot"], SEED_SLOT);
    assert_eq!(a["source"], "Internet");
    assert!(a["number"].is_string(), "number is always a string: {a}");
    let guid = a["guid"].as_str().unwrap();
    assert_eq!(guid, guid.to_lowercase());
    assert!(a["createTime"].as_str().unwrap().ends_with("+07:00"), "{a}");
    let seed: serde_json::Value = serde_json::from_str(SEED).unwrap();
    assert_eq!(
        a["direction"], seed["direction"],
        "direction filled from the request"
    );
    let rid = r.headers["x-request-id"].to_str().unwrap().to_owned();

    let got = mis.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/dir/appointments");
    assert_eq!(
        req.headers[header::AUTHORIZATION],
        backend_auth("MIS_A_PASSWORD").as_str()
    );
    assert_ne!(
        req.headers[header::AUTHORIZATION],
        basic(PORTAL.0, PORTAL.1).as_str()
    );
    assert_eq!(req.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(req.headers["x-request-id"], rid.as_str());
    assert_eq!(
        req.body,
        Bytes::from_static(SEED.as_bytes()),
        "the body is forwarded as received"
    );
}

#[tokio::test]
async fn unmodelled_fields_reach_the_mis_and_hop_by_hop_headers_do_not() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let body = seed_with(|v| v["patient"]["snils"] = "canary-snils".into());
    let req = Request::post(gw.url("/dir/appointments"))
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::AUTHORIZATION, basic(PORTAL.0, PORTAL.1))
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-forwarded-for", "10.0.0.1")
        .header("cookie", "session=abc")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let r = gw.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = &mis.received()[0];
    assert_eq!(got.body, Bytes::from(body));
    for h in [
        "proxy-authorization",
        "x-forwarded-for",
        "cookie",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
    ] {
        assert!(!got.headers.contains_key(h), "{h} must not be forwarded");
    }
}

#[tokio::test]
async fn the_same_slot_twice_gets_the_mis_rejection_with_its_status_and_code() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    assert_eq!(gw.book(SEED, PORTAL).await.status, StatusCode::OK);
    let r = gw.book(SEED, PORTAL).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = r.json();
    assert_eq!(e["Code"], 400);
    assert_eq!(e["Message_code"], "4002");
    assert_eq!(e["Message"], "The slot is already taken");
    assert_eq!(e["requestId"], r.headers["x-request-id"].to_str().unwrap());
}

#[tokio::test]
async fn routes_by_lpu_in_any_letter_case_to_the_right_mis() {
    let north = clinic_mis("MIS_NORTH_PASSWORD", "Asia/Novosibirsk").await;
    let central = clinic_mis("MIS_CENTRAL_PASSWORD", "Europe/Moscow").await;
    let toml = config_toml(
        &[
            BackendSpec::new("mis-north", north.url()).tz("Asia/Novosibirsk"),
            BackendSpec::new("mis-central", central.url()),
        ],
        &[
            (SEED_LPU, "mis-north"),
            (&OTHER_LPU.to_uppercase(), "mis-central"),
        ],
    );
    let gw = TestGateway::start(&toml).await;

    let to_other = seed_with(|v| v["direction"]["lpuToGuid"] = OTHER_LPU.into());
    let r = gw.book(&to_other, PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["createTime"].as_str().unwrap().ends_with("+03:00"));

    let upper = seed_with(|v| {
        v["direction"]["lpuToGuid"] = SEED_LPU.to_uppercase().into();
        v["slot"] = "11111111-2222-3333-4444-555555555555".into();
    });
    let r = gw.book(&upper, PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["createTime"].as_str().unwrap().ends_with("+07:00"));
    assert_eq!((north.count(), central.count()), (1, 1));
}

#[tokio::test]
async fn authentication_failures_are_401_with_the_challenge_and_never_reach_the_mis() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let long = format!("Basic {}", "A".repeat(5000));
    let cases: Vec<Option<String>> = vec![
        None,
        Some("Bearer abc".into()),
        Some("Basic !!!not-base64".into()),
        Some(format!("Basic {}", base64_of("portal-without-colon"))),
        Some("Basic /w==".into()),
        Some(long),
        Some(basic("portal", "wrong")),
        Some(basic("nobody", "portal-pw")),
        Some(basic("portal", "portal-pw ")),
    ];
    for auth in cases {
        let mut req = Request::post(gw.url("/dir/appointments"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = &auth {
            req = req.header(header::AUTHORIZATION, a.as_str());
        }
        let r = gw
            .send(
                req.body(Full::new(Bytes::from_static(SEED.as_bytes())))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.code(), "94010");
        assert_eq!(
            r.headers[header::WWW_AUTHENTICATE],
            r#"Basic realm="mis-gateway", charset="UTF-8""#
        );
    }
    assert_eq!(mis.count(), 0);
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn an_lpu_outside_the_integrators_rights_is_403_in_every_spelling() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    // callcentre may book into SEED_LPU only.
    assert_eq!(gw.book(SEED, CALLCENTRE).await.status, StatusCode::OK);
    for spelling in [OTHER_LPU.to_owned(), OTHER_LPU.to_uppercase()] {
        let body = seed_with(|v| v["direction"]["lpuToGuid"] = spelling.clone().into());
        let r = gw.book(&body, CALLCENTRE).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{spelling}");
        assert_eq!(r.code(), "94030");
    }
    for spelling in [
        format!("{{{OTHER_LPU}}}"),
        format!(" {OTHER_LPU}"),
        OTHER_LPU.replace('-', ""),
    ] {
        let body = seed_with(|v| v["direction"]["lpuToGuid"] = spelling.clone().into());
        let r = gw.book(&body, CALLCENTRE).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{spelling}");
        assert_eq!(r.json()["errors"][0]["path"], "direction.lpuToGuid");
    }
    assert_eq!(mis.count(), 1);
}

#[tokio::test]
async fn an_lpu_without_a_route_is_a_clear_404() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let body = seed_with(|v| v["direction"]["lpuToGuid"] = UNROUTED_LPU.into());
    let r = gw.book(&body, PORTAL).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "94041");
    assert_eq!(mis.count(), 0);
}

#[tokio::test]
async fn wrong_path_method_media_type_and_size() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let auth = basic(PORTAL.0, PORTAL.1);
    let post = |path: &str| {
        Request::post(gw.url(path))
            .header(header::AUTHORIZATION, auth.as_str())
            .header(header::CONTENT_TYPE, "application/json")
    };

    let r = gw
        .send(
            post("/dir/appointment")
                .body(Full::new(Bytes::from_static(SEED.as_bytes())))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "94040")
    );

    let r = gw
        .send(
            Request::get(gw.url("/dir/appointments"))
                .header(header::AUTHORIZATION, auth.as_str())
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "94050")
    );
    assert_eq!(r.headers[header::ALLOW], "POST");

    for ct in [
        None,
        Some("text/plain"),
        Some("application/jsonp"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req =
            Request::post(gw.url("/dir/appointments")).header(header::AUTHORIZATION, auth.as_str());
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let r = gw
            .send(
                req.body(Full::new(Bytes::from_static(SEED.as_bytes())))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "94150"),
            "{ct:?}"
        );
    }

    // Over the 64 KiB default: refused by Content-Length, and by counting a chunked body.
    let big = seed_with(|v| v["padding"] = "x".repeat(70_000).into());
    let r = gw
        .send(
            post("/dir/appointments")
                .body(Full::new(Bytes::from(big.clone())))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "94130")
    );
    let chunks = futures_util::stream::iter(
        big.into_bytes()
            .chunks(8192)
            .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .collect::<Vec<_>>(),
    );
    let r = gw.send_streaming(post("/dir/appointments"), chunks).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "94130")
    );
    assert_eq!(mis.count(), 0);
}

#[tokio::test]
async fn invalid_bookings_list_every_problem_without_echoing_values() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let body = seed_with(|v| {
        v["slot"] = "Canary-Slot".into();
        v["patient"]["family"] = 7.into();
        v["patient"]["polis"]["number"] = serde_json::Value::Null;
        v["direction"]["dateDirection"] = "2021-04-21 03:00".into();
        v["direction"]["diagnosis"]["code"] = "Canary-Diagnosis".into();
        v["docSender"]["guid"] = "Canary-Doctor".into();
    });
    let r = gw.book(&body, PORTAL).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "94000")
    );
    let paths: Vec<String> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "slot",
            "patient.family",
            "patient.polis.number",
            "docSender.guid",
            "direction.dateDirection",
            "direction.diagnosis.code"
        ]
    );
    assert!(!r.text().contains("Canary"), "{}", r.text());

    for bad in ["", "{", "{\"slot\": Canary}", "[1,2", "{\"a\":1} Canary"] {
        let r = gw.book(bad, PORTAL).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "94001"),
            "{bad}"
        );
        assert!(!r.text().contains("Canary"));
    }
    let deep = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let r = gw.book(&deep, PORTAL).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "94001")
    );
    assert_eq!(mis.count(), 0);
}

#[tokio::test]
async fn duplicate_lpu_keys_are_refused_before_anything_is_forwarded() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    // callcentre may book SEED_LPU; a second lpuToGuid must not smuggle OTHER_LPU past the check.
    let body = SEED.replacen(
        &format!("\"lpuToGuid\": \"{SEED_LPU}\""),
        &format!("\"lpuToGuid\": \"{SEED_LPU}\", \"lpuToGuid\": \"{OTHER_LPU}\""),
        1,
    );
    assert_ne!(body, SEED);
    let r = gw.book(&body, CALLCENTRE).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["errors"][0]["path"], "direction.lpuToGuid");
    assert_eq!(r.json()["errors"][0]["reason"], "appears more than once");
    assert_eq!(mis.count(), 0);
}
