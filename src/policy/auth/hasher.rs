//! A fixed pool of threads that verify Argon2id hashes, each reusing one memory buffer.
//!
//! Argon2id with OWASP's parameters needs 19 MiB per verification. Run on tokio's blocking pool
//! it allocates that anew on a thread that may change from call to call, and glibc keeps a
//! per-thread arena for each: a burst of cache misses grew the process by hundreds of MiB.
//! Here the work runs on `threads` dedicated threads, each holding its own blocks while jobs
//! keep coming, so memory stays at `threads × m_cost` however many logins arrive; a worker
//! that finds its queue empty frees its blocks, so a steady state of cached logins (every
//! booking after the first of each integrator) holds none of it. The queue is bounded and
//! taken fairly per client address ([`Queues`]); a caller it has no room for is told at once.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

struct Job {
    password: Vec<u8>,
    phc: Arc<str>,
    /// `None`: the job was dropped from the queue to make room (see [`Queues::push`]).
    reply: oneshot::Sender<Option<bool>>,
}

/// The queue is full: more verifications are waiting than the pool will take on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Where a verification comes from, for its place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    pub addr: Option<IpAddr>,
    /// The address has logged in as this login before (see `throttle::STANDING`): its jobs
    /// are taken before those of addresses without standing.
    pub standing: bool,
}

/// Jobs waiting, one FIFO per source, taken round-robin: an address with a thousand jobs
/// queued gets one verification per turn, like an address with one, so a flood from one
/// address delays another's login by at most one job per other active address.
#[derive(Default)]
struct Queues {
    by_source: HashMap<Source, VecDeque<Job>>,
    /// Sources with jobs, in turn order: those with standing first.
    ring: VecDeque<Source>,
    standing_ring: VecDeque<Source>,
    total: usize,
    capacity: usize,
    closed: bool,
}

impl Queues {
    /// Queues `job`. When the queue is full, the source with the most jobs waiting (the one
    /// causing the overload) loses its newest; if that is `source` itself, `job` is refused.
    fn push(&mut self, source: Source, job: Job) -> Result<(), Job> {
        if self.total >= self.capacity {
            let own = self.by_source.get(&source).map_or(0, VecDeque::len);
            let longest = |standing: bool| {
                self.by_source
                    .iter()
                    .filter(|(s, _)| s.standing == standing)
                    .max_by_key(|(_, q)| q.len())
                    .map(|(s, q)| (*s, q.len()))
            };
            // Standing always gets a place: a job without standing makes room for it, however
            // few that job's source has queued (many addresses with one job each fill the
            // queue as surely as one address with many).
            let victim = match (source.standing, longest(false)) {
                (true, Some(v)) => Some(v),
                _ => longest(true)
                    .into_iter()
                    .chain(longest(false))
                    .max_by_key(|(_, len)| *len)
                    .filter(|(_, len)| *len > own + 1),
            };
            let Some((victim, _)) = victim else {
                return Err(job);
            };
            self.drop_newest(victim);
        }
        let queue = self.by_source.entry(source).or_default();
        let first = queue.is_empty();
        queue.push_back(job);
        if first {
            self.ring_of(source).push_back(source);
        }
        self.total += 1;
        Ok(())
    }

    /// Drops `victim`'s newest job (its caller is told it was dropped); a source left with none
    /// leaves the turn order.
    fn drop_newest(&mut self, victim: Source) {
        let Some(queue) = self.by_source.get_mut(&victim) else {
            return;
        };
        if let Some(dropped) = queue.pop_back() {
            let _ = dropped.reply.send(None);
            self.total -= 1;
        }
        if queue.is_empty() {
            self.by_source.remove(&victim);
            self.ring_of(victim).retain(|s| *s != victim);
        }
    }

    fn ring_of(&mut self, source: Source) -> &mut VecDeque<Source> {
        if source.standing {
            &mut self.standing_ring
        } else {
            &mut self.ring
        }
    }

    /// The next job: the first source in turn gives its oldest and goes to the back.
    fn pop(&mut self) -> Option<Job> {
        let source = self
            .standing_ring
            .pop_front()
            .or_else(|| self.ring.pop_front())?;
        let queue = self.by_source.get_mut(&source)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.by_source.remove(&source);
        } else {
            self.ring_of(source).push_back(source);
        }
        self.total -= usize::from(job.is_some());
        job
    }
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Hasher {
    shared: Arc<Shared>,
    runs: Arc<AtomicU64>,
}

