//! Redaction and legal hold on a real sled ledger: a settled execution's
//! payloads are removed from its records, its lifecycle and the hash chain
//! stay and verify, and what may not be redacted is refused with nothing
//! appended.

use std::path::Path;

use execution_ledger::{At, CommandError, ErrorKind, Ledger, Submission, TenantId};

const MARKER: &str = "ada.lovelace@example.com";

fn acme() -> TenantId {
    "acme".parse().unwrap()
}

/// A queued execution of acme's whose input is `input`.
fn queued(ledger: &Ledger, input: &str) -> execution_ledger::ExecutionId {
    let mut s = Submission::new("mail");
    s.input = Some(input.into());
    ledger
        .submit(&acme(), s)
        .wait()
        .unwrap()
        .execution
        .execution_id
}

/// A settled execution whose input, context and output hold the marker.
fn settled(ledger: &Ledger) -> execution_ledger::ExecutionId {
    let mut s = Submission::new("mail");
    s.input = Some(format!("send to {MARKER}"));
    s.context = Some([("to".to_string(), MARKER.to_string())].into());
    let id = ledger
        .submit(&acme(), s)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    let c = ledger.claim(Some("w1")).wait().unwrap().unwrap();
    assert_eq!(c.execution_id, id);
    ledger
        .complete(id, 1, serde_json::json!({ "sentTo": MARKER }))
        .wait()
        .unwrap();
    id
}

/// Expects `verify` to find damage at `seq`, saying `what`.
fn verify_finds(ledger: &Ledger, seq: u64, what: &str) {
    let err = ledger.verify().expect_err("the damage is found");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.seq(), Some(seq), "{err}");
    assert!(err.to_string().contains(what), "{err}");
}

