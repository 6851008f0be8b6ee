//! Scale of the routing table: a routes.toml with 100,000 LPUs over 500 backends must load and
//! validate well under a second, and lookups must not depend on the table's size.
//!
//! Run: `cargo bench --bench config_scale`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use mis_gateway::config::{Config, Secrets};
use mis_gateway::live::Generation;
use uuid::Uuid;

struct BenchSecrets;
impl Secrets for BenchSecrets {
    fn env(&self, name: &str) -> Option<String> {
        Some(format!("pw-{name}"))
    }
    fn file(&self, _: &Path) -> std::io::Result<String> {
        Ok("pw".into())
    }
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$B4KIKqS05OPYgQ3Y/WLCjw$23o8pBpSH3TCCYqVfRkzmvN5y2xi6TMtD7dFDw5W1UI";

/// A deterministic table: `lpus` LPUs spread over `backends` backends.
fn table(lpus: usize, backends: usize) -> (String, Vec<Uuid>) {
    let mut s = format!(
        "[[integrators]]\nlogin = \"portal\"\npassword_hash = \"{HASH}\"\nlpus = [\"*\"]\n"
    );
    for b in 0..backends {
        s.push_str(&format!(
            "\n[[backends]]\nname = \"mis-{b}\"\nurl = \"http://10.0.{}.{}:8080\"\nlogin = \"gateway\"\npassword_env = \"MIS_{b}_PASSWORD\"\ntimezone = \"Europe/Moscow\"\n",
            b / 250,
            b % 250 + 1
        ));
    }
    s.push_str("\n[routes]\n");
    let ids: Vec<Uuid> = (0..lpus as u128)
        .map(|i| Uuid::from_u128(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        s.push_str(&format!("\"{id}\" = \"mis-{}\"\n", i % backends));
    }
    (s, ids)
}

fn bench(c: &mut Criterion) {
    let (text, ids) = table(100_000, 500);
    let mut g = c.benchmark_group("config_scale");
    g.sample_size(10);
    g.bench_function("load_validate_100k_lpus_500_backends", |b| {
        b.iter(|| {
            Config::from_bytes(black_box(text.as_bytes()), Path::new("."), &BenchSecrets).unwrap()
        })
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    g.bench_function("build_generation_500_backends", |b| {
        b.iter_batched(
            || Config::from_bytes(text.as_bytes(), Path::new("."), &BenchSecrets).unwrap(),
            |config| Generation::build(2, config, None),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("route_lookup");
    for (lpus, backends) in [(100, 5), (100_000, 500)] {
        let (text, ids) = if lpus == 100_000 {
            (text.clone(), ids.clone())
        } else {
            table(lpus, backends)
        };
        let config = Config::from_bytes(text.as_bytes(), Path::new("."), &BenchSecrets).unwrap();
        let mut i = 0usize;
        g.bench_function(format!("{lpus}_lpus"), |b| {
            b.iter(|| {
                i = (i + 7919) % ids.len();
                black_box(config.route(black_box(&ids[i])))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
