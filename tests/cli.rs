//! The `ledger` binary driven as an operator would: every command, the JSON
//! shapes parsed back, time travel, tenant scoping, and every error with
//! its exit code — and that a refused command leaves `head` unchanged.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use execution_ledger::{BackgroundExecution, BackgroundExecutionStatus, Event, Head, Ledger};

mod common;

fn ledger(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg(common::place_flag(dir))
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

/// Submits a `sleep` of `ms` milliseconds for acme; returns its id.
fn submit_sleep(dir: &Path, ms: &str) -> String {
    let args = [
        "submit",
        "--tenant",
        "acme",
        "--callable",
        "sleep",
        "--input",
        ms,
    ];
    ok(dir, &args).trim().to_owned()
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
    let dir = common::store();
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
fn a_reused_idempotency_key_and_a_callback_that_would_never_be_called_are_refused() {
    let dir = common::store();
    let d = dir.path();
    let keyed = |priority: &'static str| {
        [
            "submit",
            "--tenant",
            "acme",
            "--callable",
            "echo",
            "--idempotency-key",
            "order-1",
            "--priority",
            priority,
        ]
    };
    let first = ok(d, &keyed("50")).trim().to_owned();
    assert_eq!(ok(d, &keyed("50")).trim(), first, "same submission");
    let before = head(d);
    let line = err(d, &keyed("90"), 1);
    assert!(
        line.contains("idempotency key \"order-1\"") && line.contains(&first),
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
            "--callback-url",
            "http://127.0.0.1:9/cb",
        ],
        2,
    );
    assert!(
        line.contains("only deferred executions call back") && line.contains("fire_and_forget"),
        "{line}"
    );
    assert_eq!(head(d), before, "nothing appended");
}

