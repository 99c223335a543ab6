//! Schedules, driven by a clock the test moves: a slot fires once (its
//! `queued` event names the schedule and the slot), never twice — not when
//! asked again, not after a restart, not from a second ledger on the same
//! PostgreSQL database — and slots missed while nothing ran are skipped or
//! caught up once, as the schedule says. Also two real `ledger serve`
//! processes on one database firing a per-second schedule.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use execution_ledger::{
    EventKind, Ledger, ListFilter, Missed, NewSchedule, Schedule, ScheduleSlot, Submission,
    TenantId,
};

mod common;
use common::TestClock;

fn acme() -> TenantId {
    "acme".parse().unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn set(clock: &TestClock, t: &str) {
    *clock.0.lock().unwrap() = at(t);
}

fn open(path: &std::path::Path, clock: &TestClock) -> Ledger {
    Ledger::builder(path).clock(clock.clone()).open().unwrap()
}

fn report(input: &str) -> Submission {
    let mut s = Submission::new("echo");
    s.input = Some(input.to_owned());
    s
}

/// Every execution a schedule fired, by slot.
fn fired_by_slot(ledger: &Ledger) -> HashMap<DateTime<Utc>, Vec<ScheduleSlot>> {
    let page = ledger.list(&ListFilter::new(), None, 1000).unwrap();
    let mut out: HashMap<_, Vec<_>> = HashMap::new();
    for e in page.executions {
        if let Some(s) = e.schedule {
            out.entry(s.slot).or_default().push(s);
        }
    }
    out
}

#[test]
fn a_slot_fires_once_across_calls_and_restarts_and_missed_slots_follow_the_policy() {
    let store = common::store();
    let clock = TestClock::new();
    set(&clock, "2026-12-04T10:02:00Z");
    let ledger = open(store.path(), &clock);
    let every5 = ledger
        .add_schedule(
            Some(&acme()),
            NewSchedule::new("report", "*/5 * * * *", report("r")).by("ops@acme"),
        )
        .wait()
        .unwrap();
    assert_eq!(every5.cursor, at("2026-12-04T10:02:00Z"));
    assert_eq!(
        every5.next_slots(every5.cursor, 2).unwrap(),
        [at("2026-12-04T10:05:00Z"), at("2026-12-04T10:10:00Z")]
    );
    ledger
        .add_schedule(
            Some(&acme()),
            NewSchedule::new("catch-up", "*/5 * * * *", report("c")).missed(Missed::Once),
        )
        .wait()
        .unwrap();
    // Not due before 10:05.
    set(&clock, "2026-12-04T10:04:59Z");
    assert!(ledger.fire_schedules().unwrap().is_empty());
    set(&clock, "2026-12-04T10:05:01Z");
    let fired = ledger.fire_schedules().unwrap();
    assert_eq!(fired.len(), 2);
    assert!(fired
        .iter()
        .all(|f| f.created && f.slot == at("2026-12-04T10:05:00Z") && f.missed == 0));
    // Asked again within the slot: nothing more.
    assert!(ledger.fire_schedules().unwrap().is_empty());
    let id = fired
        .iter()
        .find(|f| f.name == "report")
        .unwrap()
        .execution_id
        .unwrap();
    let e = ledger.get(id).unwrap();
    assert_eq!(e.tenant_id, acme());
    assert_eq!(e.input.as_deref(), Some("r"));
    assert_eq!(
        e.idempotency_key.as_deref(),
        Some("schedule:report:2026-12-04T10:05:00Z")
    );
    let queued = ledger.history(id).unwrap().remove(0);
    let EventKind::Queued(s) = queued.kind else {
        panic!("{queued:?}")
    };
    assert_eq!(
        s.schedule,
        Some(ScheduleSlot {
            name: "report".into(),
            slot: at("2026-12-04T10:05:00Z"),
            missed: 0
        })
    );

    // A restart within the next slot's grace: 10:10 was missed, 10:15 fires;
    // "catch-up" also runs 10:10 once, first.
    drop(ledger);
    set(&clock, "2026-12-04T10:15:30Z");
    let ledger = open(store.path(), &clock);
    let fired = ledger.fire_schedules().unwrap();
    let seen: Vec<_> = fired
        .iter()
        .map(|f| (f.name.as_str(), f.slot, f.missed, f.created))
        .collect();
    assert_eq!(
        seen,
        [
            ("catch-up", at("2026-12-04T10:10:00Z"), 0, true),
            ("catch-up", at("2026-12-04T10:15:00Z"), 0, true),
            ("report", at("2026-12-04T10:15:00Z"), 1, true),
        ]
    );
    // A restart past every slot's grace: 10:20, 10:25 and 10:30 missed.
    // "report" skips them all; "catch-up" fires 10:30 once.
    drop(ledger);
    set(&clock, "2026-12-04T10:31:30Z");
    let ledger = open(store.path(), &clock);
    let fired = ledger.fire_schedules().unwrap();
    let by_name: HashMap<_, _> = fired.iter().map(|f| (f.name.as_str(), f)).collect();
    assert_eq!(
        (by_name["report"].execution_id, by_name["report"].missed),
        (None, 3)
    );
    assert_eq!(by_name["catch-up"].missed, 2);
    assert!(by_name["catch-up"].created);
    assert!(
        ledger.fire_schedules().unwrap().is_empty(),
        "the cursor moved past the skipped slots"
    );
    let slots = fired_by_slot(&ledger);
    assert_eq!(slots.len(), 4, "10:05, 10:10, 10:15, 10:30: {slots:?}");
    assert_eq!(slots[&at("2026-12-04T10:05:00Z")].len(), 2);
    assert_eq!(slots[&at("2026-12-04T10:10:00Z")].len(), 1);
    assert_eq!(slots[&at("2026-12-04T10:15:00Z")].len(), 2);
    assert_eq!(slots[&at("2026-12-04T10:30:00Z")].len(), 1);
    assert_eq!(slots[&at("2026-12-04T10:30:00Z")][0].missed, 2);

    // The schedules say what they last fired.
    let kept: HashMap<String, Schedule> = ledger
        .schedules()
        .unwrap()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    assert_eq!(kept["report"].cursor, at("2026-12-04T10:30:00Z"));
    assert_eq!(
        kept["report"].last_fired.as_ref().unwrap().slot,
        at("2026-12-04T10:15:00Z")
    );
    assert_eq!(
        kept["catch-up"].last_fired.as_ref().unwrap().slot,
        at("2026-12-04T10:30:00Z")
    );
    assert_eq!(kept["report"].by.as_deref(), Some("ops@acme"));
}

#[test]
fn paused_schedules_fire_nothing_and_resume_from_now() {
    let store = common::store();
    let clock = TestClock::new();
    set(&clock, "2026-12-04T09:59:00Z");
    let ledger = open(store.path(), &clock);
    let zoned =
        NewSchedule::new("paris-9", "0 9 * * *", report("bonjour")).timezone("Europe/Paris");
    ledger.add_schedule(Some(&acme()), zoned).wait().unwrap();
    ledger
        .add_schedule(
            Some(&acme()),
            NewSchedule::new("minutely", "* * * * *", report("m")),
        )
        .wait()
        .unwrap();
    let paused = ledger
        .pause_schedule(Some(&acme()), "minutely")
        .wait()
        .unwrap();
    assert!(paused.paused);
    assert!(ledger
        .pause_schedule(Some(&acme()), "minutely")
        .wait()
        .unwrap_err()
        .to_string()
        .contains("paused already"));
    set(&clock, "2026-12-04T10:03:10Z");
    assert!(
        ledger.fire_schedules().unwrap().is_empty(),
        "paused: 10:00 to 10:03 do not fire"
    );
    ledger
        .resume_schedule(Some(&acme()), "minutely")
        .wait()
        .unwrap();
    assert!(
        ledger.fire_schedules().unwrap().is_empty(),
        "resumed from now: nothing before it fires"
    );
    set(&clock, "2026-12-04T10:04:00Z");
    let fired = ledger.fire_schedules().unwrap();
    assert_eq!(
        (fired.len(), fired[0].slot, fired[0].missed),
        (1, at("2026-12-04T10:04:00Z"), 0)
    );
    // 09:00 in Paris is 08:00 UTC: the next day's.
    set(&clock, "2026-12-05T08:00:20Z");
    let fired = ledger.fire_schedules().unwrap();
    let paris = fired.iter().find(|f| f.name == "paris-9").unwrap();
    assert_eq!(
        (paris.slot, paris.created),
        (at("2026-12-05T08:00:00Z"), true)
    );
    // Removed: no more firings; its executions stay.
    let removed = ledger
        .remove_schedule(Some(&acme()), "minutely")
        .wait()
        .unwrap();
    assert_eq!(removed.name, "minutely");
    set(&clock, "2026-12-05T08:05:00Z");
    assert!(ledger
        .fire_schedules()
        .unwrap()
        .iter()
        .all(|f| f.name != "minutely"));
    assert!(ledger.get(fired[0].execution_id.unwrap()).is_ok());
    assert_eq!(ledger.schedules().unwrap().len(), 1);
}

#[test]
fn bad_schedules_are_refused_naming_the_field_and_nothing_is_kept() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let mut keyed = report("k");
    keyed.idempotency_key = Some("mine".into());
    for (tenant, new, says) in [
        (
            Some(acme()),
            NewSchedule::new("bad", "*/5 * * *", report("x")),
            "cron: ",
        ),
        (
            Some(acme()),
            NewSchedule::new("bad", "* * * * *", report("x")).timezone("Mars/Olympus"),
            "timezone: ",
        ),
        (
            Some(acme()),
            NewSchedule::new("a b", "* * * * *", report("x")),
            "name: ",
        ),
        (
            Some(acme()),
            NewSchedule::new("bad", "* * * * *", keyed),
            "submission: ",
        ),
        (
            Some(acme()),
            NewSchedule::new("bad", "* * * * *", Submission::new("")),
            "callable name",
        ),
        (
            None,
            NewSchedule::new("bad", "* * * * *", report("x")),
            "tenant: ",
        ),
    ] {
        let e = ledger
            .add_schedule(tenant.as_ref(), new)
            .wait()
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{says}: {e}");
    }
    assert!(ledger.schedules().unwrap().is_empty());
    ledger
        .add_schedule(
            Some(&acme()),
            NewSchedule::new("once", "* * * * *", report("x")),
        )
        .wait()
        .unwrap();
    let e = ledger
        .add_schedule(
            Some(&acme()),
            NewSchedule::new("once", "* * * * *", report("y")),
        )
        .wait()
        .unwrap_err();
    assert!(e.to_string().contains("already"), "{e}");
    let e = ledger
        .remove_schedule(Some(&acme()), "nope")
        .wait()
        .unwrap_err();
    assert!(e.to_string().contains("has no schedule \"nope\""), "{e}");
    // Another tenant's handle sees none of acme's, and cannot touch them.
    let beta = ledger.tenant("beta".parse().unwrap());
    assert!(beta.schedules().unwrap().is_empty());
    assert!(beta.remove_schedule(None, "once").wait().is_err());
    assert!(beta
        .remove_schedule(Some(&acme()), "once")
        .wait()
        .unwrap_err()
        .to_string()
        .contains("tenant: "));
    assert_eq!(ledger.schedules().unwrap().len(), 1);
}

