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

/// An integrator password long enough for `hash-password`.
const LONG_PASSWORD: &str = "correct-horse-battery";

fn hash_password(input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn hash_password_reads_one_line_and_prints_a_verifiable_phc_string() {
    let out = hash_password(format!("{LONG_PASSWORD}\n").as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc = String::from_utf8(out.stdout).unwrap();
    let toml = base().replace(PORTAL_HASH, phc.trim());
    let c = parse_config(&toml);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let auth = mis_gateway::policy::auth::Authenticator::new();
    let h = basic(PORTAL.0, LONG_PASSWORD);
    assert!(
        rt.block_on(auth.authenticate(&c, Some(h.as_bytes()), None, std::time::Instant::now()))
            .is_ok(),
        "the newline is not part of the password"
    );
}

#[test]
fn hash_password_refuses_a_password_shorter_than_15_characters_without_printing_it() {
    for short in ["abc", "portal-demo-pw", "пароль-пароль1"] {
        assert!(short.chars().count() < 15);
        let out = hash_password(format!("{short}\n").as_bytes());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{short} was accepted");
        assert!(out.stdout.is_empty());
        assert!(err.contains("at least 15"), "{err}");
        assert!(!err.contains(short), "the password is not printed: {err}");
    }
    // 15 characters, counted as characters, not bytes.
    assert!(
        hash_password("пароль-пароль12\n".as_bytes())
            .status
            .success()
    );
}

#[cfg(unix)]
#[test]
fn hash_password_on_a_terminal_does_not_echo_and_asks_twice() {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = |fd: &OwnedFd| std::process::Stdio::from(fd.try_clone().unwrap());
    let child = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .arg("hash-password")
        .stdin(slave(&pty.slave))
        .stdout(std::process::Stdio::piped())
        .stderr(slave(&pty.slave))
        .spawn()
        .unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    // What the terminal shows, read on a thread (the master blocks until the child writes).
    let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (shown, mut master) = (shown.clone(), master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let wait_for = |words: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !shown.lock().unwrap().contains(words) {
            assert!(
                std::time::Instant::now() < deadline,
                "the terminal never showed {words:?}: {:?}",
                shown.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(10)); // polling a condition
        }
    };
    wait_for("Password (not shown): ");
    master
        .write_all(format!("{LONG_PASSWORD}\n").as_bytes())
        .unwrap();
    wait_for("The same again: ");
    master
        .write_all(format!("{LONG_PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    drop(master);
    let _ = reader.join();
    let phc = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && phc.starts_with("$argon2id$"),
        "{phc}"
    );
    let shown = shown.lock().unwrap().clone();
    assert!(
        !shown.contains(LONG_PASSWORD),
        "the terminal echoed the password: {shown:?}"
    );
}

/// The routes.toml reference in README.md, made loadable: its hash is an example, elided.
fn readme_reference() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme
        .find("\n## routes.toml")
        .expect("README has ## routes.toml")..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + section[start..].find("```").unwrap();
    let text = &section[start..end];
    let hash_line = text
        .lines()
        .find(|l| l.starts_with("password_hash ="))
        .unwrap();
    text.replace(hash_line, &format!("password_hash = \"{PORTAL_HASH}\""))
}

/// `check --no-secrets --exit-code --config new --against old`: exit code and stdout+stderr.
fn check_against(dir: &Path, old: &str, new: &str) -> (Option<i32>, String) {
    std::fs::write(dir.join("old.toml"), old).unwrap();
    std::fs::write(dir.join("new.toml"), new).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["check", "--no-secrets", "--exit-code", "--config"])
        .arg(dir.join("new.toml"))
        .arg("--against")
        .arg(dir.join("old.toml"))
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One `key = value` line of the reference changed to another valid value: the new text, and
/// what `--against` must print for it (when the value only is expected, it follows `key: `).
fn changed_line(section: &str, key: &str, value: &str) -> (String, Vec<String>) {
    let int = value.parse::<i64>().ok();
    let unquoted = value.trim_matches('"');
    let new_value = match (key, int) {
        (_, Some(n)) if section == "backends" && key == "connect_timeout_ms" => (n - 1).to_string(),
        (_, Some(n)) if section == "backends" && ["timeout_ms", "max_in_flight"].contains(&key) => {
            (n + 1).to_string()
        }
        (_, Some(n)) if key.ends_with("max_connections") && section == "backends" => {
            (n - 1).to_string()
        }
        (_, Some(n)) => (n - 1).to_string(),
        ("listen", _) => {
            let (ip, port) = unquoted.rsplit_once(':').unwrap();
            format!("\"{ip}:{}\"", port.parse::<u16>().unwrap() + 1)
        }
        ("timezone", _) => "\"Europe/Moscow\"".into(),
        ("on_store_error", _) => "\"local\"".into(),
        ("on_5xx", _) => "\"retry\"".into(),
        ("on_error", _) => "\"book\"".into(),
        ("synchronous", _) => "\"normal\"".into(),
        ("trusted_proxies", _) => "[\"10.0.0.0/16\"]".into(),
        ("allow_from", _) => "[\"203.0.113.0/25\"]".into(),
        (_, _) if value == "false" => "true".into(),
        (_, _) if value == "true" => "false".into(),
        ("url", _) => "\"https://mis-north-2.example\"".into(),
        ("store", _) => "\"rediss://redis-2.internal:6380/0\"".into(),
        ("password_hash", _) => format!("\"{CALLCENTRE_HASH}\""),
        ("lpus", _) => format!("[\"{SEED_LPU}\"]"),
        _ => format!("\"{unquoted}2\""),
    };
    let place = match section {
        "integrators" => "integrator \"portal\": ".to_owned(),
        "backends" => "backend \"mis-north\": ".to_owned(),
        s => format!("{s}."),
    };
    let expected = if key == "password_hash" {
        format!("{place}password_hash changed")
    } else if key == "lpus" {
        format!("{place}lpus: \"*\" -> 1 LPUs: {SEED_LPU}")
    } else if mis_gateway::config::diff::RESTART_ONLY.contains(&format!("{section}.{key}").as_str())
    {
        format!("{place}{key}: {value} -> {new_value} (takes effect after a restart)")
    } else {
        format!("{place}{key}: {value} -> {new_value}")
    };
    (new_value, vec![expected])
}

#[test]
fn check_against_reports_a_change_of_every_key_of_the_readme_reference() {
    let dir = tempfile::tempdir().unwrap();
    let old = readme_reference();
    let (code, out) = check_against(dir.path(), &old, &old);
    assert_eq!(
        code,
        Some(0),
        "the reference checks and equals itself: {out}"
    );
    assert!(out.contains("no changes"), "{out}");

    let mut section = String::new();
    let mut walked = Vec::new();
    for (i, line) in old.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            section = header
                .split(']')
                .next()
                .unwrap()
                .trim_matches('[')
                .to_owned();
            continue;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        let Some((key, rest)) = trimmed.split_once(" = ") else {
            continue;
        };
        let value = match rest.chars().next() {
            Some('"') => &rest[..rest[1..].find('"').unwrap() + 2],
            Some('[') => &rest[..rest.find(']').unwrap() + 1],
            _ => rest.split_whitespace().next().unwrap(),
        };
        let (replacement, expected): (String, Vec<String>) = match (section.as_str(), key) {
            ("integrators", "login") => (
                line.replacen("\"portal\"", "\"portal-2\"", 1),
                vec![
                    "integrator added: portal-2".into(),
                    "integrator removed: portal".into(),
                ],
            ),
            // A renamed backend takes its routes along.
            ("backends", "name") => (
                line.replacen("\"mis-north\"", "\"mis-north-2\"", 1),
                vec![
                    "backend added: mis-north-2".into(),
                    "backend removed: mis-north".into(),
                    format!("route moved: {SEED_LPU}: mis-north -> mis-north-2"),
                ],
            ),
            ("routes", _) => (
                line.replacen(SEED_LPU, OTHER_LPU, 1),
                vec![
                    format!("route added: {OTHER_LPU} -> mis-north"),
                    format!("route removed: {SEED_LPU} (was mis-north)"),
                ],
            ),
            (s, k) => {
                let (new_value, expected) = changed_line(s, k, value);
                (line.replacen(value, &new_value, 1), expected)
            }
        };
        let mut lines: Vec<&str> = old.lines().collect();
        lines[i] = &replacement;
        let mut new = lines.join("\n");
        if (section.as_str(), key) == ("backends", "name") {
            new = new.replace("= \"mis-north\"", "= \"mis-north-2\"");
        }
        let (code, out) = check_against(dir.path(), &old, &new);
        assert_eq!(
            code,
            Some(3),
            "{section}.{key}: a valid change exits 3:\n{replacement}\n{out}"
        );
        for e in &expected {
            assert!(
                out.lines().any(|l| l.trim() == e),
                "{section}.{key}: --against shows `{e}`:\n{out}"
            );
        }
        walked.push(format!("{section}.{key}"));
    }
    // The reference had 38 keys when this was written; the issue's two among them.
    assert!(
        walked.len() >= 38
            && walked.contains(&"integrators.rate_per_second".to_owned())
            && walked.contains(&"integrators.burst".to_owned()),
        "every key of the reference was walked: {walked:?}"
    );
}

#[test]
fn check_against_reports_password_file_rotated_secrets_and_the_restart_only_settings() {
    let dir = tempfile::tempdir().unwrap();
    let old = base();
    let new = old.replace(
        "password_env = \"MIS_A_PASSWORD\"",
        "password_file = \"mis-a.secret\"",
    );
    let (code, out) = check_against(dir.path(), &old, &new);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("backend \"mis-a\": password_env: \"MIS_A_PASSWORD\" -> (unset)")
            && out.contains("backend \"mis-a\": password_file: (unset) -> \"mis-a.secret\""),
        "{out}"
    );
    let new = old.replace(
        "listen = \"127.0.0.1:0\"\n\n[admin]",
        "listen = \"127.0.0.1:0\"\ndrain_timeout_ms = 5000\n\n[admin]",
    );
    let (_, out) = check_against(dir.path(), &old, &new);
    assert!(
        out.contains("server.drain_timeout_ms: (unset) -> 5000 (takes effect after a restart)"),
        "{out}"
    );

    // The same secret file with new contents: only resolved secrets can tell.
    let secret = dir.path().join("mis-a.secret");
    let with_file = old.replace(
        "password_env = \"MIS_A_PASSWORD\"",
        "password_file = \"mis-a.secret\"",
    );
    std::fs::write(&secret, "first\n").unwrap();
    let first = Config::load(&write(dir.path(), "a.toml", &with_file), &TestSecrets).unwrap();
    std::fs::write(&secret, "second\n").unwrap();
    let second = Config::load(&write(dir.path(), "b.toml", &with_file), &TestSecrets).unwrap();
    let d = mis_gateway::config::diff::Diff::between(&first, &with_file, &second, &with_file);
    assert_eq!(
        d.changes,
        ["backend \"mis-a\": credentials: the secret's value changed"]
    );
    assert!(!d.to_string().contains("second"), "secrets are never shown");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_no_secrets_passes_the_shipped_file_without_its_secrets_but_still_checks_their_names() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml");
    let run = |file: &Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
            .arg("check")
            .args(extra)
            .arg("--config")
            .arg(file)
            .env_remove("MIS_NORTH_PASSWORD")
            .env_remove("MIS_CENTRAL_PASSWORD")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = run(&shipped, &[]);
    assert_eq!(
        code,
        Some(1),
        "without --no-secrets the secrets are needed: {out}"
    );
    let (code, out) = run(&shipped, &["--no-secrets"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("--no-secrets"),
        "the summary says what was not read: {out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = base()
        .replace("\"MIS_A_PASSWORD\"", "\"MIS-A PASSWORD\"")
        .replace("Europe/Moscow", "Mars/Olympus");
    let (code, out) = run(&write(dir.path(), "bad.toml", &bad), &["--no-secrets"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("backends[0].password_env: must be an environment variable name"),
        "{out}"
    );
    assert!(out.contains("backends[0].timezone"), "{out}");
    let empty_file = base().replace("password_env = \"MIS_A_PASSWORD\"", "password_file = \"\"");
    let (code, out) = run(
        &write(dir.path(), "empty.toml", &empty_file),
        &["--no-secrets"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("backends[0].password_file: is empty"), "{out}");
}

#[test]
fn check_names_a_missing_file_and_a_relative_password_file_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["check", "--config", "nowhere.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let absolute = dir.path().join("nowhere.toml");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err.trim(),
        format!(
            "nowhere.toml ({}): the file does not exist",
            absolute.display()
        )
    );

    std::fs::create_dir(dir.path().join("conf")).unwrap();
    let toml = base().replace(
        "password_env = \"MIS_A_PASSWORD\"",
        "password_file = \"secrets/mis-a\"",
    );
    write(&dir.path().join("conf"), "routes.toml", &toml);
    let out = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["check", "--config", "conf/routes.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let secret = dir.path().join("conf/secrets/mis-a");
    assert!(
        err.contains(&format!(
            "backends[0].password_file: cannot read {}: the file does not exist",
            secret.display()
        )),
        "{err}"
    );
}

#[test]
fn check_help_lists_only_the_flags_check_takes() {
    let out = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["check", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--against", "--exit-code", "--no-secrets"] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
    for flag in [
        "--worker-threads",
        "--pin-workers",
        "--spread-workers",
        "--log-format",
    ] {
        assert!(
            !help.contains(flag),
            "{flag} is serve's, not check's: {help}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--worker-threads"));
}

#[test]
fn serve_names_the_address_that_is_busy() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = base().replacen("127.0.0.1:0", &addr.to_string(), 1);
    let file = write(dir.path(), "routes.toml", &toml);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["serve", "--worker-threads", "1", "--config"])
        .arg(&file)
        .env("MIS_A_PASSWORD", "x")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running on a busy address");
        }
        std::thread::sleep(std::time::Duration::from_millis(20)); // polling a condition
    };
    let err = child.wait_with_output().unwrap().stderr;
    let err = String::from_utf8_lossy(&err);
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "cannot listen on {addr} (server.listen in the config)"
        )),
        "{err}"
    );
}

