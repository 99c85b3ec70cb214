//! One contract for every backend: the same store and queue tests run against the embedded
//! backends (always) and against S3 and SQS through the real aws-sdk clients, talking to an
//! AWS-protocol server on 127.0.0.1 (moto, started by scripts/test.sh) when
//! `AWS_ENDPOINT_URL` points there.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pixq_jobs::queue::sqlite::{QueueConfig, SqliteQueue};
use pixq_jobs::queue::{Queue, SendOptions};
use pixq_jobs::store::fs::FsStore;
use pixq_jobs::store::{ObjectStore, StoreError};

const VIS: Duration = Duration::from_secs(1);

async fn store_contract(s: &dyn ObjectStore, bucket: &str) {
    assert!(s.head(bucket, "a/b.txt").await.unwrap().is_none());
    assert!(matches!(s.get(bucket, "a/b.txt").await, Err(StoreError::NotFound { .. })));
    s.put(bucket, "a/b.txt", b"hello".to_vec(), "text/plain").await.unwrap();
    s.put(bucket, "a/c d.txt", b"x".to_vec(), "text/plain").await.unwrap();
    s.put(bucket, "z.txt", vec![7; 3000], "text/plain").await.unwrap();
    assert_eq!(s.get(bucket, "a/b.txt").await.unwrap(), b"hello");
    assert_eq!(s.head(bucket, "a/b.txt").await.unwrap().unwrap().size, 5);
    // A bounded read takes an object up to its bound and refuses a larger one.
    assert_eq!(s.get_at_most(bucket, "z.txt", 3000).await.unwrap(), vec![7; 3000]);
    assert!(matches!(s.get_at_most(bucket, "z.txt", 2999).await, Err(StoreError::TooLarge { max: 2999, .. })));
    assert!(matches!(s.get_known(bucket, "z.txt", 10).await, Err(StoreError::TooLarge { .. })));
    assert!(matches!(s.get_at_most(bucket, "nothing", 10).await, Err(StoreError::NotFound { .. })));
    // Overwrite is whole.
    s.put(bucket, "a/b.txt", b"bye".to_vec(), "text/plain").await.unwrap();
    assert_eq!(s.get(bucket, "a/b.txt").await.unwrap(), b"bye");
    let keys: Vec<String> = s.list(bucket, "a/").await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(keys, ["a/b.txt", "a/c d.txt"]);
    let all: Vec<String> = s.list(bucket, "").await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(all, ["a/b.txt", "a/c d.txt", "z.txt"]);
    assert_eq!(s.list(bucket, "a/c").await.unwrap().len(), 1);
    assert!(s.list(bucket, "nothing/").await.unwrap().is_empty());
    s.delete(bucket, "a/b.txt").await.unwrap();
    s.delete(bucket, "a/b.txt").await.unwrap();
    assert!(s.head(bucket, "a/b.txt").await.unwrap().is_none());
    assert!(matches!(s.put(bucket, "../escape", vec![1], "x").await, Err(StoreError::InvalidKey(_))));
    assert!(matches!(s.get(bucket, "/abs").await, Err(StoreError::InvalidKey(_))));
    // Deleting many at once: small and large objects, a missing key, nothing else touched.
    s.put(bucket, "m/big", vec![3; 200 * 1024], "x").await.unwrap();
    s.put(bucket, "m/small", vec![4; 10], "x").await.unwrap();
    s.put(bucket, "m/kept", vec![5; 10], "x").await.unwrap();
    let gone = ["m/big", "m/small", "m/never"].map(String::from);
    s.delete_many(bucket, &gone).await.unwrap();
    let left: Vec<String> = s.list(bucket, "m/").await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(left, ["m/kept"]);
    s.delete_many(bucket, &[]).await.unwrap();
    let bad = ["m/kept".to_string(), "../escape".to_string()];
    assert!(matches!(s.delete_many(bucket, &bad).await, Err(StoreError::InvalidKey(_))));
    assert!(s.head(bucket, "m/kept").await.unwrap().is_some(), "a bad key refuses the whole call");
    // Several objects at once, in order: small and large ones, an overwrite; every one has
    // its bytes afterwards. A bad key is an error.
    let objects = vec![
        ("all/1".to_string(), vec![1u8; 10], "x"),
        ("all/2".to_string(), vec![2u8; 200 * 1024], "x"),
        ("all/1".to_string(), vec![3u8; 20], "x"),
        ("all/3".to_string(), b"{}".to_vec(), "application/json"),
    ];
    s.put_all(bucket, objects).await.unwrap();
    assert_eq!(s.get(bucket, "all/1").await.unwrap(), vec![3u8; 20], "the later write of a key wins");
    assert_eq!(s.get(bucket, "all/2").await.unwrap().len(), 200 * 1024);
    assert_eq!(s.get(bucket, "all/3").await.unwrap(), b"{}");
    s.put_all(bucket, Vec::new()).await.unwrap();
    let bad = vec![("all/4".to_string(), vec![1], "x"), ("../escape".to_string(), vec![1], "x")];
    assert!(matches!(s.put_all(bucket, bad).await, Err(StoreError::InvalidKey(_))));
    // An object written from a file holds the file's bytes, small or large; a missing file
    // is an error that names the key.
    let e = s.put_file(bucket, "f/none", std::path::Path::new("/nonexistent/pixq"), "x").await.unwrap_err();
    assert!(e.to_string().contains("f/none"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("small", 100usize), ("large", 300 * 1024)] {
        let p = dir.path().join(name);
        let body: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
        std::fs::write(&p, &body).unwrap();
        s.put_file(bucket, &format!("f/{name}"), &p, "x").await.unwrap();
        assert!(s.get(bucket, &format!("f/{name}")).await.unwrap() == body, "{name}");
    }
}

async fn queue_contract(q: &dyn Queue) {
    // send / receive / delete
    let id = q.send("one", &SendOptions::default()).await.unwrap();
    let got = q.receive(10, VIS, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id.as_str(), got[0].body.as_str(), got[0].receive_count), (id.as_str(), "one", 1));
    assert!(q.receive(10, VIS, Duration::ZERO).await.unwrap().is_empty(), "in-flight message handed out again");
    // not deleted: it comes back after the visibility timeout, with a higher receive count
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = q.receive(10, Duration::from_secs(30), Duration::from_secs(2)).await.unwrap();
    assert_eq!((again.len(), again[0].receive_count), (1, 2));
    // release with visibility 0, then delete for good
    q.change_visibility(&again[0].receipt, Duration::ZERO).await.unwrap();
    let third = q.receive(10, Duration::from_secs(30), Duration::from_secs(2)).await.unwrap();
    assert_eq!(third.len(), 1);
    q.delete(&third[0].receipt).await.unwrap();
    // batches: 25 sent, at most 10 per receive, all delivered once
    let entries: Vec<(String, SendOptions)> = (0..25).map(|i| (format!("m{i}"), SendOptions::default())).collect();
    let ids: HashSet<String> = q.send_batch(&entries).await.unwrap().into_iter().collect();
    assert_eq!(ids.len(), 25);
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let got = q.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
        assert!(got.len() <= 10);
        let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
        for m in got {
            assert!(seen.insert(m.id.clone()), "delivered twice while invisible");
        }
        q.delete_batch(&receipts).await.unwrap();
        if seen.len() == 25 {
            break;
        }
    }
    assert_eq!(seen, ids);
    let c = q.counts().await.unwrap();
    assert_eq!((c.visible, c.in_flight), (0, 0), "batch delete left messages: {c:?}");
    // dead-letter at once with a reason, list, redrive
    q.send("poison", &SendOptions::default()).await.unwrap();
    let m = q.receive(1, Duration::from_secs(30), Duration::from_secs(2)).await.unwrap().remove(0);
    q.dead_letter(&m, "not an image: unrecognised leading bytes").await.unwrap();
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].body.as_str(), dead[0].reason.as_str()),
        ("poison", "not an image: unrecognised leading bytes")
    );
    assert_eq!(q.redrive(10).await.unwrap(), 1);
    let back = q.receive(1, Duration::from_secs(30), Duration::from_secs(2)).await.unwrap();
    assert_eq!(back[0].body, "poison");
    q.delete(&back[0].receipt).await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!((c.visible, c.in_flight, c.dead), (0, 0, 0), "{c:?}");
}

