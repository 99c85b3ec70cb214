//! Cooperative stop: cancellation and a time limit, checked inside long operations.
//!
//! The kernel is synchronous and runs on a blocking thread its caller cannot kill. A
//! [`Stop`] is how the caller ends it early: the worker cancels a released job's kernel at
//! shutdown, and every job has a time limit (on Lambda, the invocation's deadline). Long
//! loops (blur, sharpen, free rotation, Sobel, PNG filtering, frame walks) call
//! [`Stop::check`] every few rows, and `Processor::process_with` checks between steps, so a
//! stop takes effect within milliseconds. Decoders and external encoders are not
//! interrupted mid-call; their work is bounded by the limits checked from the header.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

/// A cancellation flag shared with the caller plus an optional deadline. Cloning shares the
/// flag; the default never stops.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    /// The deadline and the limit it came from (for the error message).
    deadline: Option<(Instant, Duration)>,
}

/// Rows between two checks in per-row loops: a check costs a clock read, a row of a large
/// image costs microseconds to milliseconds.
pub(crate) const ROWS_PER_CHECK: usize = 8;

impl Stop {
    /// A stop that fires only when cancelled.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// The same flag with a time limit counted from now.
    pub fn with_time_limit(self, limit: Duration) -> Stop {
        self.with_deadline(Instant::now() + limit, limit)
    }

    /// The same flag with a deadline; `limit` is what the error message reports.
    pub fn with_deadline(mut self, at: Instant, limit: Duration) -> Stop {
        self.deadline = Some((at, limit));
        self
    }

    /// Asks every holder of this stop (or a clone) to end as soon as it checks.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Whether [`Stop::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` after a cancel, `Err(TimedOut)` after the deadline, else `Ok`.
    pub fn check(&self) -> Result<(), Error> {
        if self.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if let Some((at, limit)) = self.deadline
            && Instant::now() >= at
        {
            return Err(Error::TimedOut { limit });
        }
        Ok(())
    }

    /// [`Stop::check`] on every [`ROWS_PER_CHECK`]-th row.
    pub(crate) fn check_row(&self, y: usize) -> Result<(), Error> {
        if y.is_multiple_of(ROWS_PER_CHECK) { self.check() } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_is_shared_and_deadline_fires() {
        let s = Stop::new();
        let c = s.clone();
        assert!(s.check().is_ok());
        c.cancel();
        assert!(matches!(s.check(), Err(Error::Cancelled)));
        let t = Stop::new().with_deadline(Instant::now(), Duration::from_secs(3));
        assert!(matches!(t.check(), Err(Error::TimedOut { limit }) if limit == Duration::from_secs(3)));
        assert!(Stop::new().with_time_limit(Duration::from_secs(60)).check().is_ok());
    }
}
