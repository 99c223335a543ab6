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

/// Two echo executions run by `ledger run` on `store`, then exported:
/// the export's output, what `ledger head` printed ("seq N hash H"), and
/// the file the export was written to (in `dir`).
fn exported_by_cli(
    store: &common::postgres::TestStore,
    dir: &std::path::Path,
) -> (std::process::Output, String, std::path::PathBuf) {
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
    let file = dir.join("export.jsonl");
    std::fs::write(&file, &export.stdout).unwrap();
    (export, head, file)
}

#[test]
fn the_cli_exports_and_verifies_an_export_without_a_ledger() {
    let store = common::store();
    let cli = |args: &[&str]| common::ledger_cli(store.path(), args);
    let dir = tempfile::tempdir().unwrap();
    let (export, head, file) = exported_by_cli(&store, dir.path());
    // "seq N hash H"
    let words: Vec<&str> = head.split_whitespace().collect();
    let kept = format!("{}:{}", words[1], words[3]);
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

/// What a ledger answers about everything in it: every event, every
/// execution as it is now, the list of them, the queue and the counts.
fn answers(ledger: &Ledger) -> Value {
    let events: Vec<Event> = ledger.events(1, None).map(Result::unwrap).collect();
    let mut ids: Vec<_> = events.iter().map(|e| e.execution_id).collect();
    ids.sort();
    ids.dedup();
    let executions: Vec<Value> = ids
        .iter()
        .map(|id| serde_json::to_value(ledger.get(*id).unwrap()).unwrap())
        .collect();
    let list = ledger
        .list(&execution_ledger::ListFilter::new(), None, 100)
        .unwrap();
    let queue = ledger.queue(None);
    let stats = ledger.stats().unwrap();
    json!({
        "events": events,
        "executions": executions,
        "list": list.executions,
        "queue": queue,
        "counts": stats.executions,
        "live": stats.live,
        "head": stats.head,
    })
}

fn lines_of(ledger: &Ledger) -> Vec<String> {
    ledger
        .export(None)
        .map(|e| String::from_utf8(e.unwrap().line).unwrap())
        .collect()
}

#[test]
fn an_import_is_the_exported_ledger_record_for_record() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    history(&ledger);
    // Some work still live at the export: queued and running.
    ledger
        .submit(&tenant("globex"), Submission::new("late"))
        .wait()
        .unwrap();
    let running = ledger.claim(Some("w")).wait().unwrap().unwrap();
    let (lines, kept) = (lines_of(&ledger), ledger.head());
    let before = answers(&ledger);
    drop(ledger);
    drop(store);

    // The ledger is gone; the export alone builds it again.
    let again = common::store();
    let imported = Ledger::open(again.path()).unwrap();
    let export = Cursor::new(lines.join("\n") + "\n");
    let done = imported.import(export, Some(&kept)).unwrap();
    assert_eq!(done.events, kept.seq);
    assert_eq!(done.executions, 5);
    assert_eq!(done.head, kept);
    assert_eq!(done.reaches, Some(kept.clone()));
    assert_eq!(imported.head(), kept);
    // Record for record: its export is the same, byte for byte, and it
    // answers everything as the ledger exported did.
    assert_eq!(lines_of(&imported), lines);
    assert_eq!(answers(&imported), before);
    let report = imported.verify().unwrap();
    assert_eq!(
        (report.events, report.head.clone()),
        (kept.seq, kept.clone())
    );
    // A redacted payload stays redacted; the others are readable.
    let all = serde_json::to_string(&answers(&imported)).unwrap();
    assert!(!all.contains("cat.png") && all.contains("card 4242"));
    // It goes on from there: the running attempt finishes, new work runs.
    imported
        .complete(running.execution_id, 1, json!("done"))
        .wait()
        .unwrap();
    let next = imported.claim(Some("w")).wait().unwrap().unwrap();
    imported
        .complete(next.execution_id, 1, json!("done too"))
        .wait()
        .unwrap();
    drop(imported);
    // And opens again, replayed from the records it imported.
    let reopened = Ledger::open(again.path()).unwrap();
    assert_eq!(reopened.head().seq, kept.seq + 3);
    reopened.verify().unwrap();
    assert_eq!(lines_of(&reopened)[..lines.len()], lines[..]);
}

