//! The booking journal: the gateway's durable memory of every authenticated booking request
//! (no patient data), written by one thread in group commits to SQLite or PostgreSQL, queried and
//! resolved by operators.
//!
//! Write-ahead: a booking's *attempt* is committed before the booking is sent to its MIS, its
//! outcome after. An attempt found without an outcome (the gateway died while the booking was at
//! the MIS) becomes an `unknown` record at the next start. With the journal on, idempotency keys
//! outlive the process: the key store is rebuilt from the journal when the gateway starts.
//! Nothing is dropped: records wait in memory (bounded by refusing new attempts) until written.

pub mod admin;
pub mod cli;
pub mod postgres;
pub(crate) mod record;
pub(crate) mod sqlite;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::config::{JournalSettings, JournalStore, OnJournalError};
use crate::policy::idempotency::{Outcome, Store};
pub use record::{
    Attempt, AuditEntry, CancelOf, Entry, Filter, Item, KeyRef, Kind, KnownKey, Operation,
    Resolution, Row,
};

/// Records in memory (queued or waiting for a retry) at most: past it new attempts wait, then
/// are refused (`on_error = "refuse"`); an outcome always has its place, reserved by its attempt.
const ROOM: usize = 100_000;
/// Records per transaction at most.
const MAX_BATCH: usize = 1024;
/// The longest a booking waits for its attempt to be durable before it is refused (or, with
/// `on_error = "book"`, sent anyway).
const ATTEMPT_WAIT: Duration = Duration::from_secs(1);
/// The longest a booked or unknown answer waits for its outcome to be durable: its attempt is
/// durable already, so past it the answer goes out and the record follows.
const DURABLE_WAIT: Duration = Duration::from_secs(2);
/// The longest a record of a request that was never sent waits for room.
const RECORD_WAIT: Duration = Duration::from_secs(1);
/// Reads and resolutions answer within this, or say the database is unavailable.
const QUERY_WAIT: Duration = Duration::from_secs(1);
/// How often the unresolved-`unknown` gauges are read from the database.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often the writer brings the search keys up to date (see [`Sink::index`]).
const INDEX_EVERY: Duration = Duration::from_secs(1);
/// How often an idle writer looks at its file.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A shared (PostgreSQL) journal's attempt older than this with no outcome is an orphan: no
/// booking stays at its MIS so long (timeouts and drains are shorter).
const STALE: Duration = Duration::from_secs(300);

/// Unresolved `unknown` records of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub backend: String,
    pub unresolved: u64,
    pub oldest_us: i64,
}

/// Why a batch was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The database refused or could not be reached; the records are kept and retried.
    Failed(String),
    /// The file at the journal's path is not the one that was open (deleted, replaced): the
    /// batch is written again to the file now at the path.
    Replaced,
}

/// The writer thread's database.
pub trait Sink: Send {
    fn write(&mut self, batch: &[&Item]) -> Result<(), WriteError>;
    /// Called between batches and at least every second when the writer is idle.
    fn check(&mut self) -> Result<(), WriteError> {
        Ok(())
    }
    /// Brings the search keys of records written since the last call up to date, a bounded
    /// chunk at a time (called about once a second, between batches): kept off the records'
    /// own commit, whose fsync every booking waits for.
    fn index(&mut self) -> Result<(), WriteError> {
        Ok(())
    }
}

/// A resolution that says the clinic cancelled: the booking it marks cancelled.
#[derive(Debug, Clone)]
pub struct Cancels {
    /// The booking's record (its request id).
    pub booking: String,
    pub reason: String,
    /// The integrator that asked for the cancellation.
    pub by: String,
}

/// A keyed booking's row as the key store is rebuilt from it.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub request_id: String,
    pub key_seal: String,
    pub fingerprint: String,
    pub key_outcome: Option<String>,
    pub resolved_us: Option<i64>,
    pub resolved_booked: bool,
    pub resolved_guid: Option<String>,
    pub resolved_number: Option<String>,
    pub slot: Option<String>,
    pub backend: Option<String>,
}

struct Job {
    item: Item,
    /// Its place among the records in memory; freed once written.
    _room: Option<OwnedSemaphorePermit>,
    done: Option<tokio::sync::oneshot::Sender<bool>>,
}