fn text_of(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn a_redacted_execution_keeps_its_lifecycle_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let id = settled(&ledger);
    let other = settled(&ledger);
    let before = ledger.head().seq;
    assert!(text_of(&ledger.get(id).unwrap()).contains(MARKER));

    let done = ledger
        .redact(id, "erasure request #17", Some("ops@acme".into()))
        .wait()
        .unwrap();
    assert_eq!(done.input.as_deref(), Some("[redacted]"));
    assert_eq!(done.output, Some(serde_json::json!("[redacted]")));
    assert_eq!(done.context.as_ref().unwrap()["to"], "[redacted]");
    assert!(done.redacted_at.is_some());
    assert_eq!(ledger.head().seq, before + 1);

    // Every read shows the placeholder; the other execution keeps its data.
    for reading in [
        text_of(&ledger.get(id).unwrap()),
        text_of(&ledger.history(id).unwrap()),
        text_of(&ledger.execution_at(id, At::Seq(before - 1)).unwrap()),
    ] {
        assert!(!reading.contains(MARKER), "{reading}");
        assert!(reading.contains("[redacted]"), "{reading}");
    }
    assert!(text_of(&ledger.get(other).unwrap()).contains(MARKER));
    let history = ledger.history(id).unwrap();
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["queued", "started", "completed", "redacted"]);
    let last = text_of(history.last().unwrap());
    assert!(
        last.contains("erasure request #17") && last.contains("ops@acme"),
        "{last}"
    );
    // The lifecycle stays: status, attempt, worker, times.
    let got = ledger.get(id).unwrap();
    assert_eq!(
        got.status,
        execution_ledger::BackgroundExecutionStatus::Completed
    );
    assert_eq!(got.attempt, 1);
    assert!(text_of(&history[1]).contains("w1"));
    let report = ledger.verify().unwrap();
    assert_eq!(report.events, before + 1);
    drop(ledger);

    // Reopened: the same, and still intact.
    let ledger = Ledger::open(dir.path()).unwrap();
    assert!(!text_of(&ledger.history(id).unwrap()).contains(MARKER));
    assert!(text_of(&ledger.history(other).unwrap()).contains(MARKER));
    ledger.verify().unwrap();
    // Redacted once only.
    let again = ledger.redact(id, "again", None).wait().unwrap_err();
    assert!(again.to_string().contains("redacted already"), "{again}");
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// The files under `dir` that hold `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn no_payload_reaches_the_files_and_no_key_of_a_redacted_one_is_left_there() {
    const KEPT: &str = "grace.hopper@example.com";
    let dir = tempfile::tempdir().unwrap();
    let (id, kept, seqs, kept_seqs);
    {
        // Snapshots after every event: they hold the payloads of what is
        // live when they are taken.
        let ledger = Ledger::builder(dir.path())
            .snapshot_every(1)
            .open()
            .unwrap();
        id = settled(&ledger);
        kept = queued(&ledger, KEPT);
        seqs = ledger
            .history(id)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>();
        kept_seqs = ledger
            .history(kept)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>();
    }
    let keys: Vec<[u8; 32]> = execution_ledger::fuzzing::payload_keys(dir.path(), &seqs)
        .unwrap()
        .into_iter()
        .map(|k| k.expect("not destroyed yet"))
        .collect();
    let kept_keys = execution_ledger::fuzzing::payload_keys(dir.path(), &kept_seqs).unwrap();
    // The snapshots taken while it was live hold its payloads too.
    let live = seqs[0]..=*seqs.last().unwrap();
    let snapshot_keys: Vec<[u8; 32]> = execution_ledger::fuzzing::snapshot_keys(dir.path())
        .unwrap()
        .into_iter()
        .filter(|(seq, _)| live.contains(seq))
        .map(|(_, k)| k.expect("not destroyed yet"))
        .collect();
    assert!(!snapshot_keys.is_empty());
    // The submission and the completion carry payloads; the start none.
    assert_eq!((keys.len(), kept_keys.len()), (2, 1));
    // Payloads never reach the files in the clear, while the lifecycle is
    // there to be found (so the search reads what sled stores).
    assert_eq!(
        holding(dir.path(), MARKER.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(!holding(dir.path(), id.to_string().as_bytes()).is_empty());
    for key in keys.iter().chain(&snapshot_keys) {
        assert_eq!(holding(dir.path(), key), [dir.path().join("keys")]);
    }
    let sled_bytes: usize = files(&dir.path().join("sled"))
        .iter()
        .map(|(_, b)| b.len())
        .sum();

    {
        let ledger = Ledger::open(dir.path()).unwrap();
        let before = ledger.head().seq;
        ledger
            .redact(id, "erasure request #18", None)
            .wait()
            .unwrap();
        // Time travel to before the redaction: the placeholder.
        let then = text_of(&ledger.execution_at(id, At::Seq(before)).unwrap());
        assert!(
            !then.contains(MARKER) && then.contains("[redacted]"),
            "{then}"
        );
        assert!(text_of(&ledger.get(kept).unwrap()).contains(KEPT));
        ledger.verify().unwrap();
    }
    // Its keys are gone from every file: what sled still keeps of its old
    // records and snapshots can no longer be read. The other execution's
    // key stays.
    let mut searched = 0;
    for (path, bytes) in files(dir.path()) {
        searched += bytes.len();
        let needles = keys.iter().chain(&snapshot_keys).map(|k| k.as_slice());
        for needle in needles.chain([MARKER.as_bytes()]) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} still holds a redacted payload's key or the payload",
                path.display()
            );
        }
    }
    assert_eq!(
        execution_ledger::fuzzing::payload_keys(dir.path(), &seqs).unwrap(),
        vec![None, None]
    );
    assert_eq!(
        execution_ledger::fuzzing::payload_keys(dir.path(), &kept_seqs).unwrap(),
        kept_keys
    );
    assert!(!holding(dir.path(), id.to_string().as_bytes()).is_empty());
    assert!(execution_ledger::fuzzing::snapshot_keys(dir.path())
        .unwrap()
        .iter()
        .all(|(seq, k)| !live.contains(seq) || k.is_none()));
    eprintln!(
        "searched {searched} bytes in {} files ({sled_bytes} bytes of sled before redaction) for the payload, the keys of its {} records and of {} snapshots",
        files(dir.path()).len(),
        keys.len(),
        snapshot_keys.len()
    );
    let ledger = Ledger::open(dir.path()).unwrap();
    ledger.verify().unwrap();
    assert!(text_of(&ledger.get(kept).unwrap()).contains(KEPT));
    assert!(!text_of(&ledger.history(id).unwrap()).contains(MARKER));
}

