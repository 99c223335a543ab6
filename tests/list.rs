//! Listing executions (`Ledger::list`, `Ledger::live_at`) on a real ledger
//! (sled on disk, or PostgreSQL with LEDGER_TEST_BACKEND=postgres): pages
//! cover every execution once, newest submission first, while executions
//! are submitted and settle; filters answer what a scan of every execution
//! answers; a page examines a bounded number of settled executions.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use execution_ledger::{
    At, BackgroundExecution, BackgroundExecutionStatus, CommandError, Cursor, ExecutionError,
    ExecutionId, Ledger, ListFilter, ListPage, Submission, TenantId,
};

mod common;

fn tenant(name: &str) -> TenantId {
    name.parse().unwrap()
}

/// Every page of `filter`, `limit` at a time, calling `between` after each.
fn all_pages(
    ledger: &Ledger,
    filter: &ListFilter,
    limit: usize,
    mut between: impl FnMut(),
) -> Vec<BackgroundExecution> {
    let (mut out, mut cursor) = (Vec::new(), None::<Cursor>);
    for _ in 0..100_000 {
        let page = ledger.list(filter, cursor, limit).unwrap();
        assert!(page.executions.len() <= limit);
        out.extend(page.executions);
        match page.next {
            Some(next) => {
                assert_ne!(Some(next), cursor, "a cursor moves on");
                cursor = Some(next);
            }
            None => return out,
        }
        between();
    }
    panic!("the pages never ended");
}

/// The ids of every page of `filter`, in order.
fn listed_ids(ledger: &Ledger, filter: &ListFilter, limit: usize) -> Vec<ExecutionId> {
    all_pages(ledger, filter, limit, || {})
        .iter()
        .map(|e| e.execution_id)
        .collect()
}

/// Submits `n` executions, one at a time, across tenants and callables;
/// settles some of them: completed, failed, cancelled; claims others.
fn fill(ledger: &Ledger, n: usize) -> Vec<ExecutionId> {
    let tenants = [tenant("acme"), tenant("globex")];
    let mut ids = Vec::new();
    for i in 0..n {
        let s = Submission::new(["echo", "resize", "mail"][i % 3]);
        let e = ledger.submit(&tenants[i % 2], s).wait().unwrap().execution;
        ids.push(e.execution_id);
    }
    // Claim in queue order and settle by position: completed, failed,
    // cancelled, left running, left queued.
    for (i, id) in ids.clone().into_iter().enumerate() {
        match i % 5 {
            0 | 1 => {
                let claimed = ledger.claim(Some("w")).wait().unwrap().unwrap();
                if i % 5 == 0 {
                    ledger
                        .complete(claimed.execution_id, 1, serde_json::json!(i))
                        .wait()
                        .unwrap();
                } else {
                    ledger
                        .fail(claimed.execution_id, 1, ExecutionError::new("E", "boom"))
                        .wait()
                        .unwrap();
                }
            }
            2 => {
                ledger.cancel(id, None).wait().unwrap();
            }
            _ => {}
        }
    }
    ids
}

#[test]
fn pages_cover_every_execution_once_newest_first_while_others_settle_and_arrive() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let ids = fill(&ledger, 120);
    let before: HashSet<_> = ids.iter().copied().collect();
    let acme = tenant("acme");
    let mut more = Vec::new();
    let listed = all_pages(&ledger, &ListFilter::new(), 7, || {
        // Between pages: new submissions (newer than any page) and settles
        // of live ones (which move from the projection to the list).
        let e = ledger
            .submit(&acme, Submission::new("echo"))
            .wait()
            .unwrap()
            .execution;
        more.push(e.execution_id);
        if let Some(claimed) = ledger.claim(None).wait().unwrap() {
            ledger
                .complete(claimed.execution_id, claimed.attempt, serde_json::json!(0))
                .wait()
                .unwrap();
        }
    });
    let seen: Vec<ExecutionId> = listed.iter().map(|e| e.execution_id).collect();
    let unique: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no execution twice");
    assert!(
        before.is_subset(&unique),
        "every execution submitted before the first page is listed: missing {:?}",
        before.difference(&unique).collect::<Vec<_>>()
    );
    // Newest submission first: ids are in submission order here.
    let order: Vec<usize> = seen
        .iter()
        .filter_map(|id| ids.iter().position(|x| x == id))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] > w[1]),
        "newest first: {order:?}"
    );
    // What the pages show is each execution's latest state, or a later one.
    for e in &listed {
        let now = ledger.get(e.execution_id).unwrap();
        assert!(
            e.status == now.status || !e.status.is_terminal(),
            "{}: listed {} but it is {}",
            e.execution_id,
            e.status,
            now.status
        );
    }
}

/// What a scan of every execution says `filter` passes, newest first.
fn scan(ledger: &Ledger, ids: &[ExecutionId], filter: &ListFilter) -> Vec<ExecutionId> {
    ids.iter()
        .rev()
        .map(|id| ledger.get(*id).unwrap())
        .filter(|e| {
            (filter.statuses.is_empty() || filter.statuses.contains(&e.status))
                && filter.tenant.as_ref().is_none_or(|t| *t == e.tenant_id)
                && filter
                    .callable
                    .as_deref()
                    .is_none_or(|c| c == e.callable_name)
                && filter.since.is_none_or(|t| e.queued_at >= t)
                && filter.until.is_none_or(|t| e.queued_at < t)
                && filter.id.is_none_or(|id| id == e.execution_id)
        })
        .map(|e| e.execution_id)
        .collect()
}

