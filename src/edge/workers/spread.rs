//! Keeping busy workers off each other's CPU without pinning them.
//!
//! The kernel balances runnable threads by count, so two workers runnable on one CPU while the
//! other CPU runs two other threads (the MIS, a sidecar, a load generator) looks balanced to
//! it. The worker that runs keeps the CPU for its slice while the other waits (2.9–4.6 ms
//! here, `perf sched timehist`), and so do all of the waiting worker's connections. `perf sched` showed this as the largest part of the gateway's tail at
//! saturation; pinning removes it, but a pinned worker also cannot leave a CPU that something
//! else keeps busy.
//!
//! Here each worker, every [`EVERY`] requests, asks the kernel where the other workers are
//! (`/proc/self/task/<tid>/stat`: state and CPU). If another worker is runnable on the CPU
//! this one is running on, this one moves itself to a CPU that no runnable worker is on, by
//! narrowing its own affinity mask to those CPUs and at once putting the mask back as it was.
//! The waiting worker gets the CPU it was queued on; the kernel stays free to place both
//! afterwards. A worker moves at most once per [`HOLD`], and reads at most [`LOOK_AT`] other
//! workers per check, so the cost per request stays small and bounded whatever the number of
//! workers.
//!
//! Where `/proc` cannot be read or the mask cannot be changed, nothing moves; the workers run
//! as the kernel places them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
use nix::unistd::{Pid, gettid};

/// Requests a worker serves between two looks at where the workers run.
pub(crate) const EVERY: u32 = 64;
/// Least time between two moves of one worker.
pub(crate) const HOLD: Duration = Duration::from_millis(20);
/// Most other workers one check reads (round the others in turn).
const LOOK_AT: usize = 4;

/// The thread ids of one set of workers, by worker (0 until the thread has started).
pub(crate) struct Spread {
    tids: Vec<AtomicI32>,
}

impl Spread {
    pub(crate) fn new(workers: usize) -> Arc<Spread> {
        Arc::new(Spread {
            tids: (0..workers).map(|_| AtomicI32::new(0)).collect(),
        })
    }

    /// Makes the calling thread worker `me` of the set: its requests check its placement.
    pub(crate) fn join(self: Arc<Self>, me: usize) {
        self.tids[me].store(gettid().as_raw(), Ordering::Relaxed);
        let stats = (0..self.tids.len()).map(|_| None).collect();
        LOCAL.set(Some(Local {
            shared: self,
            me,
            calls: 0,
            next: 0,
            moved_at: None,
            hold: HOLD,
            off: false,
            stats,
        }));
    }
}

thread_local! {
    static LOCAL: std::cell::RefCell<Option<Local>> = const { std::cell::RefCell::new(None) };
}

/// A worker's side of [`Spread`].
struct Local {
    shared: Arc<Spread>,
    me: usize,
    calls: u32,
    /// The next other worker to read.
    next: usize,
    moved_at: Option<Instant>,
    /// Least time between two moves ([`HOLD`]).
    hold: Duration,
    /// Set when `/proc` cannot be read: no more checks.
    off: bool,
    /// Each other worker's `/proc` stat file, opened on first read and read again in place.
    stats: Vec<Option<File>>,
}

/// Called at each request the calling thread serves; does nothing on a thread that is not a
/// spreading worker.
#[inline]
pub fn on_request() {
    LOCAL.with_borrow_mut(|local| {
        if let Some(local) = local {
            local.calls += 1;
            if local.calls >= EVERY {
                local.calls = 0;
                local.check();
            }
        }
    });
}

