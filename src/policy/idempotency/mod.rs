//! Safe retries: `Idempotency-Key` (IETF httpapi draft) and double-submit suppression.
//!
//! A key is scoped to the integrator: the store is addressed by SHA-256(login, key), so two
//! integrators never share an entry. The first request with a key *claims* it; a repeat while the
//! claim is in flight gets 409, a repeat with another body 422, a repeat after completion the
//! stored outcome without calling the MIS. The store keeps no patient data: a keyed hash of the
//! body and the appointment's technical fields or the error's status, code and text. A replayed
//! appointment carries the `direction` of the (identical) request.
//!
//! [`Store`] is a trait so that a shared store can serve several replicas. A claim has a lease
//! its booking renews; a claim whose lease lapsed with no outcome is reported as [`Begin::Lapsed`].

pub(crate) mod keyed;
pub mod redis;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where an entry lives: SHA-256 over the integrator and its key.
pub type Slot = [u8; 32];
/// A keyed hash of the request body.
pub type Fingerprint = [u8; 32];

/// The longest key accepted (the draft leaves it to the server; Stripe uses 255).
pub const MAX_KEY_LEN: usize = 255;

/// What a completed booking attempt is remembered as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The appointment, without `direction` (it comes from the request on replay).
    Booked {
        guid: String,
        number: String,
        slot: String,
        source: String,
        create_time: String,
    },
    /// The MIS refused the booking with its own ExceptionResponse (4xx).
    MisRejected {
        status: u16,
        code: String,
        /// Written as the gateway's replay text (`pipeline::REPLAYED_REJECTION`), never the
        /// MIS's, which may name the patient, for replicas of the previous version that replay
        /// it; this version replays that text whatever the record holds (records of earlier
        /// versions held the MIS's).
        message: String,
    },
    /// The booking may exist: the answer was lost or unusable.
    OutcomeUnknown,
    /// The MIS did not answer in time after the booking was sent.
    MisTimeout,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// This request owns the key now; it must `finish` or `release` it.
    Claimed,
    /// Another request with this key is still running.
    InFlight,
    /// The key was used with a different body.
    Mismatch,
    /// The key's first request completed with this outcome.
    Done(Outcome),
    /// The key's claim lost its lease with no outcome recorded (its replica died or hung while
    /// the booking was at the MIS): the booking may exist and must not be sent again.
    Lapsed,
}

/// The lease of a store whose claims never lapse.
pub const NO_LEASE: Duration = Duration::MAX;

#[derive(Debug, Clone, thiserror::Error)]
#[error("idempotency store unavailable: {0}")]
pub struct StoreError(pub String);

