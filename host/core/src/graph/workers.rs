//! A run's worker threads.

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A run's worker threads. Dropping it ends them and joins them, so that a
/// run leaves no threads behind when it returns. That matters beyond
/// tidiness: glibc gives a thread's malloc arena to a new thread only once
/// the thread has exited, so a job started right after another one (a
/// restart, a bench's next round) would otherwise find the arenas still
/// taken and put its workers on arenas that other threads use: in the word
/// count bench, 2 workers ran 1.2-1.6× as fast as one instead of about 2×.
pub(super) struct Workers {
    pool: Option<rayon::ThreadPool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Workers that have not finished their loop yet.
    live: Arc<(Mutex<usize>, std::sync::Condvar)>,
}

impl Workers {
    /// Starts `n` worker threads, each running `on_start` first.
    pub(super) fn start(n: usize, on_start: impl Fn() + Send + Sync + 'static) -> Result<Workers> {
        let live = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        let leaving = live.clone();
        let mut threads = Vec::with_capacity(n);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("sluice-worker-{i}"))
            .spawn_handler(|worker| {
                let mut b = std::thread::Builder::new();
                if let Some(name) = worker.name() {
                    b = b.name(name.to_string());
                }
                *live.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                threads.push(b.spawn(|| worker.run())?);
                Ok(())
            })
            .start_handler(move |_| on_start())
            .exit_handler(move |_| {
                *leaving.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                leaving.1.notify_all();
            })
            .build()
            .map_err(|e| Error::Internal(format!("starting worker threads: {e}")))?;
        Ok(Workers {
            pool: Some(pool),
            threads,
            live,
        })
    }
}

impl std::ops::Deref for Workers {
    type Target = rayon::ThreadPool;
    fn deref(&self) -> &rayon::ThreadPool {
        self.pool
            .as_ref()
            .expect("the pool lives until the run ends")
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.pool.take());
        // Idle workers leave at once. The bound is for a worker that is
        // somehow still busy: it is then left to finish on its own rather
        // than holding up the job's end.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (count, changed) = &*self.live;
        let mut left = count.lock().unwrap_or_else(|e| e.into_inner());
        while *left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                tracing::warn!(
                    threads = *left,
                    "worker threads still busy 10 s after the run ended; not waiting for them"
                );
                return;
            }
            left = changed
                .wait_timeout(left, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(left);
        // Past their loop, the threads only have their thread-locals to
        // free; joining makes sure their arenas are released.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
