//! Archiving on a real sled ledger, driven by a clock the test moves: a
//! policy's `archiveAfter` moves the oldest settled history into segment
//! files; the ledger reopens on what is left, `verify` passes over the live
//! log and the archive, an archived execution's history and record are
//! read from its segment, commands on it are refused with nothing
//! appended, and a damaged segment is named with the seq of the damage.

use chrono::TimeDelta;
use execution_ledger::{
    At, CommandError, ErrorKind, EventKind, ExecutionId, Ledger, RetentionPolicy, Submission,
    TenantId,
};

mod common;

fn tenant(name: &str) -> TenantId {
    name.parse().unwrap()
}

/// A settled execution of `tenant`'s whose input carries `secret`.
fn settled(ledger: &Ledger, tenant_name: &str, secret: &str) -> ExecutionId {
    let mut s = Submission::new("mail");
    s.input = Some(secret.to_owned());
    let id = ledger
        .submit(&tenant(tenant_name), s)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    let c = ledger.claim(Some("w")).wait().unwrap().unwrap();
    assert_eq!(c.execution_id, id);
    ledger
        .complete(c.execution_id, c.attempt, serde_json::json!("done"))
        .wait()
        .unwrap();
    id
}

/// The archive's segments and events, as verify checked them (with the
/// live log).
fn checked(ledger: &Ledger) -> (u64, u64) {
    let a = ledger.verify().unwrap().archive.unwrap();
    (a.segments, a.events)
}

