//! Opening ledgers: creating many fresh ones in one process while others
//! are busy, and reopening each right after it is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use execution_ledger::{Durability, Ledger, Submission, TenantId};

fn tenant() -> TenantId {
    "acme".parse().unwrap()
}

/// A new ledger's sled database used to be made in a side directory by one
/// sled handle, dropped, renamed into place and opened by a second handle;
/// sled's background threads still held the first handle's file lock now
/// and then, and the open failed with "could not acquire lock … WouldBlock"
/// (one run in six of `ledger bench --only http`; always under load).
#[test]
fn regression_fresh_ledgers_open_and_reopen_while_others_are_busy() {
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let ledger = Ledger::builder(dir.path())
                    .durability(Durability::Flushed)
                    .open()
                    .unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    ledger
                        .submit(&tenant(), Submission::new("echo"))
                        .wait()
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut failures = Vec::new();
    for i in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        let ledger = match Ledger::builder(dir.path())
            .durability(Durability::Flushed)
            .open()
        {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("fresh ledger {i}: {e}"));
                continue;
            }
        };
        ledger
            .submit(&tenant(), Submission::new("echo"))
            .wait()
            .unwrap();
        drop(ledger);
        match Ledger::open(dir.path()) {
            Ok(l) => assert_eq!(l.head().seq, 1),
            Err(e) => failures.push(format!("reopened ledger {i}: {e}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        assert!(t.join().unwrap() > 0, "the busy ledgers appended");
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:#?}",
        failures.len(),
        failures
    );
}

/// `create(false)` opens only a ledger that exists, and creates nothing.
#[test]
fn an_existing_ledger_only_is_opened_without_create() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("missing");
    let err = Ledger::builder(&missing).create(false).open().unwrap_err();
    assert_eq!(err.kind(), execution_ledger::ErrorKind::NoLedger);
    assert_eq!(
        err.to_string(),
        format!("no ledger at {}", missing.display())
    );
    assert!(!missing.exists());
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = Ledger::builder(&empty).create(false).open().unwrap_err();
    assert_eq!(err.kind(), execution_ledger::ErrorKind::NoLedger);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    let ledger = Ledger::open(&missing).unwrap();
    ledger
        .submit(&tenant(), Submission::new("echo"))
        .wait()
        .unwrap();
    drop(ledger);
    let ledger = Ledger::builder(&missing).create(false).open().unwrap();
    assert_eq!(ledger.head().seq, 1);
}
