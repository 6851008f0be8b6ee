//! The shared journal: one PostgreSQL table that every replica writes. The writer thread keeps
//! one connection (a batch per transaction); reads and resolutions use another, made on the
//! caller's runtime. Both are remade after a failure.

use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::record::{
    Attempt, Entry, Filter, Item, Kind, ORPHAN_CANCEL_REASON, ORPHAN_REASON, Operation, Param,
    Resolution, Row,
};
use super::{KeyRow, Sink, Summary, WriteError};
use crate::wire::hex::hex;

/// Serializes the migrations of replicas that start together.
const MIGRATION_LOCK: i64 = 0x6a6f75726e616c;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE journal (
    request_id TEXT PRIMARY KEY NOT NULL,
    time_us BIGINT NOT NULL,
    integrator TEXT NOT NULL,
    lpu TEXT,
    backend TEXT,
    slot TEXT,
    direction_guid TEXT,
    key_hash TEXT,
    key_seal TEXT,
    outcome TEXT NOT NULL,
    appointment_guid TEXT,
    appointment_number TEXT,
    status INTEGER NOT NULL,
    message_code TEXT,
    mis_status INTEGER,
    total_us BIGINT NOT NULL,
    mis_us BIGINT,
    trace_id TEXT,
    resolved_us BIGINT,
    resolved_booked BOOLEAN,
    resolved_guid TEXT,
    resolved_number TEXT,
    resolved_note TEXT,
    resolved_via TEXT
);
CREATE INDEX journal_by_time ON journal (time_us, request_id);
CREATE INDEX journal_open_unknown ON journal (backend, time_us)
    WHERE outcome = 'unknown' AND resolved_us IS NULL;
"#,
    r#"
CREATE TABLE journal_attempts (
    request_id TEXT PRIMARY KEY NOT NULL,
    time_us BIGINT NOT NULL,
    integrator TEXT NOT NULL,
    lpu TEXT NOT NULL,
    backend TEXT NOT NULL,
    slot TEXT NOT NULL,
    direction_guid TEXT NOT NULL,
    key_hash TEXT,
    key_seal TEXT,
    fingerprint TEXT
);
ALTER TABLE journal ADD COLUMN key_outcome TEXT;
ALTER TABLE journal ADD COLUMN reason TEXT;
CREATE TABLE journal_meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
"#,
    r#"
ALTER TABLE journal ADD COLUMN operation TEXT;
ALTER TABLE journal ADD COLUMN appointment_source TEXT;
ALTER TABLE journal ADD COLUMN appointment_created TEXT;
ALTER TABLE journal ADD COLUMN cancel_reason TEXT;
ALTER TABLE journal ADD COLUMN cancelled_us BIGINT;
ALTER TABLE journal ADD COLUMN cancelled_by TEXT;
ALTER TABLE journal ADD COLUMN linked_request_id TEXT;
ALTER TABLE journal_attempts ADD COLUMN operation TEXT;
ALTER TABLE journal_attempts ADD COLUMN appointment_guid TEXT;
ALTER TABLE journal_attempts ADD COLUMN linked_request_id TEXT;
ALTER TABLE journal_attempts ADD COLUMN cancel_reason TEXT;
CREATE INDEX journal_by_appointment ON journal (appointment_guid)
    WHERE appointment_guid IS NOT NULL;
CREATE INDEX journal_by_resolved_guid ON journal (resolved_guid)
    WHERE resolved_guid IS NOT NULL;
"#,
    r#"
CREATE TABLE audit (
    id TEXT PRIMARY KEY NOT NULL,
    time_us BIGINT NOT NULL,
    who TEXT NOT NULL,
    via TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    address TEXT,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX journal_by_slot ON journal (slot) WHERE slot IS NOT NULL;
CREATE INDEX journal_by_direction ON journal (direction_guid) WHERE direction_guid IS NOT NULL;
CREATE INDEX journal_by_trace ON journal (trace_id) WHERE trace_id IS NOT NULL;
"#,
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A writer's transaction that takes longer is abandoned (its connection closed) and retried:
/// a stopped server must not hold the writer, and every insert is idempotent.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// The SQLite statements in PostgreSQL's placeholder syntax.
fn numbered(sql: &str) -> String {
    sql.replace('?', "$")
}

/// Connects on the current runtime (the connection's task is spawned there).
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client, String> {
    let mut config = config.clone();
    config.connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = config.connect(NoTls).await.map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "journal: PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Connects and brings the schema up to date.
pub async fn open(config: &tokio_postgres::Config) -> Result<Client, String> {
    let mut client = connect(config).await?;
    migrate(&mut client).await.map_err(|e| describe(&e))?;
    Ok(client)
}

async fn migrate(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS journal_migrations (version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL)",
    )
    .await?;
    let done: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM journal_migrations",
            &[],
        )
        .await?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO journal_migrations (version, applied_us) VALUES ($1, $2)",
            &[&(i as i32 + 1), &super::record::now_us()],
        )
        .await?;
    }
    tx.commit().await
}

