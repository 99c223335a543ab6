//! The per-execution index on a real sled database: one entry per settled
//! execution (its seqs), live executions' seqs in the projection and its
//! snapshots, the repair of a crash between a settling record and its
//! entry, and ledgers written with the older per-event index.

use std::path::Path;

use execution_ledger::{
    BackgroundExecutionStatus, ErrorKind, ExecutionId, Ledger, Submission, TenantId,
};

fn tenant() -> TenantId {
    "acme".parse().unwrap()
}

/// A settled execution (queued, started, completed) and a live one
/// (queued, started), then `extra` more submits; snapshots after every event
/// they allow.
fn build(dir: &Path, extra: u64) -> (ExecutionId, ExecutionId) {
    let ledger = Ledger::builder(dir).snapshot_every(1).open().unwrap();
    let mut high = Submission::new("echo");
    high.config.priority = 90;
    let settled = ledger.submit(&tenant(), high).wait().unwrap().execution;
    let live = ledger
        .submit(&tenant(), Submission::new("echo"))
        .wait()
        .unwrap()
        .execution;
    let c = ledger.claim(None).wait().unwrap().unwrap();
    assert_eq!(c.execution_id, settled.execution_id);
    ledger.claim(None).wait().unwrap().unwrap();
    ledger
        .complete(c.execution_id, c.attempt, serde_json::json!("done"))
        .wait()
        .unwrap();
    for _ in 0..extra {
        ledger
            .submit(&tenant(), Submission::new("echo"))
            .wait()
            .unwrap();
    }
    (settled.execution_id, live.execution_id)
}

/// Changes sled's trees `events` and `snapshots` with the ledger closed.
fn tamper<T>(dir: &Path, f: impl FnOnce(&sled::Tree, &sled::Tree) -> T) -> T {
    let db = sled::open(dir.join("sled")).unwrap();
    let (events, snapshots) = (
        db.open_tree("events").unwrap(),
        db.open_tree("snapshots").unwrap(),
    );
    let out = f(&events, &snapshots);
    db.flush().unwrap();
    drop((events, snapshots, db));
    // sled's threads let go of the database's lock a moment later.
    let file = std::fs::File::open(dir.join("sled").join("db")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while file.try_lock().is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    out
}

/// The key of an execution's index entry (`seq` appended: the older
/// one-per-event layout).
fn entry_key(id: ExecutionId, seq: Option<&[u8]>) -> Vec<u8> {
    let mut key = vec![0xFF, b'x'];
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(seq.unwrap_or_default());
    key
}

/// The per-execution index entries: (key, value).
fn index_entries(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    tamper(dir, |tree, _| {
        tree.scan_prefix([0xFF, b'x'])
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    })
}

fn seqs(ledger: &Ledger, id: ExecutionId) -> Vec<u64> {
    ledger.history(id).unwrap().iter().map(|e| e.seq).collect()
}

#[test]
fn one_entry_per_settled_execution_and_live_seqs_from_the_projection() {
    let dir = tempfile::tempdir().unwrap();
    let (settled, live) = build(dir.path(), 3);
    // Seqs: 1 queued(settled), 2 queued(live), 3 started, 4 started,
    // 5 completed, 6-8 queued.
    let entries = index_entries(dir.path());
    assert_eq!(entries.len(), 1, "only the settled execution has an entry");
    let (k, v) = &entries[0];
    assert_eq!(&k[2..], settled.as_bytes());
    let packed: Vec<u64> = v
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(packed, vec![1, 3, 5]);
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(seqs(&ledger, settled), vec![1, 3, 5]);
    // From the reopened projection (a snapshot plus the tail).
    assert_eq!(seqs(&ledger, live), vec![2, 4]);
    let report = ledger.verify().unwrap();
    assert_eq!(report.index_entries, 8);
    // Settling the live one writes its entry with all its seqs.
    let e = ledger.get(live).unwrap();
    ledger
        .complete(live, e.attempt, serde_json::Value::Null)
        .wait()
        .unwrap();
    assert_eq!(seqs(&ledger, live), vec![2, 4, 9]);
    drop(ledger);
    assert_eq!(index_entries(dir.path()).len(), 2);
    Ledger::open(dir.path()).unwrap().verify().unwrap();
}

#[test]
fn a_crash_between_the_settling_record_and_its_entry_is_repaired_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (settled, _) = build(dir.path(), 0);
    // The completion (seq 5) is the last event: remove its entry, as a kill
    // right after its record would have left the database.
    tamper(dir.path(), |tree, snapshots| {
        assert!(tree.remove(entry_key(settled, None)).unwrap().is_some());
        // Without the snapshot at seq 5, open replays the completion.
        snapshots.remove(5u64.to_be_bytes()).unwrap();
    });
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(seqs(&ledger, settled), vec![1, 3, 5]);
    ledger.verify().unwrap();
}

#[test]
fn a_missing_entry_before_the_last_event_is_named_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (settled, _) = build(dir.path(), 2);
    tamper(dir.path(), |tree, _| {
        tree.remove(entry_key(settled, None)).unwrap();
    });
    let ledger = Ledger::open(dir.path()).unwrap();
    let err = ledger.verify().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("per-execution index"), "{err}");
}

