//! SQS semantics of the embedded queue, one test per rule. Time moves by hand (ManualClock)
//! instead of sleeping; the long-poll and two-process tests use short real waits.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pixq_jobs::clock::ManualClock;
use pixq_jobs::queue::sqlite::{QueueConfig, SqliteQueue};
use pixq_jobs::queue::{Queue, QueueError, SendOptions};

const VIS: Duration = Duration::from_secs(30);
const NOW: Duration = Duration::ZERO;

fn open(dir: &tempfile::TempDir, cfg: QueueConfig) -> (SqliteQueue, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let q = SqliteQueue::open_with_clock(&dir.path().join("q.db"), cfg, clock.clone()).unwrap();
    (q, clock)
}

fn fifo() -> QueueConfig {
    QueueConfig { fifo: true, ..QueueConfig::default() }
}

fn grp(g: &str, d: Option<&str>) -> SendOptions {
    SendOptions { group_id: Some(g.into()), dedup_id: d.map(Into::into), ..Default::default() }
}

#[tokio::test]
async fn receive_hides_and_delete_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(&dir, QueueConfig::default());
    let id = q.send("hello", &SendOptions::default()).await.unwrap();
    let got = q.receive(10, VIS, NOW).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id.as_str(), got[0].body.as_str(), got[0].receive_count), (id.as_str(), "hello", 1));
    assert!(q.receive(10, VIS, NOW).await.unwrap().is_empty(), "an in-flight message was handed out twice");
    let c = q.counts().await.unwrap();
    assert_eq!((c.visible, c.in_flight), (0, 1));
    q.delete(&got[0].receipt).await.unwrap();
    assert_eq!(q.counts().await.unwrap().in_flight, 0);
}

#[tokio::test]
async fn an_unacknowledged_message_reappears_with_a_new_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let (q, clock) = open(&dir, QueueConfig::default());
    q.send("m", &SendOptions::default()).await.unwrap();
    let first = q.receive(1, VIS, NOW).await.unwrap().remove(0);
    clock.advance(29_999);
    assert!(q.receive(1, VIS, NOW).await.unwrap().is_empty());
    clock.advance(1);
    let second = q.receive(1, VIS, NOW).await.unwrap().remove(0);
    assert_eq!(second.id, first.id);
    assert_eq!(second.receive_count, 2);
    assert_ne!(second.receipt, first.receipt);
    // The stale receipt deletes nothing and cannot move the new delivery.
    q.delete(&first.receipt).await.unwrap();
    assert_eq!(q.counts().await.unwrap().in_flight, 1);
    assert!(matches!(q.change_visibility(&first.receipt, VIS).await, Err(QueueError::ReceiptExpired)));
}

#[tokio::test]
async fn change_visibility_extends_and_zero_releases() {
    let dir = tempfile::tempdir().unwrap();
    let (q, clock) = open(&dir, QueueConfig::default());
    q.send("m", &SendOptions::default()).await.unwrap();
    let m = q.receive(1, Duration::from_secs(10), NOW).await.unwrap().remove(0);
    clock.advance(8_000);
    q.change_visibility(&m.receipt, Duration::from_secs(10)).await.unwrap();
    clock.advance(8_000);
    assert!(q.receive(1, VIS, NOW).await.unwrap().is_empty(), "heartbeat did not extend visibility");
    q.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
    assert_eq!(q.receive(1, VIS, NOW).await.unwrap().len(), 1);
}

#[tokio::test]
async fn delayed_messages_wait_and_are_counted_as_delayed() {
    let dir = tempfile::tempdir().unwrap();
    let (q, clock) = open(&dir, QueueConfig::default());
    q.send("later", &SendOptions { delay: Duration::from_secs(5), ..Default::default() }).await.unwrap();
    assert_eq!(q.counts().await.unwrap().delayed, 1);
    assert!(q.receive(1, VIS, NOW).await.unwrap().is_empty());
    clock.advance(5_000);
    assert_eq!(q.counts().await.unwrap().visible, 1);
    assert_eq!(q.receive(1, VIS, NOW).await.unwrap().len(), 1);
}

