//! Metrics that tell outcomes, on a real `ledger serve`: `/metrics` counts
//! what became of each tenant's work by callable (completed, failed,
//! timeout, cancelled, retried, retried by hand, recovered), queue waits
//! and run times, worker leases alive and the HTTP requests by route and
//! status, with no execution id in any label; `ledger stats` totals by
//! status, a tenant's with `--tenant`.
//!
//! The text is read by the parser here and, when `LEDGER_PROMETHEUS_PYTHON`
//! names a Python with `prometheus_client` (`.ci/run` installs one), by
//! Prometheus's own parser too, and both must read the same samples.

use std::collections::BTreeMap;

use serde_json::{json, Value};

mod common;
use common::server::{client, json_of, once_status, submit_id, Server};

/// One sample: its name and labels, as the text writes them.
type Key = (String, BTreeMap<String, String>);

/// The samples of a Prometheus text, failing on any line it cannot read.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let mut labels = BTreeMap::new();
                // Values here hold no `",` (tenant ids and callables used).
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("key=\"value\"");
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        let value: f64 = value.parse().expect("a number");
        assert!(
            out.insert((name, labels), value).is_none(),
            "a repeated sample: {line}"
        );
    }
    out
}

fn get(samples: &BTreeMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .get(&(name.to_owned(), labels.clone()))
        .copied()
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

fn outcome(samples: &BTreeMap<Key, f64>, outcome: &str, tenant: &str, callable: &str) -> f64 {
    get(
        samples,
        "ledger_outcomes_total",
        &[
            ("callable", callable),
            ("outcome", outcome),
            ("tenant", tenant),
        ],
    )
}

/// What Prometheus's Python parser reads of `text`, as this file's keys.
fn parse_with_prometheus(python: &str, text: &str) -> BTreeMap<Key, f64> {
    use std::io::Write;
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps(samples))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the Python of LEDGER_PROMETHEUS_PYTHON runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client refused the text");
    let samples: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    samples.into_iter().map(|(n, l, v)| ((n, l), v)).collect()
}

async fn until_ended(c: &reqwest::Client, server: &Server, id: &str) -> Value {
    once_status(
        c,
        server,
        id,
        &["completed", "failed", "cancelled", "timeout"],
    )
    .await
}