/// Where claims and outcomes are kept. Implementations must make `begin` atomic.
pub trait Store: Send + Sync {
    fn begin(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
    ) -> BoxFuture<'_, Result<Begin, StoreError>>;
    fn finish(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
        outcome: Outcome,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Gives the key up (nothing was sent): the next request with it is sent. Only the claim's
    /// own holder releases it.
    fn release(&self, slot: Slot) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Extends this holder's claim on `slot` by a lease; false if it holds no claim there.
    fn renew(&self, slot: Slot) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// How long a claim lives without [`Store::renew`]; [`NO_LEASE`]: it never lapses (a store
    /// that dies with its claims' owner), and bookings need not renew it.
    fn lease(&self) -> Duration;
    /// The store lives in this process: its calls never fail (a caller need not keep a copy of
    /// what it writes) and its claims die with their owner.
    fn in_process(&self) -> bool {
        false
    }
    /// Settles a key whose outcome is unknown (recorded as unknown, or a lapsed claim) from the
    /// booking journal: `Some(outcome)` replaces it by that outcome, `None` releases the key so
    /// the next request is sent. A key the store no longer holds (its TTL passed, a restart
    /// emptied the store) is made again with `fingerprint` for `Some`, and is already released
    /// for `None`. False if the entry holds a live claim or a final outcome.
    fn resolve(
        &self,
        slot: Slot,
        fingerprint: Option<Fingerprint>,
        booked: Option<Outcome>,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Whether the store came up empty since it was last asked (a Redis restarted without its
    /// data): the journal then puts back the keys it remembers. An in-process store is never
    /// emptied under a running gateway.
    fn came_back_empty(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async { Ok(false) })
    }
    /// Puts back a key the journal remembers, unless the store holds one there already.
    fn restore(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
        outcome: Outcome,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
}

impl Outcome {
    /// The booking may or may not exist.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::OutcomeUnknown | Outcome::MisTimeout)
    }
}

#[derive(Debug, Clone)]
enum State {
    /// `None`: the claim does not lapse.
    InFlight {
        lease_until: Option<std::time::Instant>,
    },
    Done(Outcome),
}

#[derive(Debug, Clone)]
struct Entry {
    fingerprint: Fingerprint,
    state: State,
}

/// The in-process store: bounded, entries expire `ttl` after they were last written.
pub struct MemoryStore {
    entries: moka::sync::Cache<Slot, Entry>,
    lease: Duration,
}

impl MemoryStore {
    pub fn new(ttl: Duration, max_keys: u64) -> MemoryStore {
        MemoryStore {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .time_to_live(ttl)
                .build(),
            // In-process claims die with their owner: nothing to lapse, nothing to renew.
            lease: NO_LEASE,
        }
    }

    /// The same store with claims leased for `lease` (tests of lapsed claims).
    pub fn with_lease(mut self, lease: Duration) -> MemoryStore {
        self.lease = lease;
        self
    }

    fn in_flight(&self) -> State {
        State::InFlight {
            lease_until: std::time::Instant::now().checked_add(self.lease),
        }
    }
}

impl Store for MemoryStore {
    fn begin(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
    ) -> BoxFuture<'_, Result<Begin, StoreError>> {
        let entry = self.entries.entry(slot).or_insert_with(|| Entry {
            fingerprint,
            state: self.in_flight(),
        });
        let begin = if entry.is_fresh() {
            Begin::Claimed
        } else {
            let e = entry.into_value();
            match e.state {
                _ if e.fingerprint != fingerprint => Begin::Mismatch,
                State::InFlight {
                    lease_until: Some(until),
                } if until < std::time::Instant::now() => Begin::Lapsed,
                State::InFlight { .. } => Begin::InFlight,
                State::Done(o) => Begin::Done(o),
            }
        };
        Box::pin(async move { Ok(begin) })
    }

    fn finish(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
        outcome: Outcome,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.entries.insert(
            slot,
            Entry {
                fingerprint,
                state: State::Done(outcome),
            },
        );
        Box::pin(async { Ok(()) })
    }

    fn release(&self, slot: Slot) -> BoxFuture<'_, Result<(), StoreError>> {
        self.entries.invalidate(&slot);
        Box::pin(async { Ok(()) })
    }

    fn renew(&self, slot: Slot) -> BoxFuture<'_, Result<bool, StoreError>> {
        use moka::ops::compute::Op;
        let renewed = self
            .entries
            .entry(slot)
            .and_compute_with(|held| match held {
                Some(e) if matches!(e.value().state, State::InFlight { .. }) => Op::Put(Entry {
                    fingerprint: e.value().fingerprint,
                    state: self.in_flight(),
                }),
                _ => Op::Nop,
            });
        let renewed = matches!(renewed, moka::ops::compute::CompResult::ReplacedWith(_));
        Box::pin(async move { Ok(renewed) })
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn in_process(&self) -> bool {
        true
    }