/// Two ledgers on one PostgreSQL database — two processes, as far as the
/// database can tell — fire the same slots: each slot has one execution.
#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl): cargo test --test schedules -- --ignored"]
fn two_ledgers_on_one_database_fire_each_slot_once() {
    let url = common::postgres::server().database();
    let path = std::path::Path::new(&url);
    let clock = TestClock::new();
    set(&clock, "2026-12-04T10:00:30Z");
    let one = open(path, &clock);
    let two = open(path, &clock);
    one.add_schedule(
        Some(&acme()),
        NewSchedule::new("minutely", "* * * * *", report("m")),
    )
    .wait()
    .unwrap();
    let mut created = 0;
    for minute in 1..=20 {
        set(&clock, &format!("2026-12-04T10:{minute:02}:05Z"));
        // Both at once, from two threads, as two processes would.
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| one.fire_schedules().unwrap());
            let b = s.spawn(|| two.fire_schedules().unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        let ids: Vec<_> = a.iter().chain(&b).filter_map(|f| f.execution_id).collect();
        assert!(!ids.is_empty(), "minute {minute}: one of them fires");
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "minute {minute}: one execution: {a:?} {b:?}"
        );
        created += a.iter().chain(&b).filter(|f| f.created).count();
    }
    assert_eq!(created, 20, "each slot submitted once");
    let slots = fired_by_slot(&two);
    assert_eq!(slots.len(), 20);
    assert!(slots.values().all(|v| v.len() == 1));
}