/// Ledgers written before the index held settled executions only have one
/// entry per event and snapshots without seqs: they read, verify and go on.
#[test]
fn a_ledger_with_the_per_event_index_and_no_list_is_rebuilt_on_open_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (settled, live) = build(dir.path(), 2);
    tamper(dir.path(), |tree, snapshots| {
        // Nor was there a list of settled executions.
        for kv in tree
            .scan_prefix([0xFF, b'x'])
            .chain(tree.scan_prefix([0xFF, b'l']))
        {
            tree.remove(kv.unwrap().0).unwrap();
        }
        for kv in tree.range(..[0xFFu8].as_slice()) {
            let (k, v) = kv.unwrap();
            let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap());
            let readable = execution_ledger::fuzzing::readable_record(dir.path(), seq, &v).unwrap();
            let id = execution_ledger::fuzzing::decode_event(seq, &readable)
                .unwrap()
                .execution_id;
            tree.insert(entry_key(id, Some(&k)), &[]).unwrap();
        }
        for kv in snapshots.iter() {
            let (k, v) = kv.unwrap();
            let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap());
            let json = execution_ledger::fuzzing::readable_snapshot(dir.path(), seq, &v)
                .unwrap()
                .expect("no key destroyed");
            // Written back in the clear, as snapshots were then.
            let mut snap: serde_json::Value = serde_json::from_slice(&json).unwrap();
            for entry in snap["entries"].as_array_mut().unwrap() {
                entry.as_object_mut().unwrap().remove("seqs");
            }
            snapshots
                .insert(k, serde_json::to_vec(&snap).unwrap())
                .unwrap();
        }
    });
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(seqs(&ledger, settled), vec![1, 3, 5]);
    assert_eq!(seqs(&ledger, live), vec![2, 4]);
    ledger.verify().unwrap();
    let e = ledger.get(live).unwrap();
    ledger
        .complete(live, e.attempt, serde_json::Value::Null)
        .wait()
        .unwrap();
    assert_eq!(seqs(&ledger, live), vec![2, 4, 8]);
    assert_eq!(
        ledger.get(live).unwrap().status,
        BackgroundExecutionStatus::Completed
    );
    ledger.verify().unwrap();
    // Opening rebuilt the index to build the list: one entry per settled
    // execution already; rebuilding again changes nothing.
    let done = ledger.rebuild_index().unwrap();
    assert_eq!((done.events, done.settled), (8, 2));
    assert_eq!(done.removed, 0);
    ledger.verify().unwrap();
    drop(ledger);
    assert_eq!(index_entries(dir.path()).len(), 2);
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(seqs(&ledger, settled), vec![1, 3, 5]);
    assert_eq!(seqs(&ledger, live), vec![2, 4, 8]);
    ledger.verify().unwrap();
}

#[test]
fn rebuilding_restores_a_missing_entry_and_removes_a_stray_one() {
    let dir = tempfile::tempdir().unwrap();
    let (settled, _) = build(dir.path(), 2);
    tamper(dir.path(), |tree, _| {
        tree.remove(entry_key(settled, None)).unwrap();
        let stray = entry_key(ExecutionId::new(), None);
        tree.insert(stray, 3u64.to_be_bytes().to_vec()).unwrap();
    });
    let ledger = Ledger::open(dir.path()).unwrap();
    assert!(ledger.verify().is_err());
    let done = ledger.rebuild_index().unwrap();
    assert_eq!((done.events, done.settled, done.removed), (7, 1, 1));
    ledger.verify().unwrap();
    assert_eq!(seqs(&ledger, settled), vec![1, 3, 5]);
}

/// The list of settled executions: (key, value) entries.
fn list_entries(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    tamper(dir, |tree, _| {
        tree.scan_prefix([0xFF, b'l'])
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    })
}

#[test]
fn the_list_of_settled_executions_is_built_on_open_for_a_ledger_written_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (settled, _) = build(dir.path(), 2);
    let entries = list_entries(dir.path());
    assert_eq!(entries.len(), 1, "one line per settled execution");
    assert_eq!(
        &entries[0].0[2..],
        1u64.to_be_bytes(),
        "keyed by its first seq"
    );
    assert_eq!(&entries[0].1[..16], settled.as_bytes());
    // As a version that kept no list left it.
    tamper(dir.path(), |tree, _| {
        tree.remove(&entries[0].0).unwrap();
    });
    let ledger = Ledger::open(dir.path()).unwrap();
    let page = ledger
        .list(&execution_ledger::ListFilter::new(), None, 100)
        .unwrap();
    assert_eq!(page.executions.len(), 4);
    assert_eq!(page.executions[3].execution_id, settled);
    ledger.verify().unwrap();
    drop(ledger);
    assert_eq!(list_entries(dir.path()), entries);
}

#[test]
fn verify_names_a_damaged_list_of_settled_executions_and_reindex_mends_it() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 0);
    let entries = list_entries(dir.path());
    let original = entries.clone();
    // Another status than the one the execution settled with (byte 16);
    // a stray line at a seq of the log that submitted nothing.
    let mut wrong_status = entries[0].1.clone();
    wrong_status[16] = 3;
    let mut stray = entries[0].0.clone();
    stray[9] = 4;
    type Damage = Box<dyn Fn(&sled::Tree)>;
    let damages: [(Damage, &str); 2] = [
        (
            Box::new({
                let key = entries[0].0.clone();
                move |tree: &sled::Tree| {
                    tree.insert(&key, wrong_status.clone()).unwrap();
                }
            }),
            "(1 entries) differs from the log (1 settled executions)",
        ),
        (
            Box::new({
                let value = entries[0].1.clone();
                move |tree: &sled::Tree| {
                    tree.insert(&stray, value.clone()).unwrap();
                }
            }),
            "(2 entries) does not match the log (1 settled executions)",
        ),
    ];
    for (damage, said) in damages {
        tamper(dir.path(), |tree, _| damage(tree));
        let ledger = Ledger::open(dir.path()).unwrap();
        let err = ledger.verify().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(
            err.to_string()
                .contains(&format!("the list of settled executions {said}")),
            "{err}"
        );
        ledger.rebuild_index().unwrap();
        ledger.verify().unwrap();
        drop(ledger);
        assert_eq!(list_entries(dir.path()), original);
    }
}
