//! systemd's notify protocol (`Type=notify`): READY at start, RELOADING/READY around a reload,
//! STATUS with the live generation or the rejection, STOPPING at shutdown. A no-op unless
//! systemd (or a test) set `NOTIFY_SOCKET`.

use sd_notify::NotifyState;

use crate::edge::reload::Outcome;

/// The listeners are bound and `generation` serves.
pub fn ready(generation: u64) {
    let status = format!("generation {generation} live");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// A reload begins. systemd ≥ 253 wants the monotonic time with it, to tell this reload's
/// READY from an earlier one.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A reload ended: READY again, and a status line `systemctl status` shows.
pub fn reloaded(trigger: &str, outcome: &Outcome) {
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&status(trigger, outcome)),
    ]);
}

/// The drain began.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// The STATUS line after a reload: one line, since the protocol separates fields by newlines.
fn status(trigger: &str, outcome: &Outcome) -> String {
    let text = match outcome {
        Outcome::Applied { generation, sha256 } => {
            format!("generation {generation} live (sha256 {sha256}); reload ({trigger}) applied")
        }
        Outcome::Unchanged { generation } => {
            format!("generation {generation} live; reload ({trigger}) unchanged")
        }
        Outcome::Rejected {
            generation,
            problems,
        } => {
            let first = problems
                .first()
                .map(|p| format!(", first: {}: {}", p.location, p.message))
                .unwrap_or_default();
            format!(
                "generation {generation} live; reload ({trigger}) rejected: {} problem(s){first}",
                problems.len()
            )
        }
    };
    text.replace(['\n', '\r'], " ")
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Problem;

    #[test]
    fn a_status_is_one_line_naming_the_generation_and_the_outcome() {
        let rejected = Outcome::Rejected {
            generation: 3,
            problems: vec![Problem {
                location: "routes.toml:4".into(),
                message: "unknown key\n`x`".into(),
            }],
        };
        assert_eq!(
            status("sighup", &rejected),
            "generation 3 live; reload (sighup) rejected: 1 problem(s), first: routes.toml:4: unknown key `x`"
        );
        assert_eq!(
            status("file", &Outcome::Unchanged { generation: 2 }),
            "generation 2 live; reload (file) unchanged"
        );
    }
}
