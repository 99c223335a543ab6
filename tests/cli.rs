//! The `ledger` binary driven as an operator would: every command, the JSON
//! shapes parsed back, time travel, tenant scoping, and every error with
//! its exit code — and that a refused command leaves `head` unchanged.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use execution_ledger::{BackgroundExecution, BackgroundExecutionStatus, Event, Head, Ledger};

fn ledger(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("LEDGER_DATA_DIR")
        .output()
        .expect("the ledger binary runs")
}

/// Runs a command that must succeed; returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = ledger(dir, args);
    assert!(
        out.status.success(),
        "ledger {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with `code`; returns its one stderr line.
fn err(dir: &Path, args: &[&str], code: i32) -> String {
    let out = ledger(dir, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "ledger {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    stderr.trim_end().to_owned()
}

fn head(dir: &Path) -> Head {
    serde_json::from_str(&ok(dir, &["head", "--json"])).unwrap()
}

fn submit(dir: &Path, tenant: &str, priority: &str) -> String {
    ok(
        dir,
        &[
            "submit",
            "--tenant",
            tenant,
            "--callable",
            "echo",
            "--input",
            "hi",
            "--priority",
            priority,
        ],
    )
    .trim()
    .to_owned()
}

#[test]
fn a_session_submit_claim_complete_show_history_queue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let low = submit(d, "acme", "10");
    let high = submit(d, "acme", "90");
    assert_eq!(low.len(), 36, "the id alone: {low:?}");

    // The queue, in claim order, as JSON records.
    let queue: Vec<BackgroundExecution> =
        serde_json::from_str(&ok(d, &["queue", "--json"])).unwrap();
    let order: Vec<String> = queue.iter().map(|e| e.execution_id.to_string()).collect();
    assert_eq!(order, [high.clone(), low.clone()]);
    let human = ok(d, &["queue"]);
    assert!(human.starts_with("#  EXECUTION"), "{human}");

    assert_eq!(ok(d, &["claim"]).trim(), high);
    let done: BackgroundExecution = serde_json::from_str(&ok(
        d,
        &["complete", &high, "--output", r#"{"answer":42}"#, "--json"],
    ))
    .unwrap();
    assert_eq!(done.status, BackgroundExecutionStatus::Completed);
    assert_eq!(done.output, Some(serde_json::json!({"answer": 42})));

    // show --json is the record in its camelCase wire shape.
    let shown: serde_json::Value =
        serde_json::from_str(&ok(d, &["show", &high, "--json"])).unwrap();
    assert_eq!(shown["executionId"], high);
    assert_eq!(shown["tenantId"], "acme");
    assert_eq!(shown["callableName"], "echo");
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["config"]["priority"], 90);
    assert_eq!(shown["config"]["timeoutMs"], 300000);
    assert_eq!(shown["config"]["mode"], "fire_and_forget");

    // history --json: one event per line.
    let history = ok(d, &["history", &high, "--json"]);
    let events: Vec<Event> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["queued", "started", "completed"]);
    let first: serde_json::Value = serde_json::from_str(history.lines().next().unwrap()).unwrap();
    for field in ["seq", "at", "executionId", "tenantId", "type"] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }

    // Time travel: at seq 3 (claimed, not yet complete) it was running.
    let then: BackgroundExecution =
        serde_json::from_str(&ok(d, &["show", &high, "--at-seq", "3", "--json"])).unwrap();
    assert_eq!(then.status, BackgroundExecutionStatus::Running);
    let past: Vec<BackgroundExecution> =
        serde_json::from_str(&ok(d, &["queue", "--at-seq", "2", "--json"])).unwrap();
    assert_eq!(past.len(), 2);
    let human = ok(d, &["show", &high, "--at-seq", "3"]);
    assert!(
        human.contains("status") && human.contains("running"),
        "{human}"
    );

    let diff: serde_json::Value = serde_json::from_str(&ok(
        d,
        &["diff", "--from-seq", "2", "--to-seq", "4", "--json"],
    ))
    .unwrap();
    assert_eq!(diff.as_array().unwrap().len(), 1);
    assert_eq!(diff[0]["after"], "completed");

    let h = head(d);
    assert_eq!(h.seq, 4);
    assert_eq!(h.hash.len(), 64);
    assert!(ok(d, &["verify"]).starts_with("ok: 4 events"));
    assert_eq!(
        ok(d, &["reindex"]).trim(),
        "reindexed: 4 events folded, 1 settled executions indexed, 0 stale entries removed"
    );
    assert!(ok(d, &["verify"]).starts_with("ok: 4 events"));
    let export = ok(d, &["export"]);
    assert_eq!(export.lines().count(), 4);
    for line in export.lines() {
        let _: Event = serde_json::from_str(line).unwrap();
    }
    let stats: serde_json::Value = serde_json::from_str(&ok(d, &["stats", "--json"])).unwrap();
    assert_eq!(stats["live"]["queued"], 1);

    // Nothing else is runnable once the last one is claimed: claim prints nothing.
    assert_eq!(ok(d, &["claim"]).trim(), low);
    assert_eq!(ok(d, &["claim"]), "");
    // fail with no retries left: failed.
    assert!(ok(d, &["fail", &low, "--error", "it broke"]).contains("is failed"));
}

