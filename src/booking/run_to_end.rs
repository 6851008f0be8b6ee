//! [`RunToEnd`]: a future polled inline by whoever awaits it that, if dropped before it ends,
//! goes on to the end on a task of its own.
//!
//! Phase 2 of a booking must not be cancelled by the client going away: once a booking may have
//! reached the MIS it has to be recorded, logged and remembered under its key. Spawning it on a
//! task gives that, at a price paid by every booking for the rare one whose client leaves: the
//! task's allocation and bookkeeping, copies of the future into the task's cell, a pass through
//! the scheduler, and a second wake-up (the task's, then the connection's through the join
//! handle) when the MIS answers. `RunToEnd` pays only the allocation: the connection's
//! task polls the boxed future directly, and only a drop before the end spawns the box (already
//! pinned, so nothing moves) onto the current runtime.
//!
//! A panic inside the future is caught where it is polled and becomes `Err(Panicked)`, as a
//! spawned task's panic becomes a `JoinError`: the caller decides what to answer. A future
//! spawned after a drop has no one waiting for it: its output, or its panic, ends with its task.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future panicked; it was dropped at that point.
#[derive(Debug, PartialEq, Eq)]
pub struct Panicked;

/// See the [module documentation](self).
pub struct RunToEnd<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    fut: Option<Pin<Box<F>>>,
}

/// Boxes `fut` to be polled inline, or finished on its own task if dropped first (its output
/// is then dropped too).
pub fn run_to_end<F>(fut: F) -> RunToEnd<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    RunToEnd {
        fut: Some(Box::pin(fut)),
    }
}

impl<F> Future for RunToEnd<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fut) = self.fut.as_mut() else {
            panic!("RunToEnd polled after it ended");
        };
        let polled = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                self.fut = None;
                Poll::Ready(Ok(out))
            }
            Err(_) => {
                self.fut = None;
                Poll::Ready(Err(Panicked))
            }
        }
    }
}

impl<F> Drop for RunToEnd<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            // Outside a runtime (one being torn down) there is nothing left to run it on.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(fut);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn polled_to_the_end_it_gives_its_output() {
        assert_eq!(run_to_end(async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn dropped_before_the_end_it_finishes_on_a_task_of_its_own() {
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        let mut fut = Box::pin(run_to_end(async move {
            let _ = go_rx.await;
            let _ = done_tx.send("finished");
        }));
        // One poll starts it inline; it then waits for `go`.
        assert!(futures_util::poll!(fut.as_mut()).is_pending());
        drop(fut);
        go_tx
            .send(())
            .expect("the dropped future still waits for go");
        assert_eq!(done_rx.await, Ok("finished"));
    }

    #[tokio::test]
    async fn a_panic_is_an_error_for_the_caller_not_an_unwind() {
        let ended = run_to_end(async {
            if std::hint::black_box(true) {
                panic!("a bug in the future");
            }
        })
        .await;
        assert_eq!(ended, Err(Panicked));
    }
}
