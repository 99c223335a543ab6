//! Fair shares between tenants: the one rule that orders the runnable
//! queue, which claims, `queue` and time travel all follow.
//!
//! Queue order is priority first (higher first); within a priority, the
//! tenant whose turn it is; within a tenant, submission order (the seq at
//! which each execution last joined the queue).
//!
//! **Whose turn it is.** Each tenant with live work has a *turn*: the seq
//! of its `weight`-th most recent `started` event since it last had no live
//! execution, or, when it has had fewer starts than that, the seq at which
//! it last became live (its first live execution's `queued` event). Among
//! the tenants with runnable work at a priority and room under their
//! concurrency limit, the one with the lowest turn goes next (ties: the
//! one whose head joined the queue first). A claim moves the tenant's turn
//! on, so tenants take turns, a tenant of weight `w` `w` claims to each one
//! of a tenant of weight 1.
//!
//! What that guarantees: once a tenant has runnable work at a priority and
//! room under its limit, every other tenant `t` is claimed at most
//! `weight(t)` times at that priority before it is. (Its turn is at most
//! the seq it became runnable at; after `weight(t)` more claims, `t`'s turn
//! is past that.) A burst of 100,000 from one tenant delays another's ten
//! by at most the burst's weight per claim, never by the burst.
//!
//! **Limits.** A tenant whose running attempts reach its concurrency limit
//! is passed over; its work stays queued, in order, and is claimable again
//! when one of its attempts ends. Listings show such work after everything
//! claimable (in priority, then submission order).
//!
//! **What it is made of.** The turns are folded from the log by the
//! projection (and kept in its snapshots), from nothing before the first
//! live execution of a tenant, so a ledger read from its base, a snapshot
//! or an archive's end orders its queue alike. Weights and limits are
//! configuration kept beside the log ([`TenantShare`]): a queue in the past
//! is ordered by the weights set now.
//!
//! **What it costs.** The runnable queue ([`Ready`]) keeps, at each
//! priority, the tenants with room under their limit in a B-tree by turn,
//! moved when a tenant's turn or room changes (its own events, or new
//! shares). A claim ([`claims`]) takes the first of them: O(log n + log T)
//! for n queued of T tenants, not O(T). A listing ([`listing`]) is the
//! claims of everything, then what the limits hold back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::CommandError;
use crate::execution::{ExecutionId, TenantId};

/// The highest weight a tenant may have.
pub const MAX_WEIGHT: u32 = 100;

/// A tenant's share of the workers: its weight against other tenants, and
/// how many of its attempts may run at once. (Readers of requests refuse
/// fields it does not know, as they do for every body.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TenantShare {
    /// Claims it takes to each one of a tenant of weight 1, while both
    /// have runnable work at the same priority: 1 to [`MAX_WEIGHT`].
    #[serde(default = "one")]
    pub weight: u32,
    /// How many of its attempts may run at once (none: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

fn one() -> u32 {
    1
}

impl Default for TenantShare {
    fn default() -> Self {
        TenantShare {
            weight: 1,
            limit: None,
        }
    }
}

impl TenantShare {
    /// A share of `weight` with at most `limit` attempts running at once.
    ///
    /// # Errors
    ///
    /// `Invalid`, naming the field, for a weight outside 1 to
    /// [`MAX_WEIGHT`] or a limit of 0.
    pub fn new(weight: u32, limit: Option<u32>) -> Result<Self, CommandError> {
        let share = TenantShare { weight, limit };
        share.check()?;
        Ok(share)
    }

    /// Refuses a weight outside 1 to [`MAX_WEIGHT`] or a limit of 0.
    ///
    /// # Errors
    ///
    /// `Invalid`, naming the field.
    pub fn check(&self) -> Result<(), CommandError> {
        if !(1..=MAX_WEIGHT).contains(&self.weight) {
            return Err(CommandError::invalid(format!(
                "weight: takes a whole number from 1 to {MAX_WEIGHT}, not {}",
                self.weight
            )));
        }
        if self.limit == Some(0) {
            return Err(CommandError::invalid(
                "limit: takes a whole number of running attempts from 1 (leave it out for no limit)",
            ));
        }
        Ok(())
    }
}

