//! Many ledgers, one PostgreSQL database: each `Ledger` opened on the same
//! URL has its own connections, projection and leases, exactly as a ledger
//! in another process or on another machine. Appends from all of them keep
//! one gap-free, hash-chained log; each sees what the others appended;
//! claims and leases are decided once for all; the schema is versioned; and
//! `verify` finds rows edited, deleted or dropped from the tail.
//!
//! The database is a private PostgreSQL the tests start (tests/common/
//! postgres.rs), or the server `LEDGER_TEST_DATABASE_URL` names.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use execution_ledger::{
    BackgroundExecutionStatus, Claim, CommandError, ErrorKind, EventKind, ExecutionId, Ledger,
    Refusal, Submission, TenantId, TenantShare,
};

mod common;
use common::postgres::server;

fn acme() -> TenantId {
    "acme".parse().unwrap()
}

fn open(url: &str) -> Ledger {
    Ledger::open(url).unwrap()
}

/// Waits until `ledger` has folded the log up to `seq` (it follows what
/// others append through notifications and a poll of the head row).
fn caught_up(ledger: &Ledger, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ledger.head().seq < seq {
        assert!(
            Instant::now() < deadline,
            "the ledger stayed at seq {} behind {seq}",
            ledger.head().seq
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn ledgers_on_one_database_append_one_gap_free_chain_and_see_each_others_events() {
    let url = server().database();
    let ledgers: Vec<Ledger> = (0..3).map(|_| open(&url)).collect();
    let per = 40;
    let ids: Vec<Vec<ExecutionId>> = std::thread::scope(|s| {
        let handles: Vec<_> = ledgers
            .iter()
            .enumerate()
            .map(|(n, l)| {
                s.spawn(move || {
                    (0..per)
                        .map(|i| {
                            let mut sub = Submission::new("echo");
                            sub.input = Some(format!("{n}-{i}"));
                            l.submit(&acme(), sub)
                                .wait()
                                .unwrap()
                                .execution
                                .execution_id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = (3 * per) as u64;
    for l in &ledgers {
        caught_up(l, total);
        assert_eq!(l.head().seq, total);
    }
    // One chain: every ledger verifies the whole log and reports one head.
    let heads: HashSet<String> = ledgers
        .iter()
        .map(|l| l.verify().unwrap().head.hash)
        .collect();
    assert_eq!(heads.len(), 1, "one head for all: {heads:?}");
    let seqs: Vec<u64> = ledgers[0].events(1, None).map(|e| e.unwrap().seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "gap-free");
    // Each sees the others' executions, live, in its queue and history.
    for (n, l) in ledgers.iter().enumerate() {
        assert_eq!(l.queue(None).len(), 3 * per, "ledger {n}'s queue");
        for mine in &ids[(n + 1) % 3] {
            assert_eq!(
                l.get(*mine).unwrap().status,
                BackgroundExecutionStatus::Queued
            );
            assert_eq!(l.history(*mine).unwrap().len(), 1);
        }
        l.check_projection().unwrap();
    }
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_subscription_delivers_events_another_ledger_appends_in_order_without_gap_or_duplicate() {
    let url = server().database();
    let (a, b) = (open(&url), open(&url));
    let mut sub = b.subscribe(1);
    let writer = std::thread::spawn(move || {
        for i in 0..50 {
            let mut s = Submission::new("echo");
            s.input = Some(i.to_string());
            a.submit(&acme(), s).wait().unwrap();
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 50 {
        let e = sub
            .next_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("the other ledger's event arrives");
        seen.push((e.seq, e.kind.name()));
    }
    writer.join().unwrap();
    let expected: Vec<_> = (1..=50).map(|s| (s, "queued")).collect();
    assert_eq!(seen, expected);
    assert!(sub
        .next_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn concurrent_claims_from_many_ledgers_start_each_execution_once() {
    let url = server().database();
    let setup = open(&url);
    let n = 60;
    for _ in 0..n {
        setup
            .submit(&acme(), Submission::new("echo"))
            .wait()
            .unwrap();
    }
    let ledgers: Vec<Ledger> = (0..3).map(|_| open(&url)).collect();
    let claimed: Vec<(ExecutionId, u32)> = std::thread::scope(|s| {
        let handles: Vec<_> = ledgers
            .iter()
            .map(|l| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    while let Some(e) = l.claim(Some("w")).wait().unwrap() {
                        mine.push((e.execution_id, e.attempt));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let distinct: HashSet<_> = claimed.iter().map(|(id, _)| *id).collect();
    assert_eq!(claimed.len(), n, "claimed: {claimed:?}");
    assert_eq!(distinct.len(), n, "an execution was claimed twice");
    assert!(claimed.iter().all(|(_, attempt)| *attempt == 1));
    // On a shared log every attempt is leased.
    for (id, _) in &claimed {
        assert!(setup.lease(*id).is_some() || ledgers.iter().any(|l| l.lease(*id).is_some()));
    }
    let mut started: HashMap<ExecutionId, u32> = HashMap::new();
    for e in setup.events(1, None) {
        let e = e.unwrap();
        if let EventKind::Started { lease_ms, .. } = e.kind {
            assert!(lease_ms.is_some(), "seq {} started without a lease", e.seq);
            *started.entry(e.execution_id).or_default() += 1;
        }
    }
    assert!(started.values().all(|n| *n == 1), "{started:?}");
    setup.verify().unwrap();
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn an_idempotency_key_answers_the_first_submit_whichever_ledger_made_it() {
    let url = server().database();
    let (a, b) = (open(&url), open(&url));
    let mut s = Submission::new("echo");
    s.idempotency_key = Some("order-7".into());
    let first = a.submit(&acme(), s.clone()).wait().unwrap();
    let again = b.submit(&acme(), s.clone()).wait().unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.execution.execution_id, again.execution.execution_id);
    let mut other = s;
    other.input = Some("different".into());
    let err = b.submit(&acme(), other).wait().unwrap_err();
    assert!(
        matches!(err, CommandError::IdempotencyConflict { .. }),
        "{err}"
    );
    assert_eq!(b.head().seq, 1);
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_share_set_through_one_ledger_orders_the_claims_of_the_others() {
    let url = server().database();
    let (a, b) = (open(&url), open(&url));
    let globex: TenantId = "globex".parse().unwrap();
    for _ in 0..6 {
        a.submit(&acme(), Submission::new("echo")).wait().unwrap();
    }
    for _ in 0..6 {
        a.submit(&globex, Submission::new("echo")).wait().unwrap();
    }
    // acme runs one at a time; b follows within a second or so.
    let share = TenantShare::new(1, Some(1)).unwrap();
    a.set_tenant_share(&acme(), Some(share)).wait().unwrap();
    assert_eq!(b.tenant_shares().unwrap(), vec![(acme(), share)]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let first: Vec<TenantId> = b
            .queue(None)
            .iter()
            .take(3)
            .map(|e| e.tenant_id.clone())
            .collect();
        if first == [acme(), globex.clone(), globex.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "b still orders {first:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let claimed = b
        .claim_with(Claim::new().worker("w").max(5))
        .wait()
        .unwrap();
    let tenants: Vec<&str> = claimed.iter().map(|e| e.tenant_id.as_str()).collect();
    assert_eq!(tenants, ["acme", "globex", "globex", "globex", "globex"]);
    // And a, claiming next, holds acme to its one running attempt too.
    let claimed = a
        .claim_with(Claim::new().worker("w").max(5))
        .wait()
        .unwrap();
    let tenants: Vec<&str> = claimed.iter().map(|e| e.tenant_id.as_str()).collect();
    assert_eq!(tenants, ["globex", "globex"]);
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_lease_renewed_through_one_ledger_holds_in_the_others_and_expires_in_any() {
    let url = server().database();
    let (a, b) = (open(&url), open(&url));
    a.submit(&acme(), Submission::new("echo")).wait().unwrap();
    let lease = Duration::from_millis(600);
    let e = a
        .claim_with(Claim::new().worker("far").lease(lease))
        .wait()
        .unwrap()
        .pop()
        .unwrap();
    let id = e.execution_id;
    caught_up(&b, 2);
    // Heartbeats reach b only; a's view of the lease would have run out.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        b.heartbeat(id, 1, None).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            a.expire_leases().wait().unwrap().is_empty(),
            "a expired a lease renewed through b"
        );
    }
    // No more heartbeats: whichever ledger looks next records the loss once.
    std::thread::sleep(lease + Duration::from_millis(200));
    let recovered = a.expire_leases().wait().unwrap();
    assert_eq!(recovered.len(), 1);
    assert!(b.expire_leases().wait().unwrap().is_empty());
    caught_up(&b, 3);
    // The late answer of the lost attempt is refused, through either.
    let late = b
        .complete(id, 1, serde_json::json!("late"))
        .wait()
        .unwrap_err();
    match late {
        CommandError::Transition(t) => assert!(
            matches!(t.refusal, Refusal::Status(_) | Refusal::StaleAttempt { .. }),
            "{t}"
        ),
        other => panic!("{other}"),
    }
    let kinds: Vec<_> = a
        .history(id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(kinds[..3], ["queued", "started", "recovered"]);
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn the_schema_is_created_once_and_a_newer_one_is_refused() {
    let pg = server();
    let url = pg.database();
    // Opening without creating finds no ledger and creates nothing.
    let err = Ledger::builder(&url).create(false).open().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoLedger, "{err}");
    assert_eq!(
        pg.sql(
            &url,
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ledger_%'"
        )
        .trim(),
        "0"
    );
    // Many ledgers opening at once create the schema once.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| drop(open(&url)));
        }
    });
    assert_eq!(
        pg.sql(&url, "SELECT value FROM ledger_meta WHERE key = 'schema'")
            .trim(),
        "5"
    );
    pg.sql(
        &url,
        "UPDATE ledger_meta SET value = '6' WHERE key = 'schema'",
    );
    let err = Ledger::open(&url).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedVersion, "{err}");
    assert!(err.to_string().contains("schema version 6"), "{err}");
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_schema_1_database_is_upgraded_and_lists_what_it_settled_before() {
    let pg = server();
    let url = pg.database();
    nine_events(&url);
    // As version 1 left it: no list of settled executions.
    pg.sql(
        &url,
        "DROP TABLE ledger_listed; UPDATE ledger_meta SET value = '1' WHERE key = 'schema'",
    );
    let l = open(&url);
    assert_eq!(
        pg.sql(&url, "SELECT value FROM ledger_meta WHERE key = 'schema'")
            .trim(),
        "5"
    );
    // Opening built the list from the log, once.
    let all = execution_ledger::ListFilter::new();
    let listed = |l: &Ledger| -> Vec<_> {
        l.list(&all, None, 100)
            .unwrap()
            .executions
            .into_iter()
            .map(|e| e.execution_id)
            .collect()
    };
    assert_eq!(listed(&l).len(), 3);
    assert_eq!(
        pg.sql(
            &url,
            "SELECT count(*) FROM ledger_meta WHERE key = 'listing'"
        )
        .trim(),
        "0"
    );
    let e = l
        .submit(&acme(), Submission::new("echo"))
        .wait()
        .unwrap()
        .execution;
    l.cancel(e.execution_id, None).wait().unwrap();
    assert_eq!(listed(&l).len(), 4);
    assert_eq!(listed(&l)[0], e.execution_id);
}

/// A ledger of 3 settled executions (9 events), closed.
fn nine_events(url: &str) {
    let l = open(url);
    for _ in 0..3 {
        l.submit(&acme(), Submission::new("echo")).wait().unwrap();
    }
    while let Some(e) = l.claim(Some("w")).wait().unwrap() {
        l.complete(e.execution_id, e.attempt, serde_json::json!(1))
            .wait()
            .unwrap();
    }
    assert_eq!(l.verify().unwrap().events, 9);
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn verify_names_the_seq_of_an_edited_row() {
    let pg = server();
    let url = pg.database();
    nine_events(&url);
    // Flip a byte of the event JSON of seq 4.
    pg.sql(
        &url,
        "UPDATE ledger_log SET record = overlay(record PLACING '\\x7a'::bytea FROM 80 FOR 1) WHERE seq = 4",
    );
    let err = match Ledger::open(&url) {
        Err(e) => e,
        Ok(l) => l.verify().unwrap_err(),
    };
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.seq(), Some(4), "{err}");
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn verify_names_the_seq_of_a_deleted_row() {
    let pg = server();
    let url = pg.database();
    nine_events(&url);
    pg.sql(&url, "DELETE FROM ledger_log WHERE seq = 5");
    let err = match Ledger::open(&url) {
        Err(e) => e,
        Ok(l) => l.verify().unwrap_err(),
    };
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.seq(), Some(5), "{err}");
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_dropped_tail_is_refused_and_the_head_row_is_its_checkpoint() {
    let pg = server();
    let url = pg.database();
    nine_events(&url);
    pg.sql(&url, "DELETE FROM ledger_log WHERE seq > 7");
    let err = Ledger::open(&url).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LostSuffix, "{err}");
    assert_eq!(err.seq(), Some(8), "{err}");
    // Accepting the log as it is moves the head row back, and records it.
    let l = Ledger::builder(&url).accept_tail(true).open().unwrap();
    assert!(l.accepted_tail().is_some());
    assert_eq!(l.head().seq, 7);
    l.verify().unwrap();
    assert_eq!(
        pg.sql(&url, "SELECT count(*) FROM ledger_acceptances")
            .trim(),
        "1"
    );
    // Whoever can edit the rows can move the head row back with them: only
    // a head kept elsewhere finds the tail they dropped.
    let kept = l.head();
    assert_eq!(kept.seq, 7);
    drop(l);
    pg.sql(
        &url,
        "DELETE FROM ledger_log WHERE seq = 7; \
         UPDATE ledger_head SET seq = 6, hash = (SELECT substring(record FROM 34 FOR 32) FROM ledger_log WHERE seq = 6)",
    );
    let l = open(&url);
    l.verify().unwrap();
    let err = l.check_head(&kept).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LostSuffix, "{err}");
    assert_eq!(err.seq(), Some(7), "{err}");
    // Rows appended behind the ledger's back, past the head row, are refused.
    drop(l);
    pg.sql(
        &url,
        "INSERT INTO ledger_log SELECT seq + 100, execution, tenant, kind, at, name_kind, name, record FROM ledger_log WHERE seq = 6",
    );
    let err = Ledger::open(&url).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn an_edited_column_is_found_by_verify_and_repaired_by_rebuilding_the_index() {
    let pg = server();
    let url = pg.database();
    nine_events(&url);
    pg.sql(
        &url,
        "UPDATE ledger_log SET execution = '00000000-0000-0000-0000-000000000001' WHERE seq = 2",
    );
    let l = open(&url);
    let err = l.verify().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let rebuilt = l.rebuild_index().unwrap();
    assert_eq!(rebuilt.removed, 1, "one row's columns rewritten");
    l.verify().unwrap();
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_ledger_dropped_on_a_runtime_thread_closes_cleanly() {
    let url = server().database();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let l = Arc::new(open(&url));
        let done = l.submit(&acme(), Submission::new("echo")).await.unwrap();
        assert!(done.created);
        // A blocking read on a worker thread of another runtime works too.
        assert_eq!(l.get(done.execution.execution_id).unwrap().attempt, 0);
        drop(l);
    });
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_lost_connection_fails_one_command_and_the_ledger_goes_on() {
    let pg = server();
    let url = pg.database();
    let l = open(&url);
    l.submit(&acme(), Submission::new("echo")).wait().unwrap();
    // The server ends every session of the ledger's (as a restart would;
    // those of this test's database only, not the other tests' running
    // beside it).
    let ended = pg.sql(
        &url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'execution-ledger' AND datname = current_database() \
         AND pid <> pg_backend_pid()",
    );
    assert_ne!(ended.trim(), "0");
    // At most the first command meets the broken connection; it is an
    // error of the database, not a poisoned ledger.
    let mut failures = 0;
    for _ in 0..3 {
        match l.submit(&acme(), Submission::new("echo")).wait() {
            Ok(_) => {}
            Err(CommandError::Storage(e)) => {
                assert_eq!(e.kind(), ErrorKind::Database, "{e}");
                failures += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(failures <= 1, "{failures} submits failed");
    // A failed submit whose commit happened before its answer was lost is
    // in the log too.
    assert!(l.head().seq >= 4 - failures, "head {}", l.head().seq);
    l.verify().unwrap();
    // Another ledger on the database sees the same log.
    let other = open(&url);
    assert_eq!(other.head().seq, l.head().seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
async fn a_result_awaited_through_one_process_is_answered_when_another_runs_it() {
    use execution_ledger::Runtime;
    let url = server().database();
    let (a, b) = (open(&url), open(&url));
    // a runs nothing; b runs the built-in callables.
    let here = Runtime::builder(a.clone()).start().await.unwrap();
    let there = Runtime::builder(b.clone())
        .register_builtins()
        .start()
        .await
        .unwrap();
    let mut s = Submission::new("echo");
    s.input = Some("far".into());
    let id = a.submit(&acme(), s).await.unwrap().execution.execution_id;
    let done = tokio::time::timeout(Duration::from_secs(20), here.result(id))
        .await
        .expect("answered once the other process finished it")
        .unwrap()
        .unwrap();
    assert_eq!(done.status, BackgroundExecutionStatus::Completed);
    assert_eq!(done.output, Some(serde_json::json!("far")));
    here.shutdown(Duration::from_secs(2)).await.unwrap();
    there.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn pages_listed_by_one_process_while_another_submits_and_settles_have_no_gap() {
    let pg = server();
    let url = pg.database();
    let (a, b) = (open(&url), open(&url));
    let mut ids = Vec::new();
    for _ in 0..40 {
        let e = a
            .submit(&acme(), Submission::new("echo"))
            .wait()
            .unwrap()
            .execution;
        ids.push(e.execution_id);
    }
    caught_up(&b, a.head().seq);
    let all = execution_ledger::ListFilter::new();
    let (mut seen, mut cursor, mut pairs) = (Vec::new(), None, Vec::new());
    loop {
        let page = a.list(&all, cursor, 3).unwrap();
        seen.extend(page.executions.iter().map(|e| e.execution_id));
        // Meanwhile the other process submits new ones (one left live,
        // then one settled) and settles old ones, which it commits before
        // this one hears of them.
        let x = b
            .submit(&acme(), Submission::new("echo"))
            .wait()
            .unwrap()
            .execution;
        let z = b
            .submit(&acme(), Submission::new("echo"))
            .wait()
            .unwrap()
            .execution;
        b.cancel(z.execution_id, None).wait().unwrap();
        pairs.push((x.execution_id, z.execution_id));
        if let Some(old) = ids.get(seen.len() % ids.len()) {
            let _ = b.cancel(*old, None).wait();
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no execution twice");
    for id in &ids {
        assert!(unique.contains(id), "{id} is missing from the pages");
    }
    // Pages hold no gap: a later submission shown means every earlier one
    // the pages went past is shown too.
    for (x, z) in &pairs {
        assert!(
            !unique.contains(z) || unique.contains(x),
            "{z} is listed but {x}, submitted just before it, is not"
        );
    }
    // A line left at a seq (a restore, damage) does not stop the
    // execution submitted there from settling: it is replaced.
    let e = a
        .submit(&acme(), Submission::new("echo"))
        .wait()
        .unwrap()
        .execution;
    let seq = a.head().seq;
    pg.sql(
        &url,
        &format!(
            "INSERT INTO ledger_listed VALUES ({seq}, '{}', 'acme', 'stale', 'failed', 0)",
            ids[0]
        ),
    );
    let done = a.cancel(e.execution_id, None).wait().unwrap();
    assert_eq!(
        done.status,
        execution_ledger::BackgroundExecutionStatus::Cancelled
    );
    let mut only = execution_ledger::ListFilter::new();
    only.id = Some(e.execution_id);
    let mut cancelled = execution_ledger::ListFilter::new();
    cancelled.callable = Some("stale".into());
    assert_eq!(a.list(&cancelled, None, 10).unwrap().executions, vec![]);
    a.verify().unwrap();
}

const MARKER: &str = "ada.lovelace@example.com";

/// A settled execution whose input, context and output carry [`MARKER`].
fn mailed(l: &Ledger) -> ExecutionId {
    let mut s = Submission::new("mail");
    s.input = Some(format!("send to {MARKER}"));
    s.context = Some([("to".to_string(), MARKER.to_string())].into());
    let id = l.submit(&acme(), s).wait().unwrap().execution.execution_id;
    let c = l.claim(Some("w1")).wait().unwrap().unwrap();
    assert_eq!(c.execution_id, id);
    l.complete(id, 1, serde_json::json!({ "sentTo": MARKER }))
        .wait()
        .unwrap();
    id
}

fn text_of(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

/// Every file under `dir`, with its bytes (files removed while it reads
/// are skipped: the server keeps working).
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn holds(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// The files under `dir` that hold any of `needles`.
fn holding(dir: &std::path::Path, needles: &[Vec<u8>]) -> Vec<std::path::PathBuf> {
    files(dir)
        .into_iter()
        .filter(|(_, bytes)| needles.iter().any(|n| holds(bytes, n)))
        .map(|(path, _)| path)
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_redaction_leaves_neither_the_payload_nor_its_keys_in_the_database_files() {
    let pg = server();
    let Some(data) = pg.data_dir() else {
        eprintln!("skipped: the server LEDGER_TEST_DATABASE_URL names keeps its files elsewhere");
        return;
    };
    let url = pg.database();
    // A snapshot after every event: they hold the payloads of what is live.
    let l = Ledger::builder(&url).snapshot_every(1).open().unwrap();
    let id = mailed(&l);
    let mut kept = Submission::new("mail");
    kept.input = Some("send to grace.hopper@example.com".into());
    let kept = l
        .submit(&acme(), kept)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    let seqs: Vec<u64> = l.history(id).unwrap().iter().map(|e| e.seq).collect();
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let keys_of = |slots: &str| -> Vec<Vec<u8>> {
        pg.sql(
            &url,
            &format!("SELECT encode(key, 'hex') FROM ledger_keys WHERE {slots} ORDER BY slot"),
        )
        .lines()
        .map(unhex)
        .collect()
    };
    let keys = keys_of(&format!("slot IN ({})", list(&seqs)));
    let (lo, hi) = (seqs[0], seqs[seqs.len() - 1]);
    let snapshot_keys = keys_of(&format!("slot BETWEEN -{hi} AND -{lo}"));
    // The submission and the completion carry payloads; the start none.
    assert_eq!(keys.len(), 2, "{seqs:?}");
    assert!(!snapshot_keys.is_empty());
    let needles: Vec<Vec<u8>> = keys.iter().chain(&snapshot_keys).cloned().collect();
    let keys_file = data.join(
        pg.sql(&url, "SELECT pg_relation_filepath('ledger_keys')")
            .trim(),
    );
    pg.sql(&url, "CHECKPOINT");
    // The payload never reaches a file in the clear, not even the WAL; the
    // keys are in the keys table's file (and the WAL), the lifecycle is
    // there to be found.
    assert_eq!(
        holding(&data, &[MARKER.as_bytes().to_vec()]),
        Vec::<std::path::PathBuf>::new()
    );
    let outside_wal = |paths: Vec<std::path::PathBuf>| -> Vec<std::path::PathBuf> {
        paths
            .into_iter()
            .filter(|p| !p.starts_with(data.join("pg_wal")))
            .collect()
    };
    for key in &needles {
        assert_eq!(
            outside_wal(holding(&data, std::slice::from_ref(key))),
            std::slice::from_ref(&keys_file)
        );
    }
    assert!(!holding(&data, &[id.as_bytes().to_vec()]).is_empty());

    // Redacting a live execution is refused, with nothing appended.
    let head = l.head().seq;
    let err = l.redact(kept, "erasure", None).wait().unwrap_err();
    assert!(err.to_string().contains("queued"), "{err}");
    assert_eq!(l.head().seq, head);
    let other = open(&url);
    l.redact(id, "erasure request #18", None).wait().unwrap();
    l.flush().unwrap();
    // Time travel to before the redaction shows the placeholder, here and
    // in another process sharing the database.
    let then = text_of(&l.execution_at(id, execution_ledger::At::Seq(head)).unwrap());
    assert!(
        !then.contains(MARKER) && then.contains("[redacted]"),
        "{then}"
    );
    caught_up(&other, head + 1);
    let history = text_of(&other.history(id).unwrap());
    assert!(
        !history.contains(MARKER) && history.contains("[redacted]"),
        "{history}"
    );
    assert!(text_of(&other.get(kept).unwrap()).contains("grace.hopper"));
    l.verify().unwrap();
    other.verify().unwrap();
    assert_eq!(
        keys_of(&format!("slot IN ({})", list(&seqs))),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(
        keys_of(&format!("slot BETWEEN -{hi} AND -{lo}")),
        Vec::<Vec<u8>>::new()
    );

    // Gone from every file but the WAL: the keys table was rewritten.
    pg.sql(&url, "CHECKPOINT");
    let all = files(&data);
    let searched: usize = all.iter().map(|(_, b)| b.len()).sum();
    let mut in_wal = 0;
    for (path, bytes) in &all {
        let held = needles
            .iter()
            .chain([&MARKER.as_bytes().to_vec()])
            .any(|n| holds(bytes, n));
        if path.starts_with(data.join("pg_wal")) {
            in_wal += usize::from(held);
        } else {
            assert!(
                !held,
                "{} still holds the payload or a key of it",
                path.display()
            );
        }
    }
    // The WAL keeps them until its segments are removed: with
    // `wal_recycle = off`, by the checkpoints after a switch.
    pg.sql(&url, "ALTER SYSTEM SET wal_recycle = off");
    pg.sql(&url, "SELECT pg_reload_conf()");
    for _ in 0..2 {
        pg.sql(&url, "SELECT pg_switch_wal()");
        pg.sql(&url, "CHECKPOINT");
    }
    let in_wal_after = holding(&data.join("pg_wal"), &needles).len();
    eprintln!(
        "searched {searched} bytes in {} files of the database server for the payload, the keys of its {} records and of {} snapshots: none outside the WAL; {in_wal} WAL segments held a key, {in_wal_after} after a switch and checkpoints with wal_recycle off",
        all.len(),
        keys.len(),
        snapshot_keys.len()
    );
    assert_eq!(in_wal_after, 0);

    // A flipped bit in a redacted record is found at its seq; a key deleted
    // without a redaction too.
    let at = seqs[0];
    pg.sql(&url, &format!("UPDATE ledger_log SET record = set_byte(record, 70, get_byte(record, 70) # 1) WHERE seq = {at}"));
    let err = l.verify().unwrap_err();
    assert_eq!(
        (err.kind(), err.seq()),
        (ErrorKind::Corrupt, Some(at)),
        "{err}"
    );
    pg.sql(&url, &format!("UPDATE ledger_log SET record = set_byte(record, 70, get_byte(record, 70) # 1) WHERE seq = {at}"));
    l.verify().unwrap();
    let kept_at = l.history(kept).unwrap()[0].seq;
    pg.sql(
        &url,
        &format!("DELETE FROM ledger_keys WHERE slot = {kept_at}"),
    );
    let err = open(&url).verify().unwrap_err();
    assert_eq!(
        (err.kind(), err.seq()),
        (ErrorKind::Corrupt, Some(kept_at)),
        "{err}"
    );
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn retention_on_a_database_redacts_what_is_due_and_archives_only_where_told_of_the_archive() {
    let url = server().database();
    let l = open(&url);
    let id = mailed(&l);
    let policy =
        execution_ledger::RetentionPolicy::from_json(br#"{"default": {"redactAfter": "0s"}}"#)
            .unwrap();
    let go = |_: &execution_ledger::RetentionReport| std::ops::ControlFlow::Continue(());
    let dry = l.retain(&policy, true, go).unwrap();
    assert_eq!((dry.examined, dry.due, dry.redacted), (1, 1, 0), "{dry:?}");
    assert!(l.redacts());
    let done = l.retain(&policy, false, go).unwrap();
    assert_eq!((done.due, done.redacted), (1, 1), "{done:?}");
    let history = text_of(&l.history(id).unwrap());
    assert!(!history.contains(MARKER), "{history}");
    l.verify().unwrap();
    // Archiving needs the archive's directory: without it, refused and
    // nothing appended.
    let head = l.head().seq;
    let archive = execution_ledger::RetentionPolicy::from_json(
        br#"{"default": {"redactAfter": "0s", "archiveAfter": "0s"}}"#,
    )
    .unwrap();
    let err = l.retain(&archive, false, go).unwrap_err();
    assert!(
        matches!(err, CommandError::Unsupported(_)) && err.to_string().contains("--archive DIR"),
        "{err}"
    );
    assert_eq!(l.head().seq, head, "nothing appended");
    // The command line applies a policy to a database too.
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("policy.json");
    std::fs::write(&file, r#"{"default": {"redactAfter": "0s"}}"#).unwrap();
    let id = mailed(&l);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--database", &url, "retain", "--policy"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The process rewrote the keys table before it exited.
    let pg = server();
    let owed = "SELECT count(*) FROM ledger_meta WHERE key = 'keys-deleted'";
    assert_eq!(pg.sql(&url, owed).trim(), "0");
    // A rewrite left owed (a process killed first) is run by the next
    // ledger to open the database.
    pg.sql(&url, "INSERT INTO ledger_meta VALUES ('keys-deleted', '7')");
    let reopened = open(&url);
    reopened.flush().unwrap();
    assert_eq!(pg.sql(&url, owed).trim(), "0");
    let history = text_of(&reopened.history(id).unwrap());
    assert!(
        !history.contains(MARKER) && history.contains("[redacted]"),
        "{history}"
    );
    reopened.verify().unwrap();
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_schema_2_database_gains_the_keys_table() {
    let pg = server();
    let url = pg.database();
    drop(open(&url));
    // As version 2 left it: no table of keys.
    pg.sql(
        &url,
        "DROP TABLE ledger_keys; DROP INDEX ledger_log_redacted; \
         UPDATE ledger_meta SET value = '2' WHERE key = 'schema'",
    );
    let l = open(&url);
    assert_eq!(
        pg.sql(&url, "SELECT value FROM ledger_meta WHERE key = 'schema'")
            .trim(),
        "5"
    );
    let id = mailed(&l);
    assert_eq!(pg.sql(&url, "SELECT count(*) FROM ledger_keys").trim(), "2");
    l.redact(id, "erasure", None).wait().unwrap();
    l.verify().unwrap();
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_tenant_hold_put_by_one_process_stops_the_redactions_another_appends() {
    let url = server().database();
    let (here, there) = (open(&url), open(&url));
    // Settled executions of acme's, which the other process redacts one
    // after another while this one puts acme under hold.
    let ids: Vec<ExecutionId> = (0..200)
        .map(|i| {
            let mut s = Submission::new("mail");
            s.input = Some(format!("secret {i}"));
            let id = here
                .submit(&acme(), s)
                .wait()
                .unwrap()
                .execution
                .execution_id;
            let c = here.claim(Some("w")).wait().unwrap().unwrap();
            here.complete(c.execution_id, c.attempt, serde_json::json!("sent"))
                .wait()
                .unwrap();
            id
        })
        .collect();
    let settled_at = here.head().seq;
    caught_up(&there, settled_at);
    let redacting = std::thread::spawn(move || {
        let mut refused = 0;
        for id in ids {
            match there.redact(id, "erasure", None).wait() {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(
                        e.to_string(),
                        format!("cannot redact {id}: its tenant is under legal hold")
                    );
                    refused += 1;
                }
            }
        }
        refused
    });
    // Once some redactions are in.
    caught_up(&here, settled_at + 30);
    here.hold_tenant(&acme(), "litigation 44", None)
        .wait()
        .unwrap();
    // The log's end when the hold committed: no redaction comes after it.
    let held_at = here.head().seq;
    let refused = redacting.join().unwrap();
    let late: Vec<u64> = open(&url)
        .events(held_at + 1, None)
        .map(Result::unwrap)
        .filter(|e| matches!(e.kind, EventKind::Redacted { .. }))
        .map(|e| e.seq)
        .collect();
    assert!(
        late.is_empty(),
        "redactions appended after the hold (at seq {held_at}): {late:?}"
    );
    assert!(
        refused > 0 && refused < 200,
        "the hold fell outside the redactions ({refused} of 200 refused): the test raced nothing"
    );
    eprintln!(
        "{} redactions before the hold at seq {held_at}, {refused} refused after it",
        200 - refused
    );
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn archiving_on_a_database_moves_settled_history_into_segments_every_process_reads() {
    let url = server().database();
    let pg = server();
    let dir = tempfile::tempdir().unwrap();
    let with_archive = || {
        Ledger::builder(&url)
            .archive(dir.path())
            .snapshot_every(3)
            .open()
            .unwrap()
    };
    let (here, there, blind) = (with_archive(), with_archive(), open(&url));
    let old: Vec<ExecutionId> = (0..6).map(|_| mailed(&here)).collect();
    // One left running: nothing after it is archived.
    let mut s = Submission::new("mail");
    s.input = Some(format!("send to {MARKER}"));
    let live = here
        .submit(&acme(), s)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    assert_eq!(
        here.claim(Some("w1")).wait().unwrap().unwrap().execution_id,
        live
    );
    let _after = mailed(&here);
    let policy = execution_ledger::RetentionPolicy::from_json(
        br#"{"default": {"redactAfter": "0s", "archiveAfter": "0s"}}"#,
    )
    .unwrap();
    let go = |_: &execution_ledger::RetentionReport| std::ops::ControlFlow::Continue(());
    let report = here.retain(&policy, false, go).unwrap();
    let a = report.archive.clone().unwrap();
    // The 6 settled before it: redacted by the pass, then archived.
    assert_eq!((a.before, a.executions), (0, 6), "{report:?}");
    let base = a.through;
    assert!(
        a.kept_by
            .as_deref()
            .unwrap_or("")
            .contains(&live.to_string()),
        "{a:?}"
    );
    let segment = a.segment.clone().unwrap();
    assert!(
        std::path::Path::new(&segment).starts_with(dir.path()),
        "{segment}"
    );
    // The archived rows left the database: records, list lines, snapshots.
    for (table, column) in [
        ("ledger_log", "seq"),
        ("ledger_listed", "seq"),
        ("ledger_snapshots", "seq"),
    ] {
        let left = pg.sql(
            &url,
            &format!("SELECT count(*) FROM {table} WHERE {column} <= {base}"),
        );
        assert_eq!(left.trim(), "0", "{table} keeps archived rows");
    }
    // Every process reads the archived history from the segment, and
    // verifies the archive and the live log after it.
    caught_up(&there, here.head().seq);
    for l in [&here, &there] {
        let history = l.history(old[2]).unwrap();
        assert!(history
            .iter()
            .any(|e| matches!(e.kind, EventKind::Redacted { .. })));
        assert!(!text_of(&history).contains(MARKER), "{}", text_of(&history));
        // Its redaction came after the others settled: in the live log.
        assert!(history
            .iter()
            .all(|e| e.seq <= base || matches!(e.kind, EventKind::Redacted { .. })));
        let report = l.verify().unwrap();
        let checked = report.archive.clone().unwrap();
        assert_eq!((checked.segments, checked.events), (1, base), "{report:?}");
    }
    // A command on an archived execution is refused.
    let err = there.cancel(old[0], None).wait().unwrap_err();
    assert!(matches!(err, CommandError::Archived(_)), "{err}");
    // A process not told of the archive says so rather than misreading.
    let err = blind.history(old[2]).unwrap_err();
    assert!(err.to_string().contains("--archive DIR"), "{err}");
    let err = blind.verify().unwrap_err();
    assert!(err.to_string().contains("--archive DIR"), "{err}");
    // The live one runs on in another process; a second pass archives on
    // from the base, into a second segment, and a reopened ledger reads
    // and verifies both.
    there
        .complete(live, 1, serde_json::json!({ "sentTo": MARKER }))
        .wait()
        .unwrap();
    caught_up(&here, there.head().seq);
    let second = here.retain(&policy, false, go).unwrap().archive.unwrap();
    assert_eq!(second.before, base, "{second:?}");
    assert!(second.through > base, "{second:?}");
    drop((here, there, blind));
    let reopened = with_archive();
    let history = reopened.history(live).unwrap();
    assert!(
        history
            .iter()
            .all(|e| e.seq <= second.through || matches!(e.kind, EventKind::Redacted { .. })),
        "{}",
        text_of(&history)
    );
    let report = reopened.verify().unwrap();
    assert_eq!(report.archive.unwrap().segments, 2);
    let segments = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(segments, 2);
    eprintln!(
        "archived seqs 1 to {base}, then {} to {}; the live log runs to seq {} ({} events verified)",
        second.before + 1,
        second.through,
        reopened.head().seq,
        report.events
    );
}

/// A ledger with payloads, a redaction and live work, on `place`, its
/// executions many enough that snapshots are written on the way.
fn workload(place: &std::path::Path) -> Ledger {
    let ledger = Ledger::builder(place).snapshot_every(16).open().unwrap();
    for wave in 0..4 {
        for i in 0..10 {
            let mut s = Submission::new("resize");
            s.input = Some(format!("picture {wave}.{i}"));
            ledger.submit(&acme(), s).wait().unwrap();
        }
        if wave == 3 {
            break;
        }
        for i in 0..10 {
            let c = ledger.claim(Some("w")).wait().unwrap().unwrap();
            ledger
                .complete(c.execution_id, 1, serde_json::json!({ "size": i }))
                .wait()
                .unwrap();
            if i == 0 {
                ledger
                    .redact(c.execution_id, "erasure request", None)
                    .wait()
                    .unwrap();
            }
        }
    }
    ledger.claim(Some("w")).wait().unwrap().unwrap();
    ledger
}

fn export_of(ledger: &Ledger) -> Vec<u8> {
    let mut out = Vec::new();
    for line in ledger.export(None) {
        out.extend(line.unwrap().line);
        out.push(b'\n');
    }
    out
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn an_export_of_either_engine_imports_into_the_other_record_for_record() {
    let sled_dir = tempfile::tempdir().unwrap();
    for (from, into) in [
        (
            sled_dir.path().join("from"),
            std::path::PathBuf::from(server().database()),
        ),
        (
            std::path::PathBuf::from(server().database()),
            sled_dir.path().join("into"),
        ),
    ] {
        let source = workload(&from);
        let kept = source.head();
        let export = export_of(&source);
        let picture = |ledger: &Ledger| {
            ledger
                .events(1, None)
                .map(Result::unwrap)
                .filter(|e| matches!(&e.kind, EventKind::Queued(s) if s.input.as_deref().is_some_and(|i| i.starts_with("picture"))))
                .count()
        };
        let readable = picture(&source);
        drop(source);
        let imported = Ledger::builder(&into).snapshot_every(16).open().unwrap();
        let done = imported
            .import(std::io::Cursor::new(&export), Some(&kept))
            .unwrap();
        assert_eq!((done.head.clone(), done.executions), (kept.clone(), 40));
        // The same records: the same export, byte for byte, with the
        // redacted payloads still gone and the others readable.
        assert_eq!(export_of(&imported), export);
        assert_eq!(picture(&imported), readable);
        assert_eq!(readable, 40 - 3, "three executions were redacted");
        let report = imported.verify().unwrap();
        assert!(
            report.snapshots > 0,
            "snapshots written on the way: {report:?}"
        );
        drop(imported);
        let reopened = Ledger::open(&into).unwrap();
        assert_eq!(reopened.head(), kept);
        assert_eq!(reopened.queue(None).len(), 9);
        reopened.verify().unwrap();
    }
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_schema_4_database_takes_control_entries_once_upgraded() {
    let pg = server();
    let url = pg.database();
    nine_events(&url);
    // As version 4 left it: every row of the log named an execution.
    pg.sql(
        &url,
        "ALTER TABLE ledger_log ALTER COLUMN execution SET NOT NULL, \
         ALTER COLUMN tenant SET NOT NULL; \
         UPDATE ledger_meta SET value = '4' WHERE key = 'schema'",
    );
    let l = open(&url);
    assert_eq!(
        pg.sql(&url, "SELECT value FROM ledger_meta WHERE key = 'schema'")
            .trim(),
        "5"
    );
    let scope = execution_ledger::PauseScope::new(None, Some("echo".into()));
    l.pause(scope, Some("upgrade".into()), None).wait().unwrap();
    let seq = l.head().seq;
    assert_eq!(
        pg.sql(
            &url,
            &format!(
                "SELECT kind, execution IS NULL, tenant IS NULL FROM ledger_log WHERE seq = {seq}"
            )
        )
        .trim(),
        "paused|t|t"
    );
    l.verify().unwrap();
    drop(l);
    assert_eq!(open(&url).pauses().len(), 1);
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_pause_made_through_one_ledger_holds_the_claims_of_the_others() {
    let url = server().database();
    let (a, b) = (open(&url), open(&url));
    let held = a
        .submit(&acme(), Submission::new("resize"))
        .wait()
        .unwrap()
        .execution
        .execution_id;
    let scope = execution_ledger::PauseScope::new(None, Some("resize".into()));
    a.pause(scope.clone(), None, Some("ops".into()))
        .wait()
        .unwrap();
    let other = b
        .submit(&acme(), Submission::new("mail"))
        .wait()
        .unwrap()
        .execution
        .execution_id;
    // b learned of the pause with the log's end: it claims around it.
    let claimed = b.claim(Some("b")).wait().unwrap().unwrap();
    assert_eq!(claimed.execution_id, other);
    assert!(b.claim(Some("b")).wait().unwrap().is_none());
    assert_eq!(b.pauses().len(), 1);
    // A resume through b lets a claim it.
    b.resume(scope.clone(), None, None).wait().unwrap();
    caught_up(&a, b.head().seq);
    assert_eq!(
        a.claim(Some("a")).wait().unwrap().unwrap().execution_id,
        held
    );
    // And a second pause of one scope from two ledgers records one.
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(|| a.pause(scope.clone(), None, None).wait());
        let y = s.spawn(|| b.pause(scope.clone(), None, None).wait());
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(u8::from(x.is_ok()) + u8::from(y.is_ok()), 1, "{x:?} {y:?}");
    a.verify().unwrap();
}
