//! The drain of a listener's connections at shutdown: each connection finishes the request it
//! is serving and closes; an idle one closes at once.
//!
//! hyper-util's `GracefulShutdown` does this by having each connection poll a `watch`
//! channel's `changed()` future on every poll of the connection, which locks the channel's
//! waiter list each time. Here a
//! connection registers its task's waker once (again only if the task's waker changes) and
//! then reads one flag per poll; the drain sets the flag and wakes the registered tasks.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;

#[derive(Default)]
struct Shared {
    draining: AtomicBool,
    /// The waker of each watched connection's task, by watcher id.
    wakers: Mutex<HashMap<u64, Waker>>,
    next_id: AtomicU64,
    /// Watchers alive: connections accepted and not yet closed.
    open: AtomicUsize,
    /// Notified when `open` drops to zero.
    all_closed: Notify,
}

impl Shared {
    fn wakers(&self) -> MutexGuard<'_, HashMap<u64, Waker>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The drain of one listener's connections.
#[derive(Default)]
pub struct Drain(Arc<Shared>);

impl Drain {
    pub fn new() -> Drain {
        Drain::default()
    }

    /// A connection's place in the drain, taken when it is accepted: it counts as open until
    /// the watcher is dropped.
    pub fn watcher(&self) -> Watcher {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        Watcher {
            shared: self.0.clone(),
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Connections not yet closed.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::SeqCst)
    }

    /// Tells every connection to finish what it serves and close, and waits until all have.
    pub async fn shutdown(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = self.0.wakers().drain().map(|(_, w)| w).collect();
        for waker in wakers {
            waker.wake();
        }
        loop {
            let mut closed = pin!(self.0.all_closed.notified());
            // Registered before `open` is read: a last close in between still wakes it.
            closed.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// One connection's place in a [`Drain`] (see [`Drain::watcher`]).
pub struct Watcher {
    shared: Arc<Shared>,
    id: u64,
}

impl Watcher {
    /// Serves `conn` to its end; once the drain begins, it finishes the request in progress
    /// (if any) and closes.
    ///
    /// Not an `async fn`: its state would keep `conn` twice, as the argument and as the pinned
    /// local, and a connection's future is kilobytes, held by every open connection. The
    /// connection is boxed once, here.
    pub fn watch<C: GracefulConnection>(self, conn: C) -> impl Future<Output = C::Output> {
        let mut conn = Box::pin(conn);
        let mut registered: Option<Waker> = None;
        let mut shutting_down = false;
        std::future::poll_fn(move |cx| {
            if !shutting_down {
                if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    let waker = cx.waker().clone();
                    let mut wakers = self.shared.wakers();
                    // Taken by a drain already under way: the flag below says so.
                    if !self.shared.draining.load(Ordering::SeqCst) {
                        wakers.insert(self.id, waker.clone());
                    }
                    registered = Some(waker);
                }
                // Read after registering: a drain that begins after this read wakes the
                // registered task, which then sees the flag.
                if self.shared.draining.load(Ordering::SeqCst) {
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
            conn.as_mut().poll(cx)
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.wakers().remove(&self.id);
        if self.shared.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

/// Requests still running when a drain's deadline passes: each answers at once (a booking at
/// its MIS with 504 `95040`, its key recorded as outcome unknown) instead of a bare close.
///
/// An HTTP/1 request registers its task's waker only once the drain has begun (the drain wakes
/// every connection then, so each running request is polled and registers); before that,
/// watching costs it two atomic loads per poll. An HTTP/2 request runs on a task of its own
/// that the drain does not wake, so it registers when it starts (`eager`) and leaves on its end.
#[derive(Default)]
pub struct Expiry {
    draining: AtomicBool,
    expired: AtomicBool,
    wakers: Mutex<HashMap<u64, Waker>>,
    next_id: AtomicU64,
}

/// A request's place among the wakers; dropped with the request.
struct Registration<'a> {
    expiry: &'a Expiry,
    id: Option<u64>,
    waker: Option<Waker>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.expiry.wakers().remove(&id);
        }
    }
}

impl Expiry {
    fn wakers(&self) -> MutexGuard<'_, HashMap<u64, Waker>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The drain began: running requests register to be woken at its deadline.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The deadline passed: every watched request ends now.
    pub fn expire(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.expired.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = self.wakers().drain().map(|(_, w)| w).collect();
        for w in wakers {
            w.wake();
        }
    }

    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }

    /// `fut`'s output, or `None` if the drain deadline passes first (`fut` is then dropped).
    /// `eager`: register at once, not only once the drain began (see [`Expiry`]).
    pub async fn cut<F: Future>(&self, fut: F, eager: bool) -> Option<F::Output> {
        let mut fut = pin!(fut);
        let mut reg = Registration {
            expiry: self,
            id: None,
            waker: None,
        };
        std::future::poll_fn(|cx| {
            if self.expired.load(Ordering::Acquire) {
                return std::task::Poll::Ready(None);
            }
            if (eager || self.draining.load(Ordering::Acquire))
                && !reg.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
            {
                let id = *reg
                    .id
                    .get_or_insert_with(|| self.next_id.fetch_add(1, Ordering::Relaxed));
                self.wakers().insert(id, cx.waker().clone());
                reg.waker = Some(cx.waker().clone());
                // An expiry between the first load and the insert took the map already.
                if self.expired.load(Ordering::Acquire) {
                    return std::task::Poll::Ready(None);
                }
            }
            fut.as_mut().poll(cx).map(Some)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cut_request_ends_at_expiry_and_a_quick_one_is_untouched() {
        let expiry = Arc::new(Expiry::default());
        assert_eq!(expiry.cut(async { 5 }, false).await, Some(5));
        assert_eq!(expiry.cut(async { 6 }, true).await, Some(6));
        assert!(
            expiry.wakers.lock().unwrap().is_empty(),
            "nothing stays registered after its end"
        );
        // Polled after the drain began (the drain wakes every connection so that it is).
        expiry.begin();
        let e = expiry.clone();
        let stuck = tokio::spawn(async move { e.cut(std::future::pending::<()>(), false).await });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while expiry.wakers.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the request registers"
            );
            tokio::task::yield_now().await;
        }
        expiry.expire();
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), stuck).await;
        assert!(matches!(out, Ok(Ok(None))), "{out:?}");
        assert_eq!(
            expiry.cut(async { 5 }, false).await,
            None,
            "after expiry nothing runs"
        );
    }
}