enum Msg {
    Job(Box<Job>),
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

/// What the writer and the start found about the journal's health (readiness).
#[derive(Default)]
struct Health {
    /// Writes fail (records wait), or the file was replaced and nothing is written since.
    failing: AtomicBool,
    /// The start's work (orphans, keys) is done: until then keyed bookings could be resent.
    started: AtomicBool,
    /// When the commit in progress began (ms since the epoch; 0: none): one that outlasts the
    /// attempt's bound means the database hangs.
    commit_since_ms: AtomicU64,
}

pub struct Journal {
    tx: crossbeam_channel::Sender<Msg>,
    room: Arc<Semaphore>,
    db: Db,
    /// The gateway's fingerprint key: it seals and hashes idempotency keys.
    secret: Vec<u8>,
    store: Arc<dyn Store>,
    retention: Duration,
    ttl: Duration,
    on_error: OnJournalError,
    health: Arc<Health>,
    /// Backend name → time zone, for the creation time of a resolved booking's replay.
    timezones: HashMap<String, jiff::tz::TimeZone>,
    /// A shared journal's orphan sweep: attempts below this request id were looked at.
    swept: Mutex<String>,
    /// A shared key store came back empty and has not been refilled yet.
    refill: AtomicBool,
    /// When this process opened the journal: a SQLite journal's attempts from before it are
    /// a previous process's orphans (its own, however late the start's work runs, are not).
    opened_us: i64,
}

/// A booking's place for its outcome record, reserved with its attempt.
#[derive(Default)]
pub struct Ticket {
    room: Option<OwnedSemaphorePermit>,
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

/// What the clinic said about an `unknown` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The booking exists: its appointment's guid and number.
    Booked(Uuid, String),
    NotBooked,
    /// The cancellation was made.
    Cancelled,
    NotCancelled,
}

/// Why a resolution was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    NotFound,
    /// Not `unknown`, already resolved, or its key holds a final outcome.
    Conflict(&'static str),
    /// The journal database could not be read or written; nothing was changed.
    Unavailable(String),
    /// The idempotency store could not be written; the journal's resolution was taken back.
    StoreUnavailable(String),
}

/// What the gateway needs to open its journal.
pub struct Opening<'a> {
    pub settings: &'a JournalSettings,
    /// The configured fingerprint key; none: the journal's own (made once, kept in it).
    pub secret: Option<Vec<u8>>,
    pub store: Arc<dyn Store>,
    /// How long idempotency keys live: the keys rebuilt at start go back so far.
    pub ttl: Duration,
    pub timezones: HashMap<String, jiff::tz::TimeZone>,
}

/// The smallest hyphenated UUIDv7 of a time: request ids below it are older.
fn id_at(time_us: i64) -> String {
    let ms = (time_us.max(0) / 1000) as u64 & 0xffff_ffff_ffff;
    let h = format!("{ms:012x}");
    format!("{}-{}-0000-0000-000000000000", &h[..8], &h[8..])
}

