//! The embedded journal: one SQLite file in WAL mode. One writer connection on the journal's
//! writer thread (a batch per transaction, so one fsync serves every record in it); reads and
//! resolutions open their own connections, which WAL lets run beside the writer. Only the
//! writer creates the file; it notices a file deleted or replaced under it (by its inode) and
//! writes to the configured path again, never into an unlinked inode.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};

use super::record::{
    Attempt, Filter, Item, Kind, ORPHAN_CANCEL_REASON, ORPHAN_REASON, Operation, Param, Resolution,
    Row,
};
use super::{KeyRow, Sink, Summary, WriteError};
use crate::wire::hex::hex32_into;

/// Schema versions in order; each runs once, in a transaction, recorded in `journal_migrations`.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
CREATE TABLE journal_attempts (
    request_id TEXT PRIMARY KEY NOT NULL,
    time_us INTEGER NOT NULL,
    integrator TEXT NOT NULL,
    lpu TEXT NOT NULL,
    backend TEXT NOT NULL,
    slot TEXT NOT NULL,
    direction_guid TEXT NOT NULL,
    key_hash TEXT,
    key_seal TEXT,
    fingerprint TEXT
) WITHOUT ROWID;
ALTER TABLE journal ADD COLUMN key_outcome TEXT;
ALTER TABLE journal ADD COLUMN reason TEXT;
CREATE TABLE journal_meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
"#,
    r#"
ALTER TABLE journal ADD COLUMN operation TEXT;
ALTER TABLE journal ADD COLUMN appointment_source TEXT;
ALTER TABLE journal ADD COLUMN appointment_created TEXT;
ALTER TABLE journal ADD COLUMN cancel_reason TEXT;
ALTER TABLE journal ADD COLUMN cancelled_us INTEGER;
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
    time_us INTEGER NOT NULL,
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
    // The three search indexes above made every booking's commit touch three more random
    // pages (measured: 3x the commit's time, 4x its system time): their keys now go to a table
    // of their own, filled by the writer about once a second, off the bookings' commits.
    r#"
DROP INDEX journal_by_slot;
DROP INDEX journal_by_direction;
DROP INDEX journal_by_trace;
CREATE TABLE journal_search (
    key TEXT NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (key, request_id)
) WITHOUT ROWID;
CREATE TRIGGER journal_search_prune AFTER DELETE ON journal BEGIN
    DELETE FROM journal_search WHERE key IN (old.slot, old.direction_guid, old.trace_id)
        AND request_id = old.request_id;
END;
INSERT INTO journal_meta (name, value) VALUES ('search_rowid', '0')
    ON CONFLICT (name) DO NOTHING;
"#,
];

/// Records a search key reaches: by its request id, appointment (booked or resolved), the
/// search table (slot, referral, trace id of indexed records) or, for records written since the
/// last indexing (rowid above ?2), their own columns.
const SEARCH_SQLITE: &str = " FROM journal WHERE rowid IN (\
    SELECT rowid FROM journal WHERE request_id = ?1 \
    UNION SELECT rowid FROM journal WHERE appointment_guid = ?1 \
    UNION SELECT rowid FROM journal WHERE resolved_guid = ?1 \
    UNION SELECT j.rowid FROM journal_search s JOIN journal j ON j.request_id = s.request_id \
    WHERE s.key = ?1 \
    UNION SELECT rowid FROM journal WHERE rowid > ?2 \
    AND (slot = ?1 OR direction_guid = ?1 OR trace_id = ?1)) \
    ORDER BY time_us DESC LIMIT 200";
/// Records indexed per call of `index` at most: the writer holds the database that long.
const INDEX_CHUNK: i64 = 2000;