impl Local {
    /// Looks where the other workers are and moves this one if it must; whether it moved.
    fn check(&mut self) -> bool {
        if self.off || self.moved_at.is_some_and(|t| t.elapsed() < self.hold) {
            return false;
        }
        let Ok(here) = sched_getcpu() else {
            return false;
        };
        let n = self.shared.tids.len();
        // The CPUs of the runnable workers read (`usize::MAX`: none).
        let mut busy = [usize::MAX; LOOK_AT];
        for slot in busy.iter_mut().take(n - 1) {
            self.next = (self.next + 1) % n;
            if self.next == self.me {
                self.next = (self.next + 1) % n;
            }
            if let Some(Placed {
                runnable: true,
                cpu,
            }) = self.read(self.next)
            {
                *slot = cpu;
            }
        }
        if !busy.contains(&here) {
            return false;
        }
        let Ok(mask) = sched_getaffinity(Pid::from_raw(0)) else {
            return false;
        };
        let Some(away) = elsewhere(&mask, here, &busy) else {
            return false;
        };
        self.moved_at = Some(Instant::now());
        // Narrowing the mask moves this thread before the call returns; the mask as it was
        // goes back at once, so the move is a nudge, not a pin.
        if sched_setaffinity(Pid::from_raw(0), &away).is_err() {
            return false;
        }
        if let Err(e) = sched_setaffinity(Pid::from_raw(0), &mask) {
            tracing::warn!(worker = self.me + 1, error = %e, "a worker's CPU mask could not be put back after a move");
        }
        tracing::debug!(
            worker = self.me + 1,
            from = here,
            "worker moved off a CPU another worker was waiting for"
        );
        true
    }

    /// Where worker `j`'s thread is, from its `/proc` stat.
    fn read(&mut self, j: usize) -> Option<Placed> {
        if self.stats[j].is_none() {
            let tid = self.shared.tids[j].load(Ordering::Relaxed);
            if tid == 0 {
                return None;
            }
            match File::open(stat_path(tid)) {
                Ok(f) => self.stats[j] = Some(f),
                Err(e) => {
                    // No /proc (or not this one): this worker stops looking, once and for all,
                    // rather than failing an open every check.
                    tracing::info!(worker = self.me + 1, error = %e, "worker placement is left to the kernel: /proc/self/task is not readable");
                    self.off = true;
                    return None;
                }
            }
        }
        placed(self.stats[j].as_ref()?)
    }
}

/// The `/proc` stat file of thread `tid` of this process.
fn stat_path(tid: impl std::fmt::Display) -> String {
    format!("/proc/self/task/{tid}/stat")
}

/// Reads an open stat file again from its start (the kernel writes it afresh) and parses it.
fn placed(stat: &File) -> Option<Placed> {
    let mut buf = [0u8; 512];
    let len = stat.read_at(&mut buf, 0).ok()?;
    parse_stat(&buf[..len])
}

/// A thread's scheduling state as `/proc/<pid>/task/<tid>/stat` gives it.
#[derive(Debug, PartialEq, Eq)]
struct Placed {
    /// Running or waiting for a CPU (state `R`), not sleeping.
    runnable: bool,
    /// The CPU it runs on, is queued on, or last ran on.
    cpu: usize,
}

/// Reads the state (field 3) and CPU (field 39) of a stat line. The command name (field 2)
/// is in parentheses and may hold spaces or parentheses itself, so fields are counted from
/// the last `)`.
fn parse_stat(line: &[u8]) -> Option<Placed> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(line.get(close + 2..)?).ok()?;
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    let cpu = fields.nth(35)?.parse().ok()?;
    Some(Placed {
        runnable: state == "R",
        cpu,
    })
}

/// The CPUs of `mask` other than `here` that no runnable worker is on (`busy`), if any.
fn elsewhere(mask: &CpuSet, here: usize, busy: &[usize]) -> Option<CpuSet> {
    let away: Vec<usize> = super::cpus_in(mask)
        .into_iter()
        .filter(|cpu| *cpu != here && !busy.contains(cpu))
        .collect();
    if away.is_empty() {
        return None;
    }
    super::cpu_set(&away).ok()
}

