//! `ledger worker --exec` as a real process against a real `ledger serve`:
//! stdout becomes the output, a failing command a failed attempt with its
//! exit status and stderr, the execution reaches the command's environment,
//! cancellation and timeouts kill the child, SIGTERM lets running children
//! finish; and `ledger run` serving the other commands while it runs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::server::{client, json_of, submit_id as submit, Server};

fn ledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
}

/// `ledger worker` for `callable` running `exec`, through `server`.
fn worker(server: &Server, callable: &str, exec: &str, extra: &[&str]) -> Child {
    ledger()
        .args(["--server", &server.url, "worker", "--callable", callable])
        .args(["--exec", exec])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a child writes to stderr, line by line, as it comes.
struct Said(std::sync::Arc<std::sync::Mutex<String>>);

impl Said {
    fn of(child: &mut Child) -> Said {
        let pipe = child.stderr.take().expect("stderr is piped");
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let into = said.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = into.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Said(said)
    }

    fn all(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until a line contains `needle`.
    async fn until(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.all().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "never said {needle:?}; said:\n{}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The record once it satisfies `done`, polled (generous timeout).
async fn until(c: &reqwest::Client, server: &Server, id: &str, done: fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = json_of(
            c.get(server.url(&format!("/v1/executions/{id}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "not there in time: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finished(v: &Value) -> bool {
    !matches!(v["status"].as_str(), Some("queued" | "running"))
}

fn running(v: &Value) -> bool {
    v["status"] == "running"
}

fn alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_completes_a_failing_command_fails_and_the_execution_is_in_the_environment() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let script = r#"
        input=$(cat)
        case "$input" in
          fail*) echo "it went wrong: $input" >&2; exit 3 ;;
          text*) echo "plain $input" ;;
          *) printf '{"upper": "%s", "attempt": %s, "size": "%s", "ctx": %s, "tenant": "%s", "callable": "%s", "id": "%s"}' \
               "$(echo "$input" | tr a-z A-Z)" "$LEDGER_ATTEMPT" "$LEDGER_CONTEXT_THUMB_SIZE" \
               "$LEDGER_CONTEXT" "$LEDGER_TENANT_ID" "$LEDGER_CALLABLE" "$LEDGER_EXECUTION_ID" ;;
        esac"#;
    let json_one = submit(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "thumb", "input": "cat",
               "context": {"thumb-size": "64"}}),
    )
    .await;
    let text_one = submit(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "thumb", "input": "text"}),
    )
    .await;
    let failing = submit(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "thumb", "input": "fail now"}),
    )
    .await;
    let mut w = worker(&server, "thumb", script, &["--concurrency", "3"]);
    let done = until(&c, &server, &json_one, finished).await;
    assert_eq!(done["status"], "completed", "{done}");
    let out = &done["output"];
    assert_eq!(out["upper"], "CAT");
    assert_eq!(out["attempt"], 1);
    assert_eq!(out["size"], "64");
    assert_eq!(out["ctx"], json!({"thumb-size": "64"}));
    assert_eq!(out["tenant"], "acme");
    assert_eq!(out["callable"], "thumb");
    assert_eq!(out["id"], json_one.as_str());
    let text = until(&c, &server, &text_one, finished).await;
    assert_eq!(text["output"], "plain text");
    let failed = until(&c, &server, &failing, finished).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "exit_status");
    assert_eq!(
        failed["error"]["message"],
        "the command exited with status 3: it went wrong: fail now"
    );
    assert_eq!(failed["error"]["details"]["exitCode"], 3);
    sigterm(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_or_a_timeout_kills_the_child_and_sigterm_lets_a_running_child_finish() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let pids = tempfile::tempdir().unwrap();
    // Each attempt writes its shell's pid, then sleeps as long as its input says.
    let script = format!(
        "echo $$ > {}/$LEDGER_EXECUTION_ID; sleep $(cat); echo '\"slept\"'",
        pids.path().display()
    );
    let mut w = worker(
        &server,
        "nap",
        &script,
        &["--concurrency", "2", "--lease-ms", "2000"],
    );
    let said = Said::of(&mut w);
    let cancelled = submit(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "nap", "input": "30"}),
    )
    .await;
    until(&c, &server, &cancelled, running).await;
    let pid_file = pids.path().join(&cancelled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "the child never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(alive(&pid));
    let (status, _) = json_of(
        c.post(server.url(&format!("/v1/executions/{cancelled}/cancel")))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    // Told at its next heartbeat (every lease/3, about 670 ms): the child
    // dies. (A lease long enough that a heartbeat of a loaded machine, on
    // either engine, is never late.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&pid) {
        assert!(
            Instant::now() < deadline,
            "the cancelled child {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A timeout: the server records it, the worker kills the child.
    let timed = submit(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "nap", "input": "30",
               "config": {"timeoutMs": 800}}),
    )
    .await;
    let ended = until(&c, &server, &timed, finished).await;
    assert_eq!(ended["status"], "timeout", "{ended}");
    let pid = std::fs::read_to_string(pids.path().join(&timed))
        .unwrap()
        .trim()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&pid) {
        assert!(
            Instant::now() < deadline,
            "the timed-out child {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // SIGTERM while an attempt runs and a claim waits: the worker tells
    // the server, which answers the claim at once; no new claims, the
    // child finishes.
    let last = submit(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "nap", "input": "1"}),
    )
    .await;
    said.until(&format!("{last} attempt 1: started")).await;
    // The next claim (for the free slot) is at the server by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&w);
    said.until("stopping on SIGTERM").await;
    let after = submit(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "nap", "input": "0"}),
    )
    .await;
    assert!(wait_exit(&mut w, Duration::from_secs(20)).success());
    let done = until(&c, &server, &last, finished).await;
    assert_eq!(
        (&done["status"], &done["output"]),
        (&json!("completed"), &json!("slept")),
        "{done}\nthe worker said:\n{}",
        said.all()
    );
    let (_, left) = json_of(
        c.get(server.url(&format!("/v1/executions/{after}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(left["status"], "queued", "a stopping worker claims nothing");
}

#[test]
fn a_worker_without_a_server_says_so_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["worker", "--callable", "x", "--exec", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no ledger server for"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn ledger_run_serves_the_other_commands_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        ledger()
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap()
    };
    let first = run(&[
        "--tenant",
        "acme",
        "submit",
        "--callable",
        "sleep",
        "--input",
        "200",
    ]);
    assert!(first.status.success());
    let mut runner = ledger()
        .arg("--data-dir")
        .arg(&data)
        .args(["run", "--workers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !data.join("serve.json").exists() {
        assert!(Instant::now() < deadline, "ledger run never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Submit and read through the running `ledger run`.
    let out = run(&[
        "--tenant",
        "acme",
        "submit",
        "--callable",
        "echo",
        "--input",
        "via run",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let out = run(&["--json", "show", &id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["status"] == "completed" {
            break v;
        }
        assert!(Instant::now() < deadline, "not run: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(shown["output"], "via run");
    sigterm(&runner);
    assert!(wait_exit(&mut runner, Duration::from_secs(20)).success());
    assert!(
        !data.join("serve.json").exists(),
        "serve.json is removed on exit"
    );
    // The directory is free again: opened here.
    assert!(run(&["verify"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_leaves_a_process_behind_or_writes_too_much_still_gets_its_answer() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    // `sleep 30 &` keeps stdout open after sh exits; a big output is over
    // the limit once it is JSON.
    let script = r#"if [ "$(cat)" = big ]; then head -c 300000 /dev/zero | tr '\0' 'x'; else sleep 30 & echo '"ok"'; fi"#;
    let mut w = worker(
        &server,
        "odd",
        script,
        &["--concurrency", "2", "--lease-ms", "1000"],
    );
    let behind = submit(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "odd", "input": "small",
               "config": {"retry": {"maxAttempts": 3}}}),
    )
    .await;
    let big = submit(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "odd", "input": "big",
               "config": {"retry": {"maxAttempts": 3}}}),
    )
    .await;
    let done = until(&c, &server, &behind, finished).await;
    assert_eq!(
        (&done["status"], &done["output"], &done["attempt"]),
        (&json!("completed"), &json!("ok"), &json!(1)),
        "{done}"
    );
    let failed = until(&c, &server, &big, finished).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "output_too_large", "{failed}");
    assert_eq!(failed["attempt"], 1, "not retried, not left to its lease");
    sigterm(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(10)).success());
}