#[test]
fn tenants_are_scoped_on_every_command() {
    let dir = common::store();
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
    let dir = common::store();
    let d = dir.path();
    let id = submit(d, "acme", "50");
    ok(d, &["cancel", &id, "--reason", "changed my mind"]);
    let before = head(d);
    let files = tempfile::tempdir().unwrap();
    let (no_figures, bad_figures) = (files.path().join("none"), files.path().join("bad"));
    std::fs::write(&no_figures, "run: {\"n\": 1}\nlog line\n").unwrap();
    std::fs::write(&bad_figures, "{\"peer\": \"bullmq\", \"n\": 20000}\n").unwrap();
    let two_sizes = files.path().join("two");
    let figures = |n: u32| {
        format!("{{\"peer\": \"bullmq\", \"durability\": \"default\", \"n\": {n}, \"enqueue_jobs_per_s\": 1.5, \"process_jobs_per_s\": 2}}\n")
    };
    std::fs::write(&two_sizes, figures(20000) + &figures(2000)).unwrap();
    let two_sizes = two_sizes.to_str().unwrap();
    let missing = files.path().join("missing");
    let (no_figures, bad_figures, missing) = (
        no_figures.to_str().unwrap(),
        bad_figures.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (
            vec!["bench", "--only", "peer-workload", "--peers", no_figures],
            2,
            "no peer's figures in it".into(),
        ),
        (
            vec!["bench", "--only", "peer-workload", "--peers", bad_figures],
            2,
            "line 1 is not a peer's figures".into(),
        ),
        (
            vec!["bench", "--only", "peer-workload", "--peers", two_sizes],
            2,
            "line 2 is not a peer's figures: its n is 2000, the lines before it 20000".into(),
        ),
        (
            vec!["bench", "--only", "peer-workload", "--peers", missing],
            2,
            "--peers: cannot read".into(),
        ),
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
            .arg(common::place_flag(d))
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
        // A byte of the record's stored hash.
        v[40] ^= 1;
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
fn verify_checks_the_log_still_leads_to_a_head_kept_elsewhere() {
    let dir = common::store();
    let d = dir.path();
    let files = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        submit(d, "acme", "50");
    }
    let kept = files.path().join("head.json");
    std::fs::write(&kept, ok(d, &["head", "--json"])).unwrap();
    submit(d, "acme", "50");
    let kept_arg = kept.to_str().unwrap();
    let out = ok(d, &["verify", "--checkpoint", kept_arg]);
    assert!(out.contains("the log leads to seq 3"), "{out}");
    // Another hash at that seq: not the log the head was taken from.
    let head: Head = serde_json::from_str(&std::fs::read_to_string(&kept).unwrap()).unwrap();
    let other = files.path().join("other.json");
    let flipped: String = head
        .hash
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == '0' {
                    '1'
                } else {
                    '0'
                }
            } else {
                c
            }
        })
        .collect();
    std::fs::write(&other, format!(r#"{{"seq":3,"hash":"{flipped}"}}"#)).unwrap();
    let line = err(d, &["verify", "--checkpoint", other.to_str().unwrap()], 1);
    assert!(
        line.starts_with("error: damaged log at seq 3: the record at seq 3 is not the one the head kept elsewhere names"),
        "{line}"
    );
    // A head past the log's end: a tail was lost.
    std::fs::write(&other, format!(r#"{{"seq":9,"hash":"{}"}}"#, head.hash)).unwrap();
    let line = err(d, &["verify", "--checkpoint", other.to_str().unwrap()], 1);
    assert!(
        line.contains("before seq 9 of the head kept elsewhere"),
        "{line}"
    );
    // A file that is not a head is a usage error naming the field.
    std::fs::write(&other, r#"{"seq":3}"#).unwrap();
    let line = err(d, &["verify", "--checkpoint", other.to_str().unwrap()], 2);
    assert!(line.contains("hash: missing (64 hex digits)"), "{line}");
    std::fs::write(&other, r#"{"seq":3,"hash":"abc","extra":1}"#).unwrap();
    let line = err(d, &["verify", "--checkpoint", other.to_str().unwrap()], 2);
    assert!(line.contains("extra"), "{line}");
}

#[test]
fn run_executes_everything_and_exits_when_idle() {
    let dir = common::store();
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
    let dir = common::store();
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
                .wait()
                .unwrap();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg(common::place_flag(d))
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
        .arg(common::place_flag(d))
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

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = common::store();
    let d = dir.path();
    submit(d, "acme", "50");
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg(common::place_flag(d))
        .arg(d)
        .args(["run", "--exit-when-idle"])
        .env("LEDGER_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("attempt ended"), "a log line: {stderr:?}");
    assert!(!stderr.contains("\x1b["), "no ANSI codes: {stderr:?}");
}

/// A log line written to a closed stderr used to panic the process (exit
/// 101, "failed printing to stderr"): a closed pipe loses the logs, not the
/// work.
#[test]
fn logs_to_a_closed_stderr_do_not_stop_the_command() {
    let dir = common::store();
    let d = dir.path();
    for _ in 0..3 {
        submit(d, "acme", "50");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg(common::place_flag(d))
        .arg(d)
        .args(["run", "--exit-when-idle"])
        .env("LEDGER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ledger run --exit-when-idle with a closed stderr did not exit within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let queue: Vec<BackgroundExecution> =
        serde_json::from_str(&ok(d, &["queue", "--json"])).unwrap();
    assert!(queue.is_empty(), "every execution ran: {queue:?}");
}

/// Starts `ledger run` with info logs on stderr and waits until an attempt
/// has started; returns the child and the rest of its stderr as it comes
/// (keep the receiver while the child runs: its stderr stays open).
fn run_until_an_attempt_starts(
    dir: &Path,
    extra: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg(common::place_flag(dir))
        .arg(dir)
        .arg("run")
        .args(extra)
        .env("LEDGER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) if line.contains("attempt started") => return (child, rx),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no attempt started");
            }
        }
    }
}

/// Sends SIGTERM to `child` and waits (at most 60 s) for it to exit.
fn sigterm_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ledger did not exit after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sigterm_stops_run_after_the_running_attempt_finishes() {
    let dir = common::store();
    let d = dir.path();
    let id = submit_sleep(d, "1500");
    let (mut child, _stderr) = run_until_an_attempt_starts(d, &[]);
    let status = sigterm_and_wait(&mut child);
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM, not {status}");
    let ledger = Ledger::open(d).unwrap();
    let e = ledger.get(id.parse().unwrap()).unwrap();
    assert_eq!(e.status, BackgroundExecutionStatus::Completed);
    let kinds: Vec<_> = ledger
        .history(e.execution_id)
        .unwrap()
        .iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(
        kinds,
        ["queued", "started", "completed"],
        "nothing recovered"
    );
}

#[test]
fn an_attempt_running_past_the_grace_stays_running_until_the_next_start() {
    let dir = common::store();
    let d = dir.path();
    let id = submit_sleep(d, "600000");
    let (mut child, _stderr) = run_until_an_attempt_starts(d, &["--grace-secs", "1"]);
    let status = sigterm_and_wait(&mut child);
    assert_eq!(status.code(), Some(0), "{status}");
    let e: BackgroundExecution = serde_json::from_str(&ok(d, &["show", &id, "--json"])).unwrap();
    assert_eq!(e.status, BackgroundExecutionStatus::Running);
    // The next start records it recovered: one attempt allowed, so failed.
    ok(d, &["run", "--exit-when-idle"]);
    let e: BackgroundExecution = serde_json::from_str(&ok(d, &["show", &id, "--json"])).unwrap();
    assert_eq!(e.status, BackgroundExecutionStatus::Failed);
    let events: Vec<Event> = ok(d, &["history", &id, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["queued", "started", "recovered"]);
}

/// Runs `ledger` to its end, within `secs` (killed and failed past it).
fn output_within(dir: &Path, args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg(common::place_flag(dir))
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ledger {args:?} did not exit within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn exit_when_idle_waits_for_work_due_soon_and_leaves_later_work() {
    let dir = common::store();
    let d = dir.path();
    let at = |secs: i64| {
        (chrono::Utc::now() + chrono::Duration::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let (in_an_hour, in_2s) = (at(3_600), at(2));
    let submit_at = |when: &str| {
        ok(
            d,
            &[
                "submit",
                "--tenant",
                "acme",
                "--callable",
                "echo",
                "--run-at",
                when,
            ],
        )
        .trim()
        .to_owned()
    };
    let later = submit_at(&in_an_hour);
    let soon = submit_at(&in_2s);
    let out = output_within(d, &["run", "--exit-when-idle"], 60);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("1 scheduled later, the earliest at {in_an_hour}")),
        "{stdout}"
    );
    let status = |id: &str| {
        serde_json::from_str::<BackgroundExecution>(&ok(d, &["show", id, "--json"]))
            .unwrap()
            .status
    };
    assert_eq!(status(&soon), BackgroundExecutionStatus::Completed);
    assert_eq!(status(&later), BackgroundExecutionStatus::Queued);
    // The same, for machines.
    let out = output_within(d, &["run", "--exit-when-idle", "--json"], 60);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["scheduledLater"]["count"], 1, "{v}");
    let earliest: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(v["scheduledLater"]["earliest"].clone()).unwrap();
    assert_eq!(
        earliest,
        in_an_hour.parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    );
}

#[test]
fn usage_errors_name_what_is_missing_or_wrong() {
    let dir = common::store();
    let d = dir.path();
    let id = submit(d, "acme", "50");
    let before = head(d);
    // A missing required argument is named, on the one line.
    let line = err(d, &["fail", &id], 2);
    assert!(
        line.starts_with("error: the following required arguments were not provided:")
            && line.contains("--error"),
        "{line}"
    );
    // --server takes an http:// or https:// URL.
    let line = err(d, &["--server", "notaurl", "head"], 2);
    assert!(
        line.contains("--server") && line.contains("http:// or https:// URL"),
        "{line}"
    );
    // A reversed range is refused by events as by diff, with the same words.
    let diff = err(d, &["diff", "--from-seq", "1", "--to-seq", "0"], 2);
    let events = err(d, &["events", "--from-seq", "1", "--to-seq", "0"], 2);
    assert_eq!(events, diff);
    assert_eq!(
        events,
        "error: the first point (seq 1) is after the second (seq 0)"
    );
    assert_eq!(head(d), before, "nothing appended");
}

#[test]
fn submit_from_a_file_is_one_batch_all_or_none() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = tmp.path().join("jobs.jsonl");
    std::fs::write(
        &file,
        "{\"callableName\":\"echo\",\"config\":{\"priority\":9}}\n\n{\"callableName\":\"echo\",\"input\":\"x\"}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let ids = ok(&dir, &["--tenant", "acme", "submit", "--from-file", file]);
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(head(&dir).seq, 2);
    let first: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["--tenant", "acme", "show", ids[0], "--json"])).unwrap();
    assert_eq!(first["config"]["priority"], 9);
    // A bad line refuses the whole file, naming the line; nothing appended.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"callableName\":\"echo\"}\n{\"callableName\":\"echo\",\"config\":{\"priority\":999}}\n",
    )
    .unwrap();
    let line = err(
        &dir,
        &[
            "--tenant",
            "acme",
            "submit",
            "--from-file",
            bad.to_str().unwrap(),
        ],
        2,
    );
    assert!(
        line.contains("bad.jsonl line 2: config.priority: must be an integer 0-255"),
        "{line}"
    );
    // And a flag beside it.
    let line = err(
        &dir,
        &[
            "--tenant",
            "acme",
            "submit",
            "--from-file",
            file,
            "--priority",
            "3",
        ],
        2,
    );
    assert!(line.contains("--from-file"), "{line}");
    assert_eq!(head(&dir).seq, 2);
}