/// The shares set for tenants; a tenant not named has the default share
/// (weight 1, no limit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shares(HashMap<TenantId, TenantShare>);

impl Shares {
    /// The shares of the tenants named.
    pub(crate) fn new(shares: impl IntoIterator<Item = (TenantId, TenantShare)>) -> Self {
        Shares(shares.into_iter().collect())
    }

    /// `tenant`'s share.
    pub(crate) fn of(&self, tenant: &TenantId) -> TenantShare {
        self.0.get(tenant).copied().unwrap_or_default()
    }
}

/// One tenant's turn, as the projection folds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Turn {
    /// The seq at which it last became live.
    pub(crate) since: u64,
    /// The seqs of its latest `started` events since then, oldest first (at
    /// most [`MAX_WEIGHT`]).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub(crate) starts: VecDeque<u64>,
    /// Its live executions.
    #[serde(skip)]
    live: u32,
    /// Its running attempts.
    #[serde(skip)]
    running: u32,
}

impl Turn {
    /// The seq its turn is at, for a tenant of `weight` that has been
    /// claimed `more` times since (at seqs after every recorded one, the
    /// `more`-th the latest): its `weight`-th most recent start, or the seq
    /// it became live at when it has had fewer starts.
    fn at(&self, weight: u32, more: &[u64]) -> u64 {
        let w = weight.max(1) as usize;
        if more.len() >= w {
            return more[more.len() - w];
        }
        let w = w - more.len();
        match self.starts.len().checked_sub(w) {
            Some(i) => self.starts[i],
            None => self.since,
        }
    }
}

/// What changed of one execution in a fold, for [`Turns::fold`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step {
    /// Live before the event.
    pub(crate) was_live: bool,
    /// Live after it.
    pub(crate) is_live: bool,
    /// Running before it.
    pub(crate) was_running: bool,
    /// Running after it.
    pub(crate) is_running: bool,
    /// The event started an attempt.
    pub(crate) started: bool,
}

/// Every tenant's turn, folded from the log.
#[derive(Clone, Debug, Default)]
pub(crate) struct Turns {
    tenants: HashMap<TenantId, Turn>,
    /// False for a projection read from a snapshot written before snapshots
    /// held turns: its turns are rebuilt from its live executions, which
    /// may differ from the fold's (compared only when both are known).
    pub(crate) known: bool,
}

impl Turns {
    /// No tenant live.
    pub(crate) fn new() -> Self {
        Turns {
            tenants: HashMap::new(),
            known: true,
        }
    }

    /// Folds in what event `seq` did to one of `tenant`'s executions.
    pub(crate) fn fold(&mut self, tenant: &TenantId, seq: u64, step: Step) {
        if !step.was_live && !step.is_live {
            return;
        }
        let turn = match self.tenants.get_mut(tenant) {
            Some(t) => t,
            None => self.tenants.entry(tenant.clone()).or_insert(Turn {
                since: seq,
                ..Turn::default()
            }),
        };
        if step.started {
            if turn.starts.len() == MAX_WEIGHT as usize {
                turn.starts.pop_front();
            }
            turn.starts.push_back(seq);
        }
        turn.running = turn.running + u32::from(step.is_running) - u32::from(step.was_running);
        turn.live = turn.live + u32::from(step.is_live) - u32::from(step.was_live);
        if turn.live == 0 {
            self.tenants.remove(tenant);
        }
    }

    /// Counts in one live execution read from a snapshot.
    pub(crate) fn count_in(&mut self, tenant: &TenantId, running: bool, submitted: u64) {
        let turn = self.tenants.entry(tenant.clone()).or_insert(Turn {
            since: submitted,
            ..Turn::default()
        });
        turn.live += 1;
        turn.running += u32::from(running);
        if !self.known {
            turn.since = turn.since.min(submitted);
        }
    }

