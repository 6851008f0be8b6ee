//! The embedded journal: one SQLite file in WAL mode. One writer connection on the journal's
//! writer thread (a batch per transaction, so one fsync serves every record in it); reads and
//! resolutions open their own connections, which WAL lets run beside the writer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::record::{Entry, Filter, Param, Resolution, Row};
use super::{Sink, Summary};
use crate::wire::hex::hex32_into;

/// Schema versions in order; each runs once, in a transaction, recorded in `journal_migrations`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE journal (
    request_id TEXT PRIMARY KEY NOT NULL,
    time_us INTEGER NOT NULL,
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
    total_us INTEGER NOT NULL,
    mis_us INTEGER,
    trace_id TEXT,
    resolved_us INTEGER,
    resolved_booked INTEGER,
    resolved_guid TEXT,
    resolved_number TEXT,
    resolved_note TEXT,
    resolved_via TEXT
);
CREATE INDEX journal_by_time ON journal (time_us, request_id);
CREATE INDEX journal_open_unknown ON journal (backend, time_us)
    WHERE outcome = 'unknown' AND resolved_us IS NULL;
"#];

const INSERT: &str = "INSERT INTO journal (request_id, time_us, integrator, lpu, backend, slot, \
    direction_guid, key_hash, key_seal, outcome, appointment_guid, appointment_number, status, \
    message_code, mis_status, total_us, mis_us, trace_id) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
    ON CONFLICT (request_id) DO NOTHING";

pub(super) const COLUMNS: &str = "request_id, time_us, integrator, lpu, backend, slot, \
    direction_guid, key_hash, key_seal, outcome, appointment_guid, appointment_number, status, \
    message_code, mis_status, total_us, mis_us, trace_id, resolved_us, resolved_booked, \
    resolved_guid, resolved_number, resolved_note, resolved_via";

const BUSY: Duration = Duration::from_secs(5);

/// Opens (creating) the journal at `path` and brings its schema up to date.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY)?;
    // WAL: readers never block the writer.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    // Readers open the file often: a schema already current costs one read, no write lock.
    let current: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM journal_migrations", [], |r| {
            r.get(0)
        })
        .ok()
        .flatten();
    if current == Some(MIGRATIONS.len() as i64) {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS journal_migrations (version INTEGER PRIMARY KEY, applied_us INTEGER NOT NULL)",
    )?;
    let done: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM journal_migrations",
        [],
        |r| r.get(0),
    )?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO journal_migrations (version, applied_us) VALUES (?1, ?2)",
            params![i as i64 + 1, super::record::now_us()],
        )?;
    }
    tx.commit()
}

/// The writer half: opened on first use and reopened after a failure.
pub struct SqliteSink {
    path: PathBuf,
    fsync: bool,
    conn: Option<Connection>,
}

impl SqliteSink {
    pub fn new(path: PathBuf, fsync: bool) -> SqliteSink {
        SqliteSink {
            path,
            fsync,
            conn: None,
        }
    }

    fn write_batch(&mut self, batch: &[&Entry]) -> rusqlite::Result<()> {
        if self.conn.is_none() {
            let conn = open(&self.path)?;
            // FULL: a commit is on disk when it returns (one fsync per batch).
            let sync = if self.fsync { "FULL" } else { "NORMAL" };
            conn.pragma_update(None, "synchronous", sync)?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("opened above");
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            // Every text column formatted on the stack: the writer allocates nothing per record.
            let mut ids = [[0u8; 36]; 5];
            let mut keys = [[0u8; 64]; 2];
            for e in batch {
                let [rid, lpu, slot, dir, appt] = &mut ids;
                let [hash, seal] = &mut keys;
                insert.execute(params![
                    &*e.request_id.hyphenated().encode_lower(rid),
                    e.time_us,
                    &*e.integrator,
                    e.lpu.map(|u| &*u.hyphenated().encode_lower(lpu)),
                    e.backend.as_deref(),
                    e.slot.map(|u| &*u.hyphenated().encode_lower(slot)),
                    e.direction.map(|u| &*u.hyphenated().encode_lower(dir)),
                    e.key.as_ref().map(|k| hex32_into(&k.hash, hash)),
                    e.key.as_ref().map(|k| hex32_into(&k.seal, seal)),
                    e.outcome.as_str(),
                    e.appointment
                        .as_ref()
                        .map(|a| &*a.0.hyphenated().encode_lower(appt)),
                    e.appointment.as_ref().map(|a| a.1.as_str()),
                    e.status,
                    e.message_code.as_deref(),
                    e.mis_status,
                    e.total_us,
                    e.mis_us,
                    e.trace_id
                        .as_ref()
                        .and_then(|t| std::str::from_utf8(t).ok()),
                ])?;
            }
        }
        tx.commit()
    }
}

