//! `[journal]`: where the booking journal lives (a SQLite file beside routes.toml, or a
//! PostgreSQL database shared by replicas), how long records are kept, and what the gateway does
//! when it cannot write one. On by default: a file without the section has `journal.db` beside
//! it; `enabled = false` is the explicit opt-out.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{Secret, Validator, raw};

#[derive(Clone, PartialEq, Eq)]
pub struct JournalSettings {
    pub store: JournalStore,
    pub retention: Duration,
    /// SQLite: fsync every commit (`"full"`, the default) or leave the WAL to the OS until a
    /// checkpoint (`"normal"`: survives a gateway crash, not a power loss).
    pub fsync: bool,
    pub on_error: OnJournalError,
}

/// What a booking does when its attempt cannot be journaled in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnJournalError {
    /// Not sent: 503 `95030` with `Retry-After` (nothing reaches a MIS unrecorded).
    Refuse,
    /// Sent anyway; its records wait in memory (lost if the process dies before the database
    /// is back).
    Book,
}

/// The default journal's file name, beside routes.toml.
pub const DEFAULT_FILE: &str = "journal.db";

#[derive(Clone, PartialEq, Eq)]
pub enum JournalStore {
    /// The file, resolved against routes.toml's folder.
    Sqlite(PathBuf),
    /// Connection settings with the password from `password_env` / `password_file`.
    Postgres(Box<tokio_postgres::Config>),
}

impl fmt::Debug for JournalSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalSettings")
            .field("store", &self.store)
            .field("retention", &self.retention)
            .field("fsync", &self.fsync)
            .field("on_error", &self.on_error)
            .finish()
    }
}

impl fmt::Debug for JournalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalStore::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            // Not the config itself: it holds the password.
            JournalStore::Postgres(c) => {
                write!(f, "Postgres({:?}/{:?})", c.get_hosts(), c.get_dbname())
            }
        }
    }
}

const DEFAULT_RETENTION_DAYS: u64 = 90;

impl Validator<'_> {
    /// `default_file`: a config read from a file gets a journal beside it when it has no
    /// `[journal]` section.
    pub(super) fn journal(
        &mut self,
        v: Option<toml::Value>,
        default_file: bool,
    ) -> Option<JournalSettings> {
        let raw: raw::Journal = match v {
            Some(v) => self.typed("journal", v)?,
            None if default_file => raw::Journal {
                path: Some(DEFAULT_FILE.into()),
                ..raw::Journal::default()
            },
            None => return None,
        };
        if raw.enabled == Some(false) {
            self.warnings.push(
                "the booking journal is off ([journal] enabled = false): a restart forgets every idempotency key, and bookings at a MIS when the gateway dies leave no record".into(),
            );
            return None;
        }
        let on_error = match raw.on_error.as_deref() {
            None | Some("refuse") => OnJournalError::Refuse,
            Some("book") => OnJournalError::Book,
            Some(_) => {
                self.problem("journal.on_error", "must be \"refuse\" or \"book\"");
                OnJournalError::Refuse
            }
        };
        let days = raw.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
        if !(1..=3650).contains(&days) {
            self.problem("journal.retention_days", "must be between 1 and 3650");
        }
        let retention = Duration::from_secs(days * 86_400);
        let fsync = match raw.synchronous.as_deref() {
            None | Some("full") => true,
            Some("normal") if raw.url.is_none() => false,
            Some("normal") => {
                self.problem("journal.synchronous", "applies to a SQLite path only");
                true
            }
            Some(_) => {
                self.problem("journal.synchronous", "must be \"full\" or \"normal\"");
                true
            }
        };
        let path = match (&raw.path, &raw.url) {
            // A file's section that names neither store keeps the default file.
            (None, None) if default_file => Some(DEFAULT_FILE.to_owned()),
            (path, _) => path.clone(),
        };
        let store = match (path, raw.url.clone()) {
            (Some(_), Some(_)) | (None, None) => {
                self.problem(
                    "journal",
                    "needs exactly one of path (SQLite) or url (PostgreSQL)",
                );
                return None;
            }
            (Some(path), None) => {
                if raw.password_env.is_some() || raw.password_file.is_some() {
                    self.problem(
                        "journal.password_env",
                        "is for a PostgreSQL url; a SQLite path takes no password",
                    );
                }
                if path.is_empty() {
                    self.problem("journal.path", "must name a file");
                    return None;
                }
                JournalStore::Sqlite(self.base.join(path))
            }
            (None, Some(url)) => JournalStore::Postgres(Box::new(self.journal_url(&url, &raw)?)),
        };
        Some(JournalSettings {
            store,
            retention,
            fsync,
            on_error,
        })
    }

    fn journal_url(&mut self, url: &str, raw: &raw::Journal) -> Option<tokio_postgres::Config> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            self.problem(
                "journal.url",
                "must be a postgres://host[:port]/database URL",
            );
            return None;
        }
        let mut config: tokio_postgres::Config = match url.parse() {
            Ok(c) => c,
            Err(_) => {
                // The parser's message may quote the URL, which may hold a password.
                self.problem("journal.url", "is not a valid PostgreSQL connection URL");
                return None;
            }
        };
        if config.get_password().is_some() {
            self.problem(
                "journal.url",
                "must not contain a password: use password_env or password_file",
            );
            return None;
        }
        if config.get_user().is_none() {
            self.problem(
                "journal.url",
                "must name the user (postgres://user@host/db)",
            );
        }
        if config.get_dbname().is_none() {
            self.problem(
                "journal.url",
                "must name the database (postgres://user@host/db)",
            );
        }
        let password = match (&raw.password_env, &raw.password_file) {
            (Some(_), Some(_)) => {
                self.problem(
                    "journal",
                    "takes one of password_env or password_file, not both",
                );
                return None;
            }
            (None, None) => None,
            (Some(name), None) => Some(self.password("journal", Secret::Env(name), "journal")?),
            (None, Some(file)) => Some(self.password("journal", Secret::File(file), "journal")?),
        };
        if let Some(p) = password {
            config.password(p);
        }
        Some(config)
    }
}