/// What failed, by SQLSTATE or kind (never a value or the URL).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => format!("postgres: SQLSTATE {}", code.code()),
        None if e.is_closed() => "postgres: connection closed".into(),
        None => match std::error::Error::source(e) {
            Some(s) if s.is::<std::io::Error>() => format!("postgres: {s}"),
            _ => "postgres: connection or protocol error".into(),
        },
    }
}

/// The writer half, on the journal's writer thread with a runtime of its own.
pub struct PgSink {
    config: tokio_postgres::Config,
    runtime: tokio::runtime::Runtime,
    /// The connection and its prepared INSERTs (outcome, attempt).
    client: Option<(Client, tokio_postgres::Statement, tokio_postgres::Statement)>,
}

impl PgSink {
    pub fn new(config: tokio_postgres::Config) -> std::io::Result<PgSink> {
        Ok(PgSink {
            config,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: None,
        })
    }
}

impl Sink for PgSink {
    fn write(&mut self, batch: &[&Item]) -> Result<(), WriteError> {
        let PgSink {
            config,
            runtime,
            client,
        } = self;
        let result = runtime.block_on(async {
            let work = async {
                if client.is_none() {
                    let c = open(config).await?;
                    let insert = c
                        .prepare(&numbered(super::sqlite::INSERT))
                        .await
                        .map_err(|e| describe(&e))?;
                    let attempt = c
                        .prepare(&numbered(super::sqlite::INSERT_ATTEMPT))
                        .await
                        .map_err(|e| describe(&e))?;
                    *client = Some((c, insert, attempt));
                }
                let (c, insert, attempt) = client.as_mut().expect("connected above");
                write_batch(c, insert, attempt, batch)
                    .await
                    .map_err(|e| describe(&e))
            };
            match tokio::time::timeout(WRITE_TIMEOUT, work).await {
                Ok(r) => r,
                Err(_) => Err("postgres: no answer in time".to_owned()),
            }
        });
        if result.is_err() {
            // Dropping the client closes its connection: an abandoned transaction is rolled
            // back by the server, or committed, which the retry's idempotent inserts absorb.
            *client = None;
        }
        result.map_err(WriteError::Failed)
    }
}

/// The start's work (see `Journal::open`): the journal's own key, orphaned attempts below
/// `before` (and at or above `floor`) made `unknown`, keyed rows since `since_us`.
pub async fn start(
    config: &tokio_postgres::Config,
    before: &str,
    floor: &str,
    since_us: i64,
) -> Result<(String, u64, Vec<KeyRow>), String> {
    let client = open(config).await?;
    let go = async {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).expect("the OS random source is available");
        client
            .execute(&numbered(super::sqlite::META_KEY_INSERT), &[&hex(&fresh)])
            .await?;
        let secret: String = client
            .query_one(super::sqlite::META_KEY_SELECT, &[])
            .await?
            .get(0);
        let n = orphans(&client, before, floor).await?;
        let keys = keys(&client, since_us).await?;
        Ok::<_, tokio_postgres::Error>((secret, n, keys))
    };
    go.await.map_err(|e| describe(&e))
}

/// Keyed bookings since `since_us` (to put their keys back into a store that lost them).
pub async fn keys(client: &Client, since_us: i64) -> Result<Vec<KeyRow>, tokio_postgres::Error> {
    let rows = client
        .query(&numbered(super::sqlite::KEYS), &[&since_us])
        .await?;
    Ok(rows
        .iter()
        .map(|r| KeyRow {
            request_id: r.get(0),
            key_seal: r.get(1),
            fingerprint: r.get(2),
            key_outcome: r.get(3),
            resolved_us: r.get(4),
            resolved_booked: r.get::<_, Option<bool>>(5).unwrap_or(false),
            resolved_guid: r.get(6),
            resolved_number: r.get(7),
            slot: r.get(8),
            backend: r.get(9),
        })
        .collect())
}

/// Attempts in `[floor, before)` with no outcome become `unknown` records.
pub async fn orphans(
    client: &Client,
    before: &str,
    floor: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &numbered(super::sqlite::ORPHANS),
            &[&before, &ORPHAN_REASON, &floor, &ORPHAN_CANCEL_REASON],
        )
        .await
}

