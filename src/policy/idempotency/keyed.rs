//! A keyed booking's claim from start to outcome, across the shared store and this replica: the
//! store failure policy (`on_store_error`), lease renewal for bookings that outlive a third of
//! the lease, and outcomes the store could not take, kept here and written until stored.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::OnStoreError;
use crate::policy::idempotency::{Begin, Fingerprint, Outcome, Slot, Store};

/// How often outcomes kept here are offered to the store again.
pub const WRITE_RETRY: Duration = Duration::from_millis(500);

/// The shared store with this replica's own ledger in front of it.
pub struct Keys {
    pub store: Arc<dyn Store>,
    policy: OnStoreError,
    local: Arc<Local>,
    /// Outcomes this replica recorded in a shared store, remembered here for the key's TTL too
    /// (an in-process store needs no copy). A retry that reaches this replica while the store
    /// cannot be asked, or after it lost the key (restarted empty, evicted it), is answered from
    /// here instead of being sent again.
    finished: Option<Finished>,
}

/// What this replica finished in a shared store: two generations of a map, each of up to half
/// of `max_keys`. The newer becomes the older when it fills or has run for the TTL, so every
/// entry is kept at least a TTL unless the bound pushes it out, and at most two. A map and a
/// lock rather than a cache with per-entry expiry and eviction: every keyed booking adds an
/// entry, and such a cache (moka) cost a keyed booking on Redis twice the CPU this does
/// (bench/README.md).
struct Finished {
    maps: Mutex<Generations>,
    half: usize,
    ttl: Duration,
}

struct Generations {
    newer: HashMap<Slot, Known>,
    older: HashMap<Slot, Known>,
    since: Instant,
}

#[derive(Clone)]
struct Known {
    at: Instant,
    fingerprint: Fingerprint,
    outcome: Outcome,
}

impl Known {
    fn answer(&self, fingerprint: Fingerprint) -> Begin {
        if self.fingerprint == fingerprint {
            Begin::Done(self.outcome.clone())
        } else {
            Begin::Mismatch
        }
    }

    /// Whether the store's word "no such key" may be overruled by this copy. A booking or a
    /// MIS rejection is final; an unknown outcome or a timeout may have been settled since by
    /// an operator's resolution (on any replica), which releases the key so that it is sent:
    /// such copies answer only while the store cannot be asked.
    fn is_final(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Booked { .. } | Outcome::MisRejected { .. }
        )
    }
}

impl Finished {
    fn new(ttl: Duration, max_keys: u64) -> Finished {
        Finished {
            maps: Mutex::new(Generations {
                newer: HashMap::new(),
                older: HashMap::new(),
                since: Instant::now(),
            }),
            half: usize::try_from(max_keys / 2).unwrap_or(usize::MAX).max(1),
            ttl,
        }
    }

    fn maps(&self) -> MutexGuard<'_, Generations> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, slot: &Slot) -> Option<Known> {
        let maps = self.maps();
        let known = maps.newer.get(slot).or_else(|| maps.older.get(slot))?;
        (known.at.elapsed() < self.ttl).then(|| known.clone())
    }

    fn insert(&self, slot: Slot, fingerprint: Fingerprint, outcome: Outcome) {
        let known = Known {
            at: Instant::now(),
            fingerprint,
            outcome,
        };
        let mut maps = self.maps();
        if maps.newer.len() >= self.half || known.at.duration_since(maps.since) >= self.ttl {
            let newer = std::mem::take(&mut maps.newer);
            let dropped = std::mem::replace(&mut maps.older, newer);
            maps.since = known.at;
            drop(maps);
            // Freeing a generation of many entries is not the booking's work. If no thread can
            // be had, the closure and the map are freed here: a pause, never a panic.
            if !dropped.is_empty() {
                let _ = std::thread::Builder::new()
                    .name("idempotency-drop".into())
                    .spawn(move || drop(dropped));
            }
            maps = self.maps();
        }
        maps.older.remove(&slot);
        maps.newer.insert(slot, known);
    }

    fn forget(&self, slot: &Slot) {
        let mut maps = self.maps();
        maps.newer.remove(slot);
        maps.older.remove(slot);
    }
}

