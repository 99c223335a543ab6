//! Damage and tampering behind the ledger's back, through sled directly:
//! each is detected — on open and by `verify` — with an error naming the
//! seq, never skipped and never a panic.

use std::path::Path;

use execution_ledger::{fuzzing, ErrorKind, Event, Ledger, Submission, TenantId};

const EVENTS: u64 = 20;

/// Writes a ledger of `EVENTS` events (submit/claim/complete cycles), with a
/// snapshot every `snapshot_every` events (0: none).
fn build(dir: &Path, snapshot_every: u64) {
    let ledger = Ledger::builder(dir)
        .snapshot_every(snapshot_every)
        .open()
        .unwrap();
    let tenant: TenantId = "acme".parse().unwrap();
    while ledger.head().seq < EVENTS {
        let e = ledger
            .submit(&tenant, Submission::new("echo"))
            .wait()
            .unwrap()
            .execution;
        if ledger.head().seq < EVENTS {
            let c = ledger.claim(None).wait().unwrap().unwrap();
            if ledger.head().seq < EVENTS {
                ledger
                    .complete(c.execution_id, c.attempt, serde_json::json!(e.input))
                    .wait()
                    .unwrap();
            }
        }
    }
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Changes the stored log with the ledger closed.
fn tamper(dir: &Path, f: impl FnOnce(&sled::Tree)) {
    let db = sled::open(dir.join("sled")).unwrap();
    let tree = db.open_tree("events").unwrap();
    f(&tree);
    tree.flush().unwrap();
}

/// Re-encodes record `seq` with new JSON and a recomputed own hash, keeping
/// its link: what a tamperer who knows the format would write.
fn rewrite(dir: &Path, tree: &sled::Tree, seq: u64, edit: impl FnOnce(&mut serde_json::Value)) {
    let old = tree.get(key(seq)).unwrap().unwrap();
    tree.insert(key(seq), reencode(dir, seq, &old, edit))
        .unwrap();
}

/// Record `old` of `seq` with its event edited and its own hash recomputed
/// (new salts, new digests; its payloads in the clear, as format 2 stores
/// them), its link kept.
fn reencode(
    dir: &Path,
    seq: u64,
    old: &[u8],
    edit: impl FnOnce(&mut serde_json::Value),
) -> Vec<u8> {
    let prev: [u8; 32] = old[1..33].try_into().unwrap();
    let event = stored_event(dir, seq, old);
    let mut value = serde_json::to_value(&event).unwrap();
    edit(&mut value);
    let edited: Event = serde_json::from_value(value).unwrap();
    assert_ne!(edited, event, "the edit changes the event");
    fuzzing::encode_event_record(&prev, &edited).0
}

/// The event of a record as stored in `dir` (its payloads decrypted).
fn stored_event(dir: &Path, seq: u64, stored: &[u8]) -> Event {
    let readable = fuzzing::readable_record(dir, seq, stored).unwrap();
    fuzzing::decode_event(seq, &readable).unwrap()
}

/// Opens without snapshots (so replay reads every record) and expects an
/// error at `seq` of `kind`.
fn open_fails_at(dir: &Path, kind: ErrorKind, seq: u64) -> String {
    let err = Ledger::open(dir).expect_err("damage must be detected on open");
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(err.seq(), Some(seq), "{err}");
    err.to_string()
}

/// With a snapshot past the damage, open replays only the tail; `verify`
/// walks everything and must find it.
fn verify_fails_at(dir: &Path, kind: ErrorKind, seq: u64) -> String {
    let ledger = Ledger::open(dir).expect("the tail after the snapshot is intact");
    let err = ledger.verify().expect_err("verify must find the damage");
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(err.seq(), Some(seq), "{err}");
    err.to_string()
}

#[test]
fn a_flipped_byte_in_an_event_is_found_at_its_seq() {
    for snapshots in [0, 10] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), snapshots);
        tamper(dir.path(), |t| {
            let mut v = t.get(key(5)).unwrap().unwrap().to_vec();
            let i = v.len() - 3;
            v[i] ^= 0x20;
            t.insert(key(5), v).unwrap();
        });
        let msg = if snapshots == 0 {
            open_fails_at(dir.path(), ErrorKind::Corrupt, 5)
        } else {
            verify_fails_at(dir.path(), ErrorKind::Corrupt, 5)
        };
        assert_eq!(
            msg,
            "damaged log at seq 5: record content does not match its hash"
        );
    }
}