/// Two real `ledger serve` processes on one database, each firing the
/// schedules every second: a per-second schedule gets one execution per
/// slot, whichever process submitted it.
#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl): cargo test --test schedules -- --ignored"]
fn two_servers_on_one_database_fire_each_slot_once() {
    let url = common::postgres::server().database();
    let path = std::path::Path::new(&url);
    let a = common::server::Server::start(path, &[]);
    let b = common::server::Server::start(path, &[]);
    let ledger = Ledger::open(path).unwrap();
    ledger
        .add_schedule(
            Some(&acme()),
            NewSchedule::new("every-second", "* * * * * *", report("s")),
        )
        .wait()
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    ledger
        .remove_schedule(Some(&acme()), "every-second")
        .wait()
        .unwrap();
    assert!(a.stop().success() && b.stop().success());
    let slots = fired_by_slot(&Ledger::open(path).unwrap());
    assert!(
        slots.len() >= 4,
        "about one slot a second for 6 s: {}",
        slots.len()
    );
    // None lost between the first and the last: one a second.
    let mut times: Vec<_> = slots.keys().copied().collect();
    times.sort();
    for pair in times.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_seconds(),
            1,
            "a slot lost between {} and {}",
            pair[0],
            pair[1]
        );
    }
    for (slot, fired) in &slots {
        assert_eq!(fired.len(), 1, "slot {slot} fired {} times", fired.len());
    }
    // Both processes were there to fire: the submissions came through
    // both (their workers' names tell which ran them, not which fired;
    // the slots' single executions are the point).
    eprintln!("{} slots, each fired once", slots.len());
}

