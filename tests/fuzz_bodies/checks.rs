//! Invariant checks shared by the `state_machine` fuzz body and the
//! model-based tests (`tests/model.rs` includes this file by path).

use std::collections::{BTreeMap, BTreeSet};

use execution_ledger::{
    apply, is_settled, BackgroundExecution, BackgroundExecutionStatus, Event, ExecutionId,
    Projection, TransitionError,
};

/// One execution's times are in order and its attempts within bounds:
/// `queued_at <= released_at <= started_at <= completed_at` (those that are
/// set; `started_at` is the latest start), `completed_at` exactly when
/// finished, `attempt <= max attempts`, a running execution at attempt 1 or
/// later.
pub fn assert_times_in_order(e: &BackgroundExecution) {
    let id = e.execution_id;
    if let Some(started) = e.started_at {
        assert!(e.queued_at <= started, "{id}: started before queued");
        if let Some(completed) = e.completed_at {
            assert!(started <= completed, "{id}: completed before started");
        }
    } else {
        assert_eq!(e.attempt, 0, "{id}: attempts without a start");
    }
    if let Some(completed) = e.completed_at {
        assert!(e.queued_at <= completed, "{id}: completed before queued");
    }
    if let Some(released) = e.released_at {
        // A release comes before any start (and an end).
        assert!(e.queued_at <= released, "{id}: released before queued");
        for t in [e.started_at, e.completed_at].into_iter().flatten() {
            assert!(released <= t, "{id}: released after {t}");
        }
    }
    let max = e.config.max_attempts();
    assert!(e.attempt <= max, "{id}: attempt {} of {max}", e.attempt);
    assert_eq!(
        e.completed_at.is_some(),
        e.status.is_terminal(),
        "{id}: completed_at and {}",
        e.status
    );
    if e.status == BackgroundExecutionStatus::Running {
        assert!(e.attempt >= 1, "{id}: running attempt 0");
    }
}

/// A fresh fold of `events` is the projection `live`, and each execution's
/// own fold is its entry in `states` (settled ones included).
pub fn assert_refolds(
    events: &[Event],
    live: &Projection,
    states: &BTreeMap<ExecutionId, BackgroundExecution>,
) {
    let mut fresh = Projection::new();
    for e in events {
        fresh.apply(e).expect("a refold accepts what was accepted");
    }
    assert!(
        fresh.same_as(live),
        "the refold differs: {:?}",
        fresh.difference(live)
    );
    assert_eq!(fresh.difference(live), None);
    let mut per: BTreeMap<ExecutionId, Option<BackgroundExecution>> = BTreeMap::new();
    for e in events {
        apply(per.entry(e.execution_id).or_default(), e).expect("refold per execution");
    }
    assert_eq!(per.len(), states.len());
    for (id, st) in &per {
        assert_eq!(st.as_ref(), states.get(id), "{id} refolds differently");
    }
}

/// The projection holds exactly the unsettled executions of `states`, as
/// they are there.
pub fn assert_live_is_unsettled(
    live: &Projection,
    states: &BTreeMap<ExecutionId, BackgroundExecution>,
) {
    let unsettled: BTreeSet<ExecutionId> = states
        .values()
        .filter(|s| !is_settled(s))
        .map(|s| s.execution_id)
        .collect();
    let in_proj: BTreeSet<ExecutionId> = live.live().map(|e| e.execution_id).collect();
    assert_eq!(in_proj, unsettled);
    assert_eq!(live.len(), unsettled.len());
    assert_eq!(live.is_empty(), unsettled.is_empty());
    for e in live.live() {
        assert_eq!(Some(e), states.get(&e.execution_id));
    }
}

/// After an accepted event: the projection gave the execution back (`left`)
/// exactly when the event settled it, and holds its state `st` otherwise.
pub fn assert_placed(
    live: &Projection,
    left: Option<BackgroundExecution>,
    st: &BackgroundExecution,
) {
    let id = st.execution_id;
    match left {
        Some(e) => {
            assert!(is_settled(st), "left the projection unsettled: {id}");
            assert_eq!(&e, st);
            assert!(live.get(&id).is_none(), "settled but live: {id}");
        }
        None => {
            assert!(!is_settled(st), "settled but still live: {id}");
            assert_eq!(live.get(&id), Some(st));
        }
    }
}

/// A refusal of `ev` names its execution, command and event:
/// `cannot <verb> <id>: …`.
pub fn assert_names(err: &TransitionError, ev: &Event) {
    assert_eq!(err.execution, ev.execution_id);
    assert_eq!(err.event, ev.kind.name());
    assert_eq!(err.command, ev.kind.verb());
    let prefix = format!("cannot {} {}: ", ev.kind.verb(), ev.execution_id);
    assert!(err.to_string().starts_with(&prefix), "{err}");
}