async fn fifo_contract(q: &dyn Queue) {
    let g = |d: &str| SendOptions { group_id: Some("batch-1".into()), dedup_id: Some(d.into()), ..Default::default() };
    for i in 0..3 {
        q.send(&format!("f{i}"), &g(&format!("job-{i}"))).await.unwrap();
    }
    q.send("f0 again", &g("job-0")).await.unwrap(); // de-duplicated
    let first = q.receive(1, Duration::from_secs(30), Duration::from_secs(2)).await.unwrap();
    assert_eq!(first[0].body, "f0");
    assert!(q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap().is_empty(), "group order broken");
    q.delete(&first[0].receipt).await.unwrap();
    let mut rest = Vec::new();
    while rest.len() < 2 {
        let got = q.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
        assert!(!got.is_empty(), "messages missing; got {rest:?}");
        for m in got {
            rest.push(m.body.clone());
            q.delete(&m.receipt).await.unwrap();
        }
    }
    assert_eq!(rest, ["f1", "f2"]);
}

#[tokio::test]
async fn local_store_contract() {
    // Default: every object of the contract is small enough for the object pack.
    let dir = tempfile::tempdir().unwrap();
    store_contract(&FsStore::new(dir.path()), "pixq").await;
    // Every object a file.
    let dir = tempfile::tempdir().unwrap();
    store_contract(&FsStore::new(dir.path()).with_inline_max(0), "pixq").await;
    assert!(dir.path().join("pixq/z.txt").is_file() && dir.path().join("pixq/a/c d.txt").is_file());
    // Mixed: the 3000-byte object is a file, the rest in the pack.
    let dir = tempfile::tempdir().unwrap();
    store_contract(&FsStore::new(dir.path()).with_fsync(false).with_inline_max(1000), "pixq").await;
    assert!(dir.path().join("pixq/z.txt").is_file());
    assert!(!dir.path().join("pixq/a/c d.txt").exists());
}