#[tokio::test]
async fn after_max_receives_a_message_goes_to_the_dlq_with_its_last_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (q, clock) = open(&dir, QueueConfig { max_receives: 3, ..QueueConfig::default() });
    q.send("flaky", &SendOptions::default()).await.unwrap();
    for n in 1..=3 {
        let m = q.receive(1, VIS, NOW).await.unwrap().remove(0);
        assert_eq!(m.receive_count, n);
        q.retry_later(&m.receipt, Duration::from_secs(1), &format!("throttled #{n}")).await.unwrap();
        clock.advance(1_000);
    }
    assert!(q.receive(1, VIS, NOW).await.unwrap().is_empty());
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].body.as_str(), dead[0].receive_count), ("flaky", 3));
    assert!(dead[0].reason.contains("throttled #3") && dead[0].reason.contains("max 3"), "{}", dead[0].reason);
    assert_eq!(q.counts().await.unwrap().dead, 1);
}

#[tokio::test]
async fn a_crashed_consumer_also_ends_in_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let (q, clock) = open(&dir, QueueConfig { max_receives: 2, ..QueueConfig::default() });
    q.send("crashy", &SendOptions::default()).await.unwrap();
    for _ in 0..2 {
        let got = q.receive(1, VIS, NOW).await.unwrap();
        assert_eq!(got[0].body, "crashy");
        clock.advance(30_000); // never acknowledged: visibility lapses
    }
    q.send("fine", &SendOptions::default()).await.unwrap();
    // "crashy" is first in line (visible as early as "fine", sent earlier): the next receive
    // buries it and still fills the batch with "fine".
    let got = q.receive(1, VIS, NOW).await.unwrap();
    assert_eq!(got[0].body, "fine");
    assert!(q.dead_letters(10).await.unwrap()[0].reason.contains("crashed or timed out"));
}

#[tokio::test]
async fn dead_letter_at_once_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(&dir, QueueConfig::default());
    q.send("poison", &SendOptions::default()).await.unwrap();
    let m = q.receive(1, VIS, NOW).await.unwrap().remove(0);
    q.dead_letter(&m, "not an image").await.unwrap();
    assert!(q.receive(1, VIS, NOW).await.unwrap().is_empty());
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!((dead[0].reason.as_str(), dead[0].receive_count), ("not an image", 1));
    assert_eq!(q.redrive(10).await.unwrap(), 1);
    assert!(q.dead_letters(10).await.unwrap().is_empty());
    let again = q.receive(1, VIS, NOW).await.unwrap().remove(0);
    assert_eq!((again.body.as_str(), again.receive_count, again.id.as_str()), ("poison", 1, m.id.as_str()));
}

#[tokio::test]
async fn fifo_groups_are_in_order_and_one_group_waits_for_its_in_flight_message() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(&dir, fifo());
    for i in 1..=3 {
        q.send(&format!("a{i}"), &grp("A", None)).await.unwrap();
    }
    q.send("b1", &grp("B", None)).await.unwrap();
    let first = q.receive(1, VIS, NOW).await.unwrap().remove(0);
    assert_eq!(first.body, "a1");
    // a2 must wait while a1 is in flight; group B is free.
    let next = q.receive(10, VIS, NOW).await.unwrap();
    assert_eq!(next.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["b1"]);
    q.delete(&first.receipt).await.unwrap();
    let rest = q.receive(10, VIS, NOW).await.unwrap();
    assert_eq!(rest.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["a2", "a3"]);
    // a FIFO send without a group is refused.
    assert!(matches!(q.send("x", &SendOptions::default()).await, Err(QueueError::Refused(_))));
}

#[tokio::test]
async fn fifo_released_head_blocks_its_successors_until_visible_again() {
    let dir = tempfile::tempdir().unwrap();
    let (q, clock) = open(&dir, fifo());
    q.send("a1", &grp("A", None)).await.unwrap();
    q.send("a2", &grp("A", None)).await.unwrap();
    let a1 = q.receive(1, VIS, NOW).await.unwrap().remove(0);
    q.retry_later(&a1.receipt, Duration::from_secs(10), "busy").await.unwrap();
    assert!(q.receive(10, VIS, NOW).await.unwrap().is_empty(), "a2 overtook a1");
    clock.advance(10_000);
    let got = q.receive(1, VIS, NOW).await.unwrap();
    assert_eq!(got[0].body, "a1");
}