#[cfg(test)]
mod tests {
    use super::super::{cpu_set, cpus_in};
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn stat_lines_are_read_past_any_command_name() {
        let line = |comm: &str, state: &str, cpu: usize| {
            // Fields 4..=38 are numbers; 39 is the CPU; more follow.
            let middle = (4..=38)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            format!("4242 ({comm}) {state} {middle} {cpu} 0 0 0 0 0\n")
        };
        assert_eq!(
            parse_stat(line("worker-1", "R", 1).as_bytes()),
            Some(Placed {
                runnable: true,
                cpu: 1
            })
        );
        assert_eq!(
            parse_stat(line("a) R (b", "S", 3).as_bytes()),
            Some(Placed {
                runnable: false,
                cpu: 3
            })
        );
        // Waiting on I/O or stopped is not waiting for a CPU.
        for state in ["D", "T", "I"] {
            assert!(
                !parse_stat(line("worker-1", state, 0).as_bytes())
                    .unwrap()
                    .runnable
            );
        }
        assert_eq!(parse_stat(b"4242 (worker-1) R 1 2"), None);
        assert_eq!(parse_stat(b"no parenthesis"), None);
    }

    #[test]
    fn the_way_out_avoids_this_cpu_busy_workers_and_cpus_not_allowed() {
        let cpus = |m: Option<CpuSet>| m.as_ref().map(cpus_in);
        assert_eq!(cpus(elsewhere(&mask(&[0, 1]), 0, &[0])), Some(vec![1]));
        assert_eq!(
            cpus(elsewhere(&mask(&[0, 1, 2, 3]), 2, &[2, 3])),
            Some(vec![0, 1])
        );
        assert_eq!(cpus(elsewhere(&mask(&[2, 5]), 2, &[2])), Some(vec![5]));
        // Every other CPU has a busy worker, or there is no other CPU: stay.
        assert_eq!(cpus(elsewhere(&mask(&[0, 1]), 0, &[0, 1])), None);
        assert_eq!(cpus(elsewhere(&mask(&[4]), 4, &[4])), None);
    }