/// A file read ahead (`read_ahead`) serves the first read of the key it is linked as, with
/// its digest; a file changed since, another key, or a second read-ahead get nothing from it.
#[tokio::test]
async fn local_store_reads_a_file_ahead_for_its_first_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::new(dir.path().join("store"));
    let src = dir.path().join("photo.jpg");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &body).unwrap();
    assert!(s.links_files());
    assert!(s.read_ahead("pixq", "in/a.jpg", &src).await);
    // One file at a time.
    assert!(!s.read_ahead("pixq", "in/b.jpg", &src).await);
    // Another key is read from its file, with no digest.
    s.put_file("pixq", "in/b.jpg", &src, "").await.unwrap();
    assert_eq!(s.get_known("pixq", "in/b.jpg", u64::MAX).await.unwrap(), (body.clone(), None));
    s.put_files("pixq", vec![("in/a.jpg".into(), src.clone())], "").await.unwrap();
    let (bytes, digest) = s.get_known("pixq", "in/a.jpg", u64::MAX).await.unwrap();
    assert_eq!(bytes, body);
    assert_eq!(digest.as_deref(), Some(pixq_jobs::keys::content_digest(&body).as_str()));
    // Taken once: the next read is the file's own.
    assert_eq!(s.get_known("pixq", "in/a.jpg", u64::MAX).await.unwrap(), (body.clone(), None));

    // Changed in place after it was read ahead (same file, new bytes): the read-ahead
    // bytes are dropped and the file's new bytes are read.
    let src2 = dir.path().join("other.jpg");
    std::fs::write(&src2, &body).unwrap();
    assert!(s.read_ahead("pixq", "in/c.jpg", &src2).await);
    s.put_files("pixq", vec![("in/c.jpg".into(), src2.clone())], "").await.unwrap();
    let changed: Vec<u8> = body.iter().map(|b| b ^ 0xff).chain([1, 2, 3]).collect();
    std::fs::write(&src2, &changed).unwrap();
    assert_eq!(s.get_known("pixq", "in/c.jpg", u64::MAX).await.unwrap(), (changed, None));
    // Replaced by another file under the key: the same.
    let src3 = dir.path().join("third.jpg");
    std::fs::write(&src3, &body).unwrap();
    assert!(s.read_ahead("pixq", "in/d.jpg", &src3).await);
    s.put("pixq", "in/d.jpg", vec![7; 100_000], "").await.unwrap();
    assert_eq!(s.get_known("pixq", "in/d.jpg", u64::MAX).await.unwrap(), (vec![7; 100_000], None));
    // Bytes read ahead over the reader's bound are not handed over: the bounded read refuses.
    let src4 = dir.path().join("fourth.jpg");
    std::fs::write(&src4, &body).unwrap();
    assert!(s.read_ahead("pixq", "in/f.jpg", &src4).await);
    s.put_files("pixq", vec![("in/f.jpg".into(), src4.clone())], "").await.unwrap();
    assert!(matches!(s.get_known("pixq", "in/f.jpg", 1000).await, Err(StoreError::TooLarge { .. })));
    // A missing file, one over 32 MB (a sparse 64 GiB file: refused unread) or a bad key
    // is not read ahead.
    assert!(!s.read_ahead("pixq", "in/e.jpg", &dir.path().join("missing.jpg")).await);
    let huge = dir.path().join("huge.jpg");
    std::fs::File::create(&huge).unwrap().set_len(64 << 30).unwrap();
    assert!(!s.read_ahead("pixq", "in/huge.jpg", &huge).await);
    assert!(s.read_ahead("pixq", "in/g.jpg", &src).await, "the slot was free: the size refused it");
    assert!(!s.read_ahead("pixq", "../escape", &src).await);
}