pub(super) const INSERT: &str = "INSERT INTO journal (request_id, time_us, integrator, lpu, \
    backend, slot, direction_guid, key_hash, key_seal, outcome, appointment_guid, \
    appointment_number, status, message_code, mis_status, total_us, mis_us, trace_id, \
    key_outcome, operation, appointment_source, appointment_created, cancel_reason, \
    linked_request_id) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
    ?20, ?21, ?22, ?23, ?24) ON CONFLICT (request_id) DO NOTHING";

/// A booking's record once its cancellation succeeded (in the cancellation's transaction).
pub(super) const MARK_CANCELLED: &str = "UPDATE journal SET cancelled_us = ?1, \
    cancel_reason = ?2, cancelled_by = ?3, linked_request_id = ?4 \
    WHERE request_id = ?5 AND cancelled_us IS NULL";

/// The attempt: a narrow append-only row, its primary key its only index.
pub(super) const INSERT_ATTEMPT: &str = "INSERT INTO journal_attempts (request_id, time_us, integrator, \
    lpu, backend, slot, direction_guid, key_hash, key_seal, fingerprint, operation, \
    appointment_guid, linked_request_id, cancel_reason) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
    ON CONFLICT (request_id) DO NOTHING";

/// The journal's own fingerprint key: made by the first process that opens the database.
pub(super) const META_KEY_INSERT: &str = "INSERT INTO journal_meta (name, value) \
    VALUES ('fingerprint_key', ?1) ON CONFLICT (name) DO NOTHING";
pub(super) const META_KEY_SELECT: &str =
    "SELECT value FROM journal_meta WHERE name = 'fingerprint_key'";
/// A keyed attempt's body fingerprint (hex), for a resolution that makes its key again.
pub(super) const FINGERPRINT: &str =
    "SELECT fingerprint FROM journal_attempts WHERE request_id = ?1";
/// Takes back the resolution recorded at ?2 (the key store would not follow it).
pub(super) const UNRESOLVE: &str = "UPDATE journal SET resolved_us = NULL, \
    resolved_booked = NULL, resolved_guid = NULL, resolved_number = NULL, resolved_note = NULL, \
    resolved_via = NULL WHERE request_id = ?1 AND resolved_us = ?2";

/// Attempts below a request id (UUIDv7: time order) with no outcome become `unknown` records
/// (?2: a booking's reason, ?4: a cancellation's).
pub(super) const ORPHANS: &str = "INSERT INTO journal (request_id, time_us, integrator, lpu, \
    backend, slot, direction_guid, key_hash, key_seal, outcome, status, message_code, total_us, \
    key_outcome, reason, operation, appointment_guid, linked_request_id, cancel_reason) \
    SELECT a.request_id, a.time_us, a.integrator, a.lpu, a.backend, a.slot, a.direction_guid, \
    a.key_hash, a.key_seal, 'unknown', 0, '95022', 0, \
    CASE WHEN a.key_seal IS NULL THEN NULL ELSE '{\"kind\":\"outcome_unknown\"}' END, \
    CASE WHEN a.operation IS NULL THEN CAST(?2 AS TEXT) ELSE CAST(?4 AS TEXT) END, \
    a.operation, a.appointment_guid, a.linked_request_id, a.cancel_reason \
    FROM journal_attempts a WHERE a.request_id < ?1 AND a.request_id >= ?3 \
    AND NOT EXISTS (SELECT 1 FROM journal j WHERE j.request_id = a.request_id) \
    ON CONFLICT (request_id) DO NOTHING";

/// Keyed bookings that reached a MIS since a time: what the key store is rebuilt from.
pub(super) const KEYS: &str = "SELECT j.request_id, j.key_seal, a.fingerprint, j.key_outcome, \
    j.resolved_us, j.resolved_booked, j.resolved_guid, j.resolved_number, j.slot, j.backend \
    FROM journal j JOIN journal_attempts a ON a.request_id = j.request_id \
    WHERE j.time_us >= ?1 AND j.key_seal IS NOT NULL AND a.fingerprint IS NOT NULL \
    ORDER BY j.time_us";