pub async fn fingerprint(
    client: &Client,
    request_id: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt(&numbered(super::sqlite::FINGERPRINT), &[&request_id])
        .await?
        .and_then(|r| r.get(0)))
}

pub async fn unresolve(
    client: &Client,
    request_id: &str,
    time_us: i64,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            &numbered(super::sqlite::UNRESOLVE),
            &[&request_id, &time_us],
        )
        .await?;
    Ok(n == 1)
}

/// One record's values as PostgreSQL takes them.
struct Values<'a> {
    e: &'a Entry,
    integrator: &'a str,
    outcome: &'static str,
    backend: Option<&'a str>,
    number: Option<&'a str>,
    message_code: Option<&'a str>,
    request_id: String,
    lpu: Option<String>,
    slot: Option<String>,
    direction: Option<String>,
    key_hash: Option<String>,
    key_seal: Option<String>,
    appointment_guid: Option<String>,
    status: i32,
    mis_status: Option<i32>,
    trace_id: Option<String>,
    key_outcome: Option<String>,
    operation: Option<&'static str>,
    source: Option<&'a str>,
    created: Option<&'a str>,
    cancel_reason: Option<&'static str>,
    linked: Option<String>,
}

impl<'a> Values<'a> {
    fn of(e: &'a Entry) -> Values<'a> {
        Values {
            e,
            integrator: &e.integrator,
            outcome: e.outcome.as_str(),
            backend: e.backend.as_deref(),
            number: e.appointment.as_ref().map(|a| a.1.as_str()),
            message_code: e.message_code.as_deref(),
            request_id: e.request_id.hyphenated().to_string(),
            lpu: e.lpu.map(|u| u.hyphenated().to_string()),
            slot: e.slot.map(|u| u.hyphenated().to_string()),
            direction: e.direction.map(|u| u.hyphenated().to_string()),
            key_hash: e.key.map(|k| hex(&k.hash)),
            key_seal: e.key.map(|k| hex(&k.seal)),
            appointment_guid: e.appointment.as_ref().map(|a| a.0.hyphenated().to_string()),
            status: i32::from(e.status),
            mis_status: e.mis_status.map(i32::from),
            trace_id: e
                .trace_id
                .as_ref()
                .map(|t| String::from_utf8_lossy(t).into_owned()),
            key_outcome: e
                .key_outcome
                .as_ref()
                .and_then(|o| serde_json::to_string(o).ok()),
            operation: e.operation.column(),
            source: e.made.as_ref().map(|m| m.0.as_str()),
            created: e.made.as_ref().map(|m| m.1.as_str()),
            cancel_reason: e.cancel.as_ref().map(|c| c.reason),
            linked: e
                .cancel
                .as_ref()
                .map(|c| c.booking.hyphenated().to_string()),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let e = self.e;
        vec![
            &self.request_id,
            &e.time_us,
            &self.integrator,
            &self.lpu,
            &self.backend,
            &self.slot,
            &self.direction,
            &self.key_hash,
            &self.key_seal,
            &self.outcome,
            &self.appointment_guid,
            &self.number,
            &self.status,
            &self.message_code,
            &self.mis_status,
            &e.total_us,
            &e.mis_us,
            &self.trace_id,
            &self.key_outcome,
            &self.operation,
            &self.source,
            &self.created,
            &self.cancel_reason,
            &self.linked,
        ]
    }
}

/// One attempt's values as PostgreSQL takes them.
struct AttemptValues<'a> {
    a: &'a Attempt,
    integrator: &'a str,
    backend: &'a str,
    request_id: String,
    lpu: String,
    slot: String,
    direction: String,
    key_hash: Option<String>,
    key_seal: Option<String>,
    fingerprint: Option<String>,
    operation: Option<&'static str>,
    appointment: Option<String>,
    linked: Option<String>,
    cancel_reason: Option<&'static str>,
}

impl<'a> AttemptValues<'a> {
    fn of(a: &'a Attempt) -> AttemptValues<'a> {
        AttemptValues {
            a,
            integrator: &a.integrator,
            backend: &a.backend,
            request_id: a.request_id.hyphenated().to_string(),
            lpu: a.lpu.hyphenated().to_string(),
            slot: a.slot.hyphenated().to_string(),
            direction: a.direction.hyphenated().to_string(),
            key_hash: a.key.map(|k| hex(&k.hash)),
            key_seal: a.key.map(|k| hex(&k.seal)),
            fingerprint: a.fingerprint.map(|f| hex(&f)),
            operation: a.cancel.as_ref().map(|_| Operation::Cancel.as_str()),
            appointment: a
                .cancel
                .as_ref()
                .map(|c| c.appointment.hyphenated().to_string()),
            linked: a
                .cancel
                .as_ref()
                .map(|c| c.booking.hyphenated().to_string()),
            cancel_reason: a.cancel.as_ref().map(|c| c.reason),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.request_id,
            &self.a.time_us,
            &self.integrator,
            &self.lpu,
            &self.backend,
            &self.slot,
            &self.direction,
            &self.key_hash,
            &self.key_seal,
            &self.fingerprint,
            &self.operation,
            &self.appointment,
            &self.linked,
            &self.cancel_reason,
        ]
    }
}

/// One transaction; the inserts are pipelined (sent together, answered together), so a
/// batch costs a few round trips whatever its size.
async fn write_batch(
    client: &mut Client,
    insert: &tokio_postgres::Statement,
    attempt: &tokio_postgres::Statement,
    batch: &[&Item],
) -> Result<(), tokio_postgres::Error> {
    let mut outcomes = Vec::new();
    let mut attempts = Vec::new();
    // Bookings cancelled: (when, reason, who, the cancellation's id, the booking's id).
    let mut cancelled: Vec<(i64, &str, &str, String, String)> = Vec::new();
    for item in batch {
        match item {
            Item::Outcome(e) => {
                if let (Kind::Cancelled, Some(c)) = (e.outcome, &e.cancel) {
                    cancelled.push((
                        e.time_us + e.total_us,
                        c.reason,
                        &e.integrator,
                        e.request_id.hyphenated().to_string(),
                        c.booking.hyphenated().to_string(),
                    ));
                }
                outcomes.push(Values::of(e))
            }
            Item::Attempt(a) => attempts.push(AttemptValues::of(a)),
        }
    }
    let tx = client.transaction().await?;
    let a = attempts.iter().map(|v| tx.execute_raw(attempt, v.params()));
    let o = outcomes.iter().map(|v| tx.execute_raw(insert, v.params()));
    futures_util::future::try_join_all(a.chain(o)).await?;
    if !cancelled.is_empty() {
        let mark = tx.prepare(&numbered(super::sqlite::MARK_CANCELLED)).await?;
        for (at, reason, by, cancel, booking) in &cancelled {
            tx.execute(&mark, &[at, reason, by, cancel, booking])
                .await?;
        }
    }
    tx.commit().await
}

type Arg = Box<dyn ToSql + Sync + Send>;

pub async fn list(client: &Client, f: &Filter) -> Result<Vec<Row>, tokio_postgres::Error> {
    let (sql, params) = f.query(super::sqlite::COLUMNS, |n| format!("${n}"));
    let args: Vec<Arg> = params
        .into_iter()
        .map(|p| -> Arg {
            match p {
                Param::Text(t) => Box::new(t),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
    let rows = client.query(&sql, &refs).await?;
    Ok(rows.iter().map(row).collect())
}

pub async fn get(client: &Client, request_id: &str) -> Result<Option<Row>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM journal WHERE request_id = $1",
        super::sqlite::COLUMNS
    );
    Ok(client
        .query_opt(&sql, &[&request_id])
        .await?
        .as_ref()
        .map(row))
}

pub async fn search(client: &Client, term: &str) -> Result<Vec<Row>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {}{}",
        super::sqlite::COLUMNS,
        numbered(super::sqlite::SEARCH)
    );
    Ok(client
        .query(&sql, &[&term])
        .await?
        .iter()
        .map(row)
        .collect())
}

pub async fn audit(client: &Client, e: &super::AuditEntry) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            &numbered(super::sqlite::AUDIT_INSERT),
            &[
                &e.id, &e.time_us, &e.who, &e.via, &e.action, &e.target, &e.address, &e.outcome,
                &e.detail,
            ],
        )
        .await?;
    Ok(())
}