#[test]
fn a_rewritten_event_with_a_recomputed_hash_breaks_the_chain() {
    for snapshots in [0, 10] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), snapshots);
        tamper(dir.path(), |t| {
            rewrite(dir.path(), t, 4, |e| e["callableName"] = "rm -rf".into());
        });
        let msg = if snapshots == 0 {
            open_fails_at(dir.path(), ErrorKind::Corrupt, 4)
        } else {
            verify_fails_at(dir.path(), ErrorKind::Corrupt, 4)
        };
        assert!(msg.contains("rewritten"), "{msg}");
    }
}

#[test]
fn a_rewritten_last_event_disagrees_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 0);
    tamper(dir.path(), |t| {
        rewrite(dir.path(), t, EVENTS, |e| {
            e["at"] = "2030-01-01T00:00:00Z".into()
        });
    });
    let msg = open_fails_at(dir.path(), ErrorKind::Corrupt, EVENTS);
    assert!(msg.contains("checkpoint"), "{msg}");
}

#[test]
fn a_record_deleted_in_the_middle_is_a_gap() {
    for snapshots in [0, 15] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), snapshots);
        tamper(dir.path(), |t| {
            t.remove(key(7)).unwrap();
        });
        let msg = if snapshots == 0 {
            open_fails_at(dir.path(), ErrorKind::Corrupt, 7)
        } else {
            verify_fails_at(dir.path(), ErrorKind::Corrupt, 7)
        };
        assert!(msg.contains("record is missing"), "{msg}");
    }
}

#[test]
fn deleted_last_records_are_a_lost_suffix_even_when_sled_says_nothing() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 0);
    tamper(dir.path(), |t| {
        for seq in EVENTS - 2..=EVENTS {
            t.remove(key(seq)).unwrap();
        }
    });
    let msg = open_fails_at(dir.path(), ErrorKind::LostSuffix, EVENTS - 2);
    assert_eq!(
        msg,
        format!(
            "the log ends at seq {} but the checkpoint says seq {EVENTS} was durable: 3 acknowledged events are missing",
            EVENTS - 3
        )
    );
    // The operator can accept the shortened log; from then on it opens.
    let ledger = Ledger::builder(dir.path())
        .accept_tail(true)
        .open()
        .unwrap();
    assert_eq!(ledger.accepted_tail().unwrap().refused, msg);
    assert_eq!(ledger.head().seq, EVENTS - 3);
    drop(ledger);
    assert_eq!(Ledger::open(dir.path()).unwrap().head().seq, EVENTS - 3);
}

#[test]
fn a_truncated_record_is_found_at_its_seq() {
    for cut in [10, 40, 70] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 0);
        tamper(dir.path(), |t| {
            let v = t.get(key(9)).unwrap().unwrap();
            t.insert(key(9), &v[..cut]).unwrap();
        });
        open_fails_at(dir.path(), ErrorKind::Corrupt, 9);
    }
}

#[test]
fn an_unknown_format_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 0);
    tamper(dir.path(), |t| {
        let mut v = t.get(key(3)).unwrap().unwrap().to_vec();
        v[0] = 7;
        t.insert(key(3), v).unwrap();
    });
    let msg = open_fails_at(dir.path(), ErrorKind::UnsupportedVersion, 3);
    assert!(msg.contains("format version 7"), "{msg}");
}