pub(super) const COLUMNS: &str = "request_id, time_us, integrator, lpu, backend, slot, \
    direction_guid, key_hash, key_seal, outcome, appointment_guid, appointment_number, status, \
    message_code, mis_status, total_us, mis_us, trace_id, resolved_us, resolved_booked, \
    resolved_guid, resolved_number, resolved_note, resolved_via, reason, \
    COALESCE(operation, 'book'), appointment_source, appointment_created, cancel_reason, \
    cancelled_us, cancelled_by, linked_request_id";

pub(super) const AUDIT_INSERT: &str = "INSERT INTO audit (id, time_us, who, via, action, \
    target, address, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
/// Newest first, below a cursor (an id; `~` sorts after every UUID).
pub(super) const AUDIT_LIST: &str = "SELECT id, time_us, who, via, action, target, address, \
    outcome, detail FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT ?2";
/// PostgreSQL's search (its journal keeps an index per column; SQLite's keeps the slot, referral
/// and trace id in `journal_search`, see `SEARCH_SQLITE`): records a technical identifier
/// names, a request id, a slot, a referral, an appointment (booked or resolved) or a trace.
pub(super) const SEARCH: &str = " FROM journal WHERE request_id = ?1 OR slot = ?1 OR \
    direction_guid = ?1 OR appointment_guid = ?1 OR resolved_guid = ?1 OR trace_id = ?1 \
    ORDER BY time_us DESC LIMIT 200";

/// The booking that made an appointment (the MIS's answer, or an operator's resolution).
/// Both conditions are served by a partial index of their own.
pub(super) const BY_APPOINTMENT: &str = " FROM journal WHERE operation IS NULL AND \
    ((appointment_guid = ?1 AND outcome = 'booked') OR \
    (resolved_guid = ?1 AND resolved_booked = TRUE)) ORDER BY time_us LIMIT 1";

/// How long the writer waits for a lock another connection holds: past it the commit fails and
/// is retried, while bookings whose attempt waits are refused at their own bound.
const BUSY: Duration = Duration::from_secs(2);
/// Reads and resolutions: an operator gets a 503 within a second, not a hung page.
const READ_BUSY: Duration = Duration::from_millis(800);

/// Opens (creating) the journal at `path` and brings its schema up to date: the writer's.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY)?;
    // WAL: readers never block the writer.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens an existing journal for a read or a resolution: a missing file is an error (only the
/// writer creates the database; a read that made an empty one would hide a deleted journal).
fn open_existing(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(READ_BUSY)?;
    Ok(conn)
}

/// The file's identity: a file deleted and made again, or replaced by a rename, has another.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
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

/// The writer half: opened on first use and reopened after a failure or when the file at the
/// path is no longer the one it has open.
pub struct SqliteSink {
    path: PathBuf,
    fsync: bool,
    conn: Option<(Connection, (u64, u64))>,
}

impl SqliteSink {
    pub fn new(path: PathBuf, fsync: bool) -> SqliteSink {
        SqliteSink {
            path,
            fsync,
            conn: None,
        }
    }

    /// The open connection, (re)opened when there is none or the path now names another file.
    fn connection(&mut self) -> Result<&mut Connection, WriteError> {
        let now = identity(&self.path);
        let mut replaced = false;
        if let Some((_, id)) = &self.conn
            && now != Some(*id)
        {
            // Our inode was unlinked or renamed over: records written to it would be lost.
            self.conn = None;
            replaced = true;
        }
        if self.conn.is_none() {
            let conn = open(&self.path).map_err(|e| WriteError::Failed(describe(&e)))?;
            // FULL: a commit is on disk when it returns (one fsync per batch).
            let sync = if self.fsync { "FULL" } else { "NORMAL" };
            conn.pragma_update(None, "synchronous", sync)
                .map_err(|e| WriteError::Failed(describe(&e)))?;
            let id = identity(&self.path)
                .ok_or_else(|| WriteError::Failed("sqlite: the journal file vanished".into()))?;
            self.conn = Some((conn, id));
        }
        if replaced {
            return Err(WriteError::Replaced);
        }
        Ok(&mut self.conn.as_mut().expect("opened above").0)
    }