/// What a keyed booking may do.
#[derive(Debug)]
pub enum Start {
    /// Send it; then [`Keys::finish`] the claim.
    Claimed(Claim),
    /// Answer without sending: in flight, mismatch, done, or lapsed.
    Answer(Begin),
    /// The store is unavailable and the policy is `reject`: not sent.
    Rejected,
}

/// A key this booking holds: in the store, or (`local`) only in this replica.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub slot: Slot,
    pub fingerprint: Fingerprint,
    pub local: bool,
}

/// Keys known here and not (yet) in the store.
struct Local {
    entries: Mutex<HashMap<Slot, LocalEntry>>,
    /// `entries.len()`, read without the lock: an empty ledger costs a booking one load.
    len: AtomicUsize,
    max: usize,
    ttl: Duration,
    writer_running: AtomicBool,
    /// The store failed last time it was asked (for one WARN per outage, not per booking).
    degraded: AtomicBool,
}

struct LocalEntry {
    fingerprint: Fingerprint,
    state: LocalState,
}

enum LocalState {
    /// Claimed here while the store was down (`on_store_error = "local"`).
    InFlight,
    /// An outcome the store has not taken yet; replayed here until `until`.
    Unwritten { outcome: Outcome, until: Instant },
    /// A release the store has not taken yet (its claim there would lapse into "unknown").
    Unreleased,
}

impl Keys {
    /// `ttl` and `max_keys`: how long and how many outcomes are kept here at most; `policy`:
    /// what a booking does when the store cannot claim its key.
    pub fn new(store: Arc<dyn Store>, policy: OnStoreError, ttl: Duration, max_keys: u64) -> Keys {
        let finished = (!store.in_process()).then(|| Finished::new(ttl, max_keys));
        Keys {
            store,
            policy,
            finished,
            local: Arc::new(Local {
                entries: Mutex::default(),
                len: AtomicUsize::new(0),
                max: usize::try_from(max_keys).unwrap_or(usize::MAX),
                ttl,
                writer_running: AtomicBool::new(false),
                degraded: AtomicBool::new(false),
            }),
        }
    }

    /// Outcomes and claims kept in this replica only.
    pub fn kept_locally(&self) -> usize {
        self.local.len.load(Ordering::Acquire)
    }

    /// Claims `slot` for a booking whose body has `fingerprint`.
    pub async fn begin(&self, slot: Slot, fingerprint: Fingerprint, request_id: &str) -> Start {
        if self.kept_locally() > 0
            && let Some(answer) = self.local.answer(slot, fingerprint)
        {
            return Start::Answer(answer);
        }
        match self.store.begin(slot, fingerprint).await {
            Ok(begin) => {
                self.store_is_up();
                if begin == Begin::Claimed && self.kept_locally() > 0 && self.local.claimed(slot) {
                    // A same-key booking claimed here while the store was down is still running.
                    let _ = self.store.release(slot).await;
                    return Start::Answer(Begin::InFlight);
                }
                if begin == Begin::Claimed
                    && let Some(known) = self.finished(slot).filter(|f| f.is_final())
                {
                    // The store lost a key this replica finished: put it back, answer it.
                    tracing::warn!(
                        request_id,
                        "idempotency store had lost a key this replica finished: its outcome is written back and replayed"
                    );
                    let answer = known.answer(fingerprint);
                    // Through `finish`, as any outcome: if the store fails now, the outcome is
                    // kept here and written later, and the claim just made does not lapse.
                    let claim = Claim {
                        slot,
                        fingerprint: known.fingerprint,
                        local: false,
                    };
                    self.finish(claim, Some(known.outcome), request_id).await;
                    return Start::Answer(answer);
                }
                if begin == Begin::Lapsed {
                    crate::telemetry::metrics::get().lapsed_claims.add(1, &[]);
                    tracing::warn!(
                        request_id,
                        "idempotency key's claim lapsed with no outcome: the booking may exist; answered as outcome unknown"
                    );
                }
                match begin {
                    Begin::Claimed => Start::Claimed(Claim {
                        slot,
                        fingerprint,
                        local: false,
                    }),
                    other => Start::Answer(other),
                }
            }
            Err(e) => {
                crate::telemetry::metrics::get().store_errors.add(1, &[]);
                // One WARN per outage, whichever request meets it first.
                if !self.local.degraded.swap(true, Ordering::Relaxed) {
                    match self.policy {
                        OnStoreError::Reject => {
                            tracing::warn!(error = %e, request_id, "idempotency store unavailable: keyed bookings are not sent (503 95030) until it is back")
                        }
                        OnStoreError::Local => {
                            tracing::warn!(error = %e, request_id, "idempotency store unavailable: keys are claimed in this replica only; duplicate protection is per replica until it is back")
                        }
                    }
                }
                if let Some(known) = self.finished(slot) {
                    // Finished here before the store became unavailable: never sent again.
                    return Start::Answer(known.answer(fingerprint));
                }
                match self.policy {
                    OnStoreError::Reject => Start::Rejected,
                    OnStoreError::Local => match self.local.claim(slot, fingerprint) {
                        None => {
                            crate::telemetry::metrics::get().local_claims.add(1, &[]);
                            Start::Claimed(Claim {
                                slot,
                                fingerprint,
                                local: true,
                            })
                        }
                        Some(answer) => Start::Answer(answer),
                    },
                }
            }
        }
    }