#[test]
fn a_valid_but_illegal_event_is_refused_by_the_machine_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 0);
    // Seq 3 completed attempt 1; claim it finished with attempt 2 instead,
    // and re-chain every record after it so that only the machine can tell.
    tamper(dir.path(), |t| {
        rewrite(dir.path(), t, 3, |e| e["attempt"] = 2.into());
        let mut prev: Vec<u8> = t.get(key(3)).unwrap().unwrap()[33..65].to_vec();
        for seq in 4..=EVENTS {
            let old = t.get(key(seq)).unwrap().unwrap();
            let event = stored_event(dir.path(), seq, &old);
            let (new, hash) =
                fuzzing::encode_event_record(&prev.clone().try_into().unwrap(), &event);
            t.insert(key(seq), new).unwrap();
            prev = hash.to_vec();
        }
    });
    // The checkpoint still holds the original last hash, so open names the
    // rewritten end; accept the log as it is to reach the replay, which
    // checks the whole chain and every transition.
    open_fails_at(dir.path(), ErrorKind::Corrupt, EVENTS);
    let err = Ledger::builder(dir.path())
        .accept_tail(true)
        .open()
        .expect_err("the illegal transition is refused");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.seq(), Some(3), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("illegal transition"), "{msg}");
}

// Postmortem: sled 0.34.7 reads a torn `snap.<lsn>.generating` file left by a
// process killed mid-snapshot and refuses to open; the crash loop hit it at
// cycle 85 of 1,000. The ledger removes unfinished sled snapshots first.
#[test]
fn regression_a_torn_unfinished_sled_snapshot_does_not_block_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 0);
    let torn = dir
        .path()
        .join("sled")
        .join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&torn, b"half a snapshot").unwrap();
    let ledger = Ledger::open(dir.path()).expect("opens despite the torn file");
    assert_eq!(ledger.verify().unwrap().events, EVENTS);
    assert!(!torn.exists());
}

/// sled writes its `conf` file once, at creation, in two unsynced writes: a
/// process killed in between left a torn file that sled refused for good
/// (the crash loop hit it when its first kill landed during the first
/// open). A new database is now made in `sled.creating` and renamed into
/// place; what a kill leaves there is discarded.
#[test]
fn regression_a_kill_while_sled_creates_its_database_does_not_block_open() {
    let dir = tempfile::tempdir().unwrap();
    let creating = dir.path().join("sled.creating");
    std::fs::create_dir_all(creating.join("blobs")).unwrap();
    // What sled leaves after its first write of `conf`, before the crc.
    std::fs::write(
        creating.join("conf"),
        b"segment_size: 524288\nuse_compression: false\nversion: 0.3",
    )
    .unwrap();
    std::fs::write(creating.join("db"), b"").unwrap();
    // Such a file inside the database would stop sled at every open:
    let torn = dir.path().join("torn");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::copy(creating.join("conf"), torn.join("conf")).unwrap();
    assert!(sled::Config::new().path(&torn).open().is_err());
    // The ledger discards the unfinished creation and makes a whole one.
    let ledger = Ledger::open(dir.path()).expect("opens despite the torn creation");
    assert!(!creating.exists());
    assert!(dir.path().join("sled").join("conf").exists());
    drop(ledger);
    build(dir.path(), 0);
    assert_eq!(
        Ledger::open(dir.path()).unwrap().verify().unwrap().events,
        EVENTS
    );
}

/// The database is now created in place under a `sled.creating` marker
/// file: a kill while sled writes its `conf` leaves that torn file in
/// `sled/` beside the marker, and the next open makes the database anew.
#[test]
fn a_kill_while_sled_creates_its_database_in_place_does_not_block_open() {
    let dir = tempfile::tempdir().unwrap();
    let sled_dir = dir.path().join("sled");
    std::fs::create_dir_all(sled_dir.join("blobs")).unwrap();
    std::fs::write(
        sled_dir.join("conf"),
        b"segment_size: 524288\nuse_compression: false\nversion: 0.3",
    )
    .unwrap();
    std::fs::write(sled_dir.join("db"), b"").unwrap();
    let marker = dir.path().join("sled.creating");
    std::fs::write(&marker, b"").unwrap();
    let ledger = Ledger::open(dir.path()).expect("opens despite the torn creation");
    assert!(!marker.exists());
    drop(ledger);
    build(dir.path(), 0);
    assert_eq!(
        Ledger::open(dir.path()).unwrap().verify().unwrap().events,
        EVENTS
    );
}