#[tokio::test]
async fn local_store_moves_a_key_between_pack_and_file_when_its_size_class_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::new(dir.path()).with_inline_max(100);
    let file = dir.path().join("pixq/k/v.bin");
    let keys = async |s: &FsStore| {
        s.list("pixq", "k/").await.unwrap().into_iter().map(|m| (m.key, m.size)).collect::<Vec<_>>()
    };
    s.put("pixq", "k/v.bin", vec![1; 500], "").await.unwrap();
    assert!(file.is_file());
    s.put("pixq", "k/v.bin", vec![2; 10], "").await.unwrap();
    assert!(!file.exists(), "the larger version's file stayed behind");
    assert_eq!(s.get("pixq", "k/v.bin").await.unwrap(), vec![2; 10]);
    assert_eq!(s.head("pixq", "k/v.bin").await.unwrap().unwrap().size, 10);
    assert_eq!(keys(&s).await, [("k/v.bin".to_string(), 10)]);
    s.put("pixq", "k/v.bin", vec![3; 700], "").await.unwrap();
    assert!(file.is_file());
    assert_eq!(s.get("pixq", "k/v.bin").await.unwrap(), vec![3; 700]);
    assert_eq!(keys(&s).await, [("k/v.bin".to_string(), 700)], "listed twice or with the old size");
    // A second store on the same root (another process) sees the same objects.
    let other = FsStore::new(dir.path()).with_inline_max(100);
    other.put("pixq", "k/w.bin", vec![4; 20], "").await.unwrap();
    assert_eq!(s.get("pixq", "k/w.bin").await.unwrap(), vec![4; 20]);
    assert_eq!(keys(&s).await.len(), 2);
    s.delete("pixq", "k/w.bin").await.unwrap();
    s.delete("pixq", "k/v.bin").await.unwrap();
    assert!(other.list("pixq", "").await.unwrap().is_empty());
    assert!(!file.exists());
}

/// A large input on the store's disk is linked, not copied; removing the object leaves the
/// user's file; a symbolic link is followed to the file; a small one goes to the pack.
#[cfg(unix)]
#[tokio::test]
async fn local_store_links_large_files_it_is_given() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::new(dir.path().join("store"));
    let photo = dir.path().join("photo.jpg");
    let body = vec![9u8; 200 * 1024];
    std::fs::write(&photo, &body).unwrap();
    let alias = dir.path().join("alias.jpg");
    std::os::unix::fs::symlink(&photo, &alias).unwrap();
    assert!(s.links_files());
    s.put_file("b", "in/a.jpg", &alias, "image/jpeg").await.unwrap();
    assert_eq!(std::fs::metadata(&photo).unwrap().nlink(), 2, "linked, not copied");
    let stored = dir.path().join("store/b/in/a.jpg");
    assert!(!std::fs::symlink_metadata(&stored).unwrap().file_type().is_symlink());
    assert!(s.get("b", "in/a.jpg").await.unwrap() == body);
    s.delete_many("b", &["in/a.jpg".to_string()]).await.unwrap();
    assert_eq!(std::fs::read(&photo).unwrap(), body, "the user's file stays");
    assert_eq!(std::fs::metadata(&photo).unwrap().nlink(), 1);
    let small = dir.path().join("small.png");
    std::fs::write(&small, b"tiny").unwrap();
    s.put_file("b", "in/s.png", &small, "image/png").await.unwrap();
    assert_eq!(std::fs::metadata(&small).unwrap().nlink(), 1, "small objects live in the pack");
    assert_eq!(s.get("b", "in/s.png").await.unwrap(), b"tiny");
}

