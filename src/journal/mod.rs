//! The booking journal: one record per authenticated booking request (no patient data), written
//! by one thread in group commits to SQLite or PostgreSQL, queried and resolved by operators.
//! A journal that cannot be written never changes an answer: records wait and are retried.

pub mod admin;
pub mod cli;
pub mod postgres;
pub(crate) mod record;
pub(crate) mod sqlite;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TrySendError};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use uuid::Uuid;

use crate::config::{JournalSettings, JournalStore};
use crate::policy::idempotency::{Outcome, Store};
pub use record::{Entry, Filter, KeyRef, Kind, Resolution, Row};

/// Records between the gateway and the writer thread; past it a record is dropped and counted.
const CHANNEL: usize = 8192;
/// Records kept for a retry while the database cannot be written.
const MAX_PENDING: usize = 100_000;
/// Records per transaction at most.
const MAX_BATCH: usize = 1024;
/// The longest a booked or unknown answer waits for its record to be durable: past it the
/// answer goes out (a stuck disk must not hold bookings) and the record is still written.
const DURABLE_WAIT: Duration = Duration::from_secs(2);
/// How often the unresolved-`unknown` gauges are read from the database.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Unresolved `unknown` records of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub backend: String,
    pub unresolved: u64,
    pub oldest_us: i64,
}

/// The writer thread's database.
pub trait Sink: Send {
    fn write(&mut self, batch: &[&Entry]) -> Result<(), String>;
}