/// Ways to lose or damage the checkpoint: deleted, truncated, a flipped
/// byte in either slot.
fn damage_checkpoint(dir: &Path, how: &str) {
    let path = dir.join("checkpoint");
    let mut bytes = std::fs::read(&path).unwrap();
    match how {
        "delete" => return std::fs::remove_file(&path).unwrap(),
        "empty" => bytes.clear(),
        "truncate" => bytes.truncate(100),
        "flip slot 1" => bytes[20] ^= 0x10,
        "flip slot 2" => bytes[64 + 40] ^= 0x01,
        _ => unreachable!(),
    }
    std::fs::write(&path, bytes).unwrap();
}

const CHECKPOINT_DAMAGE: [&str; 5] = ["delete", "empty", "truncate", "flip slot 1", "flip slot 2"];

/// A deleted or damaged checkpoint was silently rewritten on open, which
/// switched off the lost-suffix check. Now open refuses, naming the file,
/// until the log is accepted as it is; then later opens pass.
#[test]
fn regression_a_missing_or_damaged_checkpoint_is_refused_until_the_log_is_accepted() {
    for how in CHECKPOINT_DAMAGE {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 0);
        let path = dir.path().join("checkpoint");
        damage_checkpoint(dir.path(), how);
        let before = std::fs::read(&path).ok();
        let err = Ledger::open(dir.path()).expect_err(how);
        assert_eq!(err.kind(), ErrorKind::Checkpoint, "{how}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{how}: {msg}");
        assert!(!msg.contains('\n'), "{how}: {msg}");
        assert_eq!(std::fs::read(&path).ok(), before, "{how}: left as it was");
        let ledger = Ledger::builder(dir.path())
            .accept_tail(true)
            .open()
            .unwrap();
        let accepted = ledger.accepted_tail().expect(how);
        assert_eq!(accepted.head.seq, EVENTS, "{how}");
        assert_eq!(accepted.head, ledger.head(), "{how}");
        drop(ledger);
        let record = std::fs::read_to_string(dir.path().join("checkpoint.accepted")).unwrap();
        assert_eq!(record.lines().count(), 1, "{record}");
        assert!(record.contains(&format!("seq {EVENTS}")), "{record}");
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(ledger.accepted_tail().is_none());
        assert_eq!(ledger.verify().unwrap().events, EVENTS, "{how}");
    }
}

/// Deleting the checkpoint and dropping the log's tail used to go
/// unnoticed: the checkpoint was rewritten from the shortened log.
#[test]
fn regression_deleting_the_checkpoint_and_the_logs_tail_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 0);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    tamper(dir.path(), |t| {
        for seq in EVENTS - 2..=EVENTS {
            t.remove(key(seq)).unwrap();
        }
    });
    let err = Ledger::open(dir.path()).expect_err("the missing checkpoint is reported");
    assert_eq!(err.kind(), ErrorKind::Checkpoint, "{err}");
    assert!(err.to_string().contains("is missing"), "{err}");
}

/// A new ledger has no checkpoint until it is first opened; one whose
/// checkpoint records nothing beside an empty log is new too.
#[test]
fn a_new_ledger_needs_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    drop(Ledger::open(dir.path()).unwrap());
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    drop(Ledger::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("checkpoint"), b"").unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.head().seq, 0);
    assert!(ledger.accepted_tail().is_none());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// An error and its sources, as the CLI prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Damage inside sled's own file used to be reported in sled's terms