    /// Takes the turns a snapshot kept (for tenants it counted in).
    pub(crate) fn restore(&mut self, kept: BTreeMap<TenantId, Turn>) {
        for (tenant, kept) in kept {
            if let Some(turn) = self.tenants.get_mut(&tenant) {
                turn.since = kept.since;
                turn.starts = kept.starts;
            }
        }
    }

    /// The turns, for a snapshot, in tenant order.
    pub(crate) fn kept(&self) -> BTreeMap<TenantId, Turn> {
        self.tenants
            .iter()
            .map(|(t, turn)| (t.clone(), turn.clone()))
            .collect()
    }

    /// The first difference from `other`'s turns, when both are known.
    pub(crate) fn difference(&self, other: &Turns) -> Option<String> {
        if !self.known || !other.known {
            return None;
        }
        let mut tenants: Vec<&TenantId> = self.tenants.keys().chain(other.tenants.keys()).collect();
        tenants.sort();
        tenants.dedup();
        tenants.into_iter().find_map(|t| {
            let (ours, theirs) = (self.tenants.get(t), other.tenants.get(t));
            let same = |a: Option<&Turn>, b: Option<&Turn>| match (a, b) {
                (Some(a), Some(b)) => a.since == b.since && a.starts == b.starts,
                (a, b) => a.is_none() && b.is_none(),
            };
            (!same(ours, theirs)).then(|| format!("tenant {t} has another turn"))
        })
    }

    /// `tenant`'s running attempts.
    pub(crate) fn running(&self, tenant: &TenantId) -> u32 {
        self.tenants.get(tenant).map_or(0, |t| t.running)
    }

    /// Whether `tenant` has room under its limit for one more attempt
    /// after `taken` more claims.
    fn room(&self, shares: &Shares, tenant: &TenantId, taken: usize) -> bool {
        let running = u64::from(self.running(tenant)) + taken as u64;
        shares
            .of(tenant)
            .limit
            .is_none_or(|l| running < u64::from(l))
    }

    /// `tenant`'s turn after claims at the seqs `more` ([`Turn::at`]).
    fn turn(&self, shares: &Shares, tenant: &TenantId, more: &[u64]) -> u64 {
        let weight = shares.of(tenant).weight;
        self.tenants
            .get(tenant)
            .map_or_else(|| Turn::default().at(weight, more), |t| t.at(weight, more))
    }
}

/// One priority of the runnable queue.
#[derive(Clone, Debug, Default)]
struct Level {
    /// Each tenant's entries, by order key.
    lanes: HashMap<TenantId, BTreeMap<u64, ExecutionId>>,
    /// The tenants with entries here and room under their limit, by turn:
    /// the first is the next claim's.
    turns: BTreeSet<(u64, TenantId)>,
}

/// The runnable queue: by priority, then tenant, then order key; and, at
/// each priority, the tenants with room by turn, kept up to date as turns
/// move ([`Ready::retune`]), so that a claim looks at the first of them
/// only.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ready {
    levels: BTreeMap<Reverse<u8>, Level>,
    /// Each tenant with entries: its turn, or `None` at its limit.
    keys: HashMap<TenantId, Option<u64>>,
}

impl Ready {
    /// Adds `id` of `tenant` at `priority` with order key `order`; `key` is
    /// the tenant's turn, `None` at its limit ([`key`]).
    pub(crate) fn push(
        &mut self,
        id: ExecutionId,
        tenant: &TenantId,
        priority: u8,
        order: u64,
        key: Option<u64>,
    ) {
        self.retune(tenant, key);
        let level = self.levels.entry(Reverse(priority)).or_default();
        let lane = match level.lanes.get_mut(tenant) {
            Some(lane) => lane,
            None => {
                if let Some(k) = key {
                    level.turns.insert((k, tenant.clone()));
                }
                self.keys.entry(tenant.clone()).or_insert(key);
                level.lanes.entry(tenant.clone()).or_default()
            }
        };
        lane.insert(order, id);
    }

