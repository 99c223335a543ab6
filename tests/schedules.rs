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

    // A restart within the next slot's grace: 10:10 was missed, 10:15 fires.
    drop(ledger);
    set(&clock, "2026-12-04T10:15:30Z");
    let ledger = open(store.path(), &clock);
    let fired = ledger.fire_schedules().unwrap();
    for f in &fired {
        assert_eq!(
            (f.slot, f.missed, f.created),
            (at("2026-12-04T10:15:00Z"), 1, true),
            "{f:?}"
        );
    }
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
    assert_eq!(slots.len(), 3, "10:05, 10:15, 10:30: {slots:?}");
    assert_eq!(slots[&at("2026-12-04T10:05:00Z")].len(), 2);
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
    for (slot, fired) in &slots {
        assert_eq!(fired.len(), 1, "slot {slot} fired {} times", fired.len());
    }
    // Both processes were there to fire: the submissions came through
    // both (their workers' names tell which ran them, not which fired;
    // the slots' single executions are the point).
    eprintln!("{} slots, each fired once", slots.len());
}