    /// Runs `f` on a thread that joins `spread` as worker `me`, starting on the CPUs of `mask`;
    /// gives its thread id back first.
    fn worker<T: Send + 'static>(
        spread: &Arc<Spread>,
        me: usize,
        mask: CpuSet,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> (Pid, std::thread::JoinHandle<T>) {
        let spread = spread.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            sched_setaffinity(Pid::from_raw(0), &mask).unwrap();
            spread.join(me);
            tx.send(gettid()).unwrap();
            f()
        });
        (rx.recv().unwrap(), thread)
    }

    fn mask(cpus: &[usize]) -> CpuSet {
        cpu_set(cpus).unwrap()
    }

    /// This thread's worker check, run now rather than at the [`EVERY`]th request: whether it
    /// moved, then the CPU it is on and its mask.
    fn check_now() -> (bool, usize, CpuSet) {
        let moved = LOCAL.with_borrow_mut(|l| l.as_mut().unwrap().check());
        (
            moved,
            sched_getcpu().unwrap(),
            sched_getaffinity(Pid::from_raw(0)).unwrap(),
        )
    }

    /// Waits (up to a minute) until thread `tid` is asleep.
    fn asleep(tid: Pid) {
        let stat = File::open(stat_path(tid)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if !placed(&stat).unwrap().runnable {
                return;
            }
            assert!(Instant::now() < deadline, "thread {tid} never slept");
            std::thread::yield_now();
        }
    }

    /// The first two CPUs of the mask, or `None` (and a note) on a one-CPU machine.
    fn two_cpus() -> Option<(usize, usize)> {
        let allowed = crate::edge::workers::allowed_cpus().unwrap();
        if allowed.len() < 2 {
            eprintln!("skipped: one CPU only");
            return None;
        }
        Some((allowed[0], allowed[1]))
    }

    /// Worker `me` of `spread`, held on `cpu` and always runnable until the flag is set.
    fn spinning(
        spread: &Arc<Spread>,
        me: usize,
        cpu: usize,
    ) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let (_, thread) = worker(spread, me, mask(&[cpu]), move || {
            while !halt.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        (stop, thread)
    }

    /// Worker 2 spins, held on CPU `a`; worker 1 runs on `a` with `a` and `b` allowed. Its
    /// check finds worker 2 runnable there and moves worker 1 to `b`, and gives it its whole
    /// mask back. With worker 2 asleep instead, worker 1 does not move.
    #[test]
    fn a_worker_moves_off_a_cpu_where_another_worker_is_runnable_and_keeps_its_mask() {
        let Some((a, b)) = two_cpus() else { return };
        for other_runnable in [true, false] {
            let spread = Spread::new(2);
            let (release, parked) = std::sync::mpsc::channel::<()>();
            let (stop, worker2) = if other_runnable {
                spinning(&spread, 1, a)
            } else {
                let (tid, thread) = worker(&spread, 1, mask(&[a]), move || {
                    let _ = parked.recv();
                });
                asleep(tid);
                (Arc::default(), thread)
            };
            let (_, worker1) = worker(&spread, 0, mask(&[a]), move || {
                assert_eq!(sched_getcpu().unwrap(), a);
                sched_setaffinity(Pid::from_raw(0), &mask(&[a, b])).unwrap();
                check_now()
            });
            let (moved, on, after) = worker1.join().unwrap();
            stop.store(true, Ordering::Relaxed);
            drop(release);
            worker2.join().unwrap();
            assert_eq!(moved, other_runnable, "worker 2 runnable: {other_runnable}");
            if moved {
                assert_eq!(on, b, "moved to the other CPU");
            }
            assert_eq!(after, mask(&[a, b]), "the mask is whole");
        }
    }

    /// Spinning workers call [`on_request`]; it checks once per [`EVERY`] calls, and a worker
    /// that has moved waits [`HOLD`] before it moves again.
    #[test]
    fn checks_come_every_so_many_requests_and_moves_are_held_apart() {
        let Some((a, b)) = two_cpus() else { return };
        let spread = Spread::new(2);
        let (stop, worker2) = spinning(&spread, 1, a);
        let (_, worker1) = worker(&spread, 0, mask(&[a, b]), move || {
            // A hold no test run outlasts.
            LOCAL.with_borrow_mut(|l| l.as_mut().unwrap().hold = Duration::from_secs(3600));
            // Onto `a`, beside worker 2, with both CPUs allowed again.
            sched_setaffinity(Pid::from_raw(0), &mask(&[a])).unwrap();
            sched_setaffinity(Pid::from_raw(0), &mask(&[a, b])).unwrap();
            // A check reads the next other worker (here always worker 2, index 1).
            let looked = || LOCAL.with_borrow(|l| l.as_ref().unwrap().next);
            for _ in 0..EVERY - 1 {
                on_request();
            }
            let before = looked();
            on_request();
            let after = looked();
            let moved = LOCAL.with_borrow(|l| l.as_ref().unwrap().moved_at.is_some());
            // Back beside worker 2 at once: the hold keeps this worker there.
            sched_setaffinity(Pid::from_raw(0), &mask(&[a])).unwrap();
            sched_setaffinity(Pid::from_raw(0), &mask(&[a, b])).unwrap();
            let (again, held, _) = check_now();
            (before, after, moved, again, held)
        });
        let (before, after, moved, again, held) = worker1.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        worker2.join().unwrap();
        assert_eq!((before, after), (0, 1), "only the 64th request checked");
        assert!(moved, "the check moved worker 1 off worker 2's CPU");
        assert!(!again, "moved again within the hold (now on {held})");
    }

    /// A worker whose look at `/proc` fails stops looking (one failed open, not one per
    /// check).
    #[test]
    fn a_worker_that_cannot_read_proc_stops_looking() {
        let spread = Spread::new(2);
        // A thread id no thread has (above the kernel's pid_max limit of 2^22).
        spread.tids[1].store(i32::MAX, Ordering::Relaxed);
        let (_, worker) = worker(
            &spread,
            0,
            sched_getaffinity(Pid::from_raw(0)).unwrap(),
            || {
                let (moved, _, _) = check_now();
                (moved, LOCAL.with_borrow(|l| l.as_ref().unwrap().off))
            },
        );
        assert_eq!(worker.join().unwrap(), (false, true));
    }
}