enum Msg {
    Record(Box<Entry>, Option<tokio::sync::oneshot::Sender<bool>>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where reads and resolutions go.
enum Db {
    Sqlite(PathBuf),
    Postgres {
        config: Box<tokio_postgres::Config>,
        client: Mutex<Option<Arc<tokio_postgres::Client>>>,
    },
}

pub struct Journal {
    tx: crossbeam_channel::Sender<Msg>,
    db: Db,
    /// The gateway's fingerprint key: it seals and hashes idempotency keys.
    secret: Vec<u8>,
    store: Arc<dyn Store>,
    retention: Duration,
}

/// A booked or unknown record on its way to disk.
pub struct Durable(tokio::sync::oneshot::Receiver<bool>);

impl Durable {
    /// Waits until the record is committed, its write failed (it is kept for a retry) or
    /// `DURABLE_WAIT` passed.
    pub async fn wait(self) {
        match tokio::time::timeout(DURABLE_WAIT, self.0).await {
            Ok(Ok(true)) => {}
            _ => journal_metrics().late.add(1, &[]),
        }
    }
}

/// Why a resolution was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    NotFound,
    /// Not `unknown`, or already resolved.
    Conflict(&'static str),
    /// The idempotency store or the journal could not be written; nothing was changed in the
    /// journal, the resolution may be sent again.
    Unavailable(String),
}

impl Journal {
    /// Starts the writer thread; the database is opened (and migrated) by its first write and
    /// reopened after failures, so a journal that is down at start only delays its records.
    pub fn open(
        settings: &JournalSettings,
        secret: Vec<u8>,
        store: Arc<dyn Store>,
    ) -> std::io::Result<Arc<Journal>> {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL);
        let (db, sink): (Db, Box<dyn Sink>) = match &settings.store {
            JournalStore::Sqlite(path) => (
                Db::Sqlite(path.clone()),
                Box::new(sqlite::SqliteSink::new(path.clone(), settings.fsync)),
            ),
            JournalStore::Postgres(config) => (
                Db::Postgres {
                    config: config.clone(),
                    client: Mutex::new(None),
                },
                Box::new(postgres::PgSink::new((**config).clone())?),
            ),
        };
        tracing::info!(store = ?settings.store, retention_days = settings.retention.as_secs() / 86_400, "booking journal on");
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || write_loop(rx, sink))?;
        Ok(Arc::new(Journal {
            tx,
            db,
            secret,
            store,
            retention: settings.retention,
        }))
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Hands `entry` to the writer (one channel send). Booked and unknown records come back
    /// with a [`Durable`] to await before answering.
    pub fn submit(&self, entry: Entry) -> Option<Durable> {
        let (done, durable) = if entry.outcome.must_be_durable() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(Durable(rx)))
        } else {
            (None, None)
        };
        match self.tx.try_send(Msg::Record(Box::new(entry), done)) {
            Ok(()) => durable,
            Err(TrySendError::Full(_)) => {
                journal_metrics().dropped.add(1, &[]);
                warn_throttled(&LAST_DROP_WARN, "journal queue full: a record was dropped");
                None
            }
            Err(TrySendError::Disconnected(_)) => {
                // The writer thread is gone (it panicked): every later record is lost too.
                journal_metrics().dropped.add(1, &[]);
                warn_throttled(
                    &LAST_DROP_WARN,
                    "journal writer stopped: a record was dropped",
                );
                None
            }
        }
    }

    /// Waits until every record submitted before is written or kept for a retry.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
    }

    pub async fn list(&self, filter: &Filter) -> Result<Vec<Row>, String> {
        match &self.db {
            Db::Sqlite(path) => {
                let (path, f) = (path.clone(), filter.clone());
                blocking(move || sqlite::list(&path, &f)).await
            }
            Db::Postgres { .. } => {
                let c = self.pg().await?;
                self.pg_result(postgres::list(&c, filter).await)
            }
        }
    }

    pub async fn get(&self, request_id: &str) -> Result<Option<Row>, String> {
        match &self.db {
            Db::Sqlite(path) => {
                let (path, id) = (path.clone(), request_id.to_owned());
                blocking(move || sqlite::get(&path, &id)).await
            }
            Db::Postgres { .. } => {
                let c = self.pg().await?;
                self.pg_result(postgres::get(&c, request_id).await)
            }
        }
    }

    pub async fn summary(&self) -> Result<Vec<Summary>, String> {
        match &self.db {
            Db::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::summary(&path)).await
            }
            Db::Postgres { .. } => {
                let c = self.pg().await?;
                self.pg_result(postgres::summary(&c).await)
            }
        }
    }

    async fn prune(&self) -> Result<u64, String> {
        let before = record::now_us() - self.retention.as_micros() as i64;
        match &self.db {
            Db::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::prune(&path, before).map(|n| n as u64)).await
            }
            Db::Postgres { .. } => {
                let c = self.pg().await?;
                self.pg_result(postgres::prune(&c, before).await)
            }
        }
    }

    /// Records an operator's answer to an `unknown` record and passes it to the idempotency
    /// store: `booked` (guid, number) makes a same-key retry replay that appointment (created
    /// at the resolution's time in `tz`); `None` releases the key so the retry is sent.
    pub async fn resolve(
        &self,
        request_id: &str,
        booked: Option<(Uuid, String)>,
        note: Option<String>,
        via: &str,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Row, ResolveError> {
        let row = self
            .get(request_id)
            .await
            .map_err(ResolveError::Unavailable)?
            .ok_or(ResolveError::NotFound)?;
        if row.outcome != Kind::Unknown.as_str() {
            return Err(ResolveError::Conflict(
                "the record's outcome is not unknown",
            ));
        }
        if row.resolution.is_some() {
            return Err(ResolveError::Conflict("the record is already resolved"));
        }
        let now = jiff::Timestamp::now();
        let sealed = row.key_seal.as_deref().and_then(crate::wire::hex::unhex32);
        let id = Uuid::try_parse(&row.request_id).ok();
        if let (Some(seal), Some(id), Some(slot)) = (sealed, id, row.slot.as_deref()) {
            let key = KeyRef::unseal(&self.secret, &seal, &id);
            let outcome = booked.as_ref().map(|(guid, number)| Outcome::Booked {
                guid: guid.hyphenated().to_string(),
                number: number.clone(),
                slot: slot.to_owned(),
                source: "Internet".into(),
                create_time: now
                    .to_zoned_datetime(tz.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
            });
            self.store
                .resolve(key, outcome)
                .await
                .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
        }
        let resolution = Resolution {
            time_us: now.as_microsecond(),
            booked: booked.is_some(),
            guid: booked.as_ref().map(|b| b.0),
            number: booked.map(|b| b.1),
            note,
            via: via.to_owned(),
        };
        let done = match &self.db {
            Db::Sqlite(path) => {
                let (path, id, r) = (path.clone(), request_id.to_owned(), resolution.clone());
                blocking(move || sqlite::resolve(&path, &id, &r)).await
            }
            Db::Postgres { .. } => {
                let c = self.pg().await.map_err(ResolveError::Unavailable)?;
                self.pg_result(postgres::resolve(&c, request_id, &resolution).await)
            }
        }
        .map_err(ResolveError::Unavailable)?;
        if !done {
            return Err(ResolveError::Conflict("the record is already resolved"));
        }
        self.refresh_gauges().await;
        self.get(request_id)
            .await
            .map_err(ResolveError::Unavailable)?
            .ok_or(ResolveError::NotFound)
    }

    async fn refresh_gauges(&self) {
        match self.summary().await {
            Ok(s) => *UNRESOLVED.lock().unwrap_or_else(|e| e.into_inner()) = s,
            Err(e) => tracing::warn!(error = %e, "journal: cannot read unresolved records"),
        }
    }

    /// Background work while the gateway runs: the unresolved-`unknown` gauges, and pruning
    /// past `retention_days` (`unknown` records nobody resolved are kept).
    pub async fn maintain(self: Arc<Self>) {
        let mut last_prune: Option<Instant> = None;
        loop {
            self.refresh_gauges().await;
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                match self.prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(records = n, "journal: pruned past retention"),
                    Err(e) => tracing::warn!(error = %e, "journal: pruning failed"),
                }
                last_prune = Some(Instant::now());
            }
            tokio::time::sleep(SUMMARY_EVERY).await;
        }
    }

    async fn pg(&self) -> Result<Arc<tokio_postgres::Client>, String> {
        let Db::Postgres { config, client } = &self.db else {
            return Err("not a PostgreSQL journal".into());
        };
        if let Some(c) = client.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let c = Arc::new(postgres::open(config).await?);
        *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn pg_result<T>(&self, r: Result<T, tokio_postgres::Error>) -> Result<T, String> {
        r.map_err(|e| {
            if let Db::Postgres { client, .. } = &self.db {
                *client.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            postgres::describe(&e)
        })
    }
}

/// The SQLite writer the journal's thread drives, for benchmarks that drive it alone
/// (`benches/journal.rs`).
pub fn sqlite_sink(path: PathBuf, fsync: bool) -> Box<dyn Sink> {
    Box::new(sqlite::SqliteSink::new(path, fsync))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| sqlite::describe(&e)),
        Err(_) => Err("the journal query did not finish".into()),
    }
}

