//! The threads kernels run on. Each is long-lived and the one that finished last takes the
//! next kernel (last in, first out), so a worker running one kernel at a time runs them all
//! on one thread: its thread-local `Processor` (decoder state) stays warm, and so do the
//! allocator's per-thread arena and its freed image buffers. tokio's blocking pool hands
//! each task to whichever idle thread wakes, which spread a dozen kernels over eight
//! threads, each paying for fresh pages (about a fifth of a small photo's time went to page
//! faults). Threads are added while every existing one is busy; their number is bounded by
//! the kernels admitted at once (the worker's lanes).

use std::any::Any;
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

/// A kernel to run; it returns the delivery of its answer, which the thread makes only after
/// it is back among the idle ones (so the caller's next kernel finds it there).
type Task = Box<dyn FnOnce() -> Deliver + Send>;
type Deliver = Box<dyn FnOnce() + Send>;

/// A set of lane threads.
pub struct Lanes {
    /// Senders to idle threads, the most recently idle last.
    idle: Mutex<Vec<Sender<Task>>>,
}

/// The process's lanes, which the worker's kernels run on.
pub static LANES: Lanes = Lanes::new();

/// A kernel that panicked: the payload's message.
#[derive(Debug)]
pub struct Panicked(pub String);

impl Lanes {
    /// No threads yet; they start as kernels arrive.
    pub const fn new() -> Lanes {
        Lanes { idle: Mutex::new(Vec::new()) }
    }

    /// Runs `f` on a lane thread; resolves to its result, or to the panic it raised (the
    /// thread lives on). Dropping the future does not stop `f` (stop it through its `Stop`).
    pub async fn run<R: Send + 'static>(&'static self, f: impl FnOnce() -> R + Send + 'static) -> Result<R, Panicked> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut task: Task = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| Panicked(message(&*p)));
            Box::new(move || {
                let _ = tx.send(out);
            })
        });
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                // A thread that has gone (it cannot, but) hands the task back: try the next.
                Some(lane) => match lane.send(task) {
                    Ok(()) => break,
                    Err(back) => task = back.0,
                },
                None => {
                    self.spawn(task);
                    break;
                }
            }
        }
        rx.await.unwrap_or_else(|_| Err(Panicked("the kernel thread ended without an answer".into())))
    }

    fn spawn(&'static self, first: Task) {
        let (tx, rx) = channel::<Task>();
        let spawned = std::thread::Builder::new().name("pixq-kernel".into()).spawn(move || {
            let mut task = first;
            loop {
                let deliver = task();
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(tx.clone());
                deliver();
                match rx.recv() {
                    Ok(next) => task = next,
                    Err(_) => return,
                }
            }
        });
        if let Err(e) = spawned {
            // No thread to be had: the task's answer channel drops, and `run` reports it.
            tracing::error!(error = %e, "could not start a kernel thread");
        }
    }
}

impl Default for Lanes {
    fn default() -> Lanes {
        Lanes::new()
    }
}

fn message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static Lanes {
        Box::leak(Box::new(Lanes::new()))
    }

    #[tokio::test]
    async fn one_kernel_at_a_time_stays_on_one_thread_and_a_panic_is_an_answer() {
        let lanes = pool();
        let first = lanes.run(|| std::thread::current().id()).await.unwrap();
        for _ in 0..20 {
            assert_eq!(lanes.run(|| std::thread::current().id()).await.unwrap(), first);
        }
        let e = lanes.run(|| -> u32 { panic!("bad input") }).await.unwrap_err();
        assert_eq!(e.0, "bad input");
        // The thread survived its panic and is the one taken next.
        assert_eq!(lanes.run(|| std::thread::current().id()).await.unwrap(), first);
    }

    #[tokio::test]
    async fn kernels_at_once_get_threads_of_their_own() {
        let lanes = pool();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
        let runs: Vec<_> = (0..3)
            .map(|_| {
                let b = barrier.clone();
                tokio::spawn(lanes.run(move || {
                    // All three must be running at once to pass the barrier.
                    b.wait();
                    std::thread::current().id()
                }))
            })
            .collect();
        let mut ids = Vec::new();
        for r in runs {
            ids.push(r.await.unwrap().unwrap());
        }
        ids.sort_by_key(|id| format!("{id:?}"));
        ids.dedup();
        assert_eq!(ids.len(), 3);
    }
}