#[test]
fn a_diff_names_every_changed_backend_setting() {
    let old_text = base();
    let new_text = base().replace(
        "timezone =",
        "timeout_ms = 4000\nmax_in_flight = 8\nmax_connections = 4\ntimezone =",
    );
    let (old, new) = (parse_config(&old_text), parse_config(&new_text));
    let d = mis_gateway::config::diff::Diff::between(&old, &old_text, &new, &new_text);
    assert_eq!(
        d.changes,
        [
            "backend \"mis-a\": max_connections: (unset) -> 4",
            "backend \"mis-a\": max_in_flight: (unset) -> 8",
            "backend \"mis-a\": timeout_ms: (unset) -> 4000",
        ]
    );
    let same = mis_gateway::config::diff::Diff::between(&old, &old_text, &old, &old_text);
    assert!(same.is_empty());
}

#[test]
fn a_diff_sees_an_integrators_rate_and_burst() {
    let old_text = base();
    let new_text = base().replace(
        "lpus = [\"*\"]",
        "lpus = [\"*\"]\nrate_per_second = 5\nburst = 10",
    );
    let (old, new) = (parse_config(&old_text), parse_config(&new_text));
    let d = mis_gateway::config::diff::Diff::between(&old, &old_text, &new, &new_text);
    assert_eq!(
        d.changes,
        [
            "integrator \"portal\": burst: (unset) -> 10",
            "integrator \"portal\": rate_per_second: (unset) -> 5",
        ]
    );
}