async fn post(c: &reqwest::Client, server: &Server, path: &str, body: Value) -> (u16, Value) {
    json_of(c.post(server.url(path)).json(&body).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_tell_outcomes_by_tenant_and_callable_and_stats_total_them() {
    let store = common::store();
    let server = Server::start(store.path(), &[]);
    let c = client();
    let mut ids = Vec::new();

    // acme: three echoes complete, a sleep is cancelled, one times out.
    for i in 0..3 {
        let id = submit_id(
            &c,
            &server,
            json!({"tenantId": "acme", "callableName": "echo", "input": format!("e{i}")}),
        )
        .await;
        until_ended(&c, &server, &id).await;
        ids.push(id);
    }
    let sleeper = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "sleep", "input": "20000"}),
    )
    .await;
    once_status(&c, &server, &sleeper, &["running"]).await;
    let (status, _) = post(
        &c,
        &server,
        &format!("/v1/executions/{sleeper}/cancel"),
        json!({"reason": "enough"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        until_ended(&c, &server, &sleeper).await["status"],
        "cancelled"
    );
    let slow = submit_id(&c, &server, json!({"tenantId": "acme", "callableName": "sleep", "input": "5000", "config": {"timeoutMs": 100}})).await;
    assert_eq!(until_ended(&c, &server, &slow).await["status"], "timeout");
    ids.extend([sleeper, slow]);

    // beta: a fail with two attempts (one retried, then failed), retried
    // by hand (the new run fails the same way).
    let failing = json!({"tenantId": "beta", "callableName": "fail", "input": "boom",
                         "config": {"retry": {"maxAttempts": 2, "initialDelayMs": 0}}});
    let first = submit_id(&c, &server, failing).await;
    assert_eq!(until_ended(&c, &server, &first).await["status"], "failed");
    let (status, again) = post(
        &c,
        &server,
        &format!("/v1/executions/{first}/retry"),
        json!({"attempts": 1}),
    )
    .await;
    assert_eq!(status, 201, "{again}");
    let again = again["executionId"].as_str().unwrap().to_owned();
    assert_eq!(until_ended(&c, &server, &again).await["status"], "failed");
    ids.extend([first, again]);

    // beta: a worker elsewhere holds one attempt under a lease (alive),
    // and lets another's run out (recovered, then failed: no attempt left).
    let held = submit_id(
        &c,
        &server,
        json!({"tenantId": "beta", "callableName": "resize", "input": "a.png"}),
    )
    .await;
    let (status, got) = post(
        &c,
        &server,
        "/v1/workers/claim",
        json!({"worker": "w-1", "callables": ["resize"], "max": 1, "leaseMs": 60000}),
    )
    .await;
    assert_eq!(
        (status, got["attempts"].as_array().unwrap().len()),
        (200, 1),
        "{got}"
    );
    let lost = submit_id(&c, &server, json!({"tenantId": "beta", "callableName": "resize", "input": "b.png", "config": {"retry": {"maxAttempts": 1}}})).await;
    let (status, got) = post(
        &c,
        &server,
        "/v1/workers/claim",
        json!({"worker": "w-2", "callables": ["resize"], "max": 1, "leaseMs": 100}),
    )
    .await;
    assert_eq!(
        (status, got["attempts"][0]["executionId"].as_str()),
        (200, Some(lost.as_str())),
        "{got}"
    );
    assert_eq!(until_ended(&c, &server, &lost).await["status"], "failed");
    ids.extend([held.clone(), lost]);

    // Requests that are refused, and one that matches no route.
    let missing = "01a23e4f-0000-7000-8000-000000000000";
    let (status, _) = json_of(
        c.get(server.url(&format!("/v1/executions/{missing}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = json_of(c.get(server.url("/v1/nothing-here")).send().await.unwrap()).await;
    assert_eq!(status, 404);

    let text = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse(&text);
    for (o, tenant, callable, n) in [
        ("completed", "acme", "echo", 3.0),
        ("cancelled", "acme", "sleep", 1.0),
        ("timeout", "acme", "sleep", 1.0),
        ("retried", "beta", "fail", 1.0),
        ("failed", "beta", "fail", 2.0),
        ("retried_by_hand", "beta", "fail", 1.0),
        ("recovered", "beta", "resize", 1.0),
        ("failed", "beta", "resize", 1.0),
    ] {
        assert_eq!(
            outcome(&samples, o, tenant, callable),
            n,
            "{o} {tenant} {callable}"
        );
    }
    let outcomes = samples
        .keys()
        .filter(|(n, _)| n == "ledger_outcomes_total")
        .count();
    assert_eq!(outcomes, 8, "no outcome series beyond those:\n{text}");
    // Started attempts: 3 echo, 2 sleep, 3 fail (2 + the retry's 1), 2 resize.
    for (callable, started) in [
        ("echo", 3.0),
        ("sleep", 2.0),
        ("fail", 3.0),
        ("resize", 2.0),
    ] {
        let count = get(
            &samples,
            "ledger_queue_wait_seconds_count",
            &[("callable", callable)],
        );
        assert_eq!(count, started, "queue waits of {callable}");
        let inf = get(
            &samples,
            "ledger_queue_wait_seconds_bucket",
            &[("callable", callable), ("le", "+Inf")],
        );
        assert_eq!(inf, started);
    }
    // Ended attempts: all but the one still held.
    for (callable, ended) in [
        ("echo", 3.0),
        ("sleep", 2.0),
        ("fail", 3.0),
        ("resize", 1.0),
    ] {
        let count = get(
            &samples,
            "ledger_run_seconds_count",
            &[("callable", callable)],
        );
        assert_eq!(count, ended, "run times of {callable}");
    }
    // The timed-out sleep ran its 100 ms at least (the cancelled one
    // may have run for less than a millisecond).
    assert!(get(&samples, "ledger_run_seconds_sum", &[("callable", "sleep")]) >= 0.1);
    let fast = get(
        &samples,
        "ledger_run_seconds_bucket",
        &[("callable", "sleep"), ("le", "0.05")],
    );
    assert!(fast <= 1.0, "{fast}");
    assert_eq!(get(&samples, "ledger_leases_alive", &[]), 1.0);
    let http = |method: &str, route: &str, status: &str| {
        get(
            &samples,
            "ledger_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(http("POST", "/v1/executions", "201"), 8.0);
    assert_eq!(http("POST", "/v1/executions/{id}/retry", "201"), 1.0);
    assert_eq!(http("POST", "/v1/workers/claim", "200"), 2.0);
    assert_eq!(http("GET", "/v1/executions/{id}", "404"), 1.0);
    assert_eq!(http("GET", "unmatched", "404"), 1.0);
    // Bounded labels: no execution id anywhere in the text.
    for id in ids.iter().map(String::as_str).chain([missing]) {
        assert!(!text.contains(id), "{id} is in a label");
    }
    // Every family says what it is.
    for family in [
        "ledger_outcomes_total",
        "ledger_queue_wait_seconds",
        "ledger_run_seconds",
        "ledger_leases_alive",
        "ledger_http_requests_total",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
    match std::env::var("LEDGER_PROMETHEUS_PYTHON") {
        Ok(python) => {
            let theirs = parse_with_prometheus(&python, &text);
            assert_eq!(theirs.len(), samples.len());
            for (key, value) in &samples {
                let their = theirs.get(key).unwrap_or_else(|| panic!("prometheus_client has no {key:?}"));
                assert!((their - value).abs() < 1e-9, "{key:?}: {their} against {value}");
            }
            eprintln!("prometheus_client read the same {} samples", samples.len());
        }
        Err(_) => eprintln!("LEDGER_PROMETHEUS_PYTHON is not set: the text was read by this test's parser only (.ci/run sets it)"),
    }

    // `ledger stats` through the server: every execution by status, and a
    // tenant's alone.
    let stats = |tenant: Option<&str>| {
        let mut args = vec!["--server", server.url.as_str()];
        if let Some(t) = tenant {
            args.extend(["--tenant", t]);
        }
        args.extend(["--json", "stats"]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
        serde_json::from_str::<Value>(&common::stdout(&out)).unwrap()
    };
    let all = stats(None);
    assert_eq!(
        all["executions"],
        json!({"queued": 0, "running": 1, "completed": 3, "failed": 3, "cancelled": 1, "timeout": 1})
    );
    assert!(all.get("tenant").is_none());
    let beta = stats(Some("beta"));
    assert_eq!(beta["tenant"], "beta");
    assert_eq!(
        beta["executions"],
        json!({"queued": 0, "running": 1, "completed": 0, "failed": 3, "cancelled": 0, "timeout": 0})
    );
    assert_eq!(beta["live"]["running"], 1);
    assert_eq!(stats(Some("acme"))["executions"]["completed"], 3);
    let (status, body) = json_of(
        c.get(server.url("/v1/stats?tenantId=no%20such"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("tenantId"),
        "{body}"
    );

    // The held attempt completes; after a restart the totals are the same
    // (they are read from the log), the outcome counters start again.
    let (status, _) = post(
        &c,
        &server,
        &format!("/v1/executions/{held}/attempts/1/complete"),
        json!({"output": "ok"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(server.stop().success());
    let out = common::ledger_cli(store.path(), &["stats"]);
    let text = common::stdout(&out);
    assert!(text.contains("executions  9\n"), "{text}");
    assert!(
        text.contains("  completed 4\n")
            && text.contains("  failed    3\n")
            && text.contains("  running   0\n"),
        "{text}"
    );
    let out = common::ledger_cli(store.path(), &["--tenant", "acme", "stats"]);
    let text = common::stdout(&out);
    assert!(
        text.starts_with("tenant      acme\n") && text.contains("executions  5\n"),
        "{text}"
    );
}