#[test]
fn tenants_are_scoped_on_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = submit(d, "acme", "50");
    let line = err(d, &["--tenant", "globex", "show", &id], 1);
    assert_eq!(line, format!("error: {id} not found"));
    err(d, &["--tenant", "globex", "history", &id], 1);
    err(d, &["--tenant", "globex", "cancel", &id], 1);
    err(d, &["--tenant", "globex", "show", &id, "--at-seq", "1"], 1);
    let queue: Vec<BackgroundExecution> =
        serde_json::from_str(&ok(d, &["--tenant", "globex", "queue", "--json"])).unwrap();
    assert!(queue.is_empty());
    assert_eq!(ok(d, &["--tenant", "globex", "claim"]), "");
    assert_eq!(ok(d, &["--tenant", "globex", "export"]), "");
    assert_eq!(ok(d, &["--tenant", "acme", "claim"]).trim(), id);
    assert_eq!(head(d).seq, 2);
}

#[test]
fn bad_input_is_one_line_with_its_exit_code_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = submit(d, "acme", "50");
    ok(d, &["cancel", &id, "--reason", "changed my mind"]);
    let before = head(d);
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (
            vec![
                "submit",
                "--tenant",
                "acme",
                "--callable",
                "echo",
                "--priority",
                "300",
            ],
            2,
            "--priority must be 0-255".into(),
        ),
        (
            vec!["show", "x"],
            2,
            r#"not a valid execution id: "x""#.into(),
        ),
        (
            vec!["complete", &id],
            1,
            format!("error: cannot complete {id}: it is cancelled"),
        ),
        (vec!["release", &id], 1, format!("cannot release {id}")),
        (
            vec!["complete", "01a2172a-eeb5-704e-a9e1-5a6d17479093"],
            1,
            "error: 01a2172a-eeb5-704e-a9e1-5a6d17479093 not found".into(),
        ),
        (
            vec!["complete", &id, "--output", "{not json"],
            2,
            "not valid JSON".into(),
        ),
        (
            vec!["submit", "--callable", "echo"],
            2,
            "submit needs --tenant".into(),
        ),
        (
            vec!["--tenant", "bad tenant!", "queue"],
            2,
            "not a valid tenant id".into(),
        ),
        (
            vec!["show", &id, "--at-seq", "99"],
            2,
            "seq 99 is beyond the head (seq 2)".into(),
        ),
        (
            vec!["show", &id, "--at-time", "yesterday"],
            2,
            "not an RFC 3339 time".into(),
        ),
        (
            vec![
                "submit",
                "--tenant",
                "acme",
                "--callable",
                "echo",
                "--mode",
                "later",
            ],
            2,
            "--mode must be".into(),
        ),
        (
            vec![
                "submit",
                "--tenant",
                "acme",
                "--callable",
                "echo",
                "--context",
                "novalue",
            ],
            2,
            "KEY=VALUE".into(),
        ),
        (
            vec!["diff", "--from-seq", "2", "--to-seq", "1"],
            2,
            "is after the second".into(),
        ),
        (vec!["no-such-command"], 2, "unrecognized subcommand".into()),
        (
            vec!["bench", "--only", "durable,bogus"],
            2,
            "invalid value 'bogus' for '--only".into(),
        ),
    ];
    for (args, code, needle) in &cases {
        let line = err(d, args, *code);
        assert!(line.contains(needle.as_str()), "ledger {args:?}: {line}");
    }
    // A context map over the limit, and an empty key.
    let mut huge: Vec<String> = vec![
        "submit".into(),
        "--tenant".into(),
        "acme".into(),
        "--callable".into(),
        "echo".into(),
    ];
    for i in 0..=execution_ledger::MAX_CONTEXT_ENTRIES {
        huge.push("--context".into());
        huge.push(format!("k{i}=v"));
    }
    let huge: Vec<&str> = huge.iter().map(String::as_str).collect();
    let line = err(d, &huge, 2);
    assert!(
        line.contains("context has 257 entries; the limit is 256"),
        "{line}"
    );
    let line = err(
        d,
        &[
            "submit",
            "--tenant",
            "acme",
            "--callable",
            "echo",
            "--context",
            "=v",
        ],
        2,
    );
    assert!(line.contains("KEY=VALUE"), "{line}");
    // A non-UTF-8 argument.
    {
        use std::os::unix::ffi::OsStrExt;
        let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .arg("--data-dir")
            .arg(d)
            .args(["submit", "--tenant", "acme", "--callable"])
            .arg(std::ffi::OsStr::from_bytes(b"ec\xffho"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("invalid UTF-8"), "{stderr}");
    }
    // --at-seq 0 is before the first event: nothing existed.
    let line = err(d, &["show", &id, "--at-seq", "0"], 1);
    assert!(line.contains("did not exist yet at seq 0"), "{line}");
    let big = "x".repeat(execution_ledger::MAX_INPUT_BYTES + 1);
    let line = err(
        d,
        &[
            "submit",
            "--tenant",
            "acme",
            "--callable",
            "echo",
            "--input",
            &big,
        ],
        2,
    );
    assert!(line.contains("the limit is 65536"), "{line}");
    assert_eq!(head(d), before, "no refused command appended anything");
    // Before the first event and in the future.
    let before_first: serde_json::Value = serde_json::from_str(&ok(
        d,
        &["queue", "--at-time", "2000-01-01T00:00:00Z", "--json"],
    ))
    .unwrap();
    assert_eq!(before_first, serde_json::json!([]));
    let line = err(d, &["show", &id, "--at-time", "2000-01-01T00:00:00Z"], 1);
    assert!(line.contains("did not exist yet"), "{line}");
    let future: BackgroundExecution = serde_json::from_str(&ok(
        d,
        &["show", &id, "--at-time", "2999-01-01T00:00:00Z", "--json"],
    ))
    .unwrap();
    assert_eq!(future.status, BackgroundExecutionStatus::Cancelled);
}