impl Sink for SqliteSink {
    fn write(&mut self, batch: &[&Entry]) -> Result<(), String> {
        self.write_batch(batch).map_err(|e| {
            self.conn = None;
            describe(&e)
        })
    }
}

/// What failed, in SQLite's terms (never a value: the error text may quote none, but its
/// code is all an operator needs).
pub fn describe(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            format!("sqlite: {:?} ({})", f.code, f.extended_code)
        }
        other => format!("sqlite: {}", other),
    }
}

pub fn list(path: &Path, f: &Filter) -> rusqlite::Result<Vec<Row>> {
    let conn = open(path)?;
    let (sql, params) = f.query(COLUMNS, |n| format!("?{n}"));
    let args: Vec<Box<dyn ToSql>> = params
        .into_iter()
        .map(|p| -> Box<dyn ToSql> {
            match p {
                Param::Text(t) => Box::new(t),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect();
    let mut stmt = conn.prepare(&sql)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|b| &**b).collect();
    let rows = stmt.query_map(&refs[..], row)?;
    rows.collect()
}

pub fn get(path: &Path, request_id: &str) -> rusqlite::Result<Option<Row>> {
    let conn = open(path)?;
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM journal WHERE request_id = ?1"),
        [request_id],
        row,
    )
    .optional()
}

/// Records `r` on an open `unknown` record; false if there is none such.
pub fn resolve(path: &Path, request_id: &str, r: &Resolution) -> rusqlite::Result<bool> {
    let conn = open(path)?;
    let n = conn.execute(
        "UPDATE journal SET resolved_us = ?1, resolved_booked = ?2, resolved_guid = ?3, \
         resolved_number = ?4, resolved_note = ?5, resolved_via = ?6 \
         WHERE request_id = ?7 AND outcome = 'unknown' AND resolved_us IS NULL",
        params![
            r.time_us,
            r.booked,
            r.guid.map(|g| g.hyphenated().to_string()),
            r.number,
            r.note,
            r.via,
            request_id
        ],
    )?;
    Ok(n == 1)
}

pub fn summary(path: &Path) -> rusqlite::Result<Vec<Summary>> {
    let conn = open(path)?;
    let mut stmt = conn.prepare(
        "SELECT COALESCE(backend, ''), COUNT(*), MIN(time_us) FROM journal \
         WHERE outcome = 'unknown' AND resolved_us IS NULL GROUP BY backend",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Summary {
            backend: r.get(0)?,
            unresolved: r.get::<_, i64>(1)? as u64,
            oldest_us: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// Deletes records older than `before_us`, except `unknown` ones nobody resolved yet.
pub fn prune(path: &Path, before_us: i64) -> rusqlite::Result<usize> {
    let conn = open(path)?;
    conn.execute(
        "DELETE FROM journal WHERE time_us < ?1 \
         AND NOT (outcome = 'unknown' AND resolved_us IS NULL)",
        [before_us],
    )
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let resolved_us: Option<i64> = r.get(18)?;
    let resolution = match resolved_us {
        None => None,
        Some(time_us) => Some(Resolution {
            time_us,
            booked: r.get::<_, Option<bool>>(19)?.unwrap_or(false),
            guid: r
                .get::<_, Option<String>>(20)?
                .and_then(|g| uuid::Uuid::try_parse(&g).ok()),
            number: r.get(21)?,
            note: r.get(22)?,
            via: r.get::<_, Option<String>>(23)?.unwrap_or_default(),
        }),
    };
    Ok(Row {
        request_id: r.get(0)?,
        time_us: r.get(1)?,
        integrator: r.get(2)?,
        lpu: r.get(3)?,
        backend: r.get(4)?,
        slot: r.get(5)?,
        direction: r.get(6)?,
        key_hash: r.get(7)?,
        key_seal: r.get(8)?,
        outcome: r.get(9)?,
        appointment_guid: r.get(10)?,
        appointment_number: r.get(11)?,
        status: r.get(12)?,
        message_code: r.get(13)?,
        mis_status: r.get(14)?,
        total_us: r.get(15)?,
        mis_us: r.get(16)?,
        trace_id: r.get(17)?,
        resolution,
    })
}
