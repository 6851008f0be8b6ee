//! routes.toml validation: every refusal names its place; `check` reports them all.

mod support;

use std::path::Path;
use std::process::Command;

use mis_gateway::config::{Config, Problem};
use support::*;

fn base() -> String {
    config_toml(
        &[BackendSpec::new("mis-a", "http://127.0.0.1:9101".into())],
        &[(SEED_LPU, "mis-a")],
    )
}

fn problems(toml: &str) -> Vec<Problem> {
    config_problems(toml)
}

fn has(problems: &[Problem], location: &str, words: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.location == location && p.message.contains(words)),
        "no problem at {location} saying {words:?} in {problems:#?}"
    );
}

#[test]
fn the_base_file_is_valid() {
    let c = parse_config(&base());
    assert_eq!(
        (c.integrators.len(), c.backends.len(), c.routes.len()),
        (2, 1, 1)
    );
    assert!(format!("{:?}", c.backends[0]).contains("<redacted>"));
}

#[test]
fn unknown_keys_are_refused() {
    let p = problems(&base().replace("timezone =", "timezon = \"x\"\ntimezone ="));
    has(&p, "backends[0]", "unknown field `timezon`");
    let p = problems(&format!("{}\n[extra]\na = 1\n", base()));
    has(&p, "extra", "unknown section");
    let p = problems(&base().replace("[server]\n", "[server]\nlisten_port = 1\n"));
    has(&p, "server", "unknown field `listen_port`");
}

#[test]
fn duplicate_lpus_in_other_letter_case_are_refused() {
    let toml = format!("{}\"{}\" = \"mis-a\"\n", base(), SEED_LPU.to_uppercase());
    let p = problems(&toml);
    assert!(
        p.iter()
            .any(|p| p.location.starts_with("routes.")
                && p.message.contains("duplicates another route")),
        "{p:#?}"
    );
}

#[test]
fn routes_to_undefined_backends_and_bad_keys_are_refused() {
    let toml = format!(
        "{}\"{OTHER_LPU}\" = \"mis-nowhere\"\n\"not-a-guid\" = \"mis-a\"\n",
        base()
    );
    let p = problems(&toml);
    has(
        &p,
        &format!("routes.\"{OTHER_LPU}\""),
        "\"mis-nowhere\", which is not defined",
    );
    has(&p, "routes.\"not-a-guid\"", "must be an LPU GUID");
}

#[test]
fn bad_urls_are_refused() {
    for (url, words) in [
        ("ftp://127.0.0.1:9101", "http:// or https://"),
        (
            "http://user:secret@127.0.0.1:9101",
            "must not contain credentials",
        ),
        ("127.0.0.1:9101", "http:// or https://"),
        ("http://127.0.0.1:9101/?a=1", "query string"),
        ("http://exa mple", "not a valid URL"),
    ] {
        let p = problems(&base().replace("http://127.0.0.1:9101", url));
        has(&p, "backends[0].url", words);
        assert!(
            !p.iter().any(|p| p.message.contains("secret")),
            "the URL's secret is never printed"
        );
    }
}

#[test]
fn bad_zones_missing_secrets_and_weak_hashes_are_refused() {
    let p = problems(&base().replace("Europe/Moscow", "Mars/Olympus"));
    has(&p, "backends[0].timezone", "IANA");
    let p = problems(&base().replace("MIS_A_PASSWORD", "UNSET_PASSWORD"));
    has(&p, "backends[0].password_env", "UNSET_PASSWORD is not set");
    let p = problems(&base().replace(
        "password_env = \"MIS_A_PASSWORD\"",
        "password_file = \"/nonexistent/secret\"",
    ));
    has(&p, "backends[0].password_file", "cannot read");
    let p = problems(&base().replace("password_env = \"MIS_A_PASSWORD\"", ""));
    has(
        &p,
        "backends[0]",
        "exactly one of password_env or password_file",
    );
    let weak = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHQ$Zm9vYmFyYmF6cXV4cXV1eA";
    let p = problems(&base().replace(PORTAL_HASH, weak));
    has(&p, "integrators[0].password_hash", "OWASP minimum");
    let p = problems(&base().replace(PORTAL_HASH, "plaintext"));
    has(&p, "integrators[0].password_hash", "Argon2id PHC string");
    let p = problems(&base().replace("login = \"portal\"", "login = \"por:tal\""));
    has(&p, "integrators[0].login", "RFC 7617");
}

#[test]
fn connection_caps_must_fit_the_in_flight_cap() {
    let with = |extra: &str| base().replace("timezone =", &format!("{extra}\ntimezone ="));
    let p = problems(&with("max_in_flight = 8\nmax_connections = 9"));
    has(
        &p,
        "backends[0].max_connections",
        "must not exceed max_in_flight",
    );
    let p = problems(&with("max_connections = 0"));
    has(&p, "backends[0].max_connections", "between 1 and 100000");
    // A wrong max_in_flight is one problem, not a second one about the cap that follows it.
    let p = problems(&with("max_in_flight = 0"));
    has(&p, "backends[0].max_in_flight", "between 1 and 100000");
    assert!(
        !p.iter()
            .any(|p| p.location == "backends[0].max_connections"),
        "{p:#?}"
    );
    let c = parse_config(&with("max_in_flight = 8\nmax_connections = 2"));
    assert_eq!(
        (
            c.backends[0].limits.max_in_flight,
            c.backends[0].limits.max_connections
        ),
        (8, 2)
    );
    // Unset, it follows max_in_flight: no booking ever waits for a connection.
    let c = parse_config(&with("max_in_flight = 8"));
    assert_eq!(c.backends[0].limits.max_connections, 8);
}

