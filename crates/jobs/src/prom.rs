//! A worker's live metrics in the Prometheus text format (`pixq-worker --metrics-addr`):
//! jobs by outcome, stage latencies, kernel lanes busy, admission waits, queue receive
//! errors. Counters are atomics updated where the work happens; rendering reads them.
//! The per-job EMF line (`metrics.rs`) stays: this is for a scraper next to the worker.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::schema::StageTimings;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A latency histogram with the buckets above.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one value.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let n = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {n}");
    }
}

/// How a job ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Output written.
    Done,
    /// Answered from an existing output.
    Reused,
    /// Failed permanently (recorded, dead-lettered).
    Failed,
    /// Released for a later attempt after a failure.
    Retried,
    /// Released at shutdown.
    Released,
    /// Passed on to the heavy queue (the Lambda function).
    Forwarded,
}

const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::Done, "done"),
    (Outcome::Reused, "reused"),
    (Outcome::Failed, "failed"),
    (Outcome::Retried, "retried"),
    (Outcome::Released, "released"),
    (Outcome::Forwarded, "forwarded"),
];

const STAGES: [&str; 6] = ["queue_wait", "download", "decode", "ops", "encode", "upload"];

/// A worker's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; OUTCOMES.len()],
    stages: [Histogram; STAGES.len()],
    /// Messages received from the queue.
    pub received: AtomicU64,
    /// Receive calls that failed.
    pub receive_errors: AtomicU64,
    /// Time jobs waited for a kernel lane and memory.
    pub admission_wait: Histogram,
    /// Kernels running now.
    pub lanes_busy: AtomicU64,
    /// Kernels that may run at once.
    pub lanes: AtomicU64,
    /// Memory budget of all kernels, bytes.
    pub memory_budget_bytes: AtomicU64,
    /// Estimated peak bytes of the kernels running now.
    pub memory_admitted_bytes: AtomicU64,
}

impl Metrics {
    /// Counts one job's end.
    pub fn job(&self, o: Outcome) {
        let i = OUTCOMES.iter().position(|(k, _)| *k == o).expect("every outcome is listed");
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs that ended with `o`.
    pub fn jobs(&self, o: Outcome) -> u64 {
        let i = OUTCOMES.iter().position(|(k, _)| *k == o).expect("every outcome is listed");
        self.outcomes[i].load(Ordering::Relaxed)
    }

    /// Records a finished job's stage times.
    pub fn stages(&self, t: &StageTimings) {
        let ms = [t.queue_wait_ms, t.download_ms, t.decode_ms, t.ops_ms, t.encode_ms, t.upload_ms];
        for (h, v) in self.stages.iter().zip(ms) {
            h.observe(Duration::from_secs_f64((v / 1000.0).clamp(0.0, 1e9)));
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let gauge = |s: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        let _ =
            writeln!(s, "# HELP pixq_jobs_total Jobs this worker ended, by outcome.\n# TYPE pixq_jobs_total counter");
        for ((_, label), c) in OUTCOMES.iter().zip(&self.outcomes) {
            let _ = writeln!(s, "pixq_jobs_total{{outcome=\"{label}\"}} {}", c.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            s,
            "# HELP pixq_stage_seconds Time of each stage of the jobs this worker finished.\n\
             # TYPE pixq_stage_seconds histogram"
        );
        for (name, h) in STAGES.iter().zip(&self.stages) {
            h.render(&mut s, "pixq_stage_seconds", &format!("stage=\"{name}\""));
        }
        let _ = writeln!(
            s,
            "# HELP pixq_admission_wait_seconds Time a job waited for a kernel lane and its memory.\n\
             # TYPE pixq_admission_wait_seconds histogram"
        );
        self.admission_wait.render(&mut s, "pixq_admission_wait_seconds", "");
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(&mut s, "pixq_lanes_busy", "Kernels running now.", "gauge", load(&self.lanes_busy));
        gauge(&mut s, "pixq_lanes", "Kernels that may run at once.", "gauge", load(&self.lanes));
        gauge(
            &mut s,
            "pixq_memory_admitted_bytes",
            "Estimated peak memory of the kernels running now.",
            "gauge",
            load(&self.memory_admitted_bytes),
        );
        gauge(
            &mut s,
            "pixq_memory_budget_bytes",
            "Memory budget of all kernels.",
            "gauge",
            load(&self.memory_budget_bytes),
        );
        gauge(
            &mut s,
            "pixq_messages_received_total",
            "Messages received from the queue.",
            "counter",
            load(&self.received),
        );
        gauge(
            &mut s,
            "pixq_receive_errors_total",
            "Queue receive calls that failed.",
            "counter",
            load(&self.receive_errors),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.job(Outcome::Done);
        m.job(Outcome::Done);
        m.job(Outcome::Failed);
        m.stages(&StageTimings { decode_ms: 30.0, ops_ms: 2.0, ..Default::default() });
        m.stages(&StageTimings { decode_ms: 700.0, ..Default::default() });
        m.admission_wait.observe(Duration::from_secs(400));
        let t = m.render();
        assert!(t.contains("pixq_jobs_total{outcome=\"done\"} 2\n"), "{t}");
        assert!(t.contains("pixq_jobs_total{outcome=\"failed\"} 1\n"), "{t}");
        assert!(t.contains("pixq_jobs_total{outcome=\"released\"} 0\n"), "{t}");
        assert!(t.contains("pixq_stage_seconds_bucket{stage=\"decode\",le=\"0.025\"} 0\n"), "{t}");
        assert!(t.contains("pixq_stage_seconds_bucket{stage=\"decode\",le=\"0.05\"} 1\n"), "{t}");
        assert!(t.contains("pixq_stage_seconds_bucket{stage=\"decode\",le=\"1\"} 2\n"), "{t}");
        assert!(t.contains("pixq_stage_seconds_bucket{stage=\"decode\",le=\"+Inf\"} 2\n"), "{t}");
        assert!(t.contains("pixq_stage_seconds_sum{stage=\"decode\"} 0.73\n"), "{t}");
        // Over the largest bucket: only +Inf and the count hold it.
        assert!(t.contains("pixq_admission_wait_seconds_bucket{le=\"300\"} 0\n"), "{t}");
        assert!(t.contains("pixq_admission_wait_seconds_bucket{le=\"+Inf\"} 1\n"), "{t}");
        assert!(t.contains("pixq_admission_wait_seconds_count 1\n"), "{t}");
        // Every sample line is `name{labels} value` or `name value` with a number.
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(name.starts_with("pixq_"), "{line}");
        }
    }
}
