//! The journal's writer, alone: what one commit of N bookings costs the writer thread, per
//! booking, with `synchronous = "full"` (an fsync per commit) and `"normal"`. A booking is two
//! rows: its write-ahead attempt and its outcome (here in one commit; under load an attempt and
//! its outcome usually fall in different commits, which costs the same rows). The gateway's
//! group commit puts every record that arrived during the previous commit into the next one, so
//! N is what the load makes it. Run: `cargo bench --bench journal`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mis_gateway::journal::{self, Attempt, Entry, Item, KeyRef, Kind, Operation};
use mis_gateway::policy::idempotency::Outcome;
use uuid::Uuid;

/// A keyed booking's two rows: its attempt and its outcome.
fn booked(i: u64) -> [Item; 2] {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let slot = [i as u8; 32];
    let request_id = Uuid::now_v7();
    let key = KeyRef::new(b"bench-fingerprint-key", &slot, &request_id);
    let (lpu, mis_slot, direction) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let appointment = Uuid::new_v4();
    let attempt = Attempt {
        request_id,
        time_us: now.as_micros() as i64,
        integrator: "portal".into(),
        lpu,
        backend: "mis-a".into(),
        slot: mis_slot,
        direction,
        key: Some(key),
        fingerprint: Some([7; 32]),
        cancel: None,
    };
    let outcome = Entry {
        request_id,
        time_us: now.as_micros() as i64,
        integrator: "portal".into(),
        lpu: Some(lpu),
        backend: Some("mis-a".into()),
        slot: Some(mis_slot),
        direction: Some(direction),
        key: Some(key),
        outcome: Kind::Booked,
        appointment: Some((Uuid::new_v4(), "01".into())),
        status: 200,
        message_code: None,
        mis_status: Some(200),
        total_us: 900,
        mis_us: Some(400),
        trace_id: Some(*b"4bf92f3577b34da6a3ce929d0e0e4736"),
        key_outcome: Some(Outcome::Booked {
            guid: appointment.hyphenated().to_string(),
            number: "01".into(),
            slot: mis_slot.hyphenated().to_string(),
            source: "Internet".into(),
            create_time: "2026-12-07T10:00:00+03:00".into(),
        }),
        made: Some(("Internet".into(), "2026-12-07T10:00:00+03:00".into())),
        operation: Operation::Book,
        cancel: None,
    };
    [Item::Attempt(attempt), Item::Outcome(outcome)]
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("journal_commit");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for (sync, fsync) in [("full", true), ("normal", false)] {
        let mut sink = journal::sqlite_sink(dir.path().join(format!("{sync}.db")), fsync);
        for n in [1usize, 16, 128] {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(format!("{sync}_{n}_bookings"), |b| {
                b.iter_custom(|iters| {
                    let mut took = Duration::ZERO;
                    for k in 0..iters {
                        let batch: Vec<Item> = (0..n as u64).flat_map(|i| booked(k + i)).collect();
                        let refs: Vec<&Item> = batch.iter().collect();
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