    fn write_batch(&mut self, batch: &[&Item]) -> Result<(), WriteError> {
        let conn = self.connection()?;
        commit(conn, batch).map_err(|e| WriteError::Failed(describe(&e)))?;
        // Deleted or replaced while the commit ran: it went to the old inode; the caller
        // writes the batch again (every insert is idempotent by request id).
        if self.conn.as_ref().map(|c| c.1) != identity(&self.path) {
            self.conn = None;
            return Err(WriteError::Replaced);
        }
        Ok(())
    }
}

fn commit(conn: &mut Connection, batch: &[&Item]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        let mut attempt = tx.prepare_cached(INSERT_ATTEMPT)?;
        let mut cancelled = tx.prepare_cached(MARK_CANCELLED)?;
        // Every text column formatted on the stack: the writer allocates nothing per record
        // (but a keyed outcome's replay, a few dozen bytes of JSON).
        let mut ids = [[0u8; 36]; 6];
        let mut keys = [[0u8; 64]; 3];
        for item in batch {
            let [rid, lpu, slot, dir, appt, linked] = &mut ids;
            let [hash, seal, fp] = &mut keys;
            match item {
                Item::Attempt(a) => insert_attempt(
                    &mut attempt,
                    a,
                    [rid, lpu, slot, dir, appt, linked],
                    [hash, seal, fp],
                )?,
                Item::Outcome(e) => {
                    let key_outcome = e
                        .key_outcome
                        .as_ref()
                        .and_then(|o| serde_json::to_string(o).ok());
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
                        key_outcome,
                        e.operation.column(),
                        e.made.as_ref().map(|m| m.0.as_str()),
                        e.made.as_ref().map(|m| m.1.as_str()),
                        e.cancel.as_ref().map(|c| c.reason),
                        e.cancel
                            .as_ref()
                            .map(|c| &*c.booking.hyphenated().encode_lower(linked)),
                    ])?;
                    if let (Kind::Cancelled, Some(c)) = (e.outcome, &e.cancel) {
                        cancelled.execute(params![
                            e.time_us + e.total_us,
                            c.reason,
                            &*e.integrator,
                            &*e.request_id.hyphenated().encode_lower(rid),
                            &*c.booking.hyphenated().encode_lower(linked),
                        ])?;
                    }
                }
            }
        }
    }
    tx.commit()
}

/// `ids` and `keys`: the stack buffers its text columns are formatted into.
fn insert_attempt(
    stmt: &mut rusqlite::CachedStatement<'_>,
    a: &Attempt,
    ids: [&mut [u8; 36]; 6],
    keys: [&mut [u8; 64]; 3],
) -> rusqlite::Result<()> {
    let [rid, lpu, slot, dir, appt, linked] = ids;
    let [hash, seal, fp] = keys;
    stmt.execute(params![
        &*a.request_id.hyphenated().encode_lower(rid),
        a.time_us,
        &*a.integrator,
        &*a.lpu.hyphenated().encode_lower(lpu),
        &*a.backend,
        &*a.slot.hyphenated().encode_lower(slot),
        &*a.direction.hyphenated().encode_lower(dir),
        a.key.as_ref().map(|k| hex32_into(&k.hash, hash)),
        a.key.as_ref().map(|k| hex32_into(&k.seal, seal)),
        a.fingerprint.as_ref().map(|f| hex32_into(f, fp)),
        a.cancel.as_ref().map(|_| Operation::Cancel.as_str()),
        a.cancel
            .as_ref()
            .map(|c| &*c.appointment.hyphenated().encode_lower(appt)),
        a.cancel
            .as_ref()
            .map(|c| &*c.booking.hyphenated().encode_lower(linked)),
        a.cancel.as_ref().map(|c| c.reason),
    ])?;
    Ok(())
}