#[test]
fn an_index_rebuilt_keeps_the_redaction_and_holds_after_settling() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let id = settled(&ledger);
    let held = settled(&ledger);
    ledger.redact(id, "erasure", None).wait().unwrap();
    ledger.hold(id, "litigation", None).wait().unwrap();
    ledger.hold(held, "litigation", None).wait().unwrap();
    let kinds = |id| -> Vec<String> {
        let history = ledger.history(id).unwrap();
        history.iter().map(|e| e.kind.name().to_string()).collect()
    };
    let (before, held_before) = (kinds(id), kinds(held));
    assert_eq!(
        before,
        ["queued", "started", "completed", "redacted", "legal_hold"]
    );
    let rebuilt = ledger.rebuild_index().unwrap();
    assert_eq!(rebuilt.settled, 2);
    assert_eq!((kinds(id), kinds(held)), (before, held_before));
    assert!(ledger.get(held).unwrap().legal_hold);
    ledger.verify().unwrap();
    drop(ledger);
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.history(id).unwrap().len(), 5);
    ledger.verify().unwrap();
    let refused = ledger.redact(held, "erasure", None).wait().unwrap_err();
    assert!(refused.to_string().contains("hold"), "{refused}");
}

#[test]
fn payloads_brought_back_after_a_redaction_are_found_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (id, queued_seq);
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        id = settled(&ledger);
        queued_seq = ledger.history(id).unwrap()[0].seq;
    }
    let sled_value = |dir: &Path| {
        let db = sled::open(dir.join("sled")).unwrap();
        let tree = db.open_tree("events").unwrap();
        tree.get(queued_seq.to_be_bytes())
            .unwrap()
            .unwrap()
            .to_vec()
    };
    // A backup of the key file and of the submission's record.
    let keys = std::fs::read(dir.path().join("keys")).unwrap();
    let record = sled_value(dir.path());
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.redact(id, "erasure", None).wait().unwrap();
        // Work after it: open finishes only a redaction in the last entry.
        settled(&ledger);
        ledger.verify().unwrap();
    }
    assert_ne!(sled_value(dir.path()), record);
    // Both brought back from the backup (the keys it has over those of the
    // file now): the payloads read again.
    let mut now = std::fs::read(dir.path().join("keys")).unwrap();
    now[..keys.len()].copy_from_slice(&keys);
    std::fs::write(dir.path().join("keys"), now).unwrap();
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let tree = db.open_tree("events").unwrap();
        tree.insert(queued_seq.to_be_bytes(), record).unwrap();
        tree.flush().unwrap();
    }
    let ledger = Ledger::builder(dir.path())
        .snapshot_every(0)
        .open()
        .unwrap();
    verify_finds(&ledger, queued_seq, "still holds payloads");
}

