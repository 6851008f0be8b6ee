//! What changes between two configurations: `mis-gateway check --against OLD.toml` prints it so
//! ops see the effect of a file before it goes live. Secrets are compared, never shown.
//!
//! Settings are compared as written, key by key, so every key (also one added later) is seen;
//! routes and LPU rights as validated (GUIDs in any letter case are one), and resolved secrets
//! and certificate files by value, since a rotated secret keeps its name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{Config, LpuRights};

/// Settings read once when the listeners start: a reload cannot change them.
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.header_read_timeout_ms",
    "server.max_connections",
    "server.max_connections_per_client",
    "server.drain_timeout_ms",
    "server.trusted_proxies",
    "server.proxy_protocol",
    "admin.listen",
    "idempotency.ttl_seconds",
    "idempotency.max_keys",
    "idempotency.store",
    "idempotency.fingerprint_key_env",
    "idempotency.lease_ms",
    "idempotency.username",
    "idempotency.password_env",
    "idempotency.password_file",
    "idempotency.ca_file",
    "idempotency.connect_timeout_ms",
    "idempotency.command_timeout_ms",
    "journal.enabled",
    "journal.on_error",
    "journal.path",
    "journal.url",
    "journal.password_env",
    "journal.password_file",
    "journal.retention_days",
    "journal.synchronous",
];

/// Every difference from `old` to `new`, one line each, in the file's section order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub changes: Vec<String>,
}

impl Diff {
    /// `old` and `new` are validated configs; `old_text` and `new_text` the files they came
    /// from (valid TOML, since they validated).
    pub fn between(old: &Config, old_text: &str, new: &Config, new_text: &str) -> Diff {
        let parse = |t: &str| t.parse::<toml::Table>().unwrap_or_default();
        let (old_file, new_file) = (parse(old_text), parse(new_text));
        let mut d = Diff::default();
        let sections: BTreeSet<&String> = old_file.keys().chain(new_file.keys()).collect();
        // The reference's order first, then any other section alphabetically.
        let known = [
            "server",
            "admin",
            "idempotency",
            "integrators",
            "operators",
            "backends",
            "routes",
        ];
        let others = sections.iter().filter(|s| !known.contains(&s.as_str()));
        for section in known.iter().copied().chain(others.map(|s| s.as_str())) {
            let (o, n) = (old_file.get(section), new_file.get(section));
            match section {
                "integrators" => d.integrators(old, new, o, n),
                "operators" => d.operators(o, n),
                "backends" => d.backends(o, n),
                "routes" => d.routes(old, new),
                _ => d.value(section, o, n),
            }
        }
        d.secrets(old, &old_file, new, &new_file);
        d
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    fn push(&mut self, line: String) {
        self.changes.push(line);
    }

    /// One setting (a table is compared key by key) at dotted path `path`.
    fn value<'a>(
        &mut self,
        path: &str,
        old: Option<&'a toml::Value>,
        new: Option<&'a toml::Value>,
    ) {
        let empty = toml::Table::new();
        let table = |v: Option<&'a toml::Value>| match v {
            Some(toml::Value::Table(t)) => Some(t),
            None => Some(&empty),
            Some(_) => None,
        };
        match (table(old), table(new)) {
            // A table added or removed whole is shown key by key too.
            (Some(o), Some(n)) if old.is_some() || new.is_some() => {
                let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
                for k in keys {
                    self.value(&format!("{path}.{k}"), o.get(k), n.get(k));
                }
                return;
            }
            _ => {}
        }
        match (old, new) {
            (o, n) if o == n => {}
            (o, n) => {
                let restart = if RESTART_ONLY.contains(&path) {
                    " (takes effect after a restart)"
                } else {
                    ""
                };
                self.push(format!("{path}: {} -> {}{restart}", show(o), show(n)));
            }
        }
    }

    /// The keys of one `[[integrators]]` or `[[backends]]` entry, under `what`.
    fn entry(&mut self, what: &str, o: &toml::Table, n: &toml::Table, skip: &[&str]) {
        let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        for k in keys {
            let (ov, nv) = (o.get(k), n.get(k));
            if skip.contains(&k.as_str()) || ov == nv {
                continue;
            }
            if k == "password_hash" {
                self.push(format!("{what}: password_hash changed"));
            } else {
                self.push(format!("{what}: {k}: {} -> {}", show(ov), show(nv)));
            }
        }
    }

    fn integrators(
        &mut self,
        old: &Config,
        new: &Config,
        o: Option<&toml::Value>,
        n: Option<&toml::Value>,
    ) {
        let (o, n) = (by_key(o, "login"), by_key(n, "login"));
        for (login, entry) in &n {
            match o.get(login) {
                None => self.push(format!("integrator added: {login}")),
                Some(before) => {
                    let what = format!("integrator \"{login}\"");
                    self.entry(&what, before, entry, &["lpus"]);
                    let (a, b) = (
                        old.integrators.get(login.as_str()),
                        new.integrators.get(login.as_str()),
                    );
                    if let (Some(a), Some(b)) = (a.map(|i| &i.lpus), b.map(|i| &i.lpus))
                        && a != b
                    {
                        self.push(format!("{what}: lpus: {}", rights_change(a, b)));
                    }
                }
            }
        }
        for login in o.keys().filter(|l| !n.contains_key(*l)) {
            self.push(format!("integrator removed: {login}"));
        }
    }

    /// Console operators: added, removed, their role; a new hash says only "changed".
    fn operators(&mut self, o: Option<&toml::Value>, n: Option<&toml::Value>) {
        let (o, n) = (by_key(o, "login"), by_key(n, "login"));
        for (login, entry) in &n {
            match o.get(login) {
                None => self.push(format!("operator added: {login}")),
                Some(before) => self.entry(&format!("operator \"{login}\""), before, entry, &[]),
            }
        }
        for login in o.keys().filter(|l| !n.contains_key(*l)) {
            self.push(format!("operator removed: {login}"));
        }
    }

    fn backends(&mut self, o: Option<&toml::Value>, n: Option<&toml::Value>) {
        let (o, n) = (by_key(o, "name"), by_key(n, "name"));
        for (name, entry) in &n {
            match o.get(name) {
                None => self.push(format!("backend added: {name}")),
                Some(before) => self.entry(&format!("backend \"{name}\""), before, entry, &[]),
            }
        }
        for name in o.keys().filter(|b| !n.contains_key(*b)) {
            self.push(format!("backend removed: {name}"));
        }
    }

    fn routes(&mut self, old: &Config, new: &Config) {
        let name = |c: &Config, i: usize| c.backends[i].name.to_string();
        let mut lines = Vec::new();
        for (lpu, &ni) in &new.routes {
            match old.routes.get(lpu) {
                None => lines.push(format!("route added: {lpu} -> {}", name(new, ni))),
                Some(&oi) if name(old, oi) != name(new, ni) => lines.push(format!(
                    "route moved: {lpu}: {} -> {}",
                    name(old, oi),
                    name(new, ni)
                )),
                Some(_) => {}
            }
        }
        for (lpu, &oi) in &old.routes {
            if !new.routes.contains_key(lpu) {
                lines.push(format!("route removed: {lpu} (was {})", name(old, oi)));
            }
        }
        lines.sort();
        self.changes.extend(lines);
    }

    /// Secrets and certificate files whose names stayed but whose values changed.
    fn secrets(&mut self, old: &Config, of: &toml::Table, new: &Config, nf: &toml::Table) {
        let same_at = |path: &[&str]| lookup(of, path) == lookup(nf, path);
        if old.server.tls.is_some()
            && new.server.tls.is_some()
            && old.server.tls != new.server.tls
            && same_at(&["server", "tls"])
        {
            self.push("server.tls: the certificate or key file's contents changed".into());
        }
        if old.admin.token.is_some()
            && old.admin.token != new.admin.token
            && same_at(&["admin", "token_env"])
        {
            self.push("admin.token_env: the token's value changed".into());
        }
        let (ok, nk) = (
            &old.idempotency.fingerprint_key,
            &new.idempotency.fingerprint_key,
        );
        if ok.is_some() && ok != nk && same_at(&["idempotency", "fingerprint_key_env"]) {
            self.push(
                "idempotency.fingerprint_key_env: the key's value changed (takes effect after a restart)"
                    .into(),
            );
        }
        let (ob, nb) = (
            by_key(of.get("backends"), "name"),
            by_key(nf.get("backends"), "name"),
        );
        for b in &new.backends {
            let (Some(o), Some(raw_o), Some(raw_n)) =
                (old.backend(&b.name), ob.get(&*b.name), nb.get(&*b.name))
            else {
                continue;
            };
            let same = |keys: &[&str]| keys.iter().all(|k| raw_o.get(*k) == raw_n.get(*k));
            if o.authorization != b.authorization
                && same(&["login", "password_env", "password_file"])
            {
                self.push(format!(
                    "backend \"{}\": credentials: the secret's value changed",
                    b.name
                ));
            }
            if o.tls != b.tls && same(&["url", "ca_file", "client_cert", "client_key"]) {
                self.push(format!(
                    "backend \"{}\": tls: the certificate files' contents changed",
                    b.name
                ));
            }
        }
    }
}