impl Sink for SqliteSink {
    fn write(&mut self, batch: &[&Item]) -> Result<(), WriteError> {
        self.write_batch(batch).inspect_err(|e| {
            if matches!(e, WriteError::Failed(_)) {
                self.conn = None;
            }
        })
    }

    fn index(&mut self) -> Result<(), WriteError> {
        // Only a connection already open (and current): indexing never creates the file.
        match &mut self.conn {
            Some((conn, id)) if identity(&self.path) == Some(*id) => {
                index_some(conn).map_err(|e| WriteError::Failed(describe(&e)))
            }
            _ => Ok(()),
        }
    }

    fn check(&mut self) -> Result<(), WriteError> {
        match &self.conn {
            Some((_, id)) if identity(&self.path) != Some(*id) => {
                self.conn = None;
                // Made again at once, with the schema: the next record has a place to go.
                self.connection().map(|_| ())?;
                Err(WriteError::Replaced)
            }
            _ => Ok(()),
        }
    }
}

/// Opens the journal for the start's work (creating it): the key, the orphaned attempts, the
/// keys to rebuild.
pub fn start(
    path: &Path,
    orphans_before: &str,
    keys_since_us: i64,
) -> rusqlite::Result<(String, u64, Vec<KeyRow>)> {
    let mut conn = open(path)?;
    let secret = meta_secret(&mut conn)?;
    let orphans = conn.execute(
        ORPHANS,
        params![orphans_before, ORPHAN_REASON, "", ORPHAN_CANCEL_REASON],
    )? as u64;
    let keys = keyed_rows(&conn, keys_since_us)?;
    Ok((secret, orphans, keys))
}

/// Keyed bookings since `since_us` (to put their keys back into a store that lost them).
pub fn keys(path: &Path, since_us: i64) -> rusqlite::Result<Vec<KeyRow>> {
    keyed_rows(&open_existing(path)?, since_us)
}

fn keyed_rows(conn: &Connection, since_us: i64) -> rusqlite::Result<Vec<KeyRow>> {
    let mut stmt = conn.prepare(KEYS)?;
    stmt.query_map([since_us], |r| {
        Ok(KeyRow {
            request_id: r.get(0)?,
            key_seal: r.get(1)?,
            fingerprint: r.get(2)?,
            key_outcome: r.get(3)?,
            resolved_us: r.get(4)?,
            resolved_booked: r.get::<_, Option<bool>>(5)?.unwrap_or(false),
            resolved_guid: r.get(6)?,
            resolved_number: r.get(7)?,
            slot: r.get(8)?,
            backend: r.get(9)?,
        })
    })?
    .collect()
}

/// The journal's own fingerprint key (hex), made on first use: keys and their journal records
/// must still match after a restart when the config names none.
fn meta_secret(conn: &mut Connection) -> rusqlite::Result<String> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|_| rusqlite::Error::InvalidQuery)?;
    let mut text = [0u8; 64];
    conn.execute(META_KEY_INSERT, [hex32_into(&fresh, &mut text)])?;
    conn.query_row(META_KEY_SELECT, [], |r| r.get(0))
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
    let conn = open_existing(path)?;
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
    let conn = open_existing(path)?;
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM journal WHERE request_id = ?1"),
        [request_id],
        row,
    )
    .optional()
}

/// The booking that made the appointment `guid` (lowercase hyphenated).
pub fn by_appointment(path: &Path, guid: &str) -> rusqlite::Result<Option<Row>> {
    let conn = open_existing(path)?;
    conn.query_row(&format!("SELECT {COLUMNS}{BY_APPOINTMENT}"), [guid], row)
        .optional()
}

