//! A progress indicator on the terminal for slow steps.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A progress indicator on a terminal for slow steps (compiling a 15 MB
/// Python or JavaScript plugin takes seconds): after a second it shows the
/// step and the time so far, cleared when done. Silent when stderr is not
/// a terminal.
pub(crate) struct Progress {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(what: &'static str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                done: None,
                thread: None,
            };
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            if !matches!(
                rx.recv_timeout(Duration::from_secs(1)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            ) {
                return;
            }
            let frames = ['|', '/', '-', '\\'];
            for i in 0.. {
                eprint!(
                    "\r{} {what}… {:.0} s",
                    frames[i % frames.len()],
                    started.elapsed().as_secs_f64()
                );
                if !matches!(
                    rx.recv_timeout(Duration::from_millis(250)),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                ) {
                    break;
                }
            }
            eprint!("\r\x1b[K");
        });
        Progress {
            done: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