pub async fn audit_list(
    client: &Client,
    before: &str,
    limit: u32,
) -> Result<Vec<super::AuditEntry>, tokio_postgres::Error> {
    let rows = client
        .query(
            &numbered(super::sqlite::AUDIT_LIST),
            &[&before, &i64::from(limit)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| super::AuditEntry {
            id: r.get(0),
            time_us: r.get(1),
            who: r.get(2),
            via: r.get(3),
            action: r.get(4),
            target: r.get(5),
            address: r.get(6),
            outcome: r.get(7),
            detail: r.get(8),
        })
        .collect())
}

/// The booking that made the appointment `guid` (lowercase hyphenated).
pub async fn by_appointment(
    client: &Client,
    guid: &str,
) -> Result<Option<Row>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {}{}",
        super::sqlite::COLUMNS,
        numbered(super::sqlite::BY_APPOINTMENT)
    );
    Ok(client.query_opt(&sql, &[&guid]).await?.as_ref().map(row))
}

/// Records `r` on an open `unknown` record (see `sqlite::resolve`).
pub async fn resolve(
    client: &Client,
    request_id: &str,
    r: &Resolution,
    cancels: Option<&super::Cancels>,
) -> Result<bool, tokio_postgres::Error> {
    let guid = r.guid.map(|g| g.hyphenated().to_string());
    let Some(c) = cancels else {
        let n = client
            .execute(
                "UPDATE journal SET resolved_us = $1, resolved_booked = $2, resolved_guid = $3, \
                 resolved_number = $4, resolved_note = $5, resolved_via = $6 \
                 WHERE request_id = $7 AND outcome = 'unknown' AND resolved_us IS NULL",
                &[
                    &r.time_us,
                    &r.booked,
                    &guid,
                    &r.number,
                    &r.note,
                    &r.via,
                    &request_id,
                ],
            )
            .await?;
        return Ok(n == 1);
    };
    // A cancellation the clinic confirmed marks its booking in the same statement (the shared
    // connection cannot hold a transaction of its own): both change, or neither.
    let n: i64 = client
        .query_one(
            "WITH r AS (UPDATE journal SET resolved_us = $1, resolved_booked = $2, \
             resolved_guid = $3, resolved_number = $4, resolved_note = $5, resolved_via = $6 \
             WHERE request_id = $7 AND outcome = 'unknown' AND resolved_us IS NULL \
             RETURNING request_id), \
             m AS (UPDATE journal SET cancelled_us = $1, cancel_reason = $8, cancelled_by = $9, \
             linked_request_id = $7 WHERE request_id = $10 AND cancelled_us IS NULL \
             AND EXISTS (SELECT 1 FROM r)) \
             SELECT COUNT(*) FROM r",
            &[
                &r.time_us,
                &r.booked,
                &guid,
                &r.number,
                &r.note,
                &r.via,
                &request_id,
                &c.reason,
                &c.by,
                &c.booking,
            ],
        )
        .await?
        .get(0);
    Ok(n == 1)
}