#[tokio::test]
async fn fifo_deduplicates_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (q, clock) = open(&dir, fifo());
    let a = q.send("job", &grp("A", Some("job-1"))).await.unwrap();
    clock.advance(299_000);
    let b = q.send("job again", &grp("A", Some("job-1"))).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(q.counts().await.unwrap().visible, 1);
    clock.advance(1_000);
    let c = q.send("job later", &grp("A", Some("job-1"))).await.unwrap();
    assert_ne!(a, c, "the 5-minute window should have passed");
    assert_eq!(q.counts().await.unwrap().visible, 2);
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("q.db"), QueueConfig::default()).unwrap();
    // Another handle on the same file stands for another process (no in-process wake-up).
    let other = SqliteQueue::open(&dir.path().join("q.db"), QueueConfig::default()).unwrap();
    let start = std::time::Instant::now();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        other.send("late", &SendOptions::default()).await.unwrap();
    });
    let got = q.receive(1, VIS, Duration::from_secs(10)).await.unwrap();
    sender.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(start.elapsed() < Duration::from_secs(2), "long poll took {:?}", start.elapsed());
    // And an empty poll waits for its whole wait, no longer.
    let start = std::time::Instant::now();
    assert!(q.receive(1, VIS, Duration::from_millis(200)).await.unwrap().is_empty());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "{took:?}");
}

/// A wait for a first message ends when the stop fires (a worker shutting down does not
/// wait out its poll); a look already due still happens, so a message there is taken, not
/// left hidden.
#[tokio::test]
async fn a_receive_stops_waiting_when_told_and_still_takes_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("q.db"), QueueConfig::default()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.cancel();
    });
    // An hour's wait: only the stop can end it within the test's bound.
    let got = tokio::time::timeout(Duration::from_secs(30), q.receive_until(1, VIS, Duration::from_secs(3600), &stop))
        .await
        .expect("the stop ended the wait")
        .unwrap();
    assert!(got.is_empty());
    q.send("there", &SendOptions::default()).await.unwrap();
    let got = q.receive_until(1, VIS, Duration::from_secs(3600), &stop).await.unwrap();
    assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["there"]);
    // Hidden now, as any received message: the stopped receive really took it.
    assert_eq!(q.counts().await.unwrap().in_flight, 1);
}

#[tokio::test]
async fn batches_queues_and_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(&dir, QueueConfig::default());
    let clock = Arc::new(ManualClock::new(1_000_000));
    let heavy = SqliteQueue::open_with_clock(
        &dir.path().join("q.db"),
        QueueConfig { name: "heavy".into(), ..QueueConfig::default() },
        clock,
    )
    .unwrap();
    let entries: Vec<(String, SendOptions)> = (0..25).map(|i| (format!("m{i}"), SendOptions::default())).collect();
    assert_eq!(q.send_batch(&entries).await.unwrap().len(), 25);
    heavy.send("h", &SendOptions::default()).await.unwrap();
    let got = q.receive(50, VIS, NOW).await.unwrap();
    assert_eq!(got.len(), 10, "a receive returns at most 10, like SQS");
    assert_eq!(got[0].body, "m0");
    assert_eq!(heavy.counts().await.unwrap().visible, 1);
    assert_eq!(q.counts().await.unwrap(), pixq_jobs::queue::Counts { visible: 15, in_flight: 10, delayed: 0, dead: 0 });
    assert!(matches!(q.send("", &SendOptions::default()).await, Err(QueueError::Refused(_))));
    assert!(matches!(q.send(&"x".repeat(256 * 1024 + 1), &SendOptions::default()).await, Err(QueueError::Refused(_))));
}

/// Child side of the two-process test: receive until the queue stays empty, print ids.
#[test]
fn child_receiver() {
    let Ok(path) = std::env::var("PIXQ_TEST_QUEUE") else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let q = SqliteQueue::open(std::path::Path::new(&path), QueueConfig::default()).unwrap();
        let mut empty = 0;
        while empty < 5 {
            let got = q.receive(10, Duration::from_secs(600), Duration::from_millis(100)).await.unwrap();
            if got.is_empty() {
                empty += 1;
            }
            for m in got {
                println!("GOT {}", m.id);
            }
            // Work a little per batch, so the two processes really overlap.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_never_get_the_same_visible_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteQueue::open(&path, QueueConfig::default()).unwrap();
    let entries: Vec<(String, SendOptions)> = (0..600).map(|i| (format!("m{i}"), SendOptions::default())).collect();
    let sent: HashSet<String> = q.send_batch(&entries).await.unwrap().into_iter().collect();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_receiver", "--nocapture", "--test-threads=1"])
                .env("PIXQ_TEST_QUEUE", &path)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    let mut per_child = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let ids: Vec<String> =
            // libtest may print "test child_receiver ... " in front of the first line.
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.find("GOT ").map(|i| l[i + 4..].to_string())).collect();
        per_child.push(ids.len());
        seen.extend(ids);
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "{} messages were handed to both processes", seen.len() - unique.len());
    let missing = sent.difference(&unique).count();
    assert!(missing == 0 && unique.len() == sent.len(), "{missing} of {} messages were never received", sent.len());
    assert!(per_child.iter().all(|&n| n > 0), "one process got nothing: {per_child:?}");
}