/// Whoever can write inside a shared store plants links in it: as a key's file, as a folder
/// on a key's path, as the bucket. No read returns what a link points to, no write, link or
/// delete reaches through one, and the files outside stay as they were; a link as a key's
/// own file is deleted itself. A store whose root is a link (the operator's choice) works.
#[tokio::test]
async fn local_store_follows_no_link_planted_inside_it() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("in")).unwrap();
    std::fs::write(outside.join("secret.txt"), b"not the store's").unwrap();
    std::fs::write(outside.join("in/a.jpg"), b"not the store's either").unwrap();
    let big = vec![5u8; 300 * 1024];
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, &big).unwrap();
    let refused = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Permanent(m)) => assert!(m.contains("is a symbolic link"), "{what}: {m}"),
        other => panic!("{what}: {other:?}"),
    };
    for inline_max in [0, 256 * 1024] {
        let root = dir.path().join(format!("store-{inline_max}"));
        let s = FsStore::new(&root).with_inline_max(inline_max);
        s.put("b", "ok/first.txt", b"mine".to_vec(), "text/plain").await.unwrap();
        // A key's file.
        std::fs::create_dir_all(root.join("b/keys")).unwrap();
        symlink(outside.join("secret.txt"), root.join("b/keys/secret.txt")).unwrap();
        refused(s.get("b", "keys/secret.txt").await.map(drop), "get through a file link");
        refused(s.get_at_most("b", "keys/secret.txt", 100).await.map(drop), "get_at_most");
        refused(s.head("b", "keys/secret.txt").await.map(drop), "head");
        refused(s.get_known("b", "keys/secret.txt", 100).await.map(drop), "get_known");
        refused(s.open_file("b", "keys/secret.txt").await.map(drop), "open_file");
        // Overwriting the key replaces the link, never writes through it.
        s.put("b", "keys/secret.txt", vec![1u8; 300 * 1024], "text/plain").await.unwrap();
        assert_eq!(std::fs::read(outside.join("secret.txt")).unwrap(), b"not the store's");
        assert_eq!(s.get("b", "keys/secret.txt").await.unwrap().len(), 300 * 1024);
        // Over the pack's limit: a file of its own; a small one in the pack is none.
        let f = s.open_file("b", "keys/secret.txt").await.unwrap().expect("a file of its own");
        assert_eq!(f.metadata().unwrap().len(), 300 * 1024);
        assert!(s.open_file("b", "ok/first.txt").await.unwrap().is_none() || inline_max == 0);
        assert!(s.open_file("b", "ok/none.txt").await.unwrap().is_none());
        // A folder on the way.
        symlink(&outside, root.join("b/linked")).unwrap();
        refused(s.get("b", "linked/secret.txt").await.map(drop), "get through a folder link");
        refused(s.open_file("b", "linked/secret.txt").await.map(drop), "open_file through a folder link");
        refused(s.head("b", "linked/secret.txt").await.map(drop), "head through a folder link");
        refused(s.put("b", "linked/new.txt", big.clone(), "text/plain").await, "put into a folder link");
        refused(s.put("b", "linked/deeper/new.txt", big.clone(), "text/plain").await, "put under a folder link");
        refused(s.put_file("b", "linked/in/b.jpg", &photo, "image/jpeg").await, "a link of a file into it");
        refused(s.delete("b", "linked/secret.txt").await, "delete through a folder link");
        refused(s.delete_many("b", &["ok/first.txt".into(), "linked/in/a.jpg".into()]).await, "delete_many");
        refused(s.list("b", "linked/").await.map(drop), "list from a folder link");
        // Listing the bucket walks past the link without following it.
        let keys: Vec<String> = s.list("b", "").await.unwrap().into_iter().map(|m| m.key).collect();
        assert!(keys.iter().all(|k| !k.starts_with("linked/")), "{keys:?}");
        // A small object under a linked folder lives in the pack: stored, and nothing behind
        // the link read, written or removed (the pack never follows a path).
        let small = s.put("b", "linked/secret.txt", b"small".to_vec(), "text/plain").await;
        let small_all = s.put_all("b", vec![("linked/in/a.jpg".into(), b"small too".to_vec(), "image/jpeg")]).await;
        if inline_max == 0 {
            refused(small, "a small file into a folder link");
            refused(small_all, "put_all into a folder link");
        } else {
            small.unwrap();
            small_all.unwrap();
            assert_eq!(s.get("b", "linked/secret.txt").await.unwrap(), b"small");
        }
        // A planted FIFO as a key's file is refused, not waited on.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("b/keys/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        match tokio::time::timeout(Duration::from_secs(10), s.get("b", "keys/fifo")).await {
            Ok(Err(StoreError::Permanent(m))) => assert!(m.contains("not a regular file"), "{m}"),
            other => panic!("a FIFO as a key's file: {other:?}"),
        }
        match tokio::time::timeout(Duration::from_secs(10), s.open_file("b", "keys/fifo")).await {
            Ok(Err(StoreError::Permanent(m))) => assert!(m.contains("not a regular file"), "{m}"),
            other => panic!("a FIFO as a key's file, opened: {other:?}"),
        }
        // The bucket itself.
        symlink(&outside, root.join("c")).unwrap();
        refused(s.get("c", "secret.txt").await.map(drop), "get from a linked bucket");
        refused(s.open_file("c", "secret.txt").await.map(drop), "open_file in a linked bucket");
        refused(s.put("c", "x.txt", big.clone(), "text/plain").await, "put into a linked bucket");
        refused(s.delete("c", "secret.txt").await, "delete from a linked bucket");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            2,
            "nothing written into or deleted from the folder outside"
        );
        assert_eq!(std::fs::read(outside.join("secret.txt")).unwrap(), b"not the store's");
        assert_eq!(std::fs::read(outside.join("in/a.jpg")).unwrap(), b"not the store's either");
        assert_eq!(std::fs::read_dir(outside.join("in")).unwrap().count(), 1);
        // A link as a key's own file is removed itself.
        symlink(outside.join("secret.txt"), root.join("b/keys/gone.txt")).unwrap();
        s.delete("b", "keys/gone.txt").await.unwrap();
        assert!(std::fs::symlink_metadata(root.join("b/keys/gone.txt")).is_err());
        assert!(outside.join("secret.txt").is_file());
        assert_eq!(s.get("b", "ok/first.txt").await.unwrap(), b"mine");
    }
    // The root may be a link.
    let real = dir.path().join("real-root");
    std::fs::create_dir_all(&real).unwrap();
    symlink(&real, dir.path().join("root-link")).unwrap();
    let s = FsStore::new(dir.path().join("root-link")).with_inline_max(0);
    s.put("b", "k/x.txt", b"through the root's link".to_vec(), "text/plain").await.unwrap();
    assert_eq!(s.get("b", "k/x.txt").await.unwrap(), b"through the root's link");
    assert!(real.join("b/k/x.txt").is_file());
}