pub fn search(path: &Path, term: &str) -> rusqlite::Result<Vec<Row>> {
    let conn = open_existing(path)?;
    let indexed: i64 = conn.query_row(
        "SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM journal_meta \
         WHERE name = 'search_rowid'), 0)",
        [],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS}{SEARCH_SQLITE}"))?;
    let rows = stmt.query_map(params![term, indexed], row)?;
    rows.collect()
}

/// Puts the search keys (slot, referral, trace id) of up to [`INDEX_CHUNK`] records written
/// since the last call into `journal_search`, and moves the mark.
fn index_some(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let last: i64 = tx.query_row(
        "SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM journal_meta \
         WHERE name = 'search_rowid'), 0)",
        [],
        |r| r.get(0),
    )?;
    let top: Option<i64> = tx.query_row(
        "SELECT MAX(rowid) FROM (SELECT rowid FROM journal WHERE rowid > ?1 \
         ORDER BY rowid LIMIT ?2)",
        params![last, INDEX_CHUNK],
        |r| r.get(0),
    )?;
    let Some(top) = top else {
        return Ok(());
    };
    tx.execute(
        "INSERT OR IGNORE INTO journal_search (key, request_id) \
         SELECT k, request_id FROM (\
         SELECT slot AS k, request_id FROM journal WHERE rowid > ?1 AND rowid <= ?2 \
         UNION ALL SELECT direction_guid, request_id FROM journal WHERE rowid > ?1 AND rowid <= ?2 \
         UNION ALL SELECT trace_id, request_id FROM journal WHERE rowid > ?1 AND rowid <= ?2) \
         WHERE k IS NOT NULL",
        params![last, top],
    )?;
    tx.execute(
        "INSERT INTO journal_meta (name, value) VALUES ('search_rowid', ?1) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [top.to_string()],
    )?;
    tx.commit()
}

pub fn audit(path: &Path, e: &super::AuditEntry) -> rusqlite::Result<()> {
    let conn = open_existing(path)?;
    conn.execute(
        AUDIT_INSERT,
        params![
            e.id, e.time_us, e.who, e.via, e.action, e.target, e.address, e.outcome, e.detail
        ],
    )?;
    Ok(())
}