    /// Removes the entry pushed with these keys.
    pub(crate) fn remove(&mut self, tenant: &TenantId, priority: u8, order: u64) {
        let Some(level) = self.levels.get_mut(&Reverse(priority)) else {
            return;
        };
        let Some(lane) = level.lanes.get_mut(tenant) else {
            return;
        };
        lane.remove(&order);
        if lane.is_empty() {
            level.lanes.remove(tenant);
            if let Some(Some(k)) = self.keys.get(tenant) {
                level.turns.remove(&(*k, tenant.clone()));
            }
            if level.lanes.is_empty() {
                self.levels.remove(&Reverse(priority));
            }
            if !self.levels.values().any(|l| l.lanes.contains_key(tenant)) {
                self.keys.remove(tenant);
            }
        }
    }

    /// Moves `tenant` to turn `key` (`None`: at its limit) at every
    /// priority it has entries at.
    pub(crate) fn retune(&mut self, tenant: &TenantId, key: Option<u64>) {
        let Some(old) = self.keys.get_mut(tenant) else {
            return;
        };
        if *old == key {
            return;
        }
        let old = std::mem::replace(old, key);
        for level in self.levels.values_mut() {
            if level.lanes.contains_key(tenant) {
                if let Some(k) = old {
                    level.turns.remove(&(k, tenant.clone()));
                }
                if let Some(k) = key {
                    level.turns.insert((k, tenant.clone()));
                }
            }
        }
    }

    /// The tenants with entries.
    pub(crate) fn tenants(&self) -> Vec<TenantId> {
        self.keys.keys().cloned().collect()
    }

    /// Its levels, highest priority first: each tenant's entries in order.
    #[allow(clippy::type_complexity)]
    pub(crate) fn levels(
        &self,
    ) -> impl Iterator<
        Item = (
            u8,
            impl Iterator<Item = (&TenantId, impl Iterator<Item = (u64, ExecutionId)> + '_)> + '_,
        ),
    > + '_ {
        self.levels.iter().map(|(Reverse(p), level)| {
            let tenants = level
                .lanes
                .iter()
                .map(|(t, q)| (t, q.iter().map(|(o, id)| (*o, *id))));
            (*p, tenants)
        })
    }
}

/// `tenant`'s key in the runnable queue: its turn, or `None` when its
/// running attempts are at its limit.
pub(crate) fn key(turns: &Turns, shares: &Shares, tenant: &TenantId) -> Option<u64> {
    turns
        .room(shares, tenant, 0)
        .then(|| turns.turn(shares, tenant, &[]))
}