#[test]
fn an_import_appends_nothing_from_a_bad_export_or_into_a_ledger_in_use() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let (lines, kept) = history(&ledger);
    let export = |lines: &[String]| Cursor::new(lines.join("\n") + "\n");

    // Into a ledger that holds events: refused, nothing appended.
    let e = ledger.import(export(&lines), None).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("the ledger holds {} events", kept.seq)),
        "{e}"
    );
    assert_eq!(ledger.head(), kept);

    // A tampered export, one that does not reach the head kept elsewhere,
    // or one of a tenant only: refused at the seq, nothing appended.
    let fresh = common::store();
    let empty = Ledger::open(fresh.path()).unwrap();
    let tampered = changed(&lines, 2, |v| v["callableName"] = json!("tampered"));
    let beyond = head(kept.seq + 1, &kept.hash);
    let other = head(kept.seq, &"ab".repeat(32));
    for (lines, kept, seq) in [
        (&tampered, None, 3),
        (&lines, Some(&beyond), kept.seq + 1),
        (&lines, Some(&other), kept.seq),
        (&lines[1..].to_vec(), None, 1),
    ] {
        let e = empty.import(export(lines), kept).unwrap_err();
        match e {
            execution_ledger::CommandError::Storage(s) => assert_eq!(s.seq(), Some(seq), "{s}"),
            e => panic!("refused as {e}"),
        }
        assert_eq!(empty.head().seq, 0, "nothing appended");
    }
    // A handle scoped to a tenant imports nothing.
    let e = empty
        .tenant(tenant("acme"))
        .import(export(&lines), None)
        .unwrap_err();
    assert!(e.to_string().contains("scoped to a tenant"), "{e}");
    // The same export, whole, imports.
    empty.import(export(&lines), Some(&kept)).unwrap();
    assert_eq!(empty.head(), kept);
}

#[test]
fn the_cli_imports_an_export_into_a_new_ledger_and_verifies_it() {
    let store = common::store();
    let dir = tempfile::tempdir().unwrap();
    let (export, head, file) = exported_by_cli(&store, dir.path());
    let words: Vec<&str> = head.split_whitespace().collect();
    let kept = format!("{}:{}", words[1], words[3]);
    let file_arg = file.to_str().unwrap();

    // Into a new data directory (on either engine: a fresh database).
    let target = common::store();
    let into = |args: &[&str]| common::ledger_cli(target.path(), args);
    let o = into(&["import", file_arg, "--head", &kept]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with(&format!(
            "imported: {} events of 2 executions; the ledger's head is the export's, seq {} ({})",
            words[1], words[1], words[3]
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("ok: the export leads to seq {}", words[1])),
        "{text}"
    );
    assert!(
        text.contains(&format!("ok: {} events of 2 executions verified", words[1])),
        "{text}"
    );
    assert_eq!(stdout(&into(&["head"])), head);
    assert_eq!(into(&["export"]).stdout, export.stdout);
    // Again into the same ledger: refused, exit 1, nothing appended.
    let o = into(&["import", file_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("an export is imported into a new ledger"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&into(&["head"])), head);

    // A tampered export: exit 1 naming the seq, and no ledger left behind.
    let text = String::from_utf8(export.stdout.clone()).unwrap();
    let bad = dir.path().join("tampered.jsonl");
    std::fs::write(&bad, text.replacen("\"input\":\"b\"", "\"input\":\"c\"", 1)).unwrap();
    let nowhere = dir.path().join("new-ledger");
    let o = common::ledger_cli(&nowhere, &["import", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "error: damaged log at seq 2: line 2 of the export shows an event other than the one its record holds"
    );
    assert!(!nowhere.exists(), "a failed import leaves no ledger");
    // Standard input, --json.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args([
            "--json",
            "--data-dir",
            nowhere.to_str().unwrap(),
            "import",
            "-",
        ])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["imported"]["head"]["hash"], json!(words[3]));
    assert_eq!(v["verified"]["events"].to_string(), words[1]);
    // Usage errors exit 2.
    for (args, says) in [
        (
            vec!["import", file_arg, "--head", "12"],
            "--head: takes SEQ:HASH",
        ),
        (
            vec!["--tenant", "acme", "import", file_arg],
            "takes no --tenant",
        ),
        (
            vec!["--server", "http://127.0.0.1:9", "import", file_arg],
            "import builds a ledger opened here",
        ),
        (
            vec!["import", "/nonexistent/e.jsonl"],
            "FILE /nonexistent/e.jsonl",
        ),
    ] {
        let o = common::ledger_cli(&dir.path().join("other"), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}