/// ("storage: Read corrupted data at file offset Some(Inline(1089565))
/// backtrace ()"), and some made sled panic while opening. Now each flipped
/// byte is found at a seq ("the records after seq N are unreadable"), or
/// reported as sled's files damaged (at an offset when sled says where).
#[test]
fn regression_damage_inside_sleds_file_is_reported_in_the_ledgers_terms() {
    let base = tempfile::tempdir().unwrap();
    let built = base.path().join("built");
    let ledger = Ledger::builder(&built)
        .durability(execution_ledger::Durability::Flushed)
        .open()
        .unwrap();
    let tenant: TenantId = "acme".parse().unwrap();
    for i in 0..3_000 {
        let mut s = Submission::new("echo");
        s.input = Some(format!("input number {i}"));
        ledger.submit(&tenant, s).wait().unwrap();
    }
    drop(ledger);
    // Reopened once, sled keeps a snapshot of its pages: records before it
    // are read from the file only when needed, as a later replay does.
    drop(Ledger::open(&built).unwrap());
    let len = std::fs::metadata(built.join("sled").join("db"))
        .unwrap()
        .len();
    let (mut at_seq, mut at_offset) = (0, 0);
    for i in 0..40 {
        let offset = (len * i / 40 + 777) as usize;
        let dir = base.path().join(format!("flipped-{offset}"));
        copy_dir(&built, &dir);
        let db = dir.join("sled").join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        bytes[offset] ^= 0x20;
        std::fs::write(&db, bytes).unwrap();
        let result = Ledger::open(&dir).and_then(|l| l.verify().map(|r| (l, r)));
        let err = match result {
            Ok((_, report)) => {
                assert_eq!(report.events, 3_000, "byte {offset}");
                continue;
            }
            Err(e) => e,
        };
        let text = chain(&err);
        for internal in ["Some(", "None", "Inline", "backtrace", "Read corrupted"] {
            assert!(!text.contains(internal), "byte {offset}: {text}");
        }
        assert!(
            err.seq().is_some() || text.contains("sled's own files are damaged"),
            "byte {offset}: {text}"
        );
        if err.seq().is_some() && text.contains("sled's own files are damaged at offset") {
            assert!(text.contains("unreadable"), "byte {offset}: {text}");
            at_seq += 1;
        }
        if text.contains("of its file db") {
            at_offset += 1;
        }
    }
    assert!(
        at_seq > 0 && at_offset > 0,
        "some flips hit records that sled reads on demand"
    );
}

// Blocks: a batch appended as one sled entry (record.rs). Each record inside
// is checked, linked and found at its own seq as if stored alone.

/// The first seq of the block `block_ledger` writes, and its last.
const BLOCK: (u64, u64) = (4, 13);

/// Three single submits (seqs 1–3), a batch of ten (4–13, one block, each
/// with an idempotency key), three single submits (14–16).
fn block_ledger(dir: &Path) {
    let ledger = Ledger::open(dir).unwrap();
    let tenant: TenantId = "acme".parse().unwrap();
    let single = || {
        ledger
            .submit(&tenant, Submission::new("echo"))
            .wait()
            .unwrap();
    };
    (0..3).for_each(|_| single());
    let batch = (0..10)
        .map(|i| {
            let mut s = Submission::new("echo");
            s.idempotency_key = Some(format!("key-{i}"));
            s
        })
        .collect();
    ledger.submit_many(&tenant, batch).wait().unwrap();
    (0..3).for_each(|_| single());
    assert_eq!(ledger.head().seq, 16);
}

/// Where each record of a stored block is in it (the block format of
/// record.rs: 0x42, a count, then each record's length and bytes).
fn block_parts(v: &[u8]) -> Vec<std::ops::Range<usize>> {
    assert_eq!(v[0], 0x42, "a block");
    let count = u32::from_be_bytes(v[1..5].try_into().unwrap()) as usize;
    let mut at = 5;
    (0..count)
        .map(|_| {
            let len = u32::from_be_bytes(v[at..at + 4].try_into().unwrap()) as usize;
            at += 4 + len;
            at - len..at
        })
        .collect()
}