impl Journal {
    /// Opens the database (creating and migrating it), turns the attempts a previous process
    /// left without an outcome into `unknown` records, rebuilds the key store from the journal,
    /// and starts the writer thread. A database that is down at start is retried by
    /// [`Journal::maintain`]; until that work is done keyed bookings are refused.
    pub fn open(o: Opening<'_>) -> std::io::Result<Arc<Journal>> {
        let settings = o.settings;
        let (tx, rx) = crossbeam_channel::unbounded();
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
        let health = Arc::new(Health::default());
        let mut journal = Journal {
            tx,
            room: Arc::new(Semaphore::new(ROOM)),
            db,
            secret: o.secret.clone().unwrap_or_default(),
            store: o.store,
            retention: settings.retention,
            ttl: o.ttl,
            on_error: settings.on_error,
            health: health.clone(),
            timezones: o.timezones,
            swept: Mutex::new(id_at(
                record::now_us() - settings.retention.as_micros() as i64,
            )),
            refill: AtomicBool::new(false),
            opened_us: record::now_us(),
        };
        match journal.start_blocking() {
            Ok((own_secret, orphans, keys)) => {
                if o.secret.is_none() {
                    journal.secret = own_secret;
                }
                journal.finish_start(orphans, keys);
            }
            Err(e) => {
                tracing::error!(error = %e, "journal: cannot open the database at start; keyed bookings are refused until it opens");
                if journal.secret.is_empty() {
                    // Keys written meanwhile cannot be matched after a restart; never resent.
                    let mut k = vec![0u8; 32];
                    getrandom::fill(&mut k).expect("the OS random source is available");
                    journal.secret = k;
                }
            }
        }
        tracing::info!(store = ?settings.store, retention_days = settings.retention.as_secs() / 86_400, on_error = ?settings.on_error, "booking journal on");
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || write_loop(rx, sink, health))?;
        Ok(Arc::new(journal))
    }

    /// The start's database work: the journal's own key, orphans made `unknown`, keyed rows.
    fn start_blocking(&self) -> Result<(Vec<u8>, u64, Vec<KeyRow>), String> {
        let now = record::now_us();
        let since = now - self.ttl.as_micros() as i64;
        match &self.db {
            // One process owns a SQLite journal: every attempt before it opened is an orphan.
            Db::Sqlite(path) => sqlite::start(path, &id_at(self.opened_us), since)
                .map_err(|e| sqlite::describe(&e))
                .and_then(|(secret, n, keys)| Ok((unhex_secret(&secret)?, n, keys))),
            Db::Postgres { config, .. } => {
                let config = (**config).clone();
                let before = id_at(now - STALE.as_micros() as i64);
                let floor = self.swept.lock().unwrap_or_else(|e| e.into_inner()).clone();
                // A runtime of its own on a thread of its own: `open` may run inside one.
                let (secret, n, keys) = std::thread::scope(|s| {
                    s.spawn(|| {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| e.to_string())?;
                        rt.block_on(async {
                            tokio::time::timeout(
                                Duration::from_secs(10),
                                postgres::start(&config, &before, &floor, since),
                            )
                            .await
                        })
                        .map_err(|_| "postgres: the start's queries timed out".to_owned())?
                    })
                    .join()
                    .unwrap_or_else(|_| Err("the journal's start panicked".into()))
                })?;
                *self.swept.lock().unwrap_or_else(|e| e.into_inner()) = before;
                Ok((unhex_secret(&secret)?, n, keys))
            }
        }
    }

    fn finish_start(&self, orphans: u64, keys: Vec<KeyRow>) {
        if orphans > 0 {
            tracing::error!(
                records = orphans,
                "journal: bookings were at their MIS when the gateway stopped; recorded as unknown for an operator to resolve"
            );
        }
        let known: Vec<KnownKey> = keys.iter().filter_map(|k| self.known(k)).collect();
        let n = known.len();
        let store = self.store.clone();
        let health = self.health.clone();
        let restore = async move {
            for k in known {
                if let Some(outcome) = k.outcome
                    && let Err(e) = store.restore(k.slot, k.fingerprint, outcome).await
                {
                    return Err(e);
                }
            }
            health.started.store(true, Ordering::SeqCst);
            Ok(())
        };
        if self.store.in_process() {
            // Never fails and never waits: done here, before the first booking.
            let _ = futures_util::FutureExt::now_or_never(restore);
            tracing::info!(
                keys = n,
                "journal: idempotency keys rebuilt from the journal"
            );
        } else {
            // A shared store keeps its keys across a gateway's restart; a Redis that came back
            // empty is refilled by `maintain`.
            self.health.started.store(true, Ordering::SeqCst);
        }
    }

    /// The key a journal row stands for, as a same-key retry must now find it.
    fn known(&self, k: &KeyRow) -> Option<KnownKey> {
        let seal = crate::wire::hex::unhex32(&k.key_seal)?;
        let fingerprint = crate::wire::hex::unhex32(&k.fingerprint)?;
        let id = Uuid::try_parse(&k.request_id).ok()?;
        let slot = KeyRef::unseal(&self.secret, &seal, &id);
        let outcome = match k.resolved_us {
            Some(at) if k.resolved_booked => Some(
                self.resolved_booking(
                    k.resolved_guid
                        .as_deref()
                        .and_then(|g| Uuid::try_parse(g).ok())?,
                    k.resolved_number.clone().unwrap_or_default(),
                    k.slot.as_deref()?,
                    k.backend.as_deref(),
                    at,
                ),
            ),
            Some(_) => None,
            None => serde_json::from_str(k.key_outcome.as_deref()?).ok(),
        };
        Some(KnownKey {
            slot,
            fingerprint,
            outcome,
        })
    }

    /// What a same-key retry replays after an operator said the clinic has the booking.
    fn resolved_booking(
        &self,
        guid: Uuid,
        number: String,
        slot: &str,
        backend: Option<&str>,
        at_us: i64,
    ) -> Outcome {
        let tz = backend
            .and_then(|b| self.timezones.get(b).cloned())
            .unwrap_or(jiff::tz::TimeZone::UTC);
        let at =
            jiff::Timestamp::from_microsecond(at_us).unwrap_or_else(|_| jiff::Timestamp::now());
        Outcome::Booked {
            guid: guid.hyphenated().to_string(),
            number,
            slot: slot.to_owned(),
            source: "Internet".into(),
            create_time: at
                .to_zoned_datetime(tz)
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
        }
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Whether bookings can be journaled now; the reason when not (readiness).
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.health.started.load(Ordering::SeqCst) {
            Some("the journal database could not be opened at start")
        } else if self.health.failing.load(Ordering::SeqCst) {
            Some("the journal cannot write")
        } else {
            let since = self.health.commit_since_ms.load(Ordering::SeqCst);
            let now = (record::now_us() / 1000) as u64;
            (since != 0 && now.saturating_sub(since) > ATTEMPT_WAIT.as_millis() as u64)
                .then_some("the journal's database does not answer")
        }
    }

    /// Records a booking's attempt and waits until it is durable: only then may it be sent.
    /// `Err`: it must not be sent (`on_error = "refuse"`); the booking's outcome record still
    /// follows (it was not sent), so the attempt is never left an orphan.
    pub async fn attempt(&self, attempt: Attempt) -> Result<Ticket, ()> {
        let refuse = self.on_error == OnJournalError::Refuse;
        if refuse && attempt.key.is_some() && !self.health.started.load(Ordering::SeqCst) {
            journal_metrics().refused.add(1, &[]);
            return Err(());
        }
        let deadline = tokio::time::Instant::now() + ATTEMPT_WAIT;
        let room = tokio::time::timeout_at(deadline, self.room.clone().acquire_many_owned(2))
            .await
            .ok()
            .and_then(Result::ok);
        let (mine, outcome) = match room {
            Some(mut both) => {
                let outcome = both.split(1);
                (Some(both), outcome)
            }
            None if refuse => {
                journal_metrics().refused.add(1, &[]);
                warn_throttled(
                    &LAST_ROOM_WARN,
                    "journal: too many records wait for the database; bookings are refused",
                );
                return Err(());
            }
            None => (None, None),
        };
        let (done, durable) = tokio::sync::oneshot::channel();
        self.send(Item::Attempt(attempt), mine, Some(done));
        let durable = matches!(
            tokio::time::timeout_at(deadline, durable).await,
            Ok(Ok(true))
        );
        if !durable {
            if refuse {
                journal_metrics().refused.add(1, &[]);
                return Err(());
            }
            journal_metrics().late.add(1, &[]);
        }
        Ok(Ticket { room: outcome })
    }

    fn send(
        &self,
        item: Item,
        room: Option<OwnedSemaphorePermit>,
        done: Option<tokio::sync::oneshot::Sender<bool>>,
    ) {
        let job = Box::new(Job {
            item,
            _room: room,
            done,
        });
        if self.tx.send(Msg::Job(job)).is_err() {
            // Only after the writer thread panicked.
            journal_metrics().write_errors.add(1, &[]);
            warn_throttled(
                &LAST_ROOM_WARN,
                "journal writer stopped: a record was not written",
            );
        }
    }

    /// Hands `entry` to the writer. A booking that made an attempt passes its [`Ticket`]: its
    /// outcome has its place. Other records wait for room, bounded, and are then taken anyway:
    /// none is dropped. Booked and unknown records come back with a [`Durable`] to await.
    pub async fn submit(&self, entry: Entry, ticket: Option<Ticket>) -> Option<Durable> {
        let room = match ticket {
            Some(t) => t.room,
            None => tokio::time::timeout(RECORD_WAIT, self.room.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        let (done, durable) = if entry.outcome.must_be_durable() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(Durable(rx)))
        } else {
            (None, None)
        };
        self.send(Item::Outcome(entry), room, done);
        durable
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
                self.pg_query(|c| async move { postgres::list(&c, filter).await })
                    .await
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
                self.pg_query(|c| async move { postgres::get(&c, request_id).await })
                    .await
            }
        }
    }

    /// The booking that made the appointment `guid`: its record, or none.
    pub async fn appointment(&self, guid: &Uuid) -> Result<Option<Row>, String> {
        let guid = guid.hyphenated().to_string();
        match &self.db {
            Db::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::by_appointment(&path, &guid)).await
            }
            Db::Postgres { .. } => {
                let g = &guid;
                self.pg_query(|c| async move { postgres::by_appointment(&c, g).await })
                    .await
            }
        }
    }

    /// Records a technical identifier names (see `sqlite::SEARCH`), newest first.
    pub async fn search(&self, term: &str) -> Result<Vec<Row>, String> {
        let term = term.to_owned();
        match &self.db {
            Db::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::search(&path, &term)).await
            }
            Db::Postgres { .. } => {
                let t = &term;
                self.pg_query(|c| async move { postgres::search(&c, t).await })
                    .await
            }
        }
    }

    /// Keeps one operator action.
    pub async fn audit(&self, entry: AuditEntry) -> Result<(), String> {
        match &self.db {
            Db::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::audit(&path, &entry)).await
            }
            Db::Postgres { .. } => {
                let e = &entry;
                self.pg_query(|c| async move { postgres::audit(&c, e).await })
                    .await
            }
        }
    }

    /// Operator actions, newest first, older than the entry `before` (an id) when given.
    pub async fn audit_list(
        &self,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, String> {
        // '~' sorts after every hyphenated UUID: no cursor, everything.
        let before = before.unwrap_or("~").to_owned();
        match &self.db {
            Db::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::audit_list(&path, &before, limit)).await
            }
            Db::Postgres { .. } => {
                let b = &before;
                self.pg_query(|c| async move { postgres::audit_list(&c, b, limit).await })
                    .await
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
                self.pg_query(|c| async move { postgres::summary(&c).await })
                    .await
            }
        }
    }

    async fn prune(&self) -> Result<u64, String> {
        let before = record::now_us() - self.retention.as_micros() as i64;
        let before_id = id_at(before);
        match &self.db {
            Db::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::prune(&path, before, &before_id).map(|n| n as u64)).await
            }
            Db::Postgres { .. } => {
                let id = &before_id;
                self.pg_query(|c| async move { postgres::prune(&c, before, id).await })
                    .await
            }
        }
    }

    async fn fingerprint(&self, request_id: &str) -> Result<Option<String>, String> {
        match &self.db {
            Db::Sqlite(path) => {
                let (path, id) = (path.clone(), request_id.to_owned());
                blocking(move || sqlite::fingerprint(&path, &id)).await
            }
            Db::Postgres { .. } => {
                self.pg_query(|c| async move { postgres::fingerprint(&c, request_id).await })
                    .await
            }
        }
    }

    async fn set_resolution(
        &self,
        request_id: &str,
        r: &Resolution,
        cancels: Option<Cancels>,
    ) -> Result<bool, String> {
        match &self.db {
            Db::Sqlite(path) => {
                let (path, id, r) = (path.clone(), request_id.to_owned(), r.clone());
                blocking(move || sqlite::resolve(&path, &id, &r, cancels.as_ref())).await
            }
            Db::Postgres { .. } => {
                let cancels = cancels.as_ref();
                self.pg_query(
                    |c| async move { postgres::resolve(&c, request_id, r, cancels).await },
                )
                .await
            }
        }
    }

    async fn take_back(&self, request_id: &str, time_us: i64) -> Result<bool, String> {
        match &self.db {
            Db::Sqlite(path) => {
                let (path, id) = (path.clone(), request_id.to_owned());
                blocking(move || sqlite::unresolve(&path, &id, time_us)).await
            }
            Db::Postgres { .. } => {
                self.pg_query(|c| async move { postgres::unresolve(&c, request_id, time_us).await })
                    .await
            }
        }
    }

    /// Records an operator's answer to an `unknown` record and makes its idempotency key say
    /// the same: `booked` (guid, number) makes a same-key retry replay that appointment
    /// (created at the resolution's time in its backend's zone); `None` lets the retry be sent.
    /// The journal decides (a conditional update: of two resolutions at once one wins), the
    /// key store follows the winner; if the store cannot, the journal's change is taken back,
    /// so a 200 always means a same-key retry gets what it says.
    ///
    /// A cancellation's record is resolved with [`Answer::Cancelled`] (its booking is marked
    /// cancelled in the same transaction) or [`Answer::NotCancelled`].
    pub async fn resolve(
        &self,
        request_id: &str,
        answer: Answer,
        note: Option<String>,
        via: &str,
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
        let cancel = row.operation == Operation::Cancel.as_str();
        if cancel != matches!(answer, Answer::Cancelled | Answer::NotCancelled) {
            return Err(ResolveError::Conflict(if cancel {
                "the record is a cancellation: resolve it with cancelled true or false"
            } else {
                "the record is a booking: resolve it with booked true or false"
            }));
        }
        let cancels = match (&answer, &row.linked_request_id, &row.cancel_reason) {
            (Answer::Cancelled, Some(booking), Some(reason)) => Some(Cancels {
                booking: booking.clone(),
                reason: reason.clone(),
                by: row.integrator.clone(),
            }),
            _ => None,
        };
        let yes = matches!(answer, Answer::Booked(..) | Answer::Cancelled);
        let booked = match answer {
            Answer::Booked(guid, number) => Some((guid, number)),
            _ => None,
        };
        let sealed = row.key_seal.as_deref().and_then(crate::wire::hex::unhex32);
        let fingerprint = match sealed {
            Some(_) => self
                .fingerprint(request_id)
                .await
                .map_err(ResolveError::Unavailable)?
                .as_deref()
                .and_then(crate::wire::hex::unhex32),
            None => None,
        };
        let now = record::now_us();
        let resolution = Resolution {
            time_us: now,
            booked: yes,
            guid: booked.as_ref().map(|b| b.0),
            number: booked.as_ref().map(|b| b.1.clone()),
            note,
            via: via.to_owned(),
        };
        if !self
            .set_resolution(request_id, &resolution, cancels)
            .await
            .map_err(ResolveError::Unavailable)?
        {
            return Err(ResolveError::Conflict("the record is already resolved"));
        }
        let id = Uuid::try_parse(&row.request_id).ok();
        if let (Some(seal), Some(id), Some(slot)) = (sealed, id, row.slot.as_deref()) {
            let key = KeyRef::unseal(&self.secret, &seal, &id);
            let outcome = booked.as_ref().map(|(guid, number)| {
                self.resolved_booking(*guid, number.clone(), slot, row.backend.as_deref(), now)
            });
            let applied = match self.store.resolve(key, fingerprint, outcome).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(ResolveError::Conflict(
                    "the idempotency key already holds a final outcome; nothing was changed",
                )),
                Err(e) => Err(ResolveError::StoreUnavailable(e.to_string())),
            };
            if let Err(refused) = applied {
                match self.take_back(request_id, now).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(request_id, error = %e, "journal: a resolution its key store refused could not be taken back")
                    }
                }
                return Err(refused);
            }
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

    /// Background work while the gateway runs: the start's work if the database was down then,
    /// a shared journal's orphan sweep, the unresolved-`unknown` gauges, and pruning past
    /// `retention_days` (`unknown` records nobody resolved are kept).
    pub async fn maintain(self: Arc<Self>) {
        let mut last_prune: Option<Instant> = None;
        let mut last_summary: Option<Instant> = None;
        loop {
            if !self.health.started.load(Ordering::SeqCst) {
                let me = self.clone();
                match tokio::task::spawn_blocking(move || {
                    me.start_blocking().map(|(_, n, k)| (n, k))
                })
                .await
                {
                    Ok(Ok((orphans, keys))) => self.finish_start(orphans, keys),
                    Ok(Err(e)) => {
                        if throttle(&LAST_START_WARN) {
                            tracing::warn!(error = %e, "journal: still cannot open the database; keyed bookings are refused");
                        }
                    }
                    Err(_) => {}
                }
            } else if !self.store.in_process() {
                // Every second: a Redis back empty is refilled before many retries reach it.
                self.refill_store().await;
            }
            if last_summary.is_none_or(|t| t.elapsed() >= SUMMARY_EVERY) {
                if matches!(self.db, Db::Postgres { .. })
                    && self.health.started.load(Ordering::SeqCst)
                {
                    self.sweep_orphans().await;
                }
                self.refresh_gauges().await;
                last_summary = Some(Instant::now());
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                match self.prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(records = n, "journal: pruned past retention"),
                    Err(e) => tracing::warn!(error = %e, "journal: pruning failed"),
                }
                last_prune = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A shared key store that came back empty (a Redis restarted without its data) gets back
    /// every key the journal remembers (never over one it holds): a retry of a booking made
    /// before is replayed, an unknown one answered unknown, not sent again.
    async fn refill_store(&self) {
        match self.store.came_back_empty().await {
            Ok(true) => self.refill.store(true, Ordering::SeqCst),
            Ok(false) => {}
            // Down: asked again next time.
            Err(_) => return,
        }
        if !self.refill.load(Ordering::SeqCst) {
            return;
        }
        let since = record::now_us() - self.ttl.as_micros() as i64;
        let rows = match &self.db {
            Db::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::keys(&path, since)).await
            }
            Db::Postgres { .. } => {
                self.pg_query(|c| async move { postgres::keys(&c, since).await })
                    .await
            }
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "journal: cannot read the keys to put back into the idempotency store; retried");
                return;
            }
        };
        let mut n = 0;
        for k in rows.iter().filter_map(|k| self.known(k)) {
            let Some(outcome) = k.outcome else { continue };
            if let Err(e) = self.store.restore(k.slot, k.fingerprint, outcome).await {
                tracing::warn!(error = %e, "journal: putting keys back into the idempotency store failed; retried");
                return;
            }
            n += 1;
        }
        self.refill.store(false, Ordering::SeqCst);
        tracing::warn!(
            keys = n,
            "journal: the idempotency store came back empty; the keys the journal remembers were put back"
        );
    }

    /// A shared journal: attempts of any replica older than [`STALE`] with no outcome.
    async fn sweep_orphans(&self) {
        let before = id_at(record::now_us() - STALE.as_micros() as i64);
        let floor = self.swept.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (b, f) = (&before, &floor);
        match self
            .pg_query(|c| async move { postgres::orphans(&c, b, f).await })
            .await
        {
            Ok(n) => {
                *self.swept.lock().unwrap_or_else(|e| e.into_inner()) = before;
                if n > 0 {
                    tracing::error!(
                        records = n,
                        "journal: bookings were at their MIS when a replica stopped; recorded as unknown for an operator to resolve"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "journal: the orphan sweep failed"),
        }
    }

    /// Runs a query on the shared connection, within [`QUERY_WAIT`].
    async fn pg_query<'a, T, F, Fut>(&'a self, q: F) -> Result<T, String>
    where
        F: FnOnce(Arc<tokio_postgres::Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + 'a,
    {
        let run = async {
            let c = self.pg().await?;
            self.pg_result(q(c).await)
        };
        match tokio::time::timeout(QUERY_WAIT, run).await {
            Ok(r) => r,
            Err(_) => {
                if let Db::Postgres { client, .. } = &self.db {
                    *client.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                Err("postgres: no answer within a second".into())
            }
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

fn unhex_secret(hex: &str) -> Result<Vec<u8>, String> {
    crate::wire::hex::unhex32(hex)
        .map(|k| k.to_vec())
        .ok_or_else(|| "journal: its fingerprint key is not 64 hex digits".into())
}

/// The SQLite writer the journal's thread drives, for benchmarks that drive it alone
/// (`benches/journal.rs`).
pub fn sqlite_sink(path: PathBuf, fsync: bool) -> Box<dyn Sink> {
    Box::new(sqlite::SqliteSink::new(path, fsync))
}

/// A SQLite read or resolution on the blocking pool, answered within [`QUERY_WAIT`] (its busy
/// timeout ends the query itself soon after).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(QUERY_WAIT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r.map_err(|e| sqlite::describe(&e)),
        Ok(Err(_)) => Err("the journal query did not finish".into()),
        Err(_) => Err("sqlite: no answer within a second".into()),
    }
}

/// The writer thread: takes whatever records are waiting (up to [`MAX_BATCH`]) and commits
/// them in one transaction, so concurrent bookings share one fsync; after a failure it keeps
/// them and retries with a growing pause, answering waiters at once. A file replaced under it
/// is reported and the batch written again to the new one.
fn write_loop(rx: crossbeam_channel::Receiver<Msg>, mut sink: Box<dyn Sink>, health: Arc<Health>) {
    let mut pending: VecDeque<Job> = VecDeque::new();
    let mut flushes = Vec::new();
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let mut failing_since: Option<Instant> = None;
    let mut last_index = Instant::now();
    let mut closed = false;
    let take = |m: Msg, pending: &mut VecDeque<Job>, flushes: &mut Vec<_>| match m {
        Msg::Job(j) => pending.push_back(*j),
        Msg::Flush(f) => flushes.push(f),
    };
    let replaced = |health: &Health| {
        journal_metrics().file_replaced.add(1, &[]);
        health.failing.store(true, Ordering::SeqCst);
        tracing::error!(
            "journal: the database file was deleted or replaced under the running gateway; records now go to a new file at the configured path (records in the old one are not in it)"
        );
    };
    while !closed || !pending.is_empty() {
        let wait_until = match (retry_at, pending.is_empty()) {
            (Some(t), _) => Some(t),
            (None, true) => Some(Instant::now() + CHECK_EVERY),
            (None, false) => None,
        };
        let first = if closed {
            None
        } else {
            match wait_until {
                None => rx.try_recv().ok(),
                Some(t) => match rx.recv_deadline(t) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        closed = true;
                        None
                    }
                },
            }
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
        if pending.is_empty() && retry_at.is_none() {
            // Idle: a deleted file is found within a second, not at the next booking.
            if sink.check() == Err(WriteError::Replaced) {
                replaced(&health);
            }
        }
        if retry_at.is_none() && last_index.elapsed() >= INDEX_EVERY {
            last_index = Instant::now();
            if let Err(WriteError::Failed(why)) = sink.index()
                && throttle(&LAST_INDEX_WARN)
            {
                tracing::warn!(error = %why, "journal: the search keys could not be brought up to date; retried");
            }
        }
        let waiting = retry_at.is_some_and(|t| Instant::now() < t) && !closed;
        if waiting || pending.is_empty() {
            // Failing: the answers go out now, the records wait for the next attempt.
            for j in pending.iter_mut() {
                if let Some(w) = j.done.take() {
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
        let batch: Vec<&Item> = pending.iter().take(n).map(|j| &j.item).collect();
        health
            .commit_since_ms
            .store((record::now_us() / 1000).max(1) as u64, Ordering::SeqCst);
        let mut result = sink.write(&batch);
        // Replaced under us: written again to the file now at the path (inserts are
        // idempotent), a few times at most if something keeps replacing it.
        for _ in 0..3 {
            if result != Err(WriteError::Replaced) {
                break;
            }
            replaced(&health);
            result = sink.write(&batch);
        }
        drop(batch);
        health.commit_since_ms.store(0, Ordering::SeqCst);
        match result {
            Ok(()) => {
                for j in pending.drain(..n) {
                    if let Some(w) = j.done {
                        let _ = w.send(true);
                    }
                }
                if let Some(since) = failing_since.take() {
                    tracing::warn!(
                        failed_for_s = since.elapsed().as_secs(),
                        "journal: writes succeed again; waiting records written"
                    );
                }
                health.failing.store(false, Ordering::SeqCst);
                retry_at = None;
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                journal_metrics().write_errors.add(1, &[]);
                health.failing.store(true, Ordering::SeqCst);
                let why = match &e {
                    WriteError::Failed(why) => why.as_str(),
                    WriteError::Replaced => "the file keeps being replaced",
                };
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::error!(error = %why, pending = pending.len(), "journal: write failed; records kept and retried, bookings refused until their attempts are durable");
                } else if throttle(&LAST_WRITE_WARN) {
                    tracing::warn!(error = %why, pending = pending.len(), "journal: still failing; records kept");
                }
                for j in pending.iter_mut() {
                    if let Some(w) = j.done.take() {
                        let _ = w.send(false);
                    }
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

static LAST_ROOM_WARN: Mutex<Option<Instant>> = Mutex::new(None);
static LAST_WRITE_WARN: Mutex<Option<Instant>> = Mutex::new(None);
static LAST_START_WARN: Mutex<Option<Instant>> = Mutex::new(None);
static LAST_INDEX_WARN: Mutex<Option<Instant>> = Mutex::new(None);

/// Whether a throttled warning may be logged now (at most every 10 s): a failing journal must
/// not flood the log.
fn throttle(last: &Mutex<Option<Instant>>) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        *last = Some(Instant::now());
        true
    } else {
        false
    }
}

fn warn_throttled(last: &Mutex<Option<Instant>>, msg: &'static str) {
    if throttle(last) {
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
    pub refused: Counter<u64>,
    pub late: Counter<u64>,
    pub file_replaced: Counter<u64>,
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
            refused: meter
                .u64_counter("mis_gateway.journal.refused")
                .with_description(
                    "Bookings not sent because their attempt could not be journaled in time",
                )
                .build(),
            late: meter
                .u64_counter("mis_gateway.journal.not_durable")
                .with_description("Answers (or, with on_error = book, bookings) that went out before their record was durable")
                .build(),
            file_replaced: meter
                .u64_counter("mis_gateway.journal.file_replaced")
                .with_description("Times the journal's file was found deleted or replaced under the running gateway")
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
            key_outcome: None,
            made: None,
            operation: Operation::Book,
            cancel: None,
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
        fn write(&mut self, batch: &[&Item]) -> Result<(), WriteError> {
            let _ = self.entered.send(());
            if let Some(h) = self.hold.take() {
                let _ = h.recv();
            }
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(WriteError::Failed("disk full".into()));
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
        let (tx, rx) = crossbeam_channel::unbounded();
        let (entered, entered_rx) = mpsc::channel();
        let committed = Arc::new(Mutex::new(Vec::new()));
        let db = FakeDb {
            entered,
            hold,
            fail: Arc::new(AtomicUsize::new(fail)),
            committed: committed.clone(),
        };
        std::thread::spawn(move || write_loop(rx, Box::new(db), Arc::default()));
        (tx, entered_rx, committed)
    }

    fn send(tx: &crossbeam_channel::Sender<Msg>) -> tokio::sync::oneshot::Receiver<bool> {
        let (done, rx) = tokio::sync::oneshot::channel();
        tx.send(Msg::Job(Box::new(Job {
            item: Item::Outcome(entry(Kind::Booked)),
            _room: None,
            done: Some(done),
        })))
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
