//! The one decision procedure both runtimes share: parse a message (a job or an S3
//! notification), run each job through [`process`], and decide what becomes of the message:
//! acknowledged, dead-lettered with a failed record, or released for a later attempt after
//! the [`RetryPolicy`]'s backoff. The worker loop deletes on [`Disposition::Ack`]; the
//! Lambda handler reports [`Disposition::Retry`] as a batch item failure.
//!
//! To change the retry policy: [`RetryPolicy`] here (its defaults), and `MaxReceiveCount`
//! in template.yaml (SQS) or `--max-receives` (the embedded queue).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::events::{Incoming, S3EventDefaults, parse_message};
use crate::process::{Admission, Outcome, ProcessConfig, process, record_failure, record_provisional};
use crate::queue::{Message, Queue};
use crate::schema::Job;
use crate::store::ObjectStore;

/// When a failed attempt is tried again: `base * 2^(n-1)` after the n-th delivery, capped
/// at `max`, applied through the message's visibility timeout (so it survives a crash of
/// the worker). The same policy serves the worker and the Lambda: a transient failure is
/// the store's or the queue's, whichever runtime met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failed delivery.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 2 s doubling to 5 minutes: with the default 5 receives a message is retried after
    /// 2, 4, 8 and 16 s, enough to ride out S3/SQS throttling without holding a batch long.
    fn default() -> Self {
        RetryPolicy { base: Duration::from_secs(2), max: Duration::from_secs(300) }
    }
}

impl RetryPolicy {
    /// Delay after the `receive_count`-th delivery failed.
    pub fn delay(&self, receive_count: u32) -> Duration {
        let factor = 1u32 << receive_count.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What happened to one message, for a front end (the CLI's progress bar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Output written (or reused).
    Done {
        /// Job id.
        job: String,
        /// Batch id.
        batch: String,
        /// Answered from an existing output.
        reused: bool,
        /// Its outputs (one per variant), so a caller can collect them at once.
        outputs: Vec<crate::schema::OutputInfo>,
    },
    /// Dead-lettered with a failed result record.
    Failed {
        /// Job id, if the message was a job at all.
        job: Option<String>,
        /// Batch id, if known.
        batch: Option<String>,
        /// Why.
        reason: String,
    },
    /// Released for a later attempt.
    Retrying {
        /// Job id.
        job: String,
        /// Why.
        reason: String,
    },
}

/// What is left for the caller once [`settle`] has handled a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Finished: delete the message (a Lambda reports it as a success).
    Ack,
    /// Already dead-lettered and removed from the queue (a Lambda reports success too).
    Gone,
    /// Released for a later attempt, visibility already set (a Lambda reports a failure).
    Retry,
}

/// Everything [`settle`] needs, borrowed from the runtime that calls it.
#[derive(Debug)]
pub struct Settle<'a> {
    /// The queue the message came from (dead-lettering, backoff).
    pub queue: &'a dyn Queue,
    /// The object store.
    pub store: &'a dyn ObjectStore,
    /// Process settings.
    pub process: &'a ProcessConfig,
    /// Kernel lanes and the memory budget.
    pub admission: &'a Admission,
    /// Jobs not yet admitted when this fires are released.
    pub cancel: &'a CancellationToken,
    /// How S3 notifications become jobs (None: they are refused).
    pub s3_events: Option<&'a S3EventDefaults>,
    /// How long a message waits before its next attempt.
    pub retry: RetryPolicy,
    /// Live metrics (the worker's `/metrics`), if any.
    pub metrics: Option<&'a crate::prom::Metrics>,
    /// The heavy queue, where jobs that do not fit this runtime go
    /// ([`ProcessConfig::forward`]).
    pub forward: Option<&'a dyn Queue>,
    /// Progress events.
    pub events: Option<&'a mpsc::UnboundedSender<Event>>,
}

impl Settle<'_> {
    fn emit(&self, e: Event) {
        if let Some(m) = self.metrics {
            use crate::prom::Outcome as Counted;
            m.job(match &e {
                Event::Done { reused: true, .. } => Counted::Reused,
                Event::Done { .. } => Counted::Done,
                Event::Failed { .. } => Counted::Failed,
                Event::Retrying { .. } => Counted::Retried,
            });
        }
        if let Some(tx) = self.events {
            let _ = tx.send(e);
        }
    }

    async fn bury(&self, msg: &Message, reason: &str) -> Disposition {
        match self.queue.dead_letter(msg, reason).await {
            Ok(()) => Disposition::Gone,
            Err(e) => {
                warn!(error = %e, "dead-letter failed; the message will come back");
                Disposition::Retry
            }
        }
    }
}