#[test]
fn a_diff_shows_a_table_added_whole_key_by_key() {
    let unresolved = |t: &str| {
        Config::from_bytes(
            t.as_bytes(),
            Path::new("."),
            &mis_gateway::config::NoSecrets,
        )
        .unwrap()
    };
    let old_text = base();
    let new_text = base().replace(
        "[admin]",
        "[server.tls]\ncert = \"tls/gw.crt\"\nkey = \"tls/gw.key\"\n\n[admin]",
    );
    let d = mis_gateway::config::diff::Diff::between(
        &unresolved(&old_text),
        &old_text,
        &unresolved(&new_text),
        &new_text,
    );
    assert_eq!(
        d.changes,
        [
            "server.tls.cert: (unset) -> \"tls/gw.crt\"",
            "server.tls.key: (unset) -> \"tls/gw.key\"",
        ]
    );
}

#[test]
fn operators_need_a_login_a_strong_hash_and_a_known_role() {
    let base = config_toml(
        &[BackendSpec::new("mis-a", "http://127.0.0.1:9".into())],
        &[(SEED_LPU, "mis-a")],
    );
    let problems = config_problems(&format!(
        "{base}\n[[operators]]\nlogin = \"duty\"\npassword_hash = \"plain\"\nrole = \"admin\"\n\n[[operators]]\nlogin = \"duty\"\npassword_hash = \"{PORTAL_HASH}\"\nrole = \"viewer\"\n"
    ));
    let at: Vec<&str> = problems.iter().map(|p| p.location.as_str()).collect();
    for want in [
        "operators[0].password_hash",
        "operators[0].role",
        "operators[1].login",
    ] {
        assert!(at.contains(&want), "{want} in {at:?}");
    }
    let ok = parse_config(&format!(
        "{base}\n[[operators]]\nlogin = \"duty\"\npassword_hash = \"{PORTAL_HASH}\"\nrole = \"operator\"\n"
    ));
    assert_eq!(
        ok.operators["duty"].role,
        mis_gateway::config::Role::Operator
    );
    // Passwords and session cookies in clear on a wider network: said.
    let wide = parse_config(
        &format!(
            "{base}\n[[operators]]\nlogin = \"duty\"\npassword_hash = \"{PORTAL_HASH}\"\nrole = \"viewer\"\n"
        )
        .replacen(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            "[admin]\nlisten = \"0.0.0.0:0\"",
            1,
        ),
    );
    assert!(
        wide.warnings
            .iter()
            .any(|w| w.contains("operators are configured")),
        "{:?}",
        wide.warnings
    );
    let bad_trace = config_problems(&base.replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntrace_url = \"javascript:alert(1)\"",
        1,
    ));
    assert!(bad_trace.iter().any(|p| p.location == "admin.trace_url"));
}
