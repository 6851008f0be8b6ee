//! The audit trail of operator actions: every sign-in (and failed one), sign-out, resolution and
//! reload, by a console operator or by the admin token (`token`). Kept with the journal (its
//! `audit` table, pruned with it after `retention_days`); a gateway without a journal keeps the
//! last [`MEMORY`] entries in memory. Every entry is also one `audit` log event.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::journal::{AuditEntry, Journal};

/// Entries a gateway without a journal keeps.
pub const MEMORY: usize = 10_000;

/// Where operator actions are kept.
pub struct AuditLog {
    journal: Option<Arc<Journal>>,
    memory: Mutex<VecDeque<AuditEntry>>,
}

/// One action, before it is kept.
pub struct Action<'a> {
    pub who: &'a str,
    pub via: &'static str,
    pub action: &'static str,
    pub target: Option<&'a str>,
    pub address: Option<std::net::IpAddr>,
    pub outcome: &'static str,
    pub detail: Option<String>,
}

impl AuditLog {
    pub fn new(journal: Option<Arc<Journal>>) -> AuditLog {
        AuditLog {
            journal,
            memory: Mutex::default(),
        }
    }

    /// Keeps `a`. A journal that cannot take it is logged as an error (the action itself has
    /// happened and is not undone), and the entry is kept in memory instead.
    pub async fn record(&self, a: Action<'_>) {
        let entry = AuditEntry {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            time_us: crate::journal::record::now_us(),
            who: a.who.to_owned(),
            via: a.via.to_owned(),
            action: a.action.to_owned(),
            target: a.target.map(str::to_owned),
            address: a.address.map(|ip| ip.to_string()),
            outcome: a.outcome.to_owned(),
            detail: a.detail,
        };
        tracing::info!(
            target: "audit",
            who = %entry.who,
            via = %entry.via,
            action = %entry.action,
            target_id = entry.target.as_deref(),
            client = entry.address.as_deref(),
            outcome = %entry.outcome,
            "operator action"
        );
        if let Some(j) = &self.journal {
            match j.audit(entry.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "audit: the journal could not keep an operator action; kept in memory")
                }
            }
        }
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MEMORY {
            m.pop_front();
        }
        m.push_back(entry);
    }

    /// Entries newest first, older than `before` (an entry's id) when given: the journal's and
    /// those kept in memory.
    pub async fn list(&self, before: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, String> {
        let mut out = match &self.journal {
            Some(j) => j.audit_list(before, limit).await?,
            None => Vec::new(),
        };
        {
            let m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(
                m.iter()
                    .filter(|e| before.is_none_or(|b| e.id.as_str() < b))
                    .cloned(),
            );
        }
        out.sort_by(|a, b| b.id.cmp(&a.id));
        out.truncate(limit as usize);
        Ok(out)
    }
}