#[tokio::test]
async fn local_store_reads_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let s = FsStore::new(&root);
    assert!(s.head("pixq", "a").await.unwrap().is_none());
    assert!(s.list("pixq", "").await.unwrap().is_empty());
    assert!(matches!(s.get("pixq", "a").await, Err(StoreError::NotFound { .. })));
    assert!(!root.exists());
}

#[tokio::test]
async fn local_queue_contract() {
    let dir = tempfile::tempdir().unwrap();
    queue_contract(&SqliteQueue::open(&dir.path().join("q.db"), QueueConfig::default()).unwrap()).await;
}

#[tokio::test]
async fn local_fifo_contract() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("q.db"), QueueConfig { fifo: true, ..QueueConfig::default() }).unwrap();
    fifo_contract(&q).await;
}

#[cfg(feature = "aws")]
mod aws {
    use super::*;
    use pixq_jobs::queue::sqs::SqsQueue;

    use pixq_testkit::{bucket, sdk as local_aws};

    async fn queue_with_dlq(cfg: &aws_config::SdkConfig, fifo: bool, max_receives: u32) -> SqsQueue {
        let pair = pixq_testkit::queue_with_dlq(cfg, fifo, max_receives).await;
        let q = SqsQueue::open(pixq_jobs::aws::sqs_client(cfg), &pair.url, None).await.unwrap();
        assert_eq!(q.dlq_url(), Some(pair.dlq_url.as_str()), "DLQ found through the RedrivePolicy");
        assert_eq!(q.max_receives(), max_receives);
        q
    }