/// The writer thread: takes whatever records are waiting (up to [`MAX_BATCH`]) and commits
/// them in one transaction, so concurrent bookings share one fsync; after a failure it keeps
/// them (up to [`MAX_PENDING`]) and retries with a growing pause, answering waiters at once.
fn write_loop(rx: crossbeam_channel::Receiver<Msg>, mut sink: Box<dyn Sink>) {
    let mut pending: VecDeque<(Box<Entry>, Option<tokio::sync::oneshot::Sender<bool>>)> =
        VecDeque::new();
    let mut flushes = Vec::new();
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let mut failing_since: Option<Instant> = None;
    let mut closed = false;
    let take = |m: Msg, pending: &mut VecDeque<_>, flushes: &mut Vec<_>| match m {
        Msg::Record(e, w) => pending.push_back((e, w)),
        Msg::Flush(f) => flushes.push(f),
    };
    while !closed || !pending.is_empty() {
        let first = match (retry_at, pending.is_empty()) {
            _ if closed => None,
            (None, true) => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => {
                    closed = true;
                    None
                }
            },
            (None, false) => rx.try_recv().ok(),
            (Some(t), _) => match rx.recv_deadline(t) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    None
                }
            },
        };
        if let Some(m) = first {
            take(m, &mut pending, &mut flushes);
            while pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => take(m, &mut pending, &mut flushes),
                    Err(_) => break,
                }
            }
        }
        let waiting = retry_at.is_some_and(|t| Instant::now() < t) && !closed;
        if waiting || pending.is_empty() {
            // Failing: the answers go out now, the records wait for the next attempt.
            for (_, w) in pending.iter_mut() {
                if let Some(w) = w.take() {
                    let _ = w.send(false);
                }
            }
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            PENDING.store(pending.len() as u64, Ordering::Relaxed);
            continue;
        }
        let n = pending.len().min(MAX_BATCH);
        let batch: Vec<&Entry> = pending.iter().take(n).map(|(e, _)| &**e).collect();
        match sink.write(&batch) {
            Ok(()) => {
                for (_, w) in pending.drain(..n) {
                    if let Some(w) = w {
                        let _ = w.send(true);
                    }
                }
                if let Some(since) = failing_since.take() {
                    tracing::warn!(
                        failed_for_s = since.elapsed().as_secs(),
                        "journal: writes succeed again; waiting records written"
                    );
                }
                retry_at = None;
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                journal_metrics().write_errors.add(1, &[]);
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::error!(error = %e, pending = pending.len(), "journal: write failed; records kept and retried, answers unaffected");
                } else {
                    warn_throttled(&LAST_WRITE_WARN, "journal: still failing; records kept");
                }
                for (_, w) in pending.iter_mut() {
                    if let Some(w) = w.take() {
                        let _ = w.send(false);
                    }
                }
                while pending.len() > MAX_PENDING {
                    pending.pop_front();
                    journal_metrics().dropped.add(1, &[]);
                }
                if closed {
                    tracing::error!(
                        records = pending.len(),
                        "journal: shutting down with records that could not be written"
                    );
                    break;
                }
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        PENDING.store(pending.len() as u64, Ordering::Relaxed);
        if pending.is_empty() || retry_at.is_some() {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
        }
    }
    PENDING.store(0, Ordering::Relaxed);
    for f in flushes {
        let _ = f.send(());
    }
}