pub fn audit_list(
    path: &Path,
    before: &str,
    limit: u32,
) -> rusqlite::Result<Vec<super::AuditEntry>> {
    let conn = open_existing(path)?;
    let mut stmt = conn.prepare(AUDIT_LIST)?;
    let rows = stmt.query_map(params![before, limit], |r| {
        Ok(super::AuditEntry {
            id: r.get(0)?,
            time_us: r.get(1)?,
            who: r.get(2)?,
            via: r.get(3)?,
            action: r.get(4)?,
            target: r.get(5)?,
            address: r.get(6)?,
            outcome: r.get(7)?,
            detail: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// Records `r` on an open `unknown` record; false if there is none such. A cancellation the
/// clinic confirmed marks its booking cancelled in the same transaction.
pub fn resolve(
    path: &Path,
    request_id: &str,
    r: &Resolution,
    cancels: Option<&super::Cancels>,
) -> rusqlite::Result<bool> {
    let mut conn = open_existing(path)?;
    let tx = conn.transaction()?;
    let n = tx.execute(
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
    if n == 1
        && let Some(c) = cancels
    {
        tx.execute(
            MARK_CANCELLED,
            params![r.time_us, c.reason, c.by, request_id, c.booking],
        )?;
    }
    tx.commit()?;
    Ok(n == 1)
}

/// Takes back the resolution recorded at `time_us` (its key store would not follow it).
pub fn unresolve(path: &Path, request_id: &str, time_us: i64) -> rusqlite::Result<bool> {
    let conn = open_existing(path)?;
    let n = conn.execute(UNRESOLVE, params![request_id, time_us])?;
    Ok(n == 1)
}

/// The fingerprint of a keyed attempt (hex), for a resolution that must make its key again.
pub fn fingerprint(path: &Path, request_id: &str) -> rusqlite::Result<Option<String>> {
    let conn = open_existing(path)?;
    conn.query_row(FINGERPRINT, [request_id], |r| r.get(0))
        .optional()
        .map(Option::flatten)
}

pub fn summary(path: &Path) -> rusqlite::Result<Vec<Summary>> {
    let conn = open_existing(path)?;
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
/// Attempts go by their request id (UUIDv7: its time): their primary key is their only index.
pub fn prune(path: &Path, before_us: i64, before_id: &str) -> rusqlite::Result<usize> {
    let conn = open_existing(path)?;
    let n = conn.execute(
        "DELETE FROM journal WHERE time_us < ?1 \
         AND NOT (outcome = 'unknown' AND resolved_us IS NULL)",
        [before_us],
    )?;
    conn.execute(
        "DELETE FROM journal_attempts WHERE request_id < ?1",
        [before_id],
    )?;
    conn.execute("DELETE FROM audit WHERE id < ?1", [before_id])?;
    Ok(n)
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
        reason: r.get(24)?,
        operation: r.get(25)?,
        appointment_source: r.get(26)?,
        appointment_created: r.get(27)?,
        cancel_reason: r.get(28)?,
        cancelled_us: r.get(29)?,
        cancelled_by: r.get(30)?,
        linked_request_id: r.get(31)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{Entry, Kind, Operation, now_us};
    use uuid::Uuid;

    fn booked(time_us: i64) -> Entry {
        Entry {
            request_id: Uuid::now_v7(),
            time_us,
            integrator: "portal".into(),
            lpu: Some(Uuid::new_v4()),
            backend: Some("mis-a".into()),
            slot: Some(Uuid::new_v4()),
            direction: Some(Uuid::new_v4()),
            key: None,
            outcome: Kind::Booked,
            appointment: Some((Uuid::new_v4(), "7".into())),
            status: 200,
            message_code: None,
            mis_status: Some(200),
            total_us: 900,
            mis_us: Some(400),
            trace_id: Some(*b"4bf92f3577b34da6a3ce929d0e0e4736"),
            key_outcome: None,
            made: None,
            operation: Operation::Book,
            cancel: None,
        }
    }

    #[test]
    fn search_finds_records_before_and_after_their_keys_are_indexed_and_prune_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let mut sink = SqliteSink::new(path.clone(), false);
        let old = booked(now_us() - 3_600_000_000);
        let new = booked(now_us());
        let items = [Item::Outcome(old.clone()), Item::Outcome(new.clone())];
        sink.write(&items.iter().collect::<Vec<_>>()).unwrap();
        let found = |term: Uuid| {
            search(&path, &term.hyphenated().to_string())
                .unwrap()
                .into_iter()
                .map(|r| r.request_id)
                .collect::<Vec<_>>()
        };
        let id = |e: &Entry| e.request_id.hyphenated().to_string();
        let indexed = || -> i64 {
            open_existing(&path)
                .unwrap()
                .query_row("SELECT COUNT(*) FROM journal_search", [], |r| r.get(0))
                .unwrap()
        };
        // Not indexed yet: found by their own columns.
        assert_eq!(indexed(), 0);
        assert_eq!(found(new.slot.unwrap()), [id(&new)]);
        sink.index().unwrap();
        assert_eq!(indexed(), 6, "slot, referral and trace id of each");
        for term in [new.slot, new.direction, Some(new.request_id)] {
            assert_eq!(found(term.unwrap()), [id(&new)]);
        }
        assert_eq!(found(new.appointment.as_ref().unwrap().0), [id(&new)]);
        let by_trace = search(&path, "4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(by_trace.len(), 2, "newest first");
        assert_eq!(by_trace[0].request_id, id(&new));
        // Pruned: its search keys go with it.
        prune(&path, now_us() - 60_000_000, "0").unwrap();
        assert!(found(old.slot.unwrap()).is_empty());
        assert_eq!(indexed(), 3);
    }
}
