//! The log sink of `serve`: lines are appended to a shared buffer and written out by one thread
//! every [`FLUSH_EVERY`], so logging a request costs a short lock and a copy: no `write(2)` and
//! no writer wake-up per line (a futex wait only if two threads log at the same instant).
//!
//! A per-line channel to a writer thread (what `tracing-appender` does) would wake that thread
//! for almost every line: a futex call on the request's thread and a context switch competing
//! with the workers for the CPU. Here the writer wakes on its own clock, or early when a line
//! takes the buffer past [`WAKE_AT`], so at high rates the buffers settle at a size they reuse
//! instead of growing between flushes.
//!
//! If the output stalls (a log reader that stopped reading), the buffer stops growing at
//! [`MAX_PENDING`] bytes and further lines are dropped, then reported by count once the output
//! moves again: bookings are never slowed by logging.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How often the writer thread writes what has accumulated.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Bytes waiting to be written past which the line that crosses it wakes the writer.
pub const WAKE_AT: usize = 256 << 10;
/// Bytes waiting to be written beyond which lines are dropped.
pub const MAX_PENDING: usize = 4 << 20;

#[derive(Default)]
struct Shared {
    pending: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` handed to the fmt layer.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
    /// The writer thread, for [`WAKE_AT`]'s early wake-up.
    writer: Thread,
}

/// Stops the writer thread and writes what is left when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`.
pub fn spawn<W: Write + Send + 'static>(out: W) -> (BatchWriter, FlushGuard) {
    spawn_every(out, FLUSH_EVERY)
}

/// [`spawn`] with a writer that wakes on its own every `every`.
fn spawn_every<W: Write + Send + 'static>(out: W, every: Duration) -> (BatchWriter, FlushGuard) {
    let shared = Arc::new(Shared::default());
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || run(&s, out, every))
        .expect("spawning the log writer thread");
    (
        BatchWriter {
            shared: shared.clone(),
            writer: thread.thread().clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    )
}

fn run<W: Write>(shared: &Shared, mut out: W, every: Duration) {
    let mut batch = Vec::new();
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        if !stopping {
            std::thread::park_timeout(every);
        }
        std::mem::swap(&mut *shared.pending(), &mut batch);
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
            batch.clear();
            // One burst must not keep megabytes for good.
            if batch.capacity() > MAX_PENDING / 4 {
                batch = Vec::new();
            }
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "mis-gateway: {dropped} log lines dropped: the log output was not keeping up"
            );
        }
        let _ = out.flush();
        if stopping {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// One line's writer: appends to the shared buffer.
pub struct LineSink<'a>(&'a BatchWriter);

impl Write for LineSink<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &self.0.shared;
        let mut pending = shared.pending();
        let before = pending.len();
        if before + line.len() > MAX_PENDING {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(line);
            if before < WAKE_AT && pending.len() >= WAKE_AT {
                drop(pending);
                self.0.writer.unpark();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineSink<'a>;
    fn make_writer(&'a self) -> LineSink<'a> {
        LineSink(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records each write it got, and can be held shut.
    #[derive(Clone, Default)]
    struct Out {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.writes.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(out: &Out) -> String {
        let w = out.writes.lock().unwrap();
        String::from_utf8(w.concat()).unwrap()
    }

    #[test]
    fn lines_are_written_in_batches_and_everything_left_on_drop() {
        let out = Out::default();
        // Hold the output shut so the writer thread cannot write before all lines are in.
        let shut = out.gate.lock().unwrap();
        let (writer, guard) = spawn(out.clone());
        for i in 0..100 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(shut);
        drop(guard);
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text(&out), expected, "every line, in order, none twice");
        assert!(
            out.writes.lock().unwrap().len() <= 2,
            "100 lines in at most two writes: {}",
            out.writes.lock().unwrap().len()
        );
    }

    #[test]
    fn a_buffer_past_the_wake_mark_is_written_without_waiting_for_the_clock() {
        /// Says on a channel how many bytes each write carried.
        struct Told(std::sync::mpsc::Sender<usize>);
        impl Write for Told {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(b.len());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        // A writer whose own clock would not wake it within the test's life.
        let (writer, guard) = spawn_every(Told(tx), Duration::from_secs(3600));
        let line = [b'y'; 1024];
        for _ in 0..WAKE_AT / line.len() {
            writer.make_writer().write_all(&line).unwrap();
        }
        let mut written = 0;
        while written < WAKE_AT {
            written += rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the line that reached the wake mark woke the writer");
        }
        assert_eq!(written, WAKE_AT);
        drop(guard);
    }

    #[test]
    fn a_stalled_output_drops_lines_past_the_cap_and_says_how_many() {
        let out = Out::default();
        let shut = out.gate.lock().unwrap();
        let (writer, guard) = spawn(out.clone());
        let line = vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        // The writer thread may already hold one batch (stuck at the gate); what arrives
        // after the buffer is full is dropped and counted, never blocking the caller.
        let lines = 3 * MAX_PENDING / line.len();
        for _ in 0..lines {
            writer.make_writer().write_all(&line).unwrap();
        }
        drop(shut);
        drop(guard);
        let text = text(&out);
        let written = text.matches('x').count() / 1023;
        let reported: usize = text
            .lines()
            .filter_map(|l| l.strip_prefix("mis-gateway: "))
            .map(|l| l.split(' ').next().unwrap().parse::<usize>().unwrap())
            .sum();
        assert!(reported > 0, "a line reports the drop");
        assert!(written <= 2 * MAX_PENDING / line.len(), "{written}");
        assert_eq!(written + reported, lines, "each line written or counted");
    }
}