#[test]
fn a_submission_resent_under_its_key_after_redaction_answers_the_redacted_execution() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let submission = || {
        let mut s = Submission::new("mail");
        s.input = Some(MARKER.into());
        s.context = Some([("to".to_string(), MARKER.to_string())].into());
        s.idempotency_key = Some("order-17".into());
        s
    };
    let first = ledger.submit(&acme(), submission()).wait().unwrap();
    let id = first.execution.execution_id;
    ledger.claim(Some("w1")).wait().unwrap().unwrap();
    ledger.complete(id, 1, serde_json::json!(1)).wait().unwrap();
    ledger.redact(id, "erasure", None).wait().unwrap();
    let head = ledger.head().seq;
    let again = ledger.submit(&acme(), submission()).wait().unwrap();
    assert_eq!((again.execution.execution_id, again.created), (id, false));
    assert!(again.execution.redacted_at.is_some());
    // Another submission under the key is still a conflict.
    let mut other = submission();
    other.callable_name = "sms".into();
    let err = ledger.submit(&acme(), other).wait().unwrap_err();
    assert!(
        matches!(err, CommandError::IdempotencyConflict { .. }),
        "{err}"
    );
    assert_eq!(ledger.head().seq, head, "nothing appended");
}

#[test]
fn keys_destroyed_without_a_redaction_are_found_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let completed_seq;
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        settled(&ledger);
        let second = settled(&ledger);
        completed_seq = ledger.history(second).unwrap()[2].seq;
        settled(&ledger);
    }
    // Someone zeroes the key of the second completion in the key file: its
    // payload is unreadable.
    let [Some(key)] =
        execution_ledger::fuzzing::payload_keys(dir.path(), &[completed_seq]).unwrap()[..]
    else {
        panic!("the completion has a key")
    };
    let path = dir.path().join("keys");
    let mut bytes = std::fs::read(&path).unwrap();
    let backup = bytes.clone();
    let at = bytes.windows(32).position(|w| w == key).unwrap();
    bytes[at..at + 32].fill(0);
    std::fs::write(&path, bytes).unwrap();
    let ledger = Ledger::builder(dir.path())
        .snapshot_every(0)
        .open()
        .unwrap();
    verify_finds(&ledger, completed_seq, "never redacted");
    drop(ledger);
    // A key file lost, or another ledger's, is refused on open.
    std::fs::remove_file(&path).unwrap();
    let err = Ledger::open(dir.path()).expect_err("no key file");
    assert!(err.to_string().contains("is missing"), "{err}");
    let other = tempfile::tempdir().unwrap();
    drop(Ledger::open(other.path()).unwrap());
    std::fs::copy(other.path().join("keys"), &path).unwrap();
    let err = Ledger::open(dir.path()).expect_err("another ledger's key file");
    assert!(err.to_string().contains("another ledger"), "{err}");
    // Its own, from before its last keys were made: older than the log.
    std::fs::write(&path, &backup[..32]).unwrap();
    let err = Ledger::open(dir.path()).expect_err("a key file older than the log");
    assert!(err.to_string().contains("older than the log"), "{err}");
}

#[test]
fn live_and_held_executions_are_refused_with_nothing_appended() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let queued = queued(&ledger, MARKER);
    let head = ledger.head();
    let err = ledger.redact(queued, "too early", None).wait().unwrap_err();
    assert!(matches!(err, CommandError::Transition(_)), "{err}");
    assert_eq!(
        err.to_string(),
        format!("cannot redact {queued}: it is queued and not settled (only a finished execution with nothing pending is redacted)")
    );
    let err = ledger.redact(queued, " ", None).wait().unwrap_err();
    assert_eq!(err.to_string(), "reason: must not be empty");
    assert_eq!(ledger.head(), head);

    // A hold on a live execution outlives its settling, and wins.
    ledger
        .hold(queued, "litigation 2026-114", None)
        .wait()
        .unwrap();
    let c = ledger.claim(None).wait().unwrap().unwrap();
    ledger
        .complete(c.execution_id, 1, serde_json::json!(MARKER))
        .wait()
        .unwrap();
    assert!(ledger.get(queued).unwrap().legal_hold);
    let head = ledger.head();
    let err = ledger.redact(queued, "policy", None).wait().unwrap_err();
    assert!(err.to_string().contains("under legal hold"), "{err}");
    let err = ledger.hold(queued, "twice", None).wait().unwrap_err();
    assert!(
        err.to_string().contains("under legal hold already"),
        "{err}"
    );
    assert_eq!(ledger.head(), head);
    assert!(text_of(&ledger.get(queued).unwrap()).contains(MARKER));

    ledger
        .release_hold(queued, "case closed", None)
        .wait()
        .unwrap();
    let err = ledger
        .release_hold(queued, "twice", None)
        .wait()
        .unwrap_err();
    assert!(err.to_string().contains("not under legal hold"), "{err}");
    ledger.redact(queued, "policy", None).wait().unwrap();
    let kinds: Vec<&str> = ledger
        .history(queued)
        .unwrap()
        .iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "legal_hold",
            "started",
            "completed",
            "legal_hold_released",
            "redacted"
        ]
    );
    ledger.verify().unwrap();
}