#[test]
fn a_batch_is_one_stored_block_and_reads_back_record_by_record() {
    let dir = tempfile::tempdir().unwrap();
    block_ledger(dir.path());
    tamper(dir.path(), |t| {
        let v = t.get(key(BLOCK.0)).unwrap().expect("the block's entry");
        assert_eq!(block_parts(&v).len(), 10);
        for seq in BLOCK.0 + 1..=BLOCK.1 {
            assert!(
                t.get(key(seq)).unwrap().is_none(),
                "seq {seq} is in the block"
            );
        }
        assert_eq!(t.get(key(14)).unwrap().unwrap()[0], 2, "a single record");
    });
    let ledger = Ledger::open(dir.path()).unwrap();
    ledger.verify().unwrap();
    let seqs: Vec<u64> = ledger.events(1, None).map(|e| e.unwrap().seq).collect();
    assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
    // From inside the block, and one execution's history inside it.
    let from7: Vec<u64> = ledger.events(7, Some(9)).map(|e| e.unwrap().seq).collect();
    assert_eq!(from7, [7, 8, 9]);
    // From a single record, and past the end.
    let from15: Vec<u64> = ledger.events(15, None).map(|e| e.unwrap().seq).collect();
    assert_eq!(from15, [15, 16]);
    assert_eq!(ledger.events(17, None).count(), 0, "nothing after the head");
    assert_eq!(ledger.events(100, None).count(), 0);
    let eighth = ledger.events(8, Some(8)).next().unwrap().unwrap();
    let history = ledger.history(eighth.execution_id).unwrap();
    assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), [8]);
}

#[test]
fn a_flipped_byte_in_a_record_inside_a_block_is_found_at_its_seq() {
    for (seq, at) in [(8, 3), (4, 40), (13, 70)] {
        let dir = tempfile::tempdir().unwrap();
        block_ledger(dir.path());
        tamper(dir.path(), |t| {
            let mut v = t.get(key(BLOCK.0)).unwrap().unwrap().to_vec();
            let part = block_parts(&v)[(seq - BLOCK.0) as usize].clone();
            v[part.end - at] ^= 0x20;
            t.insert(key(BLOCK.0), v).unwrap();
        });
        let msg = open_fails_at(dir.path(), ErrorKind::Corrupt, seq);
        assert!(msg.contains("does not match its hash"), "{msg}");
    }
}

#[test]
fn a_record_rewritten_inside_a_block_with_a_recomputed_hash_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    block_ledger(dir.path());
    tamper(dir.path(), |t| {
        let v = t.get(key(BLOCK.0)).unwrap().unwrap().to_vec();
        let parts = block_parts(&v);
        let record = reencode(dir.path(), BLOCK.0 + 5, &v[parts[5].clone()], |e| {
            e["at"] = "2031-01-01T00:00:00Z".into();
        });
        // The block again, with the rewritten record in its place.
        let mut block = v[..5].to_vec();
        for (i, part) in parts.iter().enumerate() {
            let r = if i == 5 {
                &record[..]
            } else {
                &v[part.clone()]
            };
            block.extend_from_slice(&(r.len() as u32).to_be_bytes());
            block.extend_from_slice(r);
        }
        t.insert(key(BLOCK.0), block).unwrap();
    });
    let msg = open_fails_at(dir.path(), ErrorKind::Corrupt, BLOCK.0 + 5);
    assert!(msg.contains("rewritten"), "{msg}");
}