    fn finished(&self, slot: Slot) -> Option<Known> {
        self.finished.as_ref()?.get(&slot)
    }

    /// Remembers what this replica recorded under `slot` (or forgets it: released).
    fn remember(&self, slot: Slot, fingerprint: Fingerprint, outcome: Option<Outcome>) {
        let Some(finished) = &self.finished else {
            return;
        };
        match outcome {
            Some(outcome) => finished.insert(slot, fingerprint, outcome),
            None => finished.forget(&slot),
        }
    }

    fn store_is_up(&self) {
        if self.local.degraded.load(Ordering::Relaxed)
            && self.local.degraded.swap(false, Ordering::Relaxed)
        {
            tracing::info!("idempotency store available again: duplicate protection is shared");
        }
    }

    /// Runs `booking`, renewing a store claim's lease every third of it while it runs: a
    /// booking answered within that time costs no renewal (one timer, no round trip); a store
    /// without leases costs nothing.
    pub async fn renewing<F: Future>(&self, claim: &Claim, booking: F) -> F::Output {
        if claim.local || self.store.lease() == crate::policy::idempotency::NO_LEASE {
            return booking.await;
        }
        let every = self.store.lease() / 3;
        let mut booking = pin!(booking);
        let mut tick = pin!(tokio::time::sleep(every));
        loop {
            tokio::select! {
                biased;
                out = &mut booking => return out,
                () = &mut tick => {
                    let (store, slot) = (self.store.clone(), claim.slot);
                    tokio::spawn(async move {
                        match store.renew(slot).await {
                            Ok(true) => {}
                            Ok(false) => tracing::warn!("an idempotency claim was gone when its booking renewed it"),
                            Err(e) => tracing::warn!(error = %e, "an idempotency claim's lease could not be renewed"),
                        }
                    });
                    tick.as_mut().reset(tokio::time::Instant::now() + every);
                }
            }
        }
    }

