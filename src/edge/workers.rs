//! The threads that serve booking connections: one single-threaded tokio runtime per thread,
//! thread-per-core (what Pingora's no-steal runtime does).
//!
//! The listener's accept loop hands each new connection to the worker with the fewest open
//! connections; from then on the connection, its bookings and the MIS connections they use
//! ([`crate::upstream`] keeps one pool per worker, see [`index`]) stay on that thread. On a
//! work-stealing runtime a booking's tasks (the client connection, the booking, the pooled MIS
//! connection's task) wake one another across threads: futexes, reschedule interrupts and
//! cache misses that cost more than the booking's own work on a loaded 2-core machine.
//!
//! Where the workers run ([`Placement`]): by default the kernel places them; `--pin-workers`
//! holds worker *i* to the *i*-th CPU of the process's affinity mask (as HAProxy's `cpu-map`),
//! for hosts or cpusets given to the gateway. A refused placement call is logged once at start.
//!
//! The price of thread-per-core: a worker busy with one heavy connection does not shed its
//! other connections to an idle thread. Bookings are short and uniform, and new connections go
//! to the least loaded worker, so this is the right trade for this workload.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Where worker threads run; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The kernel places them.
    #[default]
    Free,
    /// Each is held to a CPU of its own.
    Pin,
}

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker number, 1-based; 0 on any thread that is not a worker (the main
/// runtime, tests' runtimes). Per-worker state (MIS connection pools) is indexed by it.
pub fn index() -> usize {
    INDEX.get()
}

/// The CPUs this process may run on (its affinity mask), lowest first.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    Ok(cpus_in(&sched_getaffinity(Pid::from_raw(0))?))
}

/// The CPUs of `set`, lowest first.
fn cpus_in(set: &CpuSet) -> Vec<usize> {
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect()
}

/// The set of `cpus` (an error for a CPU number past what a set holds).
fn cpu_set(cpus: &[usize]) -> nix::Result<CpuSet> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)?;
    }
    Ok(set)
}

/// Holds the calling thread to `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    sched_setaffinity(Pid::from_raw(0), &cpu_set(&[cpu])?)?;
    Ok(())
}

/// The most worker threads a gateway runs (`--worker-threads` is refused above it): per-worker
/// state is sized for it, so no two workers ever share a slot whatever the CPU count.
pub const MAX_WORKERS: usize = 256;

/// Default number of workers: one per CPU this process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_WORKERS)
}