/// Flips one byte of the stored entry holding `seq`, with the ledger closed.
fn flip(dir: &Path, seq: u64, at_end: usize) {
    let db = sled::open(dir.join("sled")).unwrap();
    let tree = db.open_tree("events").unwrap();
    let (k, v) = tree
        .range(..=seq.to_be_bytes())
        .next_back()
        .unwrap()
        .unwrap();
    let mut v = v.to_vec();
    let i = v.len() - at_end;
    v[i] ^= 0x01;
    tree.insert(k, v).unwrap();
    tree.flush().unwrap();
}

#[test]
fn a_flipped_bit_in_a_redacted_record_is_still_found_at_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let completed_seq;
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        let id = settled(&ledger);
        completed_seq = ledger.history(id).unwrap()[2].seq;
        ledger.redact(id, "erasure", None).wait().unwrap();
        // One more entry, so that the completion is not the last.
        settled(&ledger);
    }
    // The completion is stored alone (one command, one entry): its last
    // bytes are its skeleton's, now that its payload is gone.
    flip(dir.path(), completed_seq, 2);
    let err = Ledger::builder(dir.path())
        .snapshot_every(0)
        .open()
        .and_then(|l| l.verify().map(|_| ()))
        .expect_err("the flip is found");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.seq(), Some(completed_seq), "{err}");
}

#[test]
fn payloads_removed_without_a_redaction_are_found_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let queued_seq;
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        let id = settled(&ledger);
        queued_seq = ledger.history(id).unwrap()[0].seq;
        settled(&ledger);
    }
    // Someone who knows the format drops the payloads of the first record:
    // its hash and link still hold.
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let tree = db.open_tree("events").unwrap();
        let v = tree.get(queued_seq.to_be_bytes()).unwrap().unwrap();
        let v = execution_ledger::fuzzing::readable_record(dir.path(), queued_seq, &v).unwrap();
        let stripped = execution_ledger::fuzzing::redact_record(queued_seq, &v)
            .unwrap()
            .expect("the submission holds payloads");
        tree.insert(queued_seq.to_be_bytes(), stripped).unwrap();
        tree.flush().unwrap();
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    verify_finds(&ledger, queued_seq, "never redacted");
}

#[test]
fn snapshots_taken_while_it_was_live_do_not_keep_its_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::builder(dir.path())
        .snapshot_every(1)
        .open()
        .unwrap();
    let id = queued(&ledger, MARKER);
    // Other work while it waits, so that snapshots are taken meanwhile.
    let others: Vec<_> = (0..6)
        .map(|_| {
            let id = ledger
                .submit(&acme(), Submission::new("echo"))
                .wait()
                .unwrap()
                .execution
                .execution_id;
            ledger.cancel(id, None).wait().unwrap();
            id
        })
        .collect();
    let live_until = ledger.head().seq;
    let seen = |l: &Ledger, to: u64| {
        (1..=to).any(|seq| {
            l.projection_at(At::Seq(seq))
                .unwrap()
                .live()
                .any(|e| text_of(e).contains(MARKER))
        })
    };
    assert!(
        seen(&ledger, live_until),
        "the marker is in the projection while live"
    );
    let c = ledger.claim(None).wait().unwrap().unwrap();
    assert_eq!(c.execution_id, id);
    ledger
        .complete(id, 1, serde_json::json!("ok"))
        .wait()
        .unwrap();
    ledger.redact(id, "erasure", None).wait().unwrap();
    // Time travel to any point while it was live shows it redacted.
    let head = ledger.head().seq;
    assert!(!seen(&ledger, head));
    let queued = ledger.projection_at(At::Seq(live_until)).unwrap();
    let then = queued.live().find(|e| e.execution_id == id).unwrap();
    assert_eq!(then.input.as_deref(), Some("[redacted]"));
    assert_eq!(others.len(), 6);
    drop(ledger);
    let ledger = Ledger::open(dir.path()).unwrap();
    assert!(!seen(&ledger, head));
    ledger.verify().unwrap();
}

