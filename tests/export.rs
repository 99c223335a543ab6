//! An export an auditor verifies alone: a real ledger (sled, or PostgreSQL
//! with `LEDGER_TEST_BACKEND=postgres`) exported through the library, the
//! CLI and a real `ledger serve`, then checked offline after the ledger is
//! gone; every kind of tampering is refused naming the seq where it is.

mod common;

use std::io::Cursor;

use base64::Engine as _;
use common::server::{client, Server};
use common::{stderr, stdout};
use execution_ledger::{
    fuzzing, verify_export, ErrorKind, Event, ExecutionError, Head, Ledger, Retry, Submission,
    TenantId,
};
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn tenant(t: &str) -> TenantId {
    t.parse().unwrap()
}

/// A ledger with some of everything: two tenants, a completed and a failed
/// execution, a retry by hand, a redaction. Returns its export's lines and
/// its head.
fn history(ledger: &Ledger) -> (Vec<String>, Head) {
    for (t, callable, input) in [
        ("acme", "resize", "cat.png"),
        ("globex", "charge", "card 4242"),
        ("acme", "mail", "hello"),
    ] {
        let mut s = Submission::new(callable);
        s.input = Some(input.into());
        ledger.submit(&tenant(t), s).wait().unwrap();
    }
    let a = ledger.claim(Some("w")).wait().unwrap().unwrap();
    ledger
        .complete(a.execution_id, 1, json!({"ok": 1}))
        .wait()
        .unwrap();
    let b = ledger.claim(Some("w")).wait().unwrap().unwrap();
    ledger
        .fail_permanently(
            b.execution_id,
            1,
            ExecutionError::new("declined", "card declined"),
        )
        .wait()
        .unwrap();
    ledger
        .retry(b.execution_id, Retry::new().reason("card updated"))
        .wait()
        .unwrap();
    ledger
        .redact(a.execution_id, "erasure request", None)
        .wait()
        .unwrap();
    let lines: Vec<String> = ledger
        .export(None)
        .map(|e| String::from_utf8(e.unwrap().line).unwrap())
        .collect();
    (lines, ledger.head())
}

fn verify(
    lines: &[String],
    head: Option<&Head>,
) -> Result<execution_ledger::ExportVerified, execution_ledger::StorageError> {
    verify_export(Cursor::new(lines.join("\n") + "\n"), head)
}

fn head(seq: u64, hash: &str) -> Head {
    serde_json::from_value(json!({"seq": seq, "hash": hash})).unwrap()
}

#[test]
fn an_export_verifies_alone_after_the_ledger_is_gone() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let (lines, kept) = history(&ledger);
    // Each line is the event as the ledger answers it, plus its record.
    let events: Vec<Event> = ledger.events(1, None).map(Result::unwrap).collect();
    assert_eq!(lines.len() as u64, kept.seq);
    for (line, event) in lines.iter().zip(&events) {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let o = v.as_object_mut().unwrap();
        for field in ["record", "prev", "hash"] {
            assert!(o.remove(field).is_some(), "{field} in {line}");
        }
        assert_eq!(v, serde_json::to_value(event).unwrap());
    }
    // The redacted execution's payloads are not in the export, the other's are.
    let all = lines.join("\n");
    assert!(!all.contains("cat.png"), "a redacted input is not exported");
    assert!(all.contains("card 4242"));
    drop(ledger);
    drop(store);

    let report = verify(&lines, Some(&kept)).unwrap();
    assert_eq!(report.events, kept.seq);
    assert_eq!(report.executions, 4);
    assert_eq!(report.head, kept);
    assert_eq!(report.reaches, Some(kept.clone()));
    // Without a kept head too, and an empty export is the genesis.
    assert_eq!(verify(&lines, None).unwrap().head, kept);
    let empty = verify(&[], Some(&head(0, &"0".repeat(64)))).unwrap();
    assert_eq!((empty.events, empty.head.seq), (0, 0));
}