#[test]
fn every_problem_is_reported_at_once() {
    let toml = base()
        .replace("Europe/Moscow", "Mars/Olympus")
        .replace("http://127.0.0.1:9101", "ftp://x")
        .replace(&format!("lpus = [\"{SEED_LPU}\"]"), "lpus = [\"nope\"]");
    let p = problems(&toml);
    has(&p, "backends[0].timezone", "IANA");
    has(&p, "backends[0].url", "http://");
    has(&p, "integrators[1].lpus[0]", "GUID");
    assert!(
        !p.iter().any(|p| p.location.starts_with("routes")),
        "no cascade from the broken backend: {p:#?}"
    );
}

#[test]
fn syntax_errors_and_truncated_files_name_the_line() {
    let text = base();
    let truncated = &text[..text.find("[[backends]]").unwrap() + 5];
    let p = problems(truncated);
    assert!(p[0].location.starts_with("line "), "{p:#?}");
    let p = problems("[server]\nlisten = \n");
    assert_eq!(p[0].location, "line 2, column 10");
    let p = problems(&format!("{text}\"{SEED_LPU}\" = \"mis-a\"\n"));
    assert!(
        p[0].location.starts_with("line "),
        "an exact duplicate key is a TOML error: {p:#?}"
    );
}

#[test]
fn password_files_are_read_relative_to_the_config_without_the_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mis-a.secret"), "s3cret\n").unwrap();
    let toml = base().replace(
        "password_env = \"MIS_A_PASSWORD\"",
        "password_file = \"mis-a.secret\"",
    );
    std::fs::write(dir.path().join("routes.toml"), toml).unwrap();
    let c = Config::load(&dir.path().join("routes.toml"), &TestSecrets).unwrap();
    assert_eq!(
        c.backends[0].authorization,
        basic("gateway", "s3cret").as_str()
    );
    assert!(c.backends[0].authorization.is_sensitive());
}

fn check(file: &Path, envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["check", "--config"])
        .arg(file)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_a_summary_or_every_problem_with_a_failing_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base()).unwrap();
    let (ok, out, _) = check(&good, &[("MIS_A_PASSWORD", "x")]);
    assert!(ok);
    assert!(out.contains("2 integrators, 1 backends, 1 routes"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, base().replace("Europe/Moscow", "Mars/Olympus")).unwrap();
    let (ok, _, err) = check(&bad, &[]);
    assert!(!ok);
    assert!(err.contains("backends[0].timezone"), "{err}");
    assert!(err.contains("backends[0].password_env"), "{err}");
    assert!(!err.contains(PORTAL_HASH), "hashes are never printed");
}

#[test]
fn the_shipped_routes_toml_is_valid_and_its_demo_password_matches() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml");
    let (ok, out, err) = check(
        &path,
        &[("MIS_NORTH_PASSWORD", "x"), ("MIS_CENTRAL_PASSWORD", "y")],
    );
    assert!(ok, "{out}{err}");
    let c = Config::load(&path, &TestSecrets).unwrap();
    let portal = &c.integrators[mis_gateway::demo::DEMO_LOGIN];
    let header = basic(
        mis_gateway::demo::DEMO_LOGIN,
        mis_gateway::demo::DEMO_PASSWORD,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let auth = mis_gateway::policy::auth::Authenticator::new();
    let who = rt
        .block_on(auth.authenticate(&c, Some(header.as_bytes()), None, std::time::Instant::now()))
        .expect("the demo password verifies");
    assert_eq!(who.login, portal.login);
}

#[test]
fn hash_password_reads_one_line_and_prints_a_verifiable_phc_string() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"portal-pw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap();
    let toml = base().replace(PORTAL_HASH, phc.trim());
    let c = parse_config(&toml);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let auth = mis_gateway::policy::auth::Authenticator::new();
    let h = basic(PORTAL.0, PORTAL.1);
    assert!(
        rt.block_on(auth.authenticate(&c, Some(h.as_bytes()), None, std::time::Instant::now()))
            .is_ok(),
        "the newline is not part of the password"
    );
}

#[test]
fn a_diff_names_every_changed_backend_setting_in_a_fixed_order() {
    let old = parse_config(&base());
    let new = parse_config(&base().replace(
        "timezone =",
        "timeout_ms = 4000\nmax_in_flight = 8\nmax_connections = 4\ntimezone =",
    ));
    let d = mis_gateway::config::diff::Diff::between(&old, &new);
    assert_eq!(
        d.backends_changed,
        [("mis-a".to_string(), vec!["timeouts", "limits"])]
    );
    let same = mis_gateway::config::diff::Diff::between(&old, &old);
    assert!(same.backends_changed.is_empty() && same.integrators_changed.is_empty());
}