static LAST_DROP_WARN: Mutex<Option<Instant>> = Mutex::new(None);
static LAST_WRITE_WARN: Mutex<Option<Instant>> = Mutex::new(None);

/// A warning at most every 10 s: a failing journal must not flood the log.
fn warn_throttled(last: &Mutex<Option<Instant>>, msg: &'static str) {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        *last = Some(Instant::now());
        tracing::warn!("{msg}");
    }
}

/// The latest unresolved-`unknown` summary (for the gauges).
static UNRESOLVED: Mutex<Vec<Summary>> = Mutex::new(Vec::new());
/// Records waiting for a retry.
static PENDING: AtomicU64 = AtomicU64::new(0);

/// The journal's instruments (created with the process's other metrics).
pub struct JournalMetrics {
    pub write_errors: Counter<u64>,
    pub dropped: Counter<u64>,
    pub late: Counter<u64>,
}

fn journal_metrics() -> &'static JournalMetrics {
    &crate::telemetry::metrics::get().journal
}

impl JournalMetrics {
    pub fn register(meter: &Meter) -> JournalMetrics {
        meter
            .u64_observable_gauge("mis_gateway.journal.unknown_unresolved")
            .with_description("Journal records with outcome unknown that nobody resolved yet")
            .with_callback(|obs| {
                for s in UNRESOLVED.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    obs.observe(s.unresolved, &[KeyValue::new("backend", s.backend.clone())]);
                }
            })
            .build();
        meter
            .f64_observable_gauge("mis_gateway.journal.unknown_oldest_age")
            .with_unit("s")
            .with_description("Age of the oldest unresolved unknown journal record")
            .with_callback(|obs| {
                let now = record::now_us();
                for s in UNRESOLVED.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    obs.observe(
                        (now - s.oldest_us).max(0) as f64 / 1e6,
                        &[KeyValue::new("backend", s.backend.clone())],
                    );
                }
            })
            .build();
        meter
            .u64_observable_gauge("mis_gateway.journal.pending")
            .with_description("Journal records waiting for a retry after failed writes")
            .with_callback(|obs| obs.observe(PENDING.load(Ordering::Relaxed), &[]))
            .build();
        JournalMetrics {
            write_errors: meter
                .u64_counter("mis_gateway.journal.write_errors")
                .with_description("Failed journal transactions (records kept and retried)")
                .build(),
            dropped: meter
                .u64_counter("mis_gateway.journal.dropped")
                .with_description(
                    "Journal records dropped: queue full or retry queue over its bound",
                )
                .build(),
            late: meter
                .u64_counter("mis_gateway.journal.not_durable")
                .with_description("Booked or unknown answers sent before their record was durable")
                .build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    fn entry(outcome: Kind) -> Entry {
        Entry {
            request_id: Uuid::now_v7(),
            time_us: record::now_us(),
            integrator: "portal".into(),
            lpu: None,
            backend: Some("mis-a".into()),
            slot: None,
            direction: None,
            key: None,
            outcome,
            appointment: None,
            status: 200,
            message_code: None,
            mis_status: None,
            total_us: 1,
            mis_us: None,
            trace_id: None,
        }
    }

    /// A database that says when a write starts, may hold it until released, fails the
    /// first `fail` writes, and records the size of every batch it committed.
    struct FakeDb {
        entered: mpsc::Sender<()>,
        hold: Option<mpsc::Receiver<()>>,
        fail: Arc<AtomicUsize>,
        committed: Arc<Mutex<Vec<usize>>>,
    }

    impl Sink for FakeDb {
        fn write(&mut self, batch: &[&Entry]) -> Result<(), String> {
            let _ = self.entered.send(());
            if let Some(h) = self.hold.take() {
                let _ = h.recv();
            }
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("disk full".into());
            }
            self.committed.lock().unwrap().push(batch.len());
            Ok(())
        }
    }

    fn start(
        hold: Option<mpsc::Receiver<()>>,
        fail: usize,
    ) -> (
        crossbeam_channel::Sender<Msg>,
        mpsc::Receiver<()>,
        Arc<Mutex<Vec<usize>>>,
    ) {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL);
        let (entered, entered_rx) = mpsc::channel();
        let committed = Arc::new(Mutex::new(Vec::new()));
        let db = FakeDb {
            entered,
            hold,
            fail: Arc::new(AtomicUsize::new(fail)),
            committed: committed.clone(),
        };
        std::thread::spawn(move || write_loop(rx, Box::new(db)));
        (tx, entered_rx, committed)
    }

    fn send(tx: &crossbeam_channel::Sender<Msg>) -> tokio::sync::oneshot::Receiver<bool> {
        let (done, rx) = tokio::sync::oneshot::channel();
        tx.send(Msg::Record(Box::new(entry(Kind::Booked)), Some(done)))
            .unwrap();
        rx
    }

    #[test]
    fn records_that_arrive_during_a_commit_share_the_next_one() {
        let (release, hold) = mpsc::channel();
        let (tx, entered, committed) = start(Some(hold), 0);
        let first = send(&tx);
        entered.recv().unwrap();
        // The first commit is in progress; these wait and then go in one transaction.
        let rest: Vec<_> = (0..50).map(|_| send(&tx)).collect();
        release.send(()).unwrap();
        assert_eq!(first.blocking_recv(), Ok(true));
        for r in rest {
            assert_eq!(r.blocking_recv(), Ok(true));
        }
        assert_eq!(*committed.lock().unwrap(), vec![1, 50]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_waits_for_a_stuck_disk_only_so_long() {
        // The first commit never returns (a hung fsync): the booked answer still goes out.
        let (_release, hold) = mpsc::channel();
        let (tx, _entered, committed) = start(Some(hold), 0);
        let durable = Durable(send(&tx));
        tokio::time::timeout(DURABLE_WAIT * 2, durable.wait())
            .await
            .expect("the wait is bounded");
        assert!(committed.lock().unwrap().is_empty());
    }

    #[test]
    fn a_failing_database_answers_waiters_at_once_and_writes_the_records_later() {
        let (tx, _entered, committed) = start(None, 3);
        let waiters: Vec<_> = (0..3).map(|_| send(&tx)).collect();
        // Not durable: the answer goes out, the record stays queued.
        for w in waiters {
            assert_eq!(w.blocking_recv(), Ok(false));
        }
        assert!(committed.lock().unwrap().is_empty());
        let late = send(&tx);
        assert!(late.blocking_recv().is_ok());
        let deadline = Instant::now() + Duration::from_secs(10);
        while committed.lock().unwrap().iter().sum::<usize>() < 4 {
            assert!(
                Instant::now() < deadline,
                "the kept records were never written"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            committed.lock().unwrap().iter().sum::<usize>(),
            4,
            "each once"
        );
    }
}