pub async fn summary(client: &Client) -> Result<Vec<Summary>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT COALESCE(backend, ''), COUNT(*), MIN(time_us) FROM journal \
             WHERE outcome = 'unknown' AND resolved_us IS NULL GROUP BY backend",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Summary {
            backend: r.get(0),
            unresolved: r.get::<_, i64>(1) as u64,
            oldest_us: r.get(2),
        })
        .collect())
}

pub async fn prune(
    client: &Client,
    before_us: i64,
    before_id: &str,
) -> Result<u64, tokio_postgres::Error> {
    let n = client
        .execute(
            "DELETE FROM journal WHERE time_us < $1 \
             AND NOT (outcome = 'unknown' AND resolved_us IS NULL)",
            &[&before_us],
        )
        .await?;
    client
        .execute(
            "DELETE FROM journal_attempts WHERE request_id < $1",
            &[&before_id],
        )
        .await?;
    client
        .execute("DELETE FROM audit WHERE id < $1", &[&before_id])
        .await?;
    Ok(n)
}

fn row(r: &tokio_postgres::Row) -> Row {
    let resolution = r.get::<_, Option<i64>>(18).map(|time_us| Resolution {
        time_us,
        booked: r.get::<_, Option<bool>>(19).unwrap_or(false),
        guid: r
            .get::<_, Option<String>>(20)
            .and_then(|g| uuid::Uuid::try_parse(&g).ok()),
        number: r.get(21),
        note: r.get(22),
        via: r.get::<_, Option<String>>(23).unwrap_or_default(),
    });
    Row {
        request_id: r.get(0),
        time_us: r.get(1),
        integrator: r.get(2),
        lpu: r.get(3),
        backend: r.get(4),
        slot: r.get(5),
        direction: r.get(6),
        key_hash: r.get(7),
        key_seal: r.get(8),
        outcome: r.get(9),
        appointment_guid: r.get(10),
        appointment_number: r.get(11),
        status: i64::from(r.get::<_, i32>(12)),
        message_code: r.get(13),
        mis_status: r.get::<_, Option<i32>>(14).map(i64::from),
        total_us: r.get(15),
        mis_us: r.get(16),
        trace_id: r.get(17),
        resolution,
        reason: r.get(24),
        operation: r.get(25),
        appointment_source: r.get(26),
        appointment_created: r.get(27),
        cancel_reason: r.get(28),
        cancelled_us: r.get(29),
        cancelled_by: r.get(30),
        linked_request_id: r.get(31),
    }
}
