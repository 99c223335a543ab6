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

#[test]
fn live_and_held_executions_are_refused_with_nothing_appended() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut s = Submission::new("mail");
    s.input = Some(MARKER.into());
    let queued = ledger
        .submit(&acme(), s)
        .wait()
        .unwrap()
        .execution
        .execution_id;
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