#[test]
fn a_directory_held_by_another_process_or_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let held = Ledger::open(dir.path()).unwrap();
    let line = err(dir.path(), &["head"], 1);
    assert!(
        line.ends_with(&format!(
            "is in use by another ledger process (pid {})",
            std::process::id()
        )),
        "{line}"
    );
    drop(held);
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let line = err(&file, &["head"], 1);
    assert!(line.ends_with("is not a directory"), "{line}");
}

#[test]
fn verify_exits_1_and_names_the_first_bad_seq() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for _ in 0..5 {
        submit(d, "acme", "50");
    }
    {
        let db = sled::open(d.join("sled")).unwrap();
        let tree = db.open_tree("events").unwrap();
        let mut v = tree.get(3u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let i = v.len() - 2;
        v[i] ^= 1;
        tree.insert(3u64.to_be_bytes(), v).unwrap();
        tree.flush().unwrap();
    }
    let line = err(d, &["verify"], 1);
    assert_eq!(
        line,
        "error: damaged log at seq 3: record content does not match its hash"
    );
}

#[test]
fn run_executes_everything_and_exits_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ids: Vec<String> = (0..20).map(|_| submit(d, "acme", "50")).collect();
    let failing = ok(
        d,
        &[
            "submit",
            "--tenant",
            "acme",
            "--callable",
            "fail",
            "--input",
            "nope",
            "--max-attempts",
            "2",
        ],
    );
    let out = ok(d, &["run", "--workers", "4", "--exit-when-idle"]);
    assert!(out.contains("completed 20"), "{out}");
    for id in &ids {
        let e: BackgroundExecution = serde_json::from_str(&ok(d, &["show", id, "--json"])).unwrap();
        assert_eq!(e.status, BackgroundExecutionStatus::Completed);
        assert_eq!(e.output, Some(serde_json::json!("hi")));
    }
    let e: BackgroundExecution =
        serde_json::from_str(&ok(d, &["show", failing.trim(), "--json"])).unwrap();
    assert_eq!(e.status, BackgroundExecutionStatus::Failed);
    assert_eq!(e.attempt, 2);
    assert!(ok(d, &["verify"]).starts_with("ok:"));
}