#[test]
fn filters_answer_what_a_scan_of_every_execution_answers() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let ids = fill(&ledger, 90);
    let at = |i: usize| ledger.get(ids[i]).unwrap().queued_at;
    let (t30, t60): (DateTime<Utc>, DateTime<Utc>) = (at(30), at(60));
    use BackgroundExecutionStatus::*;
    let mut filters = Vec::new();
    for statuses in [
        vec![],
        vec![Completed],
        vec![Failed, Cancelled],
        vec![Queued],
        vec![Running, Completed],
    ] {
        for tenant_name in [None, Some("acme"), Some("globex"), Some("nobody")] {
            for callable in [None, Some("resize")] {
                let mut f = ListFilter::new();
                f.statuses = statuses.clone();
                f.tenant = tenant_name.map(tenant);
                f.callable = callable.map(str::to_owned);
                filters.push(f);
            }
        }
    }
    let mut timed = ListFilter::new();
    (timed.since, timed.until) = (Some(t30), Some(t60));
    filters.push(timed.clone());
    timed.statuses = vec![Completed];
    filters.push(timed);
    for i in [0, 41, 89] {
        let mut f = ListFilter::new();
        f.id = Some(ids[i]);
        filters.push(f.clone());
        f.statuses = vec![Timeout];
        filters.push(f);
    }
    for (n, filter) in filters.iter().enumerate() {
        for limit in [1, 4, 1000] {
            assert_eq!(
                listed_ids(&ledger, filter, limit),
                scan(&ledger, &ids, filter),
                "filter #{n} {filter:?}, limit {limit}"
            );
        }
    }
    // The same after reopening (settled ones from the engine's list).
    drop(ledger);
    let ledger = Ledger::open(store.path()).unwrap();
    for filter in &filters[..8] {
        assert_eq!(
            listed_ids(&ledger, filter, 10),
            scan(&ledger, &ids, filter),
            "after reopen: {filter:?}"
        );
    }
    // And after the index is rebuilt from the log.
    ledger.rebuild_index().unwrap();
    let listed = listed_ids(&ledger, &ListFilter::new(), 25);
    assert_eq!(listed, scan(&ledger, &ids, &ListFilter::new()));
}

#[test]
fn a_tenant_handle_lists_its_own_and_a_limit_out_of_range_is_refused() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let ids = fill(&ledger, 20);
    let acme = ledger.tenant(tenant("acme"));
    let mine = all_pages(&acme, &ListFilter::new(), 3, || {});
    assert_eq!(mine.len(), 10);
    assert!(mine.iter().all(|e| e.tenant_id.as_str() == "acme"));
    let mut other = ListFilter::new();
    other.tenant = Some(tenant("globex"));
    assert_eq!(acme.list(&other, None, 10).unwrap().executions, vec![]);
    let mut foreign = ListFilter::new();
    foreign.id = Some(ids[1]); // globex's
    assert_eq!(acme.list(&foreign, None, 10).unwrap().executions, vec![]);
    for limit in [0, ListPage::MAX_LEN + 1] {
        match ledger.list(&ListFilter::new(), None, limit) {
            Err(CommandError::Invalid(m)) => assert!(m.contains("limit"), "{m}"),
            other => panic!("limit {limit}: {other:?}"),
        }
    }
}

#[test]
fn a_page_examines_a_bounded_number_of_settled_executions() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let acme = tenant("acme");
    let rare = ledger
        .submit(&acme, Submission::new("rare"))
        .wait()
        .unwrap()
        .execution;
    ledger.cancel(rare.execution_id, None).wait().unwrap();
    // More settled executions than a page examines, none of them "rare".
    let mut ids = Vec::new();
    while ids.len() < ListPage::SCAN + 50 {
        let batch: Vec<Submission> = (0..500).map(|_| Submission::new("common")).collect();
        let done = ledger.submit_many(&acme, batch).wait().unwrap();
        ids.extend(done.into_iter().map(|s| s.execution.execution_id));
    }
    // Many cancels in flight at once: the combiner groups them.
    let cancels: Vec<_> = ids
        .iter()
        .map(|id| ledger.cancel(*id, None).spawn())
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for c in cancels {
        runtime.block_on(c).unwrap();
    }
    let mut filter = ListFilter::new();
    filter.callable = Some("rare".into());
    let first = ledger.list(&filter, None, 10).unwrap();
    assert!(
        first.executions.is_empty(),
        "the first page stops after examining ListPage::SCAN settled executions"
    );
    let next = first.next.expect("a short page says where to go on");
    let second = ledger.list(&filter, Some(next), 10).unwrap();
    assert_eq!(
        second
            .executions
            .iter()
            .map(|e| e.execution_id)
            .collect::<Vec<_>>(),
        vec![rare.execution_id]
    );
    assert_eq!(second.next, None);
}

#[test]
fn live_at_a_point_is_what_had_not_settled_by_then() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let ids = fill(&ledger, 25);
    let head = ledger.head().seq;
    for seq in [0, 1, 10, 25, 40, head] {
        let live: Vec<ExecutionId> = ledger
            .live_at(At::Seq(seq))
            .unwrap()
            .iter()
            .map(|e| e.execution_id)
            .collect();
        let mut expected: Vec<ExecutionId> = ids
            .iter()
            .filter(|id| {
                ledger
                    .execution_at(**id, At::Seq(seq))
                    .unwrap()
                    .is_some_and(|e| !execution_ledger::is_settled(&e))
            })
            .copied()
            .collect();
        expected.sort();
        assert_eq!(live, expected, "at seq {seq}");
    }
    let now: Vec<_> = ledger.live().iter().map(|e| e.execution_id).collect();
    let at_head: Vec<_> = ledger
        .live_at(At::Seq(head))
        .unwrap()
        .iter()
        .map(|e| e.execution_id)
        .collect();
    assert_eq!(now, at_head);
}