    /// Records the booking's outcome (`None`: nothing was sent or the MIS rolled back; the key
    /// is released). What the store cannot take is kept here and written later.
    pub async fn finish(&self, claim: Claim, outcome: Option<Outcome>, request_id: &str) {
        let Claim {
            slot,
            fingerprint,
            local,
        } = claim;
        if self.store.in_process() {
            // Nothing to keep for later: the outcome moves into the store, uncopied.
            let _ = match outcome {
                Some(o) => self.store.finish(slot, fingerprint, o).await,
                None if local => Ok(()),
                None => self.store.release(slot).await,
            };
            if local {
                self.local.remove(slot);
            }
            return;
        }
        let stored = match &outcome {
            Some(o) => self.store.finish(slot, fingerprint, o.clone()).await,
            // A local claim has nothing in the store to release.
            None if local => Ok(()),
            None => self.store.release(slot).await,
        };
        match stored {
            Ok(()) => {
                if local {
                    self.local.remove(slot);
                }
                self.remember(slot, fingerprint, outcome);
            }
            Err(e) => {
                let m = crate::telemetry::metrics::get();
                m.store_errors.add(1, &[]);
                self.remember(slot, fingerprint, outcome.clone());
                match outcome {
                    Some(outcome) => {
                        m.unwritten_outcomes.add(1, &[]);
                        tracing::error!(error = %e, request_id, "idempotency store unavailable: the outcome is kept in this replica and written when the store is back");
                        self.local.keep(
                            slot,
                            fingerprint,
                            LocalState::Unwritten {
                                outcome,
                                until: Instant::now() + self.local.ttl,
                            },
                        );
                    }
                    None => {
                        tracing::error!(error = %e, request_id, "idempotency store unavailable: the key's release is retried in the background");
                        self.local.keep(slot, fingerprint, LocalState::Unreleased);
                    }
                }
                self.spawn_writer();
            }
        }
    }

    /// Starts the background writer unless it runs: it offers what is kept here to the store
    /// every [`WRITE_RETRY`] until nothing is left.
    fn spawn_writer(&self) {
        if self.local.writer_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, local) = (self.store.clone(), self.local.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WRITE_RETRY).await;
                for (slot, fingerprint, outcome) in local.pending() {
                    let written = match outcome {
                        Some(o) => store.finish(slot, fingerprint, o).await,
                        None => store.release(slot).await,
                    };
                    if written.is_err() {
                        break;
                    }
                    local.written(slot);
                }
                if local.len.load(Ordering::Acquire) == 0 {
                    local.writer_running.store(false, Ordering::Release);
                    // Something kept after the check above starts its own writer, or this one
                    // goes on.
                    if local.len.load(Ordering::Acquire) == 0
                        || local.writer_running.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                }
            }
        });
    }
}

impl Local {
    fn entries(&self) -> MutexGuard<'_, HashMap<Slot, LocalEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer this replica alone knows for `slot`, if any.
    fn answer(&self, slot: Slot, fingerprint: Fingerprint) -> Option<Begin> {
        let mut entries = self.entries();
        let e = entries.get(&slot)?;
        let answer = match &e.state {
            LocalState::Unreleased => return None,
            LocalState::Unwritten { until, .. } if *until < Instant::now() => {
                entries.remove(&slot);
                self.len.store(entries.len(), Ordering::Release);
                return None;
            }
            _ if e.fingerprint != fingerprint => Begin::Mismatch,
            LocalState::InFlight => Begin::InFlight,
            LocalState::Unwritten { outcome, .. } => Begin::Done(outcome.clone()),
        };
        Some(answer)
    }

    /// Whether a booking claimed `slot` here and still runs.
    fn claimed(&self, slot: Slot) -> bool {
        matches!(
            self.entries().get(&slot),
            Some(LocalEntry {
                state: LocalState::InFlight,
                ..
            })
        )
    }

    /// Claims `slot` here; `Some(answer)` if this replica knows it already.
    fn claim(&self, slot: Slot, fingerprint: Fingerprint) -> Option<Begin> {
        let mut entries = self.entries();
        if let Some(e) = entries.get(&slot)
            && !matches!(e.state, LocalState::Unreleased)
        {
            drop(entries);
            return self.answer(slot, fingerprint).or(Some(Begin::InFlight));
        }
        if entries.len() >= self.max {
            // Full of outcomes the store has not taken: refuse rather than forget one.
            return Some(Begin::InFlight);
        }
        entries.insert(
            slot,
            LocalEntry {
                fingerprint,
                state: LocalState::InFlight,
            },
        );
        self.len.store(entries.len(), Ordering::Release);
        None
    }