#[test]
fn a_broken_pipe_exits_quietly_and_follow_streams_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    {
        let ledger = Ledger::builder(d)
            .durability(execution_ledger::Durability::Buffered)
            .open()
            .unwrap();
        let tenant = "acme".parse().unwrap();
        for _ in 0..20_000 {
            ledger
                .submit(&tenant, execution_ledger::Submission::new("echo"))
                .unwrap();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--data-dir")
        .arg(d)
        .arg("export")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout); // the reader goes away, like `| head -c 16`
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}, stderr {stderr:?}");
    assert_eq!(stderr, "");

    // --follow prints what exists and then what comes.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--data-dir")
        .arg(d)
        .args(["events", "--from-seq", "19999", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let seqs: Vec<u64> = (0..2)
        .map(|_| {
            let e: Event = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            e.seq
        })
        .collect();
    assert_eq!(seqs, [19_999, 20_000]);
    follow.kill().unwrap();
    follow.wait().unwrap();
}

/// Only the commands that write create a ledger; a typo in `--data-dir`
/// used to create an empty ledger there and answer `ok: 0 events`.
#[test]
fn regression_read_only_commands_do_not_create_a_ledger() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("typo");
    let id = "01a2172d-f488-7337-b39e-31db5d358ae0";
    let commands: &[&[&str]] = &[
        &["show", id],
        &["history", id],
        &["queue"],
        &["events"],
        &["diff", "--from-seq", "1", "--to-seq", "2"],
        &["verify"],
        &["head"],
        &["stats"],
        &["export"],
        &["reindex"],
        &["claim"],
        &["complete", id],
        &["fail", id, "--error", "x"],
        &["cancel", id],
        &["release", id],
    ];
    for args in commands {
        let line = err(&missing, args, 1);
        assert_eq!(
            line,
            format!("error: no ledger at {}", missing.display()),
            "ledger {args:?}"
        );
        assert!(!missing.exists(), "ledger {args:?} created {missing:?}");
    }
    // An empty directory is no ledger either, and stays empty.
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let line = err(&empty, &["head"], 1);
    assert_eq!(line, format!("error: no ledger at {}", empty.display()));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    // Writing creates it.
    submit(&missing, "acme", "50");
    assert_eq!(head(&missing).seq, 1);
}

/// A deleted, truncated or altered checkpoint was silently rewritten by
/// `verify` (which printed `ok`), switching off the lost-suffix check. Now
/// every command refuses, naming it, until `verify --accept-tail`.
#[test]
fn regression_a_missing_or_damaged_checkpoint_is_reported_until_accepted() {
    for how in ["delete", "truncate", "flip"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for _ in 0..3 {
            submit(d, "acme", "50");
        }
        let path = d.join("checkpoint");
        match how {
            "delete" => std::fs::remove_file(&path).unwrap(),
            "truncate" => {
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
            }
            _ => {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[70] ^= 0x04;
                std::fs::write(&path, bytes).unwrap();
            }
        }
        let line = err(d, &["verify"], 1);
        assert!(
            line.starts_with(&format!("error: checkpoint {} is ", path.display())),
            "{how}: {line}"
        );
        assert_eq!(err(d, &["head"], 1), line, "{how}");
        assert_eq!(
            err(d, &["submit", "--tenant", "acme", "--callable", "echo"], 1),
            line,
            "{how}"
        );
        if how == "delete" {
            assert!(!path.exists(), "not recreated");
        }
        let accepted = ok(d, &["verify", "--accept-tail"]);
        assert!(
            accepted.starts_with("accepted the log as it is at seq 3 "),
            "{accepted}"
        );
        assert!(accepted.contains("\nok: 3 events"), "{accepted}");
        assert!(d.join("checkpoint.accepted").exists());
        assert!(ok(d, &["verify"]).starts_with("ok: 3 events"), "{how}");
        assert_eq!(head(d).seq, 3, "nothing was appended");
    }
}