    #[tokio::test]
    async fn s3_store_contract() {
        let Some(cfg) = local_aws().await else { return };
        let (store, b) = bucket(&cfg).await;
        store_contract(&store, &b).await;
    }

    #[tokio::test]
    async fn s3_multipart_listing_pages_and_presigned_urls() {
        let Some(cfg) = local_aws().await else { return };
        let (store, b) = bucket(&cfg).await;
        let big: Vec<u8> = (0..(17 * 1024 * 1024)).map(|i| (i % 251) as u8).collect();
        store.put(&b, "big.bin", big.clone(), "application/octet-stream").await.unwrap();
        assert_eq!(store.head(&b, "big.bin").await.unwrap().unwrap().size, big.len() as u64);
        assert!(store.get(&b, "big.bin").await.unwrap() == big, "multipart upload corrupted the object");
        // More keys than one page (1000) holds.
        let puts = (0..1005).map(|i| {
            let store = store.clone();
            let b = b.clone();
            async move { store.put(&b, &format!("many/{i:05}"), vec![1], "x").await }
        });
        for r in futures_join(puts).await {
            r.unwrap();
        }
        assert_eq!(store.list(&b, "many/").await.unwrap().len(), 1005);
        // Presigned GET: fetch it with a plain HTTP request.
        store.put(&b, "hello.txt", b"presigned!".to_vec(), "text/plain").await.unwrap();
        let url = store.presign_get(&b, "hello.txt", Duration::from_secs(60)).await.unwrap();
        assert!(url.contains("X-Amz-Signature"), "{url}");
        let body = http_get(&url);
        assert!(body.ends_with("presigned!"), "{body}");
        assert!(store.presign_put(&b, "up.txt", Duration::from_secs(60)).await.unwrap().contains("X-Amz-Signature"));
        // A sized PUT signs its length and its type (bytes, nothing a browser renders), and
        // hands the type to the client to send.
        let (url, headers) = store.presign_put_sized(&b, "up.bin", 5, Duration::from_secs(60)).await.unwrap();
        let signed = url.split("X-Amz-SignedHeaders=").nth(1).unwrap().split('&').next().unwrap().to_string();
        assert!(signed.contains("content-length") && signed.contains("content-type"), "{signed}");
        let ct: Vec<_> = headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).collect();
        assert_eq!(ct.len(), 1, "{headers:?}");
        assert_eq!(ct[0].1, pixq_jobs::store::s3::UPLOAD_TYPE);
    }

    #[tokio::test]
    async fn s3_put_stream_writes_parts_as_they_fill_and_aborts_on_error() {
        let Some(cfg) = local_aws().await else { return };
        let (store, b) = bucket(&cfg).await;
        // Uneven chunks that cross part boundaries: 3 parts (8 + 8 + 1 MiB and change).
        let sizes = [3 << 20, 6 << 20, 1, 7 << 20, 1 << 20, 12345];
        let mut all = Vec::new();
        let chunks: Vec<Result<Vec<u8>, StoreError>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let c: Vec<u8> = (0..n).map(|j| ((i * 7 + j) % 253) as u8).collect();
                all.extend_from_slice(&c);
                Ok(c)
            })
            .collect();
        let n = store.put_stream(&b, "z/big.zip", "application/zip", futures::stream::iter(chunks)).await.unwrap();
        assert_eq!(n, all.len() as u64);
        assert!(store.get(&b, "z/big.zip").await.unwrap() == all, "streamed upload corrupted the object");
        // Smaller than a part: one PUT.
        let small = vec![Ok(b"ab".to_vec()), Ok(b"cd".to_vec())];
        assert_eq!(store.put_stream(&b, "z/small", "text/plain", futures::stream::iter(small)).await.unwrap(), 4);
        assert_eq!(store.get(&b, "z/small").await.unwrap(), b"abcd");
        // A failing source after the first part: no object appears, the error comes back.
        let failing = vec![Ok(vec![0u8; 9 << 20]), Err(StoreError::Permanent("source gone".into()))];
        let e = store.put_stream(&b, "z/broken", "x", futures::stream::iter(failing)).await.unwrap_err();
        assert!(e.to_string().contains("source gone"), "{e}");
        assert!(store.head(&b, "z/broken").await.unwrap().is_none());
        let e = store.put_stream(&b, "../escape", "x", futures::stream::iter(Vec::new())).await.unwrap_err();
        assert!(!e.is_transient(), "{e}");
    }

    async fn futures_join<F: std::future::Future + Send + 'static>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F::Output: Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(32));
        for f in fs {
            let sem = sem.clone();
            set.spawn(async move {
                let _p = sem.acquire().await.unwrap();
                f.await
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    }

    /// A minimal HTTP/1.1 GET against the loopback server.
    fn http_get(url: &str) -> String {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").expect("loopback http URL");
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        assert!(host.starts_with("127.0.0.1:") || host.starts_with("localhost:"), "{host}");
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"), "{out}");
        out
    }

    #[tokio::test]
    async fn sqs_queue_contract() {
        let Some(cfg) = local_aws().await else { return };
        queue_contract(&queue_with_dlq(&cfg, false, 5).await).await;
    }

    #[tokio::test]
    async fn sqs_fifo_contract() {
        let Some(cfg) = local_aws().await else { return };
        fifo_contract(&queue_with_dlq(&cfg, true, 5).await).await;
    }

    #[tokio::test]
    async fn sqs_redrive_policy_moves_to_the_dlq_after_max_receives() {
        let Some(cfg) = local_aws().await else { return };
        let q = queue_with_dlq(&cfg, false, 2).await;
        q.send("crashy", &SendOptions::default()).await.unwrap();
        for n in 1..=2 {
            let m = q.receive(1, VIS, Duration::from_secs(2)).await.unwrap();
            assert_eq!(m[0].receive_count, n);
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        assert!(q.receive(1, VIS, Duration::from_secs(1)).await.unwrap().is_empty());
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, "crashy");
    }
}

#[tokio::test]
async fn local_store_commits_small_objects_written_together_once() {
    // An output and the record naming it: one transaction of the pack (one fsync), where two
    // puts take two. Readers see both.
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::new(dir.path());
    s.put("pixq", "warm", vec![0], "").await.unwrap();
    let before = s.pack_commits();
    let objects =
        vec![("o/out.png".to_string(), vec![9u8; 5000], "image/png"), ("r/rec.json".to_string(), b"{}".to_vec(), "")];
    s.put_all("pixq", objects).await.unwrap();
    assert_eq!(s.pack_commits(), before + 1);
    assert_eq!(s.get("pixq", "o/out.png").await.unwrap(), vec![9u8; 5000]);
    assert_eq!(s.get("pixq", "r/rec.json").await.unwrap(), b"{}");
    s.put("pixq", "o/a", vec![1], "").await.unwrap();
    s.put("pixq", "o/b", vec![1], "").await.unwrap();
    assert_eq!(s.pack_commits(), before + 3);
    // With an object over the inline limit: it is a file, written before the record.
    let objects =
        vec![("o/big".to_string(), vec![7u8; 300 * 1024], "x"), ("r/big.json".to_string(), b"{}".to_vec(), "")];
    s.put_all("pixq", objects).await.unwrap();
    assert!(dir.path().join("pixq/o/big").is_file());
    assert_eq!(s.get("pixq", "r/big.json").await.unwrap(), b"{}");
    // A small object replacing a larger file leaves no file behind.
    s.put_all("pixq", vec![("o/big".to_string(), vec![1u8; 10], "x")]).await.unwrap();
    assert!(!dir.path().join("pixq/o/big").exists());
    assert_eq!(s.get("pixq", "o/big").await.unwrap(), vec![1u8; 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_store_concurrent_small_writes_all_land() {
    // Small writes from many tasks share commits (group commit): each one must be there,
    // with its own bytes, once its put has returned.
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(FsStore::new(dir.path()));
    let tasks: Vec<_> = (0..64u32)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let body = i.to_le_bytes().repeat(1 + i as usize);
                s.put("pixq", &format!("many/{i:03}"), body.clone(), "").await.unwrap();
                assert_eq!(s.get("pixq", &format!("many/{i:03}")).await.unwrap(), body);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let listed = s.list("pixq", "many/").await.unwrap();
    assert_eq!(listed.len(), 64);
    assert!(listed.iter().enumerate().all(|(i, m)| m.size == 4 * (1 + i as u64)), "{listed:?}");
    assert!(!dir.path().join("pixq/many").exists(), "small objects became files");
}