/// Runs `crash` on a ledger holding one settled execution (and, with
/// `work_after`, another after its redaction), with the execution's records
/// and keys as they were before the redaction given back, as if the
/// process had died before removing its payloads; then checks that open
/// finishes the redaction.
fn cut_short(work_after: bool, crash: impl FnOnce(&sled::Tree, &[u64])) {
    let dir = tempfile::tempdir().unwrap();
    let (id, seqs) = {
        let ledger = Ledger::open(dir.path()).unwrap();
        let id = settled(&ledger);
        let seqs: Vec<u64> = ledger.history(id).unwrap().iter().map(|e| e.seq).collect();
        (id, seqs)
    };
    let read = |seq: u64| {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let tree = db.open_tree("events").unwrap();
        tree.get(seq.to_be_bytes()).unwrap().unwrap().to_vec()
    };
    let original: Vec<(u64, Vec<u8>)> = seqs.iter().map(|&s| (s, read(s))).collect();
    let keys = std::fs::read(dir.path().join("keys")).unwrap();
    let payload_keys: Vec<[u8; 32]> = execution_ledger::fuzzing::payload_keys(dir.path(), &seqs)
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(payload_keys.len(), 2);
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.redact(id, "erasure", None).wait().unwrap();
        if work_after {
            settled(&ledger);
        }
    }
    {
        let mut now = std::fs::read(dir.path().join("keys")).unwrap();
        now[..keys.len()].copy_from_slice(&keys);
        std::fs::write(dir.path().join("keys"), now).unwrap();
        let db = sled::open(dir.path().join("sled")).unwrap();
        let tree = db.open_tree("events").unwrap();
        for (seq, bytes) in &original {
            tree.insert(seq.to_be_bytes(), bytes.as_slice()).unwrap();
        }
        crash(&tree, &seqs);
        tree.flush().unwrap();
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    let history = text_of(&ledger.history(id).unwrap());
    assert!(!history.contains(MARKER), "{history}");
    ledger.verify().unwrap();
    drop(ledger);
    for key in &payload_keys {
        assert_eq!(holding(dir.path(), key), Vec::<std::path::PathBuf>::new());
    }
}

#[test]
fn a_redaction_cut_short_by_a_crash_is_finished_on_open() {
    // The redaction is the last entry: open indexes it again, and removes
    // the payloads with it.
    cut_short(false, |_, _| {});
}

#[test]
fn a_redaction_cut_short_before_later_work_is_finished_on_open() {
    // Work after it: the seqs the log keeps until the removal is done tell
    // open what to finish.
    cut_short(true, |tree, seqs| {
        let pending: Vec<u8> = seqs.iter().flat_map(|s| s.to_be_bytes()).collect();
        tree.insert([0xFF, b'S'], pending).unwrap();
    });
}

