//! The fuzz corpora as a regression suite: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through the same check as the fuzz target of that name.
//!
//! The checks live in `fuzz/checks.rs`, included here and by each target in
//! `fuzz/fuzz_targets/`, so a target and its replay cannot drift apart.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the folder does not exist.
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("readable corpus folder").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs `check` on every file of `fuzz/<kind>/<target>/`, then fails naming every file that
/// panicked (the panic messages are printed as they happen).
fn replay(kind: &str, target: &str, check: fn(&[u8])) {
    let all = files(kind, target);
    let failed: Vec<String> = all
        .iter()
        .filter(|path| {
            let bytes = std::fs::read(path).expect("readable corpus file");
            panic::catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {kind}/{target} inputs failed: {failed:#?}",
        failed.len(),
        all.len()
    );
}

/// The seed corpora: inputs that must always pass (a crashing one would also stop every
/// `cargo fuzz run` at start-up).
fn corpus(target: &str, check: fn(&[u8])) {
    assert!(
        !files("corpus", target).is_empty(),
        "fuzz/corpus/{target}/ is missing or empty"
    );
    replay("corpus", target, check);
}

#[test]
fn request_corpus() {
    corpus("request", checks::request);
}

#[test]
fn config_corpus() {
    corpus("config", checks::config);
}

#[test]
fn normalize_corpus() {
    corpus("normalize", checks::normalize);
}

#[test]
fn mis_h1_corpus() {
    corpus("mis_h1", checks::mis_h1);
}

// Crashes the fuzzers found, minimized: one file per bug, failing until the bug is fixed.

#[test]
fn request_regressions() {
    replay("regressions", "request", checks::request);
}

#[test]
fn config_regressions() {
    replay("regressions", "config", checks::config);
}

#[test]
fn normalize_regressions() {
    replay("regressions", "normalize", checks::normalize);
}

#[test]
fn mis_h1_regressions() {
    replay("regressions", "mis_h1", checks::mis_h1);
}

/// The echo check itself: it must catch a copied run and accept the fixed vocabulary.
#[test]
fn echo_check_catches_copies_only() {
    let input = br#"{"direction":{"lpuToGuid":"xxCANARYyy"}}"#;
    checks::assert_no_echo(input, "direction.lpuToGuid", "path");
    checks::assert_no_echo(input, "must be a GUID", "reason");
    checks::assert_no_echo(b"no marker", "CANARY in a fixed text", "text");
    for copied in ["xxCANARYyy", "a CANARY"] {
        let caught = panic::catch_unwind(|| checks::assert_no_echo(input, copied, "text"));
        assert!(caught.is_err(), "{copied:?} was not caught");
    }
}
