//! The local executor: a job's tasks on its own worker threads.

use super::{Executor, TaskId};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A run's worker threads. Dropping it ends them and joins them, so that a
/// run leaves no threads behind when it returns. That matters beyond
/// tidiness: glibc gives a thread's malloc arena to a new thread only once
/// the thread has exited, so a job started right after another one (a
/// restart, a bench's next round) would otherwise find the arenas still
/// taken and put its workers on arenas that other threads use: in the word
/// count bench, 2 workers ran 1.2-1.6× as fast as one instead of about 2×.
struct Workers {
    pool: Option<rayon::ThreadPool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Workers that have not finished their loop yet.
    live: Arc<(Mutex<usize>, std::sync::Condvar)>,
}

impl Workers {
    /// Starts `n` worker threads, each running `on_start` first.
    fn start(n: usize, on_start: impl Fn() + Send + Sync + 'static) -> Result<Workers> {
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

/// Runs tasks on worker threads of this process: the executor of a job
/// run by `StreamingContext::run`.
pub struct LocalExecutor {
    workers: Workers,
}

impl LocalExecutor {
    /// Starts `n` worker threads, each running `on_start` first (a CPU
    /// share's accounting joins them there).
    pub fn start(n: usize, on_start: impl Fn() + Send + Sync + 'static) -> Result<LocalExecutor> {
        Ok(LocalExecutor {
            workers: Workers::start(n.max(1), on_start)?,
        })
    }
}

impl Executor for LocalExecutor {
    fn run(&self, tasks: &[TaskId], task: &(dyn Fn(usize) + Sync)) {
        match tasks.len() {
            0 => {}
            // One task runs on a worker all the same: plugin calls are
            // accounted to the job's threads.
            n => self
                .workers
                .install(|| (0..n).into_par_iter().for_each(task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_run_s_worker_threads_have_exited_when_it_is_dropped() {
        let tids = Arc::new(Mutex::new(Vec::new()));
        let t = tids.clone();
        let workers = Workers::start(2, move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            t.lock().unwrap().push(tid);
        })
        .unwrap();
        // Both threads have started once both ran a job.
        let barrier = std::sync::Barrier::new(2);
        workers.broadcast(|_| {
            barrier.wait();
        });
        let tids = tids.lock().unwrap().clone();
        assert_eq!(tids.len(), 2);
        for &tid in &tids {
            assert!(Path::new(&format!("/proc/self/task/{tid}")).exists());
        }
        drop(workers);
        // Joined: each thread has run its exit. The kernel wakes the joiner
        // (clearing the thread's tid) before it removes the thread's /proc
        // entry, so on a busy machine the entry may outlive the join by a
        // moment; a thread still there after a second is still running.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        for tid in tids {
            let task = format!("/proc/self/task/{tid}");
            while Path::new(&task).exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(!Path::new(&task).exists(), "worker {tid} still running");
        }
    }
}
