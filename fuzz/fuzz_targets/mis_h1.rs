#![no_main]
//! `mis_h1`: see `fuzz/checks.rs` (shared with `tests/fuzz_corpus.rs`).

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::mis_h1(data));
