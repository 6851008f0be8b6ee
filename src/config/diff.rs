//! What changes between two configurations: `mis-gateway check --against OLD.toml` prints it so
//! ops see the effect of a file before it goes live. Secrets are compared, never shown.

use std::collections::BTreeSet;
use std::fmt;

use super::Config;

/// Differences from `old` to `new`, each list sorted for stable output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub routes_added: Vec<(String, String)>,
    pub routes_removed: Vec<(String, String)>,
    /// LPU, old backend, new backend.
    pub routes_moved: Vec<(String, String, String)>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    /// Name and which settings changed.
    pub backends_changed: Vec<(String, Vec<&'static str>)>,
    pub integrators_added: Vec<String>,
    pub integrators_removed: Vec<String>,
    pub integrators_changed: Vec<(String, Vec<&'static str>)>,
}

/// The names of the settings whose flag is set, in the given order.
fn changed<const N: usize>(settings: [(&'static str, bool); N]) -> Vec<&'static str> {
    settings
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
}

impl Diff {
    pub fn between(old: &Config, new: &Config) -> Diff {
        let mut d = Diff::default();
        let name = |c: &Config, i: usize| c.backends[i].name.to_string();
        for (lpu, &ni) in &new.routes {
            match old.routes.get(lpu) {
                None => d.routes_added.push((lpu.to_string(), name(new, ni))),
                Some(&oi) if name(old, oi) != name(new, ni) => {
                    d.routes_moved
                        .push((lpu.to_string(), name(old, oi), name(new, ni)))
                }
                Some(_) => {}
            }
        }
        for (lpu, &oi) in &old.routes {
            if !new.routes.contains_key(lpu) {
                d.routes_removed.push((lpu.to_string(), name(old, oi)));
            }
        }
        for b in &new.backends {
            match old.backend(&b.name) {
                None => d.backends_added.push(b.name.to_string()),
                Some(o) => {
                    let what = changed([
                        ("url", o.url != b.url),
                        ("login", o.login != b.login),
                        ("credentials", o.authorization != b.authorization),
                        ("timezone", o.timezone_name != b.timezone_name),
                        (
                            "timeouts",
                            (o.timeout, o.connect_timeout, o.headers_timeout)
                                != (b.timeout, b.connect_timeout, b.headers_timeout),
                        ),
                        (
                            "max_response_bytes",
                            o.max_response_bytes != b.max_response_bytes,
                        ),
                        ("limits", o.limits != b.limits),
                        ("tls", o.tls != b.tls),
                    ]);
                    if !what.is_empty() {
                        d.backends_changed.push((b.name.to_string(), what));
                    }
                }
            }
        }
        for o in &old.backends {
            if new.backend(&o.name).is_none() {
                d.backends_removed.push(o.name.to_string());
            }
        }
        let logins: BTreeSet<_> = old
            .integrators
            .keys()
            .chain(new.integrators.keys())
            .collect();
        for login in logins {
            match (old.integrators.get(login), new.integrators.get(login)) {
                (None, Some(_)) => d.integrators_added.push(login.to_string()),
                (Some(_), None) => d.integrators_removed.push(login.to_string()),
                (Some(o), Some(n)) => {
                    let what = changed([
                        ("password", o.password_hash != n.password_hash),
                        ("lpus", o.lpus != n.lpus),
                    ]);
                    if !what.is_empty() {
                        d.integrators_changed.push((login.to_string(), what));
                    }
                }
                (None, None) => {}
            }
        }
        d.routes_added.sort();
        d.routes_removed.sort();
        d.routes_moved.sort();
        d.backends_added.sort();
        d.backends_removed.sort();
        d.backends_changed.sort();
        d.integrators_changed.sort();
        d
    }

    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        for (lpu, b) in &self.routes_added {
            writeln!(f, "route added:   {lpu} -> {b}")?;
        }
        for (lpu, b) in &self.routes_removed {
            writeln!(f, "route removed: {lpu} (was {b})")?;
        }
        for (lpu, o, n) in &self.routes_moved {
            writeln!(f, "route moved:   {lpu}: {o} -> {n}")?;
        }
        for b in &self.backends_added {
            writeln!(f, "backend added:   {b}")?;
        }
        for b in &self.backends_removed {
            writeln!(f, "backend removed: {b}")?;
        }
        for (b, what) in &self.backends_changed {
            writeln!(f, "backend changed: {b} ({})", what.join(", "))?;
        }
        for i in &self.integrators_added {
            writeln!(f, "integrator added:   {i}")?;
        }
        for i in &self.integrators_removed {
            writeln!(f, "integrator removed: {i}")?;
        }
        for (i, what) in &self.integrators_changed {
            writeln!(f, "integrator changed: {i} ({})", what.join(", "))?;
        }
        Ok(())
    }
}
