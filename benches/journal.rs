//! The journal's writer, alone: what one commit of N booking records costs the writer thread,
//! per record, with `synchronous = "full"` (an fsync per commit) and `"normal"`. The gateway's
//! group commit puts every record that arrived during the previous commit into the next one, so
//! N is what the load makes it. Run: `cargo bench --bench journal`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mis_gateway::journal::{self, Entry, KeyRef, Kind};
use uuid::Uuid;

fn booked(i: u64) -> Entry {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let slot = [i as u8; 32];
    let request_id = Uuid::now_v7();
    Entry {
        request_id,
        time_us: now.as_micros() as i64,
        integrator: "portal".into(),
        lpu: Some(Uuid::new_v4()),
        backend: Some("mis-a".into()),
        slot: Some(Uuid::new_v4()),
        direction: Some(Uuid::new_v4()),
        key: Some(KeyRef::new(b"bench-fingerprint-key", &slot, &request_id)),
        outcome: Kind::Booked,
        appointment: Some((Uuid::new_v4(), "01".into())),
        status: 200,
        message_code: None,
        mis_status: Some(200),
        total_us: 900,
        mis_us: Some(400),
        trace_id: Some(*b"4bf92f3577b34da6a3ce929d0e0e4736"),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("journal_commit");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for (sync, fsync) in [("full", true), ("normal", false)] {
        let mut sink = journal::sqlite_sink(dir.path().join(format!("{sync}.db")), fsync);
        for n in [1usize, 16, 128] {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(format!("{sync}_{n}_records"), |b| {
                b.iter_custom(|iters| {
                    let mut took = Duration::ZERO;
                    for k in 0..iters {
                        let batch: Vec<Entry> = (0..n as u64).map(|i| booked(k + i)).collect();
                        let refs: Vec<&Entry> = batch.iter().collect();
                        let t = Instant::now();
                        sink.write(&refs).unwrap();
                        took += t.elapsed();
                    }
                    took
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