impl Hasher {
    pub fn new(threads: usize, queue: usize) -> Hasher {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues {
                capacity: queue.max(1),
                ..Queues::default()
            }),
            ready: Condvar::new(),
        });
        let runs = Arc::new(AtomicU64::new(0));
        for i in 0..threads.max(1) {
            let (shared, runs) = (shared.clone(), runs.clone());
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&shared, &runs))
                .expect("spawning an Argon2 worker thread");
        }
        Hasher { shared, runs }
    }

    /// Verifications run so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Whether `password` matches the PHC string `phc`; `Busy` when the queue had no room
    /// for it, or dropped it to make room (its source had the most jobs waiting).
    pub async fn verify(
        &self,
        source: Source,
        password: Vec<u8>,
        phc: Arc<str>,
    ) -> Result<bool, Busy> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password,
            phc,
            reply,
        };
        {
            let mut queues = self.shared.lock();
            if queues.closed {
                return Ok(false);
            }
            queues.push(source, job).map_err(|_| Busy)?;
        }
        self.shared.ready.notify_one();
        match answer.await {
            Ok(Some(ok)) => Ok(ok),
            Ok(None) => Err(Busy),
            Err(_) => Ok(false),
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

fn worker(shared: &Shared, runs: &AtomicU64) {
    let mut blocks: Vec<Block> = Vec::new();
    while let Some(job) = next_job(shared, &mut blocks) {
        let ok = verify_with(&mut blocks, &job.password, &job.phc);
        runs.fetch_add(1, Ordering::Relaxed);
        let _ = job.reply.send(Some(ok));
    }
}

/// The next job; when none is waiting, frees `blocks` (19 MiB with OWASP's parameters) before
/// blocking, so an idle worker holds no Argon2 memory. `None`: the pool is gone.
fn next_job(shared: &Shared, blocks: &mut Vec<Block>) -> Option<Job> {
    let mut queues = shared.lock();
    if let Some(job) = queues.pop() {
        return Some(job);
    }
    drop(queues);
    *blocks = Vec::new();
    let mut queues = shared.lock();
    loop {
        if let Some(job) = queues.pop() {
            return Some(job);
        }
        if queues.closed {
            return None;
        }
        queues = shared.ready.wait(queues).unwrap_or_else(|e| e.into_inner());
    }
}

/// Verifies with caller-owned memory; constant-time comparison of the outputs.
pub fn verify_with(blocks: &mut Vec<Block>, password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let n = params.block_count();
    if blocks.len() < n {
        blocks.resize(n, Block::default());
    }
    let expected: &[u8] = expected.as_ref();
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut blocks[..n])
        .is_ok()
        && bool::from(out.ct_eq(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<Option<bool>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password: b"p".to_vec(),
            phc: Arc::from("x"),
            reply,
        };
        (job, answer)
    }

    fn from(last: u8, standing: bool) -> Source {
        Source {
            addr: Some(IpAddr::from([127, 0, 0, last])),
            standing,
        }
    }

    fn shared(capacity: usize) -> Shared {
        Shared {
            queues: Mutex::new(Queues {
                capacity,
                ..Queues::default()
            }),
            ready: Condvar::new(),
        }
    }

    #[test]
    fn an_idle_worker_frees_its_blocks_and_a_busy_one_keeps_them() {
        let s = shared(4);
        // Two jobs queued: taking the first must keep the blocks for the second.
        s.lock().push(from(2, false), job().0).ok().unwrap();
        s.lock().push(from(2, false), job().0).ok().unwrap();
        let mut blocks = vec![Block::default(); 1024];
        assert!(next_job(&s, &mut blocks).is_some());
        assert_eq!(blocks.capacity(), 1024, "blocks kept while work is queued");
        assert!(next_job(&s, &mut blocks).is_some());
        assert_eq!(blocks.capacity(), 1024);
        // The queue is empty now (and, so this test needs no second thread, closed): the
        // worker frees the blocks before it would wait.
        s.lock().closed = true;
        assert!(next_job(&s, &mut blocks).is_none(), "the pool is gone");
        assert_eq!(blocks.capacity(), 0, "blocks freed once the queue is empty");
    }

    /// Issue 28, item 2: a queue kept full by many addresses with one job each (each under its
    /// own limit) still takes an integrator with standing; a newcomer without it is refused.
    #[test]
    fn standing_always_gets_a_place_in_a_queue_full_of_one_job_sources() {
        let mut q = Queues {
            capacity: 4,
            ..Queues::default()
        };
        let mut flood = Vec::new();
        for last in 10..14 {
            let (j, a) = job();
            q.push(from(last, false), j).ok().unwrap();
            flood.push(a);
        }
        assert!(
            q.push(from(20, false), job().0).is_err(),
            "no standing: busy"
        );
        let (j, _honest) = job();
        q.push(from(2, true), j)
            .ok()
            .expect("standing gets a place");
        assert_eq!(q.total, 4);
        assert_eq!(
            flood
                .iter_mut()
                .map(|a| a.try_recv())
                .filter(|r| *r == Ok(None))
                .count(),
            1,
            "one flood job made room"
        );
        // The evicted source left the turn order with its only job.
        assert_eq!(q.ring.len(), 3);
        assert_eq!(q.by_source.len(), 4);
        let first = q.pop().unwrap();
        drop(first);
        assert_eq!(q.standing_ring.len(), 0);
    }

    #[test]
    fn sources_take_turns_standing_first_and_a_full_queue_drops_the_floods_newest() {
        let mut q = Queues {
            capacity: 6,
            ..Queues::default()
        };
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (j, a) = job();
            q.push(from(2, false), j).ok().unwrap();
            answers.push(a);
        }
        let (j, honest) = job();
        q.push(from(3, false), j).ok().unwrap();
        // Full: the flooder's newest job makes room for a third address's; the flooder's
        // own next one is refused.
        let (j, _known) = job();
        q.push(from(4, true), j).ok().unwrap();
        assert_eq!(answers.pop().unwrap().try_recv(), Ok(None), "dropped: busy");
        assert!(q.push(from(2, false), job().0).is_err());
        // Standing first, then .2 and .3 alternate although .2 queued four times as many.
        let order: Vec<_> = std::iter::from_fn(|| {
            let before: Vec<Source> = q.standing_ring.iter().chain(&q.ring).copied().collect();
            q.pop().map(|_| before[0].addr.unwrap().to_string())
        })
        .collect();
        assert_eq!(
            order,
            [
                "127.0.0.4",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.2",
                "127.0.0.2",
                "127.0.0.2"
            ]
        );
        assert_eq!(q.total, 0);
        drop(honest);
    }
}