/// What claims would take from `ready`, by the rule this module
/// describes, as [`listing`] lists them: up to `max`, of `tenant` only
/// when given, of the entries `accept` takes only. `next` is the seq the
/// first claim would be recorded at. A claim looks at the first tenant by
/// turn at the highest priority (and at the tenants it already took, whose
/// turns moved), not at every tenant.
pub(crate) fn claims(
    ready: &Ready,
    turns: &Turns,
    shares: &Shares,
    next: u64,
    max: usize,
    tenant: Option<&TenantId>,
    accept: impl Fn(ExecutionId) -> bool,
) -> Vec<ExecutionId> {
    let mut picked: Vec<ExecutionId> = Vec::new();
    // Claims taken so far, by tenant: the seqs they would be recorded at.
    let mut taken: HashMap<&TenantId, Vec<u64>> = HashMap::new();
    let room = |t: &TenantId, n: usize| turns.room(shares, t, n);
    let turn = |t: &TenantId, more: &[u64]| turns.turn(shares, t, more);
    for level in ready.levels.values() {
        if picked.len() >= max {
            break;
        }
        if let Some(only) = tenant {
            // One tenant's own claims: its entries in order, within its
            // limit.
            let Some(lane) = level.lanes.get(only) else {
                continue;
            };
            for (_, id) in lane.iter().filter(|(_, id)| accept(**id)) {
                let n = taken.get(only).map_or(0, Vec::len);
                if picked.len() >= max || !room(only, n) {
                    break;
                }
                picked.push(*id);
                taken
                    .entry(only)
                    .or_default()
                    .push(next + picked.len() as u64 - 1);
            }
            continue;
        }
        // The tenants taken from before, by their moved turns; the others
        // come from the level's index, by their turns.
        let mut moved: BinaryHeap<Reverse<(u64, &TenantId)>> = BinaryHeap::new();
        let mut lanes: HashMap<&TenantId, std::collections::btree_map::Iter<'_, u64, ExecutionId>> =
            HashMap::new();
        for (t, more) in &taken {
            if let Some(lane) = level.lanes.get(*t) {
                if room(t, more.len()) {
                    moved.push(Reverse((turn(t, more), *t)));
                    lanes.insert(*t, lane.iter());
                }
            }
        }
        // (A tenant taken from since has a stale entry there: skipped.)
        let mut index = level.turns.iter().peekable();
        while picked.len() < max {
            let from_index = match (index.peek(), moved.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((k, _)), Some(Reverse((m, _)))) => k < m,
            };
            let t: &TenantId = if from_index {
                let (_, t) = index.next().expect("peeked");
                if taken.contains_key(t) {
                    continue;
                }
                lanes.insert(t, level.lanes[t].iter());
                t
            } else {
                moved.pop().expect("peeked").0 .1
            };
            let lane = lanes.get_mut(t).expect("a lane for each tenant looked at");
            let Some((_, id)) = lane.find(|(_, id)| accept(**id)) else {
                continue;
            };
            picked.push(*id);
            let more = taken.entry(t).or_default();
            more.push(next + picked.len() as u64 - 1);
            if room(t, more.len()) {
                moved.push(Reverse((turn(t, more), t)));
            }
        }
    }
    picked
}