/// The entries of an array of tables by their `key` (entries without one are left out: they
/// did not validate).
fn by_key<'a>(v: Option<&'a toml::Value>, key: &str) -> BTreeMap<String, &'a toml::Table> {
    v.and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let t = e.as_table()?;
            Some((t.get(key)?.as_str()?.to_owned(), t))
        })
        .collect()
}

fn lookup<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = t.get(*first)?;
    match rest {
        [] => Some(v),
        _ => lookup(v.as_table()?, rest),
    }
}

/// A setting's value as written, or `(unset)`.
fn show(v: Option<&toml::Value>) -> String {
    match v {
        None => "(unset)".into(),
        Some(toml::Value::Table(_)) => "(a table)".into(),
        Some(v) => v.to_string(),
    }
}

/// LPU rights before and after, in words: `"*"` or the GUIDs added and removed.
fn rights_change(old: &LpuRights, new: &LpuRights) -> String {
    let guids = |s: &std::collections::HashSet<uuid::Uuid>| {
        let mut v: Vec<String> = s.iter().map(ToString::to_string).collect();
        v.sort();
        v.join(", ")
    };
    match (old, new) {
        (LpuRights::All, LpuRights::Only(n)) => format!("\"*\" -> {} LPUs: {}", n.len(), guids(n)),
        (LpuRights::Only(o), LpuRights::All) => format!("{} LPUs -> \"*\"", o.len()),
        (LpuRights::Only(o), LpuRights::Only(n)) => {
            let mut parts = Vec::new();
            let added: std::collections::HashSet<_> = n.difference(o).copied().collect();
            let removed: std::collections::HashSet<_> = o.difference(n).copied().collect();
            if !added.is_empty() {
                parts.push(format!("added {}", guids(&added)));
            }
            if !removed.is_empty() {
                parts.push(format!("removed {}", guids(&removed)));
            }
            parts.join("; ")
        }
        (LpuRights::All, LpuRights::All) => "unchanged".into(),
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        for line in &self.changes {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}