fn policy(json: &str) -> RetentionPolicy {
    RetentionPolicy::from_json(json.as_bytes()).unwrap()
}

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("archive"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn archived_history_leaves_the_live_log_and_still_verifies_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::TestClock::new();
    let open = || {
        Ledger::builder(dir.path())
            .clock(clock.clone())
            .snapshot_every(7)
            .open()
            .unwrap()
    };
    let ledger = open();
    let old: Vec<ExecutionId> = (0..40)
        .map(|i| settled(&ledger, "acme", &format!("old secret {i}")))
        .collect();
    // One that settles later, and keeps everything after it live.
    let mut s = Submission::new("mail");
    s.input = Some("slow secret".into());
    let slow = ledger
        .submit(&tenant("acme"), s)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    assert_eq!(
        ledger
            .claim(Some("w"))
            .wait()
            .unwrap()
            .unwrap()
            .execution_id,
        slow
    );
    let after: Vec<ExecutionId> = (0..5)
        .map(|i| settled(&ledger, "acme", &format!("later secret {i}")))
        .collect();
    let archives = policy(r#"{"default": {"archiveAfter": "10d"}}"#);

    // Day 5: none is due.
    clock.advance(TimeDelta::days(5));
    let report = ledger
        .retain(&archives, false, |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    let a = report.archive.unwrap();
    assert_eq!((a.before, a.through, a.executions), (0, 0, 0), "{a:?}");
    assert!(a.kept_by.unwrap().contains("after the policy's point"));
    assert!(segments(dir.path()).is_empty());

    // Day 11: the first 40 are due; `slow` is live and keeps it from going
    // further. A dry run says so and changes nothing.
    clock.advance(TimeDelta::days(6));
    let head = ledger.head();
    let dry = ledger
        .retain(&archives, true, |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    let d = dry.archive.unwrap();
    assert_eq!((d.through, d.executions, d.events), (120, 40, 120), "{d:?}");
    assert!(
        d.kept_by
            .as_deref()
            .unwrap()
            .contains(&format!("{slow} (seq 121): it is not settled")),
        "{d:?}"
    );
    assert_eq!(ledger.head(), head);
    assert!(segments(dir.path()).is_empty());

    let report = ledger
        .retain(&archives, false, |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    let a = report.archive.unwrap();
    assert_eq!(
        (a.before, a.through, a.executions, a.events),
        (0, 120, 40, 120),
        "{a:?}"
    );
    assert_eq!(segments(dir.path()).len(), 1);
    assert!(a
        .segment
        .unwrap()
        .ends_with("00000000000000000001-00000000000000000120.segment"));
    // Nothing appended: archiving is no event.
    assert_eq!(ledger.head(), head);
    let v = ledger.verify().unwrap();
    assert_eq!((v.archived, v.events), (120, head.seq - 120));
    assert_eq!(checked(&ledger), (1, 120));

    // An archived execution: its history and record from the segment.
    let history = ledger.history(old[3]).unwrap();
    assert_eq!(history.len(), 3);
    assert!(
        matches!(&history[0].kind, EventKind::Queued(s) if s.input.as_deref() == Some("old secret 3"))
    );
    assert_eq!(
        ledger.get(old[3]).unwrap().output,
        Some(serde_json::json!("done"))
    );
    assert_eq!(
        ledger
            .execution_at(old[3], At::Seq(10))
            .unwrap()
            .unwrap()
            .execution_id,
        old[3]
    );
    // It no longer changes: refused, nothing appended.
    let refused = ledger.redact(old[3], "gdpr", None).wait().unwrap_err();
    assert!(
        matches!(refused, CommandError::Archived(id) if id == old[3]),
        "{refused}"
    );
    assert!(refused.to_string().contains("archived"));
    assert!(matches!(
        ledger.hold(old[0], "audit", None).wait().unwrap_err(),
        CommandError::Archived(_)
    ));
    assert_eq!(ledger.head(), head);
    // The whole ledger before the base is the archive's.
    let err = ledger.queue_at(At::Seq(50), None).unwrap_err();
    assert!(err.to_string().contains("seq 50 is archived"), "{err}");
    assert!(ledger.queue_at(At::Seq(120), None).unwrap().0.is_empty());

    // Reopened on what is left: the live log starts after seq 120.
    drop(ledger);
    let ledger = open();
    assert_eq!(ledger.head(), head);
    // Read from seq 1, the log is whole: the archive, then the live log.
    let seqs: Vec<u64> = ledger.events(1, None).map(|e| e.unwrap().seq).collect();
    assert_eq!(seqs, (1..=head.seq).collect::<Vec<_>>());
    assert_eq!(ledger.history(old[39]).unwrap().len(), 3);
    assert_eq!(ledger.history(after[0]).unwrap().len(), 3);
    ledger.verify().unwrap();
    ledger.check_projection().unwrap();
    assert_eq!(checked(&ledger), (1, 120));

    // The slow one settles; a second pass archives the rest into a second
    // segment, chained to the first.
    ledger
        .complete(slow, 1, serde_json::json!("late"))
        .wait()
        .unwrap();
    let fresh = settled(&ledger, "acme", "fresh secret");
    clock.advance(TimeDelta::days(11));
    let tail = settled(&ledger, "acme", "newest secret");
    let a = ledger
        .retain(&archives, false, |_| std::ops::ControlFlow::Continue(()))
        .unwrap()
        .archive
        .unwrap();
    assert_eq!((a.before, a.executions), (120, 7), "{a:?}");
    assert!(a.kept_by.unwrap().contains(&tail.to_string()));
    assert_eq!(segments(dir.path()).len(), 2);
    assert_eq!(checked(&ledger), (2, a.through));
    assert_eq!(ledger.history(fresh).unwrap().len(), 3);
    assert_eq!(
        ledger.get(slow).unwrap().output,
        Some(serde_json::json!("late"))
    );
    assert_eq!(ledger.history(tail).unwrap()[0].seq, a.through + 1);
    // New work goes on after the archive.
    settled(&ledger, "acme", "after the archive");
    drop(ledger);
    let ledger = open();
    ledger.verify().unwrap();
    assert_eq!(checked(&ledger).0, 2);
    // A head kept elsewhere before archiving still checks (its record is in
    // the archive).
    ledger.check_head(&head).unwrap();
}

#[test]
fn the_policy_archives_none_held_unredacted_or_of_a_tenant_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::TestClock::new();
    let ledger = Ledger::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    let a = settled(&ledger, "acme", "a");
    let held = settled(&ledger, "acme", "held");
    ledger.hold(held, "litigation", None).wait().unwrap();
    settled(&ledger, "acme", "c");
    clock.advance(TimeDelta::days(40));
    let run = |p: &RetentionPolicy| {
        ledger
            .retain(p, true, |_| std::ops::ControlFlow::Continue(()))
            .unwrap()
            .archive
            .unwrap()
    };
    // Held: it and everything after it stay.
    let r = run(&policy(r#"{"default": {"archiveAfter": "10d"}}"#));
    assert_eq!((r.through, r.executions), (3, 1), "{r:?}");
    assert!(r.kept_by.unwrap().contains("under legal hold"));
    // A tenant the policy does not archive.
    let r = run(&policy(
        r#"{"tenants": {"globex": {"archiveAfter": "10d"}}}"#,
    ));
    assert_eq!(r.through, 0);
    assert!(
        r.kept_by
            .as_deref()
            .unwrap()
            .contains("tenant acme is not archived"),
        "{r:?}"
    );
    // Payloads the policy still has to redact: a dry run takes its own
    // redactions (due sooner) as done, and says what the pass will do.
    let r = run(&policy(
        r#"{"default": {"redactAfter": "1d", "archiveAfter": "10d"}}"#,
    ));
    assert_eq!((r.through, r.executions), (3, 1), "{r:?}");
    assert!(r.kept_by.unwrap().contains("under legal hold"));
    // A rule that archives before it redacts is refused.
    let err = RetentionPolicy::from_json(
        br#"{"tenants": {"acme": {"redactAfter": "30d", "archiveAfter": "7d"}}}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("archiveAfter (7d) of tenant acme is shorter than its redactAfter (30d)"),
        "{err}"
    );
    // Redacted first, in the same pass, then archived up to the hold.
    let r = ledger
        .retain(
            &policy(r#"{"default": {"redactAfter": "1d", "archiveAfter": "10d"}}"#),
            false,
            |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(r.redacted, 2);
    let arch = r.archive.unwrap();
    assert_eq!((arch.executions, arch.through), (1, 3), "{arch:?}");
    // Its redaction, recorded after it settled, stays in the live log after
    // its archived history; both are its history.
    let history = ledger.history(a).unwrap();
    assert_eq!(history.len(), 4);
    assert!(history[3].seq > 3 && matches!(history[3].kind, EventKind::Redacted { .. }));
    assert!(ledger.get(a).unwrap().redacted_at.is_some());
    ledger.verify().unwrap();
    checked(&ledger);
    // The same after reopening, and after rebuilding the index.
    drop(ledger);
    let ledger = Ledger::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    assert_eq!(ledger.history(a).unwrap().len(), 4);
    ledger.verify().unwrap();
    ledger.rebuild_index().unwrap();
    ledger.verify().unwrap();
    assert_eq!(ledger.history(a).unwrap().len(), 4);
    assert!(ledger
        .list(&Default::default(), None, 100)
        .unwrap()
        .executions
        .iter()
        .all(|e| e.execution_id != a));
    // Neither the segment nor anything else holds a payload in the clear.
    for path in segments(dir.path()) {
        let bytes = std::fs::read(path).unwrap();
        for secret in [b"held".as_slice(), b"\"a\""] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret));
        }
    }
}

/// Flips one byte of `path` at `at`.
fn flip(path: &std::path::Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
}

#[test]
fn a_damaged_segment_is_named_with_the_seq_of_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::TestClock::new();
    let ledger = Ledger::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    let ids: Vec<ExecutionId> = (0..10)
        .map(|i| settled(&ledger, "acme", &format!("s{i}")))
        .collect();
    clock.advance(TimeDelta::days(2));
    settled(&ledger, "acme", "recent");
    let report = ledger
        .retain(
            &policy(r#"{"default": {"archiveAfter": "1d"}}"#),
            false,
            |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(report.archive.unwrap().through, 30);
    // Reopened: the database no longer holds the archived records (they
    // stay until then, for reads under way).
    drop(ledger);
    let ledger = Ledger::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    let segment = segments(dir.path()).pop().unwrap();
    let pristine = std::fs::read(&segment).unwrap();
    checked(&ledger);

    // A byte inside record 17's hashed part: found at seq 17, naming the
    // file.
    let history = ledger.history(ids[5]).unwrap();
    assert_eq!(history[1].seq, 17);
    let offsets_at = {
        let n = pristine.len();
        u64::from_be_bytes(pristine[n - 64 - 32..n - 64 - 24].try_into().unwrap())
    };
    let at17 = u64::from_be_bytes(
        pristine[offsets_at as usize + 16 * 8..offsets_at as usize + 17 * 8]
            .try_into()
            .unwrap(),
    );
    flip(&segment, at17 + 4 + 70);
    let e = ledger.verify().unwrap_err();
    assert_eq!((e.kind(), e.seq()), (ErrorKind::Corrupt, Some(17)), "{e}");
    assert!(
        e.to_string().contains(&segment.display().to_string()),
        "{e}"
    );
    // History that reads the record finds it too.
    let err = ledger.history(ids[5]).unwrap_err();
    assert!(err.to_string().contains("17"), "{err}");

    // A byte in the index (past the records): named by the segment's seqs.
    std::fs::write(&segment, &pristine).unwrap();
    checked(&ledger);
    flip(&segment, pristine.len() as u64 - 104 - 8 * 30 - 5);
    let err = ledger.verify().unwrap_err();
    assert!(err.to_string().contains("seqs 1 to 30"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Corrupt);

    // A missing segment: the archive lacks seq 1.
    std::fs::write(&segment, &pristine).unwrap();
    let moved = dir.path().join("elsewhere");
    std::fs::create_dir(&moved).unwrap();
    std::fs::rename(&segment, moved.join(segment.file_name().unwrap())).unwrap();
    let err = ledger.verify().unwrap_err();
    assert!(err.to_string().contains("ends at seq 0"), "{err}");
    assert_eq!(err.seq(), Some(1));
    // Checked, and read, where it was moved to.
    drop(ledger);
    let ledger = Ledger::builder(dir.path()).archive(&moved).open().unwrap();
    let v = ledger.verify().unwrap();
    let a = v.archive.unwrap();
    assert_eq!((a.segments, a.events, v.archived), (1, 30, 30));
    assert_eq!(ledger.history(ids[5]).unwrap().len(), 3);
}

use common::server::{client, error_code, json_of, result_of, submit_id, Server};

#[test]
fn ledger_retain_archives_and_ledger_verify_and_history_read_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<ExecutionId> = {
        let ledger = Ledger::open(dir.path()).unwrap();
        (0..3)
            .map(|i| settled(&ledger, "acme", &format!("s{i}")))
            .collect()
    };
    let files = tempfile::tempdir().unwrap();
    let policy = files.path().join("policy.json");
    std::fs::write(&policy, r#"{"default": {"archiveAfter": "0s"}}"#).unwrap();
    let cli = |args: &[&str]| common::ledger_cli(dir.path(), args);
    let text = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let policy_arg = policy.to_str().unwrap();
    let out = cli(&["retain", "--policy", policy_arg, "--dry-run"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out).ends_with("would archive 3 settled executions (9 events, seqs 1 to 9)\n"),
        "{}",
        text(&out)
    );
    let out = cli(&["retain", "--policy", policy_arg]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out).contains("archived 3 settled executions (9 events, seqs 1 to 9) into "),
        "{}",
        text(&out)
    );
    let out = cli(&["retain", "--policy", policy_arg]);
    assert!(
        text(&out).contains("archived nothing (the archive ends at seq 9)"),
        "{}",
        text(&out)
    );
    let out = cli(&["verify"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out).contains("ok: the archive's 9 events (seqs 1 to 9) in 1 segment verified"),
        "{}",
        text(&out)
    );
    let id = ids[1].to_string();
    let out = cli(&["history", &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out).lines().count(), 1 + 3, "{}", text(&out));
    let out = cli(&["show", &id]);
    assert!(text(&out).contains("completed"), "{}", text(&out));
    // A command on it: exit 1, one line saying why, nothing appended.
    let out = cli(&["cancel", &id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is archived"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Moved elsewhere: checked there with --archive; without it, the
    // damage is named (seq 1 is lacking).
    let moved = files.path().join("cold");
    std::fs::rename(dir.path().join("archive"), &moved).unwrap();
    let out = cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--archive DIR"));
    let out = cli(&["verify", "--archive", moved.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // A rule that archives before it redacts: exit 2, the file named.
    std::fs::write(
        &policy,
        r#"{"default": {"redactAfter": "2d", "archiveAfter": "1d"}}"#,
    )
    .unwrap();
    let out = cli(&["retain", "--policy", policy_arg]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.json") && err.contains("archiveAfter"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_archives_in_the_background_and_answers_archived_executions() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let policy = files.path().join("policy.json");
    std::fs::write(&policy, r#"{"default": {"archiveAfter": "0s"}}"#).unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--retention",
            policy.to_str().unwrap(),
            "--retain-every",
            "1",
        ],
    );
    let c = client();
    let body = serde_json::json!({"tenantId": "acme", "callableName": "echo", "input": "one"});
    let id = submit_id(&c, &server, body).await;
    let (status, _) = result_of(&c, &server, &id).await;
    assert_eq!(status, 200);
    // Archived by the server's pass within a few of its rounds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let verdict = loop {
        let (_, v) = json_of(c.post(server.url("/v1/verify")).send().await.unwrap()).await;
        if v["report"]["archived"].as_u64() > Some(0) || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["report"]["archive"]["segments"], 1, "{verdict}");
    let (status, events) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}/events")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{events}");
    assert!(events.to_string().contains("completed"), "{events}");
    let (status, got) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, got["status"].as_str()),
        (200, Some("completed")),
        "{got}"
    );
    let (status, err) = json_of(
        c.post(server.url(&format!("/v1/executions/{id}/redact")))
            .json(&serde_json::json!({"reason": "gdpr"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&err)), (409, "archived"), "{err}");
    // A dry run over HTTP says where the archive ends.
    let (status, report) = json_of(
        c.post(server.url("/v1/retention"))
            .json(
                &serde_json::json!({"policy": {"default": {"archiveAfter": "0s"}}, "dryRun": true}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert!(report["archive"]["before"].as_u64() > Some(0), "{report}");
    let (status, err) = json_of(
        c.post(server.url("/v1/retention"))
            .json(&serde_json::json!({"policy": {"default": {"archiveAfter": "1s", "redactAfter": "1m"}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("archiveAfter"), "{err}");
}

#[test]
fn opening_rewrites_the_database_once_archiving_removed_enough_of_it() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<ExecutionId> = {
        let ledger = Ledger::open(dir.path()).unwrap();
        (0..300)
            .map(|i| settled(&ledger, "acme", &format!("s{i}")))
            .collect()
    };
    let files = tempfile::tempdir().unwrap();
    let policy = files.path().join("policy.json");
    std::fs::write(&policy, r#"{"default": {"archiveAfter": "0s"}}"#).unwrap();
    // `LEDGER_COMPACT_AFTER`: archived events after which opening rewrites
    // the database (100,000 unless set).
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env("LEDGER_COMPACT_AFTER", "500")
            .output()
            .unwrap()
    };
    let db = dir.path().join("sled").join("db");
    let inode = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
    let before = inode(&db);
    let out = cli(&["retain", "--policy", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // The pass itself leaves the database in place; the next open rewrites
    // it (900 events archived, past 500).
    assert_eq!(inode(&db), before);
    let out = cli(&["verify"]);
    assert!(out.status.success(), "{out:?}");
    let after = inode(&db);
    assert_ne!(after, before, "the database was not rewritten");
    for leftover in ["sled.old", "sled.compacting", "sled.compacted"] {
        assert!(!dir.path().join(leftover).exists(), "{leftover} left");
    }
    // Once: the count starts again from the rewrite.
    let out = cli(&["verify"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(inode(&db), after);
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.history(ids[7]).unwrap().len(), 3);
    ledger.verify().unwrap();
    let s = settled(&ledger, "acme", "after");
    assert_eq!(ledger.get(s).unwrap().input.as_deref(), Some("after"));
}

#[test]
fn the_archive_reads_whole_refuses_across_tenants_and_survives_a_damaged_or_foreign_segment() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::TestClock::new();
    let open = || {
        Ledger::builder(dir.path())
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let ledger = open();
    let mut keyed = Submission::new("mail");
    keyed.idempotency_key = Some("order-7".into());
    let first = ledger
        .submit(&tenant("acme"), keyed.clone())
        .wait()
        .unwrap()
        .execution
        .execution_id;
    let c = ledger.claim(Some("w")).wait().unwrap().unwrap();
    ledger
        .complete(c.execution_id, c.attempt, serde_json::json!("done"))
        .wait()
        .unwrap();
    let ids: Vec<ExecutionId> = (0..5)
        .map(|i| settled(&ledger, "acme", &format!("s{i}")))
        .collect();
    // Redacted by hand, then its tenant put under hold by the policy: the
    // hold wins, redacted or not.
    let redacted = settled(&ledger, "globex", "g");
    ledger.redact(redacted, "asked", None).wait().unwrap();
    clock.advance(TimeDelta::days(3));
    let held = policy(
        r#"{"default": {"archiveAfter": "1d"}, "tenants": {"globex": {"archiveAfter": "1d", "hold": "audit 9"}}}"#,
    );
    let r = ledger
        .retain(&held, false, |_| std::ops::ControlFlow::Continue(()))
        .unwrap()
        .archive
        .unwrap();
    assert_eq!((r.through, r.executions), (18, 6), "{r:?}");
    assert!(
        r.kept_by.as_deref().unwrap().contains(&format!(
            "{redacted} (seq 19): its tenant is under legal hold"
        )),
        "{r:?}"
    );
    let head = ledger.head().seq;
    assert_eq!(head, 22);

    // The whole log reads from seq 1, archive then live, gap-free.
    let seqs: Vec<u64> = ledger.events(1, None).map(|e| e.unwrap().seq).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    let from_5: Vec<u64> = ledger.events(5, Some(20)).map(|e| e.unwrap().seq).collect();
    assert_eq!(from_5, (5..=20).collect::<Vec<_>>());

    // Another tenant's archived execution is not found, as a live one of
    // another tenant is not: a scoped handle learns nothing of it.
    let err = ledger
        .tenant(tenant("globex"))
        .hold(ids[0], "x", None)
        .wait()
        .unwrap_err();
    assert!(
        matches!(err, CommandError::NotFound(id) if id == ids[0]),
        "{err}"
    );
    let err = ledger
        .tenant(tenant("acme"))
        .hold(ids[0], "x", None)
        .wait()
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Archived(id) if id == ids[0]),
        "{err}"
    );
    assert_eq!(ledger.head().seq, head);

    // An idempotency key answers until its execution is archived; then
    // the same key starts a new execution.
    let again = ledger.submit(&tenant("acme"), keyed).wait().unwrap();
    assert!(again.created);
    assert_ne!(again.execution.execution_id, first);
    let c = ledger.claim(Some("w")).wait().unwrap().unwrap();
    ledger
        .complete(c.execution_id, c.attempt, serde_json::json!("done"))
        .wait()
        .unwrap();
    drop(ledger);

    // A segment whose header is damaged: the ledger opens and works on its
    // live log; reads of the archive name the segment at its first seq.
    let segment = segments(dir.path()).pop().unwrap();
    let pristine = std::fs::read(&segment).unwrap();
    flip(&segment, 2);
    let ledger = open();
    settled(&ledger, "acme", "after the damage");
    let CommandError::Storage(err) = ledger.history(ids[0]).unwrap_err() else {
        panic!("a storage error")
    };
    assert_eq!(
        (err.kind(), err.seq()),
        (ErrorKind::Corrupt, Some(1)),
        "{err}"
    );
    assert!(err.to_string().contains("does not start as one"), "{err}");
    let err = ledger.verify().unwrap_err();
    assert_eq!(
        (err.kind(), err.seq()),
        (ErrorKind::Corrupt, Some(1)),
        "{err}"
    );
    // A pass adds nothing to an archive it cannot read whole.
    clock.advance(TimeDelta::days(3));
    let plain = policy(r#"{"default": {"archiveAfter": "1d"}}"#);
    assert!(ledger
        .retain(&plain, false, |_| std::ops::ControlFlow::Continue(()))
        .is_err());
    assert_eq!(segments(dir.path()), vec![segment.clone()]);
    drop(ledger);
    std::fs::write(&segment, &pristine).unwrap();
    let ledger = open();
    checked(&ledger);
    drop(ledger);

    // Another ledger's archive put in place of a new ledger's: past the new
    // ledger's base (nothing archived), but not its own uncommitted
    // segment. It is left where it is, and named.
    let other = tempfile::tempdir().unwrap();
    let theirs = Ledger::builder(other.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    settled(&theirs, "initech", "theirs");
    let archive = other.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    std::fs::copy(&segment, archive.join(segment.file_name().unwrap())).unwrap();
    drop(theirs);
    let theirs = Ledger::builder(other.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    assert!(archive.join(segment.file_name().unwrap()).exists());
    let err = theirs.verify().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        err.to_string().contains("past the live log's base"),
        "{err}"
    );
    assert!(theirs
        .retain(&plain, true, |_| std::ops::ControlFlow::Continue(()))
        .is_ok());
}

#[test]
fn a_resumed_pause_is_archived_with_the_work_around_it_and_one_in_force_holds_the_base() {
    use execution_ledger::{Entry, PauseScope};
    let dir = tempfile::tempdir().unwrap();
    let clock = common::TestClock::new();
    let open = || {
        Ledger::builder(dir.path())
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let ledger = open();
    let scope = PauseScope::new(None, Some("resize".into()));
    let first = settled(&ledger, "acme", "one");
    ledger
        .pause(scope.clone(), Some("outage".into()), Some("ops".into()))
        .wait()
        .unwrap();
    let paused_at = ledger.head().seq;
    settled(&ledger, "acme", "two");
    ledger.resume(scope.clone(), None, None).wait().unwrap();
    let resumed_at = ledger.head().seq;
    settled(&ledger, "acme", "three");
    ledger
        .pause(PauseScope::new(Some(tenant("globex")), None), None, None)
        .wait()
        .unwrap();
    let in_force = ledger.head().seq;
    settled(&ledger, "acme", "four");
    let archives = policy(r#"{"default": {"archiveAfter": "1d"}}"#);
    clock.advance(TimeDelta::days(2));
    let report = ledger
        .retain(&archives, false, |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    let a = report.archive.unwrap();
    // Through the third execution: the resumed pause went with it; the
    // one in force keeps the base before it.
    assert_eq!((a.through, a.executions), (in_force - 1, 3), "{a:?}");
    assert!(
        a.kept_by.as_deref().unwrap().contains(&format!(
            "the pause of tenant globex (seq {in_force}): it is in force"
        )),
        "{a:?}"
    );
    assert_eq!(checked(&ledger), (1, in_force - 1));
    drop(ledger);
    // Reopened from the base: the pause in force holds, the archived one
    // is history that an export still carries.
    let ledger = open();
    assert_eq!(ledger.pauses().len(), 1);
    assert_eq!(ledger.pauses()[0].since_seq, in_force);
    let controls: Vec<u64> = ledger
        .entries(1, None)
        .map(Result::unwrap)
        .filter(|e| matches!(e, Entry::Control(_)))
        .map(|e| e.seq())
        .collect();
    assert_eq!(controls, vec![paused_at, resumed_at, in_force]);
    assert_eq!(ledger.history(first).unwrap().len(), 3);
    ledger.verify().unwrap();
}