    fn resolve(
        &self,
        slot: Slot,
        fingerprint: Option<Fingerprint>,
        booked: Option<Outcome>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        use moka::ops::compute::{CompResult, Op};
        let now = std::time::Instant::now();
        let result = self.entries.entry(slot).and_compute_with(|held| {
            let Some(e) = held else {
                return match (&booked, fingerprint) {
                    (Some(o), Some(fingerprint)) => Op::Put(Entry {
                        fingerprint,
                        state: State::Done(o.clone()),
                    }),
                    _ => Op::Nop,
                };
            };
            let unknown = match &e.value().state {
                State::InFlight { lease_until } => lease_until.is_some_and(|t| t < now),
                State::Done(o) => o.is_unknown(),
            };
            match (unknown, &booked) {
                (false, _) => Op::Nop,
                (true, None) => Op::Remove,
                (true, Some(o)) => Op::Put(Entry {
                    fingerprint: e.value().fingerprint,
                    state: State::Done(o.clone()),
                }),
            }
        });
        let resolved = match result {
            CompResult::ReplacedWith(_) | CompResult::Removed(_) | CompResult::Inserted(_) => true,
            // Nothing held: "not booked" is what an absent key means already.
            CompResult::StillNone(_) => booked.is_none(),
            CompResult::Unchanged(_) => false,
        };
        Box::pin(async move { Ok(resolved) })
    }

    fn restore(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
        outcome: Outcome,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.entries.entry(slot).or_insert_with(|| Entry {
            fingerprint,
            state: State::Done(outcome),
        });
        Box::pin(async { Ok(()) })
    }
}

/// Checks an `Idempotency-Key` value: 1–255 visible ASCII characters.
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The store address of `key` for `login`.
pub fn slot_of(login: &str, key: &[u8]) -> Slot {
    let mut h = Sha256::new();
    h.update((login.len() as u64).to_be_bytes());
    h.update(login.as_bytes());
    h.update(key);
    h.finalize().into()
}