/// The whole runnable queue of `ready` (of `tenant` only, when given), in
/// claim order: what claims would take of the entries `accept` takes, as
/// if each were claimed in turn and none finished ([`claims`]), then the
/// rest — what their tenants' limits hold back, and what `accept` passes
/// over — by priority and then order key.
pub(crate) fn listing(
    ready: &Ready,
    turns: &Turns,
    shares: &Shares,
    next: u64,
    tenant: Option<&TenantId>,
    accept: impl Fn(ExecutionId) -> bool,
) -> Vec<ExecutionId> {
    let mut listed = claims(ready, turns, shares, next, usize::MAX, tenant, accept);
    let claimable: std::collections::HashSet<ExecutionId> = listed.iter().copied().collect();
    let mut held: Vec<(Reverse<u8>, u64, ExecutionId)> = ready
        .levels()
        .flat_map(|(priority, tenants)| {
            tenants
                .filter(move |(t, _)| tenant.is_none_or(|only| only == *t))
                .flat_map(move |(_, q)| q.map(move |(order, id)| (Reverse(priority), order, id)))
        })
        .filter(|(_, _, id)| !claimable.contains(id))
        .collect();
    held.sort_unstable();
    listed.extend(held.into_iter().map(|(_, _, id)| id));
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TenantId {
        name.parse().unwrap()
    }

    #[test]
    fn a_share_takes_weights_from_1_to_100_and_limits_from_1() {
        assert!(TenantShare::new(1, None).is_ok());
        assert!(TenantShare::new(MAX_WEIGHT, Some(1)).is_ok());
        let err = TenantShare::new(0, None).unwrap_err().to_string();
        assert_eq!(err, "weight: takes a whole number from 1 to 100, not 0");
        let err = TenantShare::new(101, None).unwrap_err().to_string();
        assert_eq!(err, "weight: takes a whole number from 1 to 100, not 101");
        assert!(TenantShare::new(1, Some(0))
            .unwrap_err()
            .to_string()
            .starts_with("limit: "));
        // Left out, each takes its default.
        let share: TenantShare = serde_json::from_str("{}").unwrap();
        assert_eq!(share, TenantShare::default());
        let share: TenantShare = serde_json::from_str(r#"{"limit":2}"#).unwrap();
        assert_eq!((share.weight, share.limit), (1, Some(2)));
    }

    /// Turns from folded events: `(tenant, seq, started)` for queued (not
    /// started) and started events, every execution staying live.
    fn turns(steps: &[(&str, u64, bool)]) -> Turns {
        let mut turns = Turns::new();
        for &(tenant, seq, started) in steps {
            turns.fold(
                &t(tenant),
                seq,
                Step {
                    was_live: started,
                    is_live: true,
                    was_running: false,
                    is_running: started,
                    started,
                },
            );
        }
        turns
    }

    /// The id standing for order key `n`.
    fn id(n: u64) -> ExecutionId {
        let mut b = [0u8; 16];
        b[8..].copy_from_slice(&n.to_be_bytes());
        ExecutionId::from_bytes(b)
    }

    /// The listing of `queues` (each tenant's order keys, at one priority),
    /// as order keys; only what claims would take unless `blocked`.
    fn order_of(
        queues: &[(&str, &[u64])],
        turns: &Turns,
        shares: &Shares,
        next: u64,
        blocked: bool,
    ) -> Vec<u64> {
        let mut ready = Ready::default();
        for (tenant, q) in queues {
            for o in *q {
                ready.push(id(*o), &t(tenant), 0, *o, key(turns, shares, &t(tenant)));
            }
        }
        let listed = match blocked {
            true => listing(&ready, turns, shares, next, None, |_| true),
            false => claims(&ready, turns, shares, next, usize::MAX, None, |_| true),
        };
        let key_of = |e: ExecutionId| u64::from_be_bytes(e.as_bytes()[8..].try_into().unwrap());
        listed.into_iter().map(key_of).collect()
    }

    #[test]
    fn tenants_take_turns_by_weight() {
        // acme queued 1-6, globex 7-9; none started yet.
        let steps: Vec<(&str, u64, bool)> = (1..=6)
            .map(|s| ("acme", s, false))
            .chain((7..=9).map(|s| ("globex", s, false)))
            .collect();
        let turns = turns(&steps);
        let queues: [(&str, &[u64]); 2] = [("acme", &[1, 2, 3, 4, 5, 6]), ("globex", &[7, 8, 9])];
        let even = Shares::default();
        assert_eq!(
            order_of(&queues, &turns, &even, 10, false),
            [1, 7, 2, 8, 3, 9, 4, 5, 6]
        );
        let heavy = Shares::new([(t("acme"), TenantShare::new(2, None).unwrap())]);
        assert_eq!(
            order_of(&queues, &turns, &heavy, 10, false),
            [1, 2, 7, 3, 4, 8, 5, 6, 9]
        );
    }

    #[test]
    fn a_tenant_at_its_limit_is_passed_over_and_listed_last() {
        let turns = turns(&[("acme", 1, false), ("acme", 2, false), ("globex", 3, false)]);
        let queues: [(&str, &[u64]); 2] = [("acme", &[1, 2]), ("globex", &[3])];
        let one = Shares::new([(t("acme"), TenantShare::new(1, Some(1)).unwrap())]);
        assert_eq!(order_of(&queues, &turns, &one, 4, false), [1, 3]);
        assert_eq!(order_of(&queues, &turns, &one, 4, true), [1, 3, 2]);
    }

    #[test]
    fn a_tenant_that_had_no_live_work_starts_its_turn_anew() {
        let mut turns = turns(&[("acme", 1, false), ("acme", 2, true)]);
        assert_eq!(turns.tenants[&t("acme")].starts, [2]);
        // Its one execution settles: it has no turn any more.
        let settled = Step {
            was_live: true,
            is_live: false,
            was_running: true,
            is_running: false,
            started: false,
        };
        turns.fold(&t("acme"), 3, settled);
        assert!(turns.kept().is_empty());
        let queued = Step {
            was_live: false,
            is_live: true,
            was_running: false,
            is_running: false,
            started: false,
        };
        turns.fold(&t("acme"), 9, queued);
        let turn = &turns.tenants[&t("acme")];
        assert_eq!((turn.since, turn.starts.len()), (9, 0));
    }
}