/// `lines` with line `i`'s JSON changed by `change`.
fn changed(lines: &[String], i: usize, change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut out = lines.to_vec();
    let mut v: Value = serde_json::from_str(&out[i]).unwrap();
    change(&mut v);
    out[i] = v.to_string();
    out
}

fn refused_at(lines: &[String], kept: Option<&Head>, seq: u64, says: &str) {
    let err = verify(lines, kept).unwrap_err();
    assert_eq!(err.seq(), Some(seq), "{err}");
    assert!(err.to_string().contains(says), "{err}");
}

#[test]
fn a_tampered_export_is_refused_naming_the_seq() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let (lines, kept) = history(&ledger);
    drop(ledger);
    let n = lines.len();
    let at = |i: usize| i as u64 + 1;
    let queued_globex = lines
        .iter()
        .position(|l| l.contains("card 4242") && l.contains("\"queued\""))
        .unwrap();

    // The event an auditor reads changed beside its record.
    let t = changed(&lines, queued_globex, |v| v["input"] = json!("card 0000"));
    refused_at(
        &t,
        None,
        at(queued_globex),
        "an event other than the one its record holds",
    );
    let t = changed(&lines, 0, |v| v["tenantId"] = json!("globex"));
    refused_at(&t, None, 1, "an event other than");
    // A byte of a record flipped: its hash, or a payload's digest, fails.
    for i in [0, queued_globex, n - 1] {
        let t = changed(&lines, i, |v| {
            let mut bytes = B64.decode(v["record"].as_str().unwrap()).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x01;
            v["record"] = json!(B64.encode(bytes));
        });
        let err = verify(&t, None).unwrap_err();
        assert_eq!(err.seq(), Some(at(i)), "{err}");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }
    // The hashes shown beside the record.
    let t = changed(&lines, 2, |v| v["hash"] = json!("ab".repeat(32)));
    refused_at(&t, None, 3, "shows hash");
    // A line removed, repeated, swapped, cut short, or without its record.
    let mut t = lines.clone();
    t.remove(3);
    refused_at(&t, None, 4, "seq 4 is missing");
    let mut t = lines.clone();
    t.insert(3, lines[2].clone());
    refused_at(&t, None, 4, "holds seq 3 again");
    let mut t = lines.clone();
    t.swap(1, 2);
    refused_at(&t, None, 2, "holds seq 3 where seq 2 belongs");
    let mut t = lines.clone();
    let half = t[4].len() / 2;
    t[4].truncate(half);
    refused_at(&t, None, 5, "is not a JSON object");
    let t = changed(&lines, 5, |v| {
        v.as_object_mut().unwrap().remove("record");
    });
    refused_at(&t, None, 6, "has no record");
    // The last events dropped: alone it is a shorter chain, but it does not
    // reach the head kept elsewhere.
    let short = &lines[..n - 2];
    assert_eq!(verify(short, None).unwrap().events, n as u64 - 2);
    let err = verify(short, Some(&kept)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LostSuffix, "{err}");
    assert_eq!(err.seq(), Some(n as u64 - 1), "{err}");

    // Whoever can rewrite the file can rewrite the chain from the event
    // they change on: it holds together alone, and the head kept elsewhere
    // finds it.
    let mut forged = Vec::new();
    let mut prev = [0u8; 32];
    for (i, line) in lines.iter().enumerate() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("record");
        o.remove("prev");
        o.remove("hash");
        if i == queued_globex {
            v["input"] = json!("card 0000");
        }
        let event: Event = serde_json::from_value(v.clone()).unwrap();
        let (bytes, hash) = fuzzing::encode_event_record(&prev, &event);
        let o = v.as_object_mut().unwrap();
        o.insert("record".into(), json!(B64.encode(&bytes)));
        o.insert("prev".into(), json!(hex(&prev)));
        o.insert("hash".into(), json!(hex(&hash)));
        prev = hash;
        forged.push(v.to_string());
    }
    assert_eq!(verify(&forged, None).unwrap().events, n as u64);
    refused_at(
        &forged,
        Some(&kept),
        n as u64,
        "not the one the head kept elsewhere names",
    );
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_cli_exports_and_verifies_an_export_without_a_ledger() {
    let store = common::store();
    let cli = |args: &[&str]| common::ledger_cli(store.path(), args);
    for input in ["a", "b"] {
        let o = cli(&[
            "submit",
            "--tenant",
            "acme",
            "--callable",
            "echo",
            "--input",
            input,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = cli(&["run", "--workers", "1", "--exit-when-idle"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let export = cli(&["export"]);
    assert!(export.status.success(), "{}", stderr(&export));
    let head = stdout(&cli(&["head"]));
    // "seq N hash H"
    let words: Vec<&str> = head.split_whitespace().collect();
    let kept = format!("{}:{}", words[1], words[3]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &export.stdout).unwrap();
    // The live log checked against the same head, and against one beyond it.
    let o = cli(&["verify", "--head", &kept]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ok: the log leads to seq"),
        "{}",
        stdout(&o)
    );
    let beyond = format!("99:{}", "0".repeat(64));
    let o = cli(&["verify", "--head", &beyond]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("before seq 99 of the head kept elsewhere"),
        "{}",
        stderr(&o)
    );
    drop(store);

    // No ledger anywhere: the data directory named does not exist.
    let nowhere = dir.path().join("no-ledger-here");
    let offline = |args: &[&str]| common::ledger_cli(&nowhere, args);
    let file_arg = file.to_str().unwrap();
    let o = offline(&["verify", "--export", file_arg, "--head", &kept]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!(
            "ok: the export's {} events of 2 executions verified",
            words[1]
        )),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains(&format!("ok: the export leads to seq {}", words[1])));
    assert!(!nowhere.exists(), "verifying an export creates no ledger");
    let o = offline(&["--json", "verify", "--export", file_arg]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["head"]["seq"].to_string()),
        (json!(true), words[1].to_owned())
    );

    // Tampered: exit 1, one line naming the seq; --json says so too.
    let text = String::from_utf8(export.stdout.clone()).unwrap();
    let tampered = text.replacen("\"input\":\"b\"", "\"input\":\"c\"", 1);
    assert_ne!(tampered, text);
    let bad = dir.path().join("tampered.jsonl");
    std::fs::write(&bad, tampered).unwrap();
    let o = offline(&["verify", "--export", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "error: damaged log at seq 2: line 2 of the export shows an event other than the one its record holds"
    );
    let o = offline(&["--json", "verify", "--export", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["seq"].clone()),
        (json!(false), json!(2))
    );
    // Standard input works; usage errors exit 2.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["verify", "--export", "-"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for (args, says) in [
        (
            vec!["verify", "--export", file_arg, "--head", "12"],
            "--head: takes SEQ:HASH",
        ),
        (
            vec!["verify", "--export", file_arg, "--head", "x:ab"],
            "--head: SEQ must be",
        ),
        (
            vec!["verify", "--export", file_arg, "--head", "1:ab"],
            "--head: hash must be 64 hex",
        ),
        (
            vec!["verify", "--export", "/nonexistent/e.jsonl"],
            "--export /nonexistent/e.jsonl",
        ),
        (
            vec!["--tenant", "acme", "verify", "--export", file_arg],
            "takes no --tenant",
        ),
    ] {
        let o = offline(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_export_verifies_against_its_head() {
    let store = common::store();
    let server = Server::start(store.path(), &[]);
    let c = client();
    for input in ["x", "y", "z"] {
        let r = c
            .post(server.url("/v1/executions"))
            .json(&json!({"tenantId": "acme", "callableName": "echo", "input": input}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let kept: Head = c
        .get(server.url("/v1/head"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = c
        .get(server.url("/v1/export"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let report = verify_export(Cursor::new(body.to_vec()), Some(&kept)).unwrap();
    assert!(report.events >= 3, "{report:?}");
    assert_eq!(report.reaches, Some(kept));
    // The CLI through the server writes the server's lines as they came.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--server", &server.url, "export"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let through = verify_export(Cursor::new(o.stdout), None).unwrap();
    assert!(through.events >= report.events);
    drop(server);
}