    fn keep(&self, slot: Slot, fingerprint: Fingerprint, state: LocalState) {
        let mut entries = self.entries();
        if entries.len() >= self.max && !entries.contains_key(&slot) {
            tracing::error!("too many idempotency outcomes waiting for the store: one is not kept");
            return;
        }
        entries.insert(slot, LocalEntry { fingerprint, state });
        self.len.store(entries.len(), Ordering::Release);
    }

    fn remove(&self, slot: Slot) {
        let mut entries = self.entries();
        entries.remove(&slot);
        self.len.store(entries.len(), Ordering::Release);
    }

    /// What the writer should offer the store: (slot, fingerprint, outcome or release). Drops
    /// outcomes past their TTL.
    fn pending(&self) -> Vec<(Slot, Fingerprint, Option<Outcome>)> {
        let now = Instant::now();
        let mut entries = self.entries();
        entries.retain(
            |_, e| !matches!(&e.state, LocalState::Unwritten { until, .. } if *until < now),
        );
        self.len.store(entries.len(), Ordering::Release);
        entries
            .iter()
            .filter_map(|(slot, e)| match &e.state {
                LocalState::InFlight => None,
                LocalState::Unwritten { outcome, .. } => {
                    Some((*slot, e.fingerprint, Some(outcome.clone())))
                }
                LocalState::Unreleased => Some((*slot, e.fingerprint, None)),
            })
            .collect()
    }