#[test]
fn a_deleted_block_is_a_gap_at_its_first_seq() {
    let dir = tempfile::tempdir().unwrap();
    block_ledger(dir.path());
    tamper(dir.path(), |t| {
        t.remove(key(BLOCK.0)).unwrap();
    });
    let msg = open_fails_at(dir.path(), ErrorKind::Corrupt, BLOCK.0);
    assert!(msg.contains("record is missing"), "{msg}");
}

#[test]
fn a_truncated_block_is_found_at_the_seq_it_ends_in() {
    for seq in [4, 9, 13] {
        let dir = tempfile::tempdir().unwrap();
        block_ledger(dir.path());
        tamper(dir.path(), |t| {
            let v = t.get(key(BLOCK.0)).unwrap().unwrap();
            let part = block_parts(&v)[(seq - BLOCK.0) as usize].clone();
            t.insert(key(BLOCK.0), &v[..part.start + 20]).unwrap();
        });
        let msg = open_fails_at(dir.path(), ErrorKind::Corrupt, seq);
        assert!(msg.contains("ends inside the record"), "{msg}");
    }
}

#[test]
fn a_block_whose_index_entries_a_crash_lost_is_indexed_again_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        let tenant: TenantId = "acme".parse().unwrap();
        ledger
            .submit(&tenant, Submission::new("echo"))
            .wait()
            .unwrap();
        let batch = (0..10)
            .map(|i| {
                let mut s = Submission::new("echo");
                s.idempotency_key = Some(format!("key-{i}"));
                s
            })
            .collect();
        ledger.submit_many(&tenant, batch).wait().unwrap();
    }
    // What a crash after the block and before its index entries leaves.
    tamper(dir.path(), |t| {
        let names: Vec<_> = t
            .scan_prefix([0xFF, b'k'])
            .keys()
            .map(|k| k.unwrap())
            .collect();
        assert_eq!(names.len(), 10);
        names.iter().for_each(|k| {
            t.remove(k).unwrap();
        });
    });
    let ledger = Ledger::open(dir.path()).unwrap();
    let tenant: TenantId = "acme".parse().unwrap();
    for i in 0..10 {
        let mut s = Submission::new("echo");
        s.idempotency_key = Some(format!("key-{i}"));
        let again = ledger.submit(&tenant, s).wait().unwrap();
        assert!(!again.created, "key-{i} answers its first execution");
    }
    assert_eq!(ledger.head().seq, 11, "nothing appended");
    ledger.verify().unwrap();
}

#[test]
fn a_batch_larger_than_a_block_is_several_blocks_that_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        let tenant: TenantId = "acme".parse().unwrap();
        let batch = (0..200)
            .map(|i| {
                let mut s = Submission::new("echo");
                s.input = Some(format!("{i} {}", "x".repeat(100)));
                s
            })
            .collect();
        ledger.submit_many(&tenant, batch).wait().unwrap();
    }
    let entries = tamper_read(dir.path());
    assert!(entries.len() > 2, "{} entries", entries.len());
    let mut next = 1;
    for (first, v) in &entries {
        assert_eq!(*first, next, "blocks follow each other");
        next += block_parts(v).len() as u64;
    }
    assert_eq!(next, 201);
    let ledger = Ledger::open(dir.path()).unwrap();
    ledger.verify().unwrap();
    let seqs: Vec<u64> = ledger.events(1, None).map(|e| e.unwrap().seq).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let inputs: Vec<u64> = ledger
        .events(150, Some(152))
        .map(|e| match e.unwrap().kind {
            execution_ledger::EventKind::Queued(s) => {
                let input = s.input.unwrap();
                input.split(' ').next().unwrap().parse::<u64>().unwrap()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(inputs, [149, 150, 151]);
}

/// The log's entries (first seq, value), read with the ledger closed.
fn tamper_read(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    tamper(dir, |t| {
        for kv in t.range(..[0xFFu8].as_slice()) {
            let (k, v) = kv.unwrap();
            out.push((
                u64::from_be_bytes(k.as_ref().try_into().unwrap()),
                v.to_vec(),
            ));
        }
    });
    out
}