struct Worker {
    handle: Handle,
    /// The CPU the thread is held to, if pinned.
    cpu: Option<usize>,
    /// Connections being served on this worker.
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

/// A running set of workers. [`Workers::stop`] ends them; dropping the set does too (without
/// waiting).
pub struct Workers {
    workers: Vec<Worker>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads, placed as `placement` says. Pinned, each is
    /// held to a CPU of its own ([`Workers::cpus`] says which); a thread the kernel refuses to
    /// pin runs unpinned, and one warning at start names the workers and the error.
    pub fn start(n: usize, placement: Placement) -> io::Result<Workers> {
        let mask = match placement {
            Placement::Free => Vec::new(),
            Placement::Pin => allowed_cpus().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the CPU affinity mask could not be read (sched_getaffinity); the worker threads run unpinned");
                Vec::new()
            }),
        };
        let n = n.clamp(1, MAX_WORKERS);
        let mut workers = Vec::with_capacity(n);
        let mut refused = Vec::new();
        for i in 0..n {
            let cpu = (!mask.is_empty()).then(|| mask[i % mask.len()]);
            let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
            let (stop, stop_rx) = oneshot::channel::<()>();
            let (stopped_tx, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("worker-{}", i + 1))
                .spawn(move || {
                    INDEX.set(i + 1);
                    let pinned = cpu.map(|c| pin_to(c).map(|()| c));
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok((rt.handle().clone(), pinned)));
                    rt.block_on(async {
                        let _ = stop_rx.await;
                    });
                    // Whatever is still running (idle MIS connections) ends with the runtime.
                    drop(rt);
                    let _ = stopped_tx.send(());
                })?;
            let (handle, pinned) = handle_rx
                .recv()
                .map_err(|_| io::Error::other("a worker thread exited while starting"))??;
            let cpu = match pinned {
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => {
                    refused.push((i + 1, e));
                    None
                }
                None => None,
            };
            workers.push(Worker {
                handle,
                cpu,
                open: Arc::default(),
                stop: Some(stop),
                stopped: Some(stopped),
            });
        }
        let workers = Workers { workers };
        if let Some((_, e)) = refused.first() {
            let which: Vec<usize> = refused.iter().map(|(w, _)| *w).collect();
            tracing::warn!(workers = ?which, error = %e, errno = e.raw_os_error(), "sched_setaffinity was refused; these worker threads run unpinned (under systemd, allow it in SystemCallFilter=)");
        }
        if placement == Placement::Pin {
            tracing::info!(cpus = ?workers.cpus(), "worker threads pinned (worker i on the i-th CPU listed; None: unpinned)");
        }
        Ok(workers)
    }

    /// Runs `conn` (one connection's whole life) on the worker with the fewest open
    /// connections. `conn` is first polled on that worker's thread, so a socket it registers
    /// belongs to that worker's reactor.
    pub fn serve<F>(&self, conn: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let w = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        w.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard(w.open.clone());
        w.handle.spawn(async move {
            let _open = open;
            conn.await;
        })
    }

    /// The CPU each worker is held to (`None`: unpinned), in worker order.
    pub fn cpus(&self) -> Vec<Option<usize>> {
        self.workers.iter().map(|w| w.cpu).collect()
    }

    /// Open connections per worker, in worker order.
    pub fn open(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops every worker (tasks still running on them are dropped) and waits until their
    /// runtimes are gone.
    pub async fn stop(mut self) {
        let stopped: Vec<_> = self
            .workers
            .iter_mut()
            .filter_map(|w| {
                w.stop.take().map(|s| s.send(()));
                w.stopped.take()
            })
            .collect();
        for s in stopped {
            let _ = s.await;
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(s) = w.stop.take() {
                let _ = s.send(());
            }
        }
    }
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that reports where it runs and stays open until released.
    fn held(
        workers: &Workers,
        report: &tokio::sync::mpsc::UnboundedSender<(usize, Option<String>)>,
    ) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, held) = oneshot::channel::<()>();
        let report = report.clone();
        let task = workers.serve(async move {
            let name = std::thread::current().name().map(str::to_owned);
            let _ = report.send((index(), name));
            let _ = held.await;
        });
        (release, task)
    }

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_worker_and_run_on_its_thread() {
        let workers = Workers::start(2, Placement::Free).unwrap();
        let (report, mut seen) = tokio::sync::mpsc::unbounded_channel();

        let open: Vec<_> = (0..4).map(|_| held(&workers, &report)).collect();
        let mut at = Vec::new();
        for _ in 0..4 {
            at.push(seen.recv().await.unwrap());
        }
        at.sort();
        let w = |i: usize| (i, Some(format!("worker-{i}")));
        assert_eq!(at, vec![w(1), w(1), w(2), w(2)]);
        assert_eq!(workers.open(), vec![2, 2]);

        // Ended connections are no longer counted.
        for (release, task) in open {
            drop(release);
            task.await.unwrap();
        }
        assert_eq!(workers.open(), vec![0, 0]);

        // With worker 1 busy, the next connection goes to worker 2, then to the first again.
        let a = held(&workers, &report);
        assert_eq!(seen.recv().await.unwrap(), w(1));
        let b = held(&workers, &report);
        assert_eq!(seen.recv().await.unwrap(), w(2));
        let c = held(&workers, &report);
        assert_eq!(seen.recv().await.unwrap(), w(1));
        assert_eq!(workers.open(), vec![2, 1]);
        assert_eq!(index(), 0, "the test's own thread is not a worker");
        drop((a, b, c));
        assert_eq!(workers.cpus(), vec![None, None], "unpinned unless asked");
        workers.stop().await;
    }

    #[tokio::test]
    async fn pinned_workers_each_run_on_one_cpu_of_the_mask_in_turn() {
        let mask = allowed_cpus().unwrap();
        assert!(!mask.is_empty());
        // One more worker than CPUs: the last one goes round the mask again.
        let n = mask.len() + 1;
        let workers = Workers::start(n, Placement::Pin).unwrap();
        let expected: Vec<usize> = (0..n).map(|i| mask[i % mask.len()]).collect();
        assert_eq!(
            workers.cpus(),
            expected.iter().copied().map(Some).collect::<Vec<_>>()
        );
        // What each worker thread's own affinity is, asked on that thread.
        let (report, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let mut held = Vec::new();
        for _ in 0..n {
            let (release, wait) = oneshot::channel::<()>();
            let report = report.clone();
            held.push((
                release,
                workers.serve(async move {
                    let _ = report.send((index(), allowed_cpus().unwrap()));
                    let _ = wait.await;
                }),
            ));
        }
        let mut at = Vec::new();
        for _ in 0..n {
            at.push(seen.recv().await.unwrap());
        }
        at.sort();
        let want: Vec<_> = (0..n).map(|i| (i + 1, vec![expected[i]])).collect();
        assert_eq!(at, want);
        assert_eq!(
            allowed_cpus().unwrap(),
            mask,
            "the caller's own mask is untouched"
        );
        drop(held);
        workers.stop().await;
    }
}