/// HMAC-SHA256 of the body under `secret`: equal bodies match, the body cannot be recovered or
/// guessed from the store.
pub fn fingerprint(secret: &[u8], body: &[u8]) -> Fingerprint {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Bookings in flight without a key, by (integrator, direction, slot): a double submit of the
/// same referral into the same slot while the first is running gets 409. The set holds the
/// three as they are (the login shared with the configuration): only this process sees them.
#[derive(Default)]
pub struct InFlight {
    set: Mutex<HashSet<InFlightKey>>,
}

type InFlightKey = (Arc<str>, uuid::Uuid, uuid::Uuid);

/// Held while a keyless booking runs; frees its place when dropped.
pub struct InFlightGuard {
    owner: Arc<InFlight>,
    key: InFlightKey,
}

impl InFlight {
    pub fn try_enter(
        self: &Arc<Self>,
        login: &Arc<str>,
        direction: &uuid::Uuid,
        slot: &uuid::Uuid,
    ) -> Option<InFlightGuard> {
        let key = (login.clone(), *direction, *slot);
        let fresh = self
            .set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        fresh.then(|| InFlightGuard {
            owner: self.clone(),
            key,
        })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.owner
            .set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claim_replay_mismatch_release() {
        let s = MemoryStore::new(Duration::from_secs(60), 100);
        let slot = slot_of("portal", b"k1");
        assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::Claimed);
        assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::InFlight);
        assert_eq!(s.begin(slot, [2; 32]).await.unwrap(), Begin::Mismatch);
        s.finish(slot, [1; 32], Outcome::MisTimeout).await.unwrap();
        assert_eq!(
            s.begin(slot, [1; 32]).await.unwrap(),
            Begin::Done(Outcome::MisTimeout)
        );
        s.release(slot).await.unwrap();
        assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::Claimed);
    }

    #[tokio::test]
    async fn an_unrenewed_claim_lapses_and_resolve_settles_only_unknown_keys() {
        let s =
            MemoryStore::new(Duration::from_secs(60), 100).with_lease(Duration::from_millis(50));
        let slot = slot_of("portal", b"lease");
        assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::Claimed);
        assert!(
            !s.resolve(slot, None, None).await.unwrap(),
            "a live claim is not unknown"
        );
        assert!(s.renew(slot).await.unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.begin(slot, [1; 32]).await.unwrap() != Begin::Lapsed {
            assert!(std::time::Instant::now() < deadline, "the claim lapses");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.begin(slot, [2; 32]).await.unwrap(), Begin::Mismatch);
        let booked = Outcome::Booked {
            guid: "g".into(),
            number: "1".into(),
            slot: "s".into(),
            source: "mis".into(),
            create_time: "t".into(),
        };
        assert!(s.resolve(slot, None, Some(booked.clone())).await.unwrap());
        assert_eq!(
            s.begin(slot, [1; 32]).await.unwrap(),
            Begin::Done(booked.clone())
        );
        assert!(
            !s.resolve(slot, None, None).await.unwrap(),
            "a booking is not unknown"
        );
        assert!(!s.renew(slot).await.unwrap(), "a done key has no claim");

        let unknown = slot_of("portal", b"unknown");
        s.begin(unknown, [1; 32]).await.unwrap();
        s.finish(unknown, [1; 32], Outcome::OutcomeUnknown)
            .await
            .unwrap();
        assert!(s.resolve(unknown, None, None).await.unwrap());
        assert_eq!(s.begin(unknown, [1; 32]).await.unwrap(), Begin::Claimed);
        // A key the store lost: "not booked" holds already, "booked" makes it again.
        let absent = slot_of("portal", b"absent");
        assert!(s.resolve(absent, Some([3; 32]), None).await.unwrap());
        assert_eq!(s.begin(absent, [3; 32]).await.unwrap(), Begin::Claimed);
        s.release(absent).await.unwrap();
        assert!(
            s.resolve(absent, Some([3; 32]), Some(booked.clone()))
                .await
                .unwrap()
        );
        assert_eq!(
            s.begin(absent, [3; 32]).await.unwrap(),
            Begin::Done(booked.clone())
        );
        // Restoring never overwrites what the store holds.
        s.restore(absent, [3; 32], Outcome::OutcomeUnknown)
            .await
            .unwrap();
        assert_eq!(s.begin(absent, [3; 32]).await.unwrap(), Begin::Done(booked));
        let lost = slot_of("portal", b"lost");
        s.restore(lost, [4; 32], Outcome::OutcomeUnknown)
            .await
            .unwrap();
        assert_eq!(
            s.begin(lost, [4; 32]).await.unwrap(),
            Begin::Done(Outcome::OutcomeUnknown)
        );
    }

    #[test]
    fn keys_are_scoped_and_checked() {
        assert_ne!(slot_of("portal", b"k"), slot_of("callcentre", b"k"));
        assert_ne!(slot_of("ab", b"c"), slot_of("a", b"bc"));
        assert!(valid_key(b"8e03978e-40d5-43e8-bc93-6894a57f9324"));
        assert!(!valid_key(b""));
        assert!(!valid_key(&[b'a'; 256]));
        assert!(!valid_key(b"has space"));
        assert!(!valid_key("ключ".as_bytes()));
    }

    #[test]
    fn in_flight_guards_free_their_place() {
        let f = Arc::new(InFlight::default());
        let (d, s) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let (portal, callcentre): (Arc<str>, Arc<str>) = ("portal".into(), "callcentre".into());
        let g = f.try_enter(&portal, &d, &s).unwrap();
        // The same login from another generation's string is the same integrator.
        assert!(f.try_enter(&"portal".into(), &d, &s).is_none());
        assert!(f.try_enter(&callcentre, &d, &s).is_some());
        assert!(
            f.try_enter(&portal, &s, &d).is_some(),
            "direction and slot are not interchangeable"
        );
        drop(g);
        assert!(f.try_enter(&portal, &d, &s).is_some());
    }
}