/// Schedules over HTTP with tenant keys on a real server, and through the
/// CLI: what each answers, what each refuses, and a per-second schedule
/// the server fires on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_over_http_and_the_cli_on_a_real_server() {
    use common::server::{client, json_of, sha256_hex, Server};
    use serde_json::{json, Value};
    let dir = tempfile::tempdir().unwrap();
    let (acme_key, globex_key, admin_key) =
        ("acme-secret-key", "globex-secret-key", "admin-secret-key");
    let server = Server::with_keys(
        dir.path(),
        json!([
            {"tenant": "acme", "sha256": sha256_hex(acme_key)},
            {"tenant": "globex", "sha256": sha256_hex(globex_key)},
            {"admin": true, "sha256": sha256_hex(admin_key)},
        ]),
    );
    let c = client();
    let call = |method: reqwest::Method, path: &str, key: &str, body: Option<Value>| {
        let mut r = c.request(method, server.url(path)).bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move { json_of(r.send().await.unwrap()).await }
    };
    use reqwest::Method;
    let tick = json!({"name": "tick", "cron": "* * * * * *", "missed": "skip", "by": "ops@acme",
                      "submission": {"callableName": "echo", "input": "tick"}});
    let (status, added) = call(Method::POST, "/v1/schedules", acme_key, Some(tick.clone())).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(
        (
            added["tenantId"].as_str(),
            added["timezone"].as_str(),
            added["paused"].as_bool()
        ),
        (Some("acme"), Some("UTC"), Some(false))
    );
    // Refused, naming the field: a taken name (409), a bad expression or
    // zone, an unknown field, a submission with a key (400); another
    // tenant's name in the body (400).
    let (status, body) = call(Method::POST, "/v1/schedules", acme_key, Some(tick.clone())).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    for (body, says) in [
        (
            json!({"name": "b", "cron": "* *", "submission": {"callableName": "echo"}}),
            "cron: ",
        ),
        (
            json!({"name": "b", "cron": "* * * * *", "timezone": "Nowhere/Else", "submission": {"callableName": "echo"}}),
            "timezone: ",
        ),
        (
            json!({"name": "b", "cron": "* * * * *", "submission": {"callableName": "echo", "colour": "red"}}),
            "submission.colour",
        ),
        (
            json!({"name": "b", "cron": "* * * * *", "submission": {"callableName": "echo", "idempotencyKey": "k"}}),
            "submission: ",
        ),
        (
            json!({"name": "b", "cron": "* * * * *", "missed": "sometimes", "submission": {"callableName": "echo"}}),
            "missed",
        ),
        (
            json!({"name": "b", "cron": "* * * * *", "tenantId": "globex", "submission": {"callableName": "echo"}}),
            "tenantId",
        ),
    ] {
        let (status, got) = call(Method::POST, "/v1/schedules", acme_key, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {got}");
        assert!(
            got["error"]["message"].as_str().unwrap().contains(says),
            "{says}: {got}"
        );
    }
    // The server fires it every second: executions appear, each naming it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, listed) = call(Method::GET, "/v1/schedules", acme_key, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 1);
    let last = listed["schedules"][0]["lastFired"].clone();
    let id = last["executionId"].as_str().expect("it fired").to_owned();
    let (_, e) = call(Method::GET, &format!("/v1/executions/{id}"), acme_key, None).await;
    assert_eq!(e["schedule"]["name"], "tick");
    assert_eq!(e["schedule"]["slot"], last["slot"]);
    assert_eq!(
        e["idempotencyKey"].as_str().unwrap(),
        format!("schedule:tick:{}", last["slot"].as_str().unwrap())
    );
    // Another tenant sees none of it and reaches none of it.
    let (_, theirs) = call(Method::GET, "/v1/schedules", globex_key, None).await;
    assert_eq!(theirs["schedules"], json!([]));
    let (status, _) = call(Method::POST, "/v1/schedules/tick/pause", globex_key, None).await;
    assert_eq!(status, 404);
    // Paused: no more firings; pausing again is a conflict.
    let (status, paused) = call(Method::POST, "/v1/schedules/tick/pause", acme_key, None).await;
    assert_eq!((status, paused["paused"].as_bool()), (200, Some(true)));
    let (status, _) = call(Method::POST, "/v1/schedules/tick/pause", acme_key, None).await;
    assert_eq!(status, 409);
    let fired = |ledger_listing: &Value| ledger_listing["executions"].as_array().unwrap().len();
    let (_, before) = call(Method::GET, "/v1/executions?limit=1000", acme_key, None).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, after) = call(Method::GET, "/v1/executions?limit=1000", acme_key, None).await;
    assert_eq!(
        fired(&before),
        fired(&after),
        "a paused schedule fires nothing"
    );
    assert!(
        fired(&after) >= 2,
        "it fired while active: {}",
        fired(&after)
    );
    // The admin names the tenant; removed, it is gone (404 after).
    let (status, _) = call(
        Method::POST,
        "/v1/schedules/tick/resume?tenantId=acme",
        admin_key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, removed) = call(
        Method::DELETE,
        "/v1/schedules/tick?tenantId=acme",
        admin_key,
        None,
    )
    .await;
    assert_eq!((status, removed["name"].as_str()), (200, Some("tick")));
    let (status, body) = call(Method::DELETE, "/v1/schedules/tick", acme_key, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    // The CLI, through the server (its serve.json; on PostgreSQL, on the
    // database itself), with the admin key.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
            .arg(common::place_flag(&server.dir))
            .arg(&server.dir)
            .args(args)
            .env("LEDGER_API_KEY", admin_key)
            .output()
            .unwrap()
    };
    let out = cli(&[
        "--tenant",
        "acme",
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Europe/Paris",
        "--callable",
        "echo",
        "--input",
        "report",
        "--by",
        "ops@acme",
    ]);
    let text = common::stdout(&out);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        text.starts_with(
            "added schedule nightly for acme: 0 3 * * * (Europe/Paris), missed slots: skip; next "
        ),
        "{text}"
    );
    // 03:00 in Paris is 02:00 UTC in winter.
    assert!(text.contains("T02:00:00.000Z"), "{text}");
    for (args, code, says) in [
        (
            vec![
                "--tenant",
                "acme",
                "schedule",
                "add",
                "nightly",
                "--cron",
                "0 3 * * *",
                "--callable",
                "echo",
            ],
            1,
            "already",
        ),
        (
            vec![
                "--tenant",
                "acme",
                "schedule",
                "add",
                "x",
                "--cron",
                "0 3 * *",
                "--callable",
                "echo",
            ],
            2,
            "cron: ",
        ),
        (
            vec![
                "schedule",
                "add",
                "x",
                "--cron",
                "0 3 * * *",
                "--callable",
                "echo",
            ],
            2,
            "--tenant",
        ),
        (
            vec!["--tenant", "acme", "schedule", "remove", "nope"],
            1,
            "has no schedule \"nope\"",
        ),
        (
            vec![
                "--tenant",
                "acme",
                "schedule",
                "add",
                "x",
                "--cron",
                "0 3 * * *",
                "--callable",
                "echo",
                "--missed",
                "maybe",
            ],
            2,
            "missed",
        ),
    ] {
        let out = cli(&args);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = cli(&["schedule", "list"]);
    let text = common::stdout(&out);
    assert!(
        text.starts_with(
            "TENANT  NAME     CRON       TIMEZONE      CALLABLE  MISSED  STATE   NEXT"
        ),
        "{text}"
    );
    assert!(
        text.contains("acme    nightly  0 3 * * *  Europe/Paris  echo      skip    active  "),
        "{text}"
    );
    let out = cli(&["--tenant", "acme", "schedule", "pause", "nightly"]);
    assert_eq!(common::stdout(&out), "paused schedule nightly of acme\n");
    // The history of a firing names its schedule and slot.
    let out = cli(&["history", &id]);
    let slot =
        at(last["slot"].as_str().unwrap()).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert!(
        common::stdout(&out).contains(&format!(" schedule tick slot {slot}")),
        "{}",
        common::stdout(&out)
    );
    assert!(server.stop().success());
}