#[tokio::test]
async fn the_first_opener_fixes_the_queue_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    SqliteQueue::open(&path, QueueConfig { fifo: true, max_receives: 2, ..QueueConfig::default() }).unwrap();
    let later = SqliteQueue::open(&path, QueueConfig::default()).unwrap();
    assert!(later.config().fifo);
    assert_eq!(later.max_receives(), 2);
}

/// A fresh queue file is made on a thread of its own; the queue answers at once with the
/// settings it was opened with, its operations wait for the file, and a later opener finds
/// those settings stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_made_in_the_background_works_at_once_and_stores_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("home/q.db");
    let q = SqliteQueue::open_in_background(&path, QueueConfig { max_receives: 3, ..fifo() }).unwrap();
    assert!(q.config().fifo && q.max_receives() == 3);
    q.send("first", &grp("g", Some("d1"))).await.unwrap();
    let got = q.receive(10, VIS, NOW).await.unwrap();
    assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["first"]);
    q.delete(&got[0].receipt).await.unwrap();
    assert_eq!(q.counts().await.unwrap().visible + q.counts().await.unwrap().in_flight, 0);
    let later = SqliteQueue::open(&path, QueueConfig::default()).unwrap();
    assert!(later.config().fifo);
    assert_eq!(later.max_receives(), 3);
    // An existing file is opened as it is, its stored settings over the ones asked for.
    let again = SqliteQueue::open_in_background(&path, QueueConfig::default()).unwrap();
    assert!(again.config().fifo && again.max_receives() == 3);
}

/// A file that cannot be made fails every operation, with the reason; nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_cannot_be_made_fails_each_operation_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A name longer than any filesystem allows: the folder exists, the file cannot.
    let path = dir.path().join(format!("{}.db", "q".repeat(300)));
    let q = SqliteQueue::open_in_background(&path, QueueConfig::default()).unwrap();
    for e in [
        q.send("m", &SendOptions::default()).await.unwrap_err(),
        q.receive(1, VIS, NOW).await.unwrap_err(),
        q.counts().await.unwrap_err(),
    ] {
        assert!(
            matches!(&e, QueueError::Permanent(m) if m.contains("opening the queue") && m.contains("cannot create")),
            "{e}"
        );
    }
}

/// A send is visible to a receiver that waits in this process, and is in the file (another
/// connection sees it) once the send returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_message_wakes_a_waiting_receiver_and_is_in_the_file_when_the_send_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteQueue::open(&path, QueueConfig::default()).unwrap();
    let waiting = {
        let q = q.clone();
        tokio::spawn(async move { q.receive(1, VIS, Duration::from_secs(20)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.send("hello", &SendOptions::default()).await.unwrap();
    let other = SqliteQueue::open(&path, QueueConfig::default()).unwrap();
    let c = other.counts().await.unwrap();
    assert_eq!(c.visible + c.in_flight, 1);
    let got =
        tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("the receiver was not woken").unwrap();
    assert_eq!(got[0].body, "hello");
}

/// Closing the queue leaves its write-ahead log in place (no checkpoint on close: a command
/// does not pay for it as it exits), and whoever opens it next reads every message from it.
#[tokio::test]
async fn a_closed_queue_keeps_its_log_and_the_next_opener_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let q = SqliteQueue::open(&path, QueueConfig::default()).unwrap();
        for i in 0..50 {
            q.send(&format!("m{i}"), &SendOptions::default()).await.unwrap();
        }
    }
    let wal = dir.path().join("q.db-wal");
    assert!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > 0, "the log was checkpointed away on close");
    let q = SqliteQueue::open(&path, QueueConfig::default()).unwrap();
    let mut bodies = HashSet::new();
    loop {
        let got = q.receive(10, VIS, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        bodies.extend(got.into_iter().map(|m| m.body));
    }
    assert_eq!(bodies.len(), 50);
}