/// Handles one message end to end: parse it (a job or an S3 notification), run every job,
/// record failures, dead-letter poison, set the backoff for retries. The one decision
/// procedure both runtimes share; only deleting on `Ack` is left to the caller.
pub async fn settle(s: &Settle<'_>, msg: &Message) -> Disposition {
    let (jobs, refused) = match parse_message(&msg.body, s.s3_events) {
        Ok(Incoming::Jobs(jobs, refused)) => (jobs, refused),
        Ok(Incoming::Ignore(why)) => {
            debug!(%why, "nothing to do");
            return Disposition::Ack;
        }
        Err(e) => {
            let reason = format!("bad message: {e}");
            warn!(%reason, "dead-lettering");
            s.emit(Event::Failed { job: None, batch: None, reason: reason.clone() });
            return s.bury(msg, &reason).await;
        }
    };
    let mut retry: Option<String> = None;
    let mut poison: Option<String> = None;
    let mut released = false;
    for r in refused {
        warn!(job_id = %r.job.id, reason = %r.reason, "refused");
        if !s.process.allows(&r.job.output.bucket) {
            poison.get_or_insert(format!(
                "{} (no record: bucket '{}' is not served here)",
                r.reason, r.job.output.bucket
            ));
            continue;
        }
        match record_failure(s.store, &r.job, s.process, msg.receive_count, r.reason.clone()).await {
            Outcome::Poison(reason) => {
                s.emit(Event::Failed { job: Some(r.job.id.clone()), batch: Some(r.job.batch.clone()), reason });
                poison.get_or_insert(r.reason);
            }
            _ => {
                retry.get_or_insert_with(|| format!("{} (its failure record could not be written)", r.reason));
            }
        }
    }
    let last_attempt = msg.receive_count >= s.queue.max_receives();
    for job in &jobs {
        let span = info_span!("process", job_id = %job.id, batch = %job.batch);
        if last_attempt && s.process.allows(&job.output.bucket) {
            // The queue dead-letters the message if this attempt does not end it (a crash,
            // an OOM kill, a release at shutdown), and nothing of ours runs then: record the
            // failure now; a finished attempt overwrites it.
            let reason = format!(
                "dead-lettered: attempt {} of {} did not finish (the worker stopped, crashed or ran out of memory during it)",
                msg.receive_count,
                s.queue.max_receives()
            );
            if let Err(e) = record_provisional(s.store, job, s.process, msg.receive_count, reason).await {
                warn!(job_id = %job.id, error = %e, "could not write the provisional failure record");
            }
        }
        let mut outcome =
            process(job, msg.receive_count, s.store, s.process, s.admission, s.cancel).instrument(span).await;
        if let Outcome::Retry(reason) = &outcome
            && msg.receive_count >= s.queue.max_receives()
        {
            let reason = format!("gave up after {} attempts: {reason}", msg.receive_count);
            outcome = record_failure(s.store, job, s.process, msg.receive_count, reason).await;
        }
        match outcome {
            Outcome::Done(r) => {
                let t = &r.timings;
                info!(
                    job_id = %job.id, reused = r.reused, queue_wait_ms = t.queue_wait_ms, download_ms = t.download_ms,
                    decode_ms = t.decode_ms, ops_ms = t.ops_ms, encode_ms = t.encode_ms, upload_ms = t.upload_ms, "done"
                );
                if s.process.emf {
                    println!("{}", crate::metrics::emf_record(&r, &s.process.runtime));
                }
                if let Some(m) = s.metrics
                    && !r.reused
                {
                    m.stages(&r.timings);
                }
                s.emit(Event::Done {
                    job: job.id.clone(),
                    batch: job.batch.clone(),
                    reused: r.reused,
                    outputs: r.outputs.clone(),
                });
            }
            Outcome::Poison(reason) => {
                warn!(job_id = %job.id, %reason, "failed permanently");
                if s.process.emf {
                    println!("{}", crate::metrics::emf_failure(job, msg.receive_count, &s.process.runtime));
                }
                s.emit(Event::Failed {
                    job: Some(job.id.clone()),
                    batch: Some(job.batch.clone()),
                    reason: reason.clone(),
                });
                poison.get_or_insert(reason);
            }
            Outcome::Retry(reason) => {
                warn!(job_id = %job.id, %reason, "will retry");
                s.emit(Event::Retrying { job: job.id.clone(), reason: reason.clone() });
                retry.get_or_insert(reason);
            }
            Outcome::Forward(reason) => match forward(s, job, &reason).await {
                Ok(()) => {
                    info!(job_id = %job.id, %reason, "forwarded to the heavy queue");
                    if let Some(m) = s.metrics {
                        m.job(crate::prom::Outcome::Forwarded);
                    }
                }
                Err(e) => {
                    warn!(job_id = %job.id, error = %e, "forwarding failed; will retry");
                    retry.get_or_insert(format!("forwarding to the heavy queue: {e}"));
                }
            },
            Outcome::Released => {
                if let Some(m) = s.metrics {
                    m.job(crate::prom::Outcome::Released);
                }
                released = true;
            }
        }
    }
    // Retry wins (finished jobs of the message are reused next time), then poison. A job
    // released at shutdown goes back at once; a failed attempt waits out the backoff.
    if retry.is_some() || released {
        let (delay, reason) = match retry {
            Some(reason) => (s.retry.delay(msg.receive_count), reason),
            None => (Duration::ZERO, "released at shutdown".to_string()),
        };
        if let Err(e) = s.queue.retry_later(&msg.receipt, delay, &reason).await {
            warn!(error = %e, "release failed; visibility will lapse instead");
        }
        return Disposition::Retry;
    }
    if let Some(reason) = poison {
        return s.bury(msg, &reason).await;
    }
    Disposition::Ack
}

/// Sends `job` to the heavy queue, marked with why it was passed on (its record says so, and
/// it is never forwarded again).
async fn forward(s: &Settle<'_>, job: &Job, reason: &str) -> Result<(), String> {
    let Some(heavy) = s.forward else {
        return Err("no heavy queue is configured (PIXQ_HEAVY_QUEUE_URL)".into());
    };
    let mut job = job.clone();
    job.forwarded = Some(format!("{}: {reason}", s.process.runtime));
    crate::batch::enqueue(heavy, std::slice::from_ref(&job), heavy.is_fifo()).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy { base: Duration::from_secs(2), max: Duration::from_secs(60) };
        let got: Vec<u64> = (1..=7).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(got, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.delay(0), p.base);
        let uncapped = RetryPolicy { max: Duration::MAX, ..p };
        assert_eq!(uncapped.delay(100), p.base.saturating_mul(1 << 20));
    }
}