mod common;
use common::server::{client, error_code, json_of, result_of, submit_id, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_and_holds_over_http_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let body = serde_json::json!({"tenantId": "acme", "callableName": "echo", "input": MARKER});
    let id = submit_id(&c, &server, body).await;
    let (status, done) = result_of(&c, &server, &id).await;
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("completed")),
        "{done}"
    );
    let post = |path: String, body: serde_json::Value| {
        let c = c.clone();
        let url = server.url(&path);
        async move { json_of(c.post(url).json(&body).send().await.unwrap()).await }
    };

    // Bad bodies: the field named, 400, nothing appended.
    let (_, head) = json_of(c.get(server.url("/v1/head")).send().await.unwrap()).await;
    for (bad, says) in [
        (serde_json::json!({}), "reason"),
        (serde_json::json!({"reason": "x", "who": "me"}), "who"),
        (serde_json::json!({"reason": ""}), "reason"),
    ] {
        let (status, err) = post(format!("/v1/executions/{id}/redact"), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert!(!error_code(&err).is_empty(), "{err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(says),
            "{err}"
        );
    }
    let (_, same) = json_of(c.get(server.url("/v1/head")).send().await.unwrap()).await;
    assert_eq!(head, same);

    // A hold wins; released, the redaction happens, recorded by the caller.
    let (status, held) = post(
        format!("/v1/executions/{id}/hold"),
        serde_json::json!({"reason": "case 9"}),
    )
    .await;
    assert_eq!(
        (status, held["legalHold"].as_bool()),
        (200, Some(true)),
        "{held}"
    );
    let (status, err) = post(
        format!("/v1/executions/{id}/redact"),
        serde_json::json!({"reason": "policy"}),
    )
    .await;
    assert_eq!((status, error_code(&err)), (409, "conflict"), "{err}");
    let (status, _) = post(
        format!("/v1/executions/{id}/release-hold"),
        serde_json::json!({"reason": "closed"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, red) = post(
        format!("/v1/executions/{id}/redact"),
        serde_json::json!({"reason": "erasure request"}),
    )
    .await;
    assert_eq!(status, 200, "{red}");
    assert_eq!(red["input"], "[redacted]");
    assert_eq!(red["output"], "[redacted]");
    let (_, events) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}/events")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let text = events.to_string();
    assert!(!text.contains(MARKER), "{text}");
    let last = events.as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["by"].as_str()),
        (Some("redacted"), Some("api:admin"))
    );
    let (status, err) = post(
        format!("/v1/executions/{id}/redact"),
        serde_json::json!({"reason": "again"}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    // A `by` of the caller's is recorded with the caller named; an empty
    // one is refused, naming the field.
    let (status, held) = post(
        format!("/v1/executions/{id}/hold"),
        serde_json::json!({"reason": "litigation", "by": "ops@acme"}),
    )
    .await;
    assert_eq!(status, 200, "{held}");
    let (_, events) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}/events")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let last = events.as_array().unwrap().last().unwrap();
    assert_eq!(last["by"], "ops@acme (via api:admin)");
    let (status, err) = post(
        format!("/v1/executions/{id}/release-hold"),
        serde_json::json!({"reason": "settled", "by": " "}),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("by:"), "{err}");
    let unknown = execution_ledger::ExecutionId::new();
    let (status, _) = post(
        format!("/v1/executions/{unknown}/redact"),
        serde_json::json!({"reason": "x"}),
    )
    .await;
    assert_eq!(status, 404);

    // The CLI goes through the serving process.
    let queued = submit_id(
        &c,
        &server,
        serde_json::json!({"tenantId": "acme", "callableName": "echo", "config": {"mode": "deferred"}}),
    )
    .await;
    let cli = |args: &[&str]| common::ledger_cli(dir.path(), args);
    let out = cli(&["redact", &queued, "--reason", "too early"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(line.contains("queued and not settled"), "{line}");
    let out = cli(&["hold", &queued, "--reason", "audit", "--by", "legal@acme"]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&["history", &queued]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        // Through the server, which names the caller too.
        text.contains("legal_hold") && text.contains("audit (by legal@acme (via api:admin))"),
        "{text}"
    );
    server.stop();
}