    /// The store took what was kept for `slot` (unless a booking claimed it here meanwhile).
    fn written(&self, slot: Slot) {
        let mut entries = self.entries();
        if entries
            .get(&slot)
            .is_some_and(|e| !matches!(e.state, LocalState::InFlight))
        {
            entries.remove(&slot);
        }
        self.len.store(entries.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::idempotency::{MemoryStore, StoreError};
    use futures_util::future::BoxFuture;

    /// A store that fails every call while `down` is set, over a memory store.
    struct Flaky {
        inner: MemoryStore,
        down: AtomicBool,
        /// Only writes of outcomes fail (a store lost between a claim and its finish).
        finish_down: AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError("down".into()))
            } else {
                Ok(())
            }
        }
    }

    impl Store for Flaky {
        fn begin(&self, slot: Slot, fp: Fingerprint) -> BoxFuture<'_, Result<Begin, StoreError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.begin(slot, fp).await
            })
        }
        fn finish(
            &self,
            slot: Slot,
            fp: Fingerprint,
            o: Outcome,
        ) -> BoxFuture<'_, Result<(), StoreError>> {
            Box::pin(async move {
                self.check()?;
                if self.finish_down.load(Ordering::SeqCst) {
                    return Err(StoreError("down".into()));
                }
                self.inner.finish(slot, fp, o).await
            })
        }
        fn release(&self, slot: Slot) -> BoxFuture<'_, Result<(), StoreError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.release(slot).await
            })
        }
        fn renew(&self, slot: Slot) -> BoxFuture<'_, Result<bool, StoreError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.renew(slot).await
            })
        }
        fn lease(&self) -> Duration {
            self.inner.lease()
        }
        fn resolve(
            &self,
            slot: Slot,
            fp: Option<Fingerprint>,
            b: Option<Outcome>,
        ) -> BoxFuture<'_, Result<bool, StoreError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.resolve(slot, fp, b).await
            })
        }
        fn restore(
            &self,
            slot: Slot,
            fp: Fingerprint,
            o: Outcome,
        ) -> BoxFuture<'_, Result<(), StoreError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.restore(slot, fp, o).await
            })
        }
    }

    fn keys(policy: OnStoreError) -> (Keys, Arc<Flaky>) {
        let flaky = Arc::new(Flaky {
            inner: MemoryStore::new(Duration::from_secs(60), 1000),
            down: AtomicBool::new(false),
            finish_down: AtomicBool::new(false),
        });
        (
            Keys::new(flaky.clone(), policy, Duration::from_secs(60), 1000),
            flaky,
        )
    }

    #[tokio::test]
    async fn reject_sends_nothing_and_local_claims_once_per_replica() {
        let (rejecting, down) = keys(OnStoreError::Reject);
        down.down.store(true, Ordering::SeqCst);
        let slot = [7; 32];
        assert!(matches!(
            rejecting.begin(slot, [1; 32], "r").await,
            Start::Rejected
        ));
        let (k, flaky) = keys(OnStoreError::Local);
        flaky.down.store(true, Ordering::SeqCst);
        let Start::Claimed(claim) = k.begin(slot, [1; 32], "r").await else {
            panic!("a local claim")
        };
        assert!(claim.local);
        assert!(matches!(
            k.begin(slot, [1; 32], "r").await,
            Start::Answer(Begin::InFlight)
        ));
        // The store comes back while the local claim runs: still one booking.
        flaky.down.store(false, Ordering::SeqCst);
        assert!(matches!(
            k.begin(slot, [1; 32], "r").await,
            Start::Answer(Begin::InFlight)
        ));
        k.finish(claim, Some(Outcome::MisTimeout), "r").await;
        assert_eq!(k.kept_locally(), 0, "written at once: the store is up");
        assert!(matches!(
            k.begin(slot, [1; 32], "r").await,
            Start::Answer(Begin::Done(Outcome::MisTimeout))
        ));
    }

    fn booked() -> Outcome {
        Outcome::Booked {
            guid: "ee5ae221-ddc8-40cf-a61b-4e7926a2501c".into(),
            number: "01".into(),
            slot: "766998fb-1915-4d54-a3f3-934f60125aac".into(),
            source: "Internet".into(),
            create_time: "2026-12-07T10:00:00+03:00".into(),
        }
    }

    /// Claims `slot` for `fp` in `k` and finishes it with `outcome` while the store is up.
    async fn finished_here(k: &Keys, slot: Slot, outcome: Outcome) {
        let Start::Claimed(claim) = k.begin(slot, [1; 32], "r").await else {
            panic!("claimed")
        };
        k.finish(claim, Some(outcome), "r").await;
        assert_eq!(k.kept_locally(), 0, "the store took it");
    }

    #[tokio::test]
    async fn a_key_finished_here_is_answered_here_while_the_store_is_down() {
        for policy in [OnStoreError::Reject, OnStoreError::Local] {
            let (k, flaky) = keys(policy);
            let (done, unknown) = ([3; 32], [4; 32]);
            finished_here(&k, done, booked()).await;
            finished_here(&k, unknown, Outcome::OutcomeUnknown).await;
            flaky.down.store(true, Ordering::SeqCst);
            assert!(matches!(
                k.begin(done, [1; 32], "r").await,
                Start::Answer(Begin::Done(Outcome::Booked { .. }))
            ));
            assert!(matches!(
                k.begin(unknown, [1; 32], "r").await,
                Start::Answer(Begin::Done(Outcome::OutcomeUnknown))
            ));
            assert!(matches!(
                k.begin(done, [2; 32], "r").await,
                Start::Answer(Begin::Mismatch)
            ));
            // A key this replica never saw still follows the policy.
            let other = k.begin([5; 32], [1; 32], "r").await;
            match policy {
                OnStoreError::Reject => assert!(matches!(other, Start::Rejected)),
                OnStoreError::Local => assert!(matches!(other, Start::Claimed(_))),
            }
        }
    }

    #[tokio::test]
    async fn the_outage_is_logged_when_its_first_request_is_answered_from_the_copy() {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = crate::telemetry::TestLines::default();
        let out = lines.clone();
        let layer = tracing_subscriber::fmt::layer().with_writer(move || out.clone());
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

        let (k, flaky) = keys(OnStoreError::Reject);
        finished_here(&k, [3; 32], booked()).await;
        flaky.down.store(true, Ordering::SeqCst);
        assert!(matches!(
            k.begin([3; 32], [1; 32], "r").await,
            Start::Answer(Begin::Done(_))
        ));
        let text = lines.text();
        assert!(
            text.contains("idempotency store unavailable"),
            "no WARN for the outage: {text}"
        );
    }

    #[test]
    fn what_this_replica_finished_is_kept_within_max_keys_newest_first() {
        let f = Finished::new(Duration::from_secs(3600), 4);
        for i in 1..=5u8 {
            f.insert([i; 32], [i; 32], Outcome::MisTimeout);
        }
        // Two generations of two: the third and fifth inserts each began a new one.
        let kept: Vec<u8> = (1..=5u8).filter(|i| f.get(&[*i; 32]).is_some()).collect();
        assert_eq!(kept, [3, 4, 5]);
        // Finishing a key again keeps one entry, the newest.
        f.insert([3; 32], [9; 32], Outcome::OutcomeUnknown);
        let again = f.get(&[3; 32]).unwrap();
        assert_eq!(again.fingerprint, [9; 32]);
        assert_eq!(again.outcome, Outcome::OutcomeUnknown);
        f.forget(&[3; 32]);
        assert!(f.get(&[3; 32]).is_none());
    }

    #[tokio::test]
    async fn a_booking_the_store_lost_is_written_back_but_an_unknown_one_is_sent() {
        let (k, flaky) = keys(OnStoreError::Reject);
        let (done, unknown) = ([3; 32], [4; 32]);
        finished_here(&k, done, booked()).await;
        finished_here(&k, unknown, Outcome::OutcomeUnknown).await;
        // The store comes back empty (or an operator's resolution released the unknown key).
        flaky.inner.release(done).await.unwrap();
        flaky.inner.release(unknown).await.unwrap();
        assert!(matches!(
            k.begin(done, [1; 32], "r").await,
            Start::Answer(Begin::Done(Outcome::Booked { .. }))
        ));
        assert!(
            matches!(
                flaky.inner.begin(done, [1; 32]).await.unwrap(),
                Begin::Done(Outcome::Booked { .. })
            ),
            "written back for the other replicas"
        );
        // Lost again, and the write-back itself fails: kept here and written later, so the
        // claim the write-back made does not lapse into "unknown" on other replicas.
        flaky.inner.release(done).await.unwrap();
        flaky.finish_down.store(true, Ordering::SeqCst);
        assert!(matches!(
            k.begin(done, [1; 32], "r").await,
            Start::Answer(Begin::Done(Outcome::Booked { .. }))
        ));
        assert_eq!(k.kept_locally(), 1, "kept for the writer");
        flaky.finish_down.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while k.kept_locally() > 0 {
            assert!(Instant::now() < deadline, "the writer stores the outcome");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(
            flaky.inner.begin(done, [1; 32]).await.unwrap(),
            Begin::Done(Outcome::Booked { .. })
        ));
        // An unknown outcome may have been resolved "not booked" since: the store decides.
        assert!(matches!(
            k.begin(unknown, [1; 32], "r").await,
            Start::Claimed(_)
        ));
    }

    #[tokio::test]
    async fn an_unwritten_outcome_replays_here_and_reaches_the_store_later() {
        let (k, flaky) = keys(OnStoreError::Reject);
        let slot = [9; 32];
        let Start::Claimed(claim) = k.begin(slot, [1; 32], "r").await else {
            panic!("claimed")
        };
        flaky.down.store(true, Ordering::SeqCst);
        k.finish(claim, Some(Outcome::OutcomeUnknown), "r").await;
        assert_eq!(k.kept_locally(), 1);
        assert!(matches!(
            k.begin(slot, [1; 32], "r").await,
            Start::Answer(Begin::Done(Outcome::OutcomeUnknown))
        ));
        assert!(matches!(
            k.begin(slot, [2; 32], "r").await,
            Start::Answer(Begin::Mismatch)
        ));
        flaky.down.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while k.kept_locally() > 0 {
            assert!(Instant::now() < deadline, "the writer stores the outcome");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            flaky.inner.begin(slot, [1; 32]).await.unwrap(),
            Begin::Done(Outcome::OutcomeUnknown)
        );
    }
}
