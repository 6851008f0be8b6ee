//! A fixed pool of threads that verify Argon2id hashes, each reusing one memory buffer.
//!
//! Argon2id with OWASP's parameters needs 19 MiB per verification. Run on tokio's blocking pool
//! it allocates that anew on a thread that may change from call to call, and glibc keeps a
//! per-thread arena for each: a burst of cache misses grew the process by hundreds of MiB.
//! Here the work runs on `threads` dedicated threads, each holding its own blocks while jobs
//! keep coming, so memory stays at `threads × m_cost` however many logins arrive; a worker
//! that finds its queue empty frees its blocks, so a steady state of cached logins (every
//! booking after the first of each integrator) holds none of it. The queue is bounded: when
//! it is full the caller is told at once instead of waiting without limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

struct Job {
    password: Vec<u8>,
    phc: Arc<str>,
    reply: oneshot::Sender<bool>,
}

/// The queue is full: more verifications are waiting than the pool will take on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

pub struct Hasher {
    jobs: Sender<Job>,
    runs: Arc<AtomicU64>,
}

impl Hasher {
    pub fn new(threads: usize, queue: usize) -> Hasher {
        // Every worker has its own receiver of one queue (crossbeam's channel is MPMC), so an
        // idle worker waits without holding a lock another worker needs.
        let (jobs, rx) = bounded::<Job>(queue);
        let runs = Arc::new(AtomicU64::new(0));
        for i in 0..threads.max(1) {
            let (rx, runs) = (rx.clone(), runs.clone());
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&rx, &runs))
                .expect("spawning an Argon2 worker thread");
        }
        Hasher { jobs, runs }
    }

    /// Verifications run so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Whether `password` matches the PHC string `phc`.
    pub async fn verify(&self, password: Vec<u8>, phc: Arc<str>) -> Result<bool, Busy> {
        let (reply, answer) = oneshot::channel();
        match self.jobs.try_send(Job {
            password,
            phc,
            reply,
        }) {
            Ok(()) => Ok(answer.await.unwrap_or(false)),
            Err(TrySendError::Full(_)) => Err(Busy),
            Err(TrySendError::Disconnected(_)) => Ok(false),
        }
    }
}

fn worker(rx: &Receiver<Job>, runs: &AtomicU64) {
    let mut blocks: Vec<Block> = Vec::new();
    while let Some(job) = next_job(rx, &mut blocks) {
        let ok = verify_with(&mut blocks, &job.password, &job.phc);
        runs.fetch_add(1, Ordering::Relaxed);
        let _ = job.reply.send(ok);
    }
}

/// The next job; when none is waiting, frees `blocks` (19 MiB with OWASP's parameters) before
/// blocking, so an idle worker holds no Argon2 memory. `None`: the pool is gone.
fn next_job(rx: &Receiver<Job>, blocks: &mut Vec<Block>) -> Option<Job> {
    match rx.try_recv() {
        Ok(job) => Some(job),
        Err(e) => {
            *blocks = Vec::new();
            match e {
                TryRecvError::Empty => rx.recv().ok(),
                TryRecvError::Disconnected => None,
            }
        }
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

    #[test]
    fn an_idle_worker_frees_its_blocks_and_a_busy_one_keeps_them() {
        let (tx, rx) = bounded::<Job>(4);
        let job = || {
            let (reply, _answer) = oneshot::channel();
            Job {
                password: b"p".to_vec(),
                phc: Arc::from("x"),
                reply,
            }
        };
        // Two jobs queued: taking the first must keep the blocks for the second.
        tx.send(job()).unwrap();
        tx.send(job()).unwrap();
        let mut blocks = vec![Block::default(); 1024];
        assert!(next_job(&rx, &mut blocks).is_some());
        assert_eq!(blocks.capacity(), 1024, "blocks kept while work is queued");
        assert!(next_job(&rx, &mut blocks).is_some());
        assert_eq!(blocks.capacity(), 1024);
        // The queue is empty now (and, so this test needs no second thread, closed): the
        // worker frees the blocks before it would wait.
        drop(tx);
        assert!(next_job(&rx, &mut blocks).is_none(), "the pool is gone");
        assert_eq!(blocks.capacity(), 0, "blocks freed once the queue is empty");
    }
}
