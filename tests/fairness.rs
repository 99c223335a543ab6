//! Fair shares between tenants: what the queue-order rule promises, tried
//! on random workloads (through the projection, the one place that orders
//! the queue) and on a real ledger (claims, `queue`, time travel, a
//! restart).
//!
//! The promise: once a tenant B has runnable work at a priority and room
//! under its concurrency limit, every other tenant `t` is claimed at most
//! `weight(t)` times at that priority before B is; no tenant ever runs more
//! attempts at once than its limit; and a claim that takes fewer than it
//! asked for leaves nothing claimable behind.
//!
//! Cases: `PROPTEST_CASES` when set, else 2,000.

mod common;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use common::TestClock;
use execution_ledger::{
    At, BackgroundExecutionStatus as Status, Claim, Event, EventKind, ExecutionId, Ledger,
    Projection, Submission, TenantId, TenantShare,
};
use proptest::prelude::*;
use serde_json::json;

fn tenant(i: usize) -> TenantId {
    format!("tenant-{i}").parse().unwrap()
}

fn start_of_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// What a random workload does next.
#[derive(Clone, Debug)]
enum Op {
    /// Tenant `.0` submits `.2` executions at priority `.1`.
    Submit(usize, u8, u8),
    /// A worker claims up to `.0`.
    Claim(usize),
    /// The running attempt picked by `.0` ends.
    Finish(prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..4, prop::sample::select(vec![0u8, 0, 5]), 1u8..=6)
            .prop_map(|(t, p, n)| Op::Submit(t, p, n)),
        5 => (1usize..=3).prop_map(Op::Claim),
        4 => any::<prop::sample::Index>().prop_map(Op::Finish),
    ]
}

/// Four tenants' weights (1 to 4) and limits (none, or 1 to 3).
fn shares() -> impl Strategy<Value = Vec<(u32, Option<u32>)>> {
    prop::collection::vec((1u32..=4, prop::option::weighted(0.4, 1u32..=3)), 4)
}

/// A projection driven by hand, as a ledger's write path drives it, and
/// the bookkeeping the promise is checked against.
struct Sim {
    proj: Projection,
    seq: u64,
    now: DateTime<Utc>,
    shares: Vec<(u32, Option<u32>)>,
    /// Running attempts: id, tenant index, attempt.
    running: Vec<(ExecutionId, usize, u32)>,
    /// Queued executions: id to (tenant index, priority).
    queued: HashMap<ExecutionId, (usize, u8)>,
    /// For each tenant B and priority P at which B has runnable work and
    /// room: claims of each other tenant at P since then (or since B's
    /// latest claim).
    windows: BTreeMap<(usize, u8), HashMap<usize, u32>>,
    /// Claims counted into some window, and the most any window saw.
    counted: u64,
    passed_over: u64,
}

impl Sim {
    fn new(shares: Vec<(u32, Option<u32>)>) -> Self {
        let mut proj = Projection::new();
        proj.set_tenant_shares(
            shares
                .iter()
                .enumerate()
                .map(|(i, &(w, l))| (tenant(i), TenantShare::new(w, l).unwrap())),
        );
        Sim {
            proj,
            seq: 0,
            now: start_of_time(),
            shares,
            running: Vec::new(),
            queued: HashMap::new(),
            windows: BTreeMap::new(),
            counted: 0,
            passed_over: 0,
        }
    }

    fn apply(&mut self, id: ExecutionId, t: usize, kind: EventKind) {
        self.seq += 1;
        let event = Event {
            seq: self.seq,
            at: self.now,
            execution_id: id,
            tenant_id: tenant(t),
            kind,
        };
        self.proj
            .apply(&event)
            .expect("the state machine accepts it");
    }

    fn running_of(&self, t: usize) -> u32 {
        self.running.iter().filter(|r| r.1 == t).count() as u32
    }

    fn has_room(&self, t: usize) -> bool {
        self.shares[t].1.is_none_or(|l| self.running_of(t) < l)
    }

    /// Opens the window of every tenant that has runnable work at a
    /// priority and room, and closes the others'.
    fn reopen(&mut self) {
        let mut now: BTreeMap<(usize, u8), HashMap<usize, u32>> = BTreeMap::new();
        for &(t, p) in self.queued.values() {
            if self.has_room(t) {
                let kept = self.windows.remove(&(t, p)).unwrap_or_default();
                now.entry((t, p)).or_insert(kept);
            }
        }
        self.windows = now;
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Submit(t, p, n) => {
                for _ in 0..n {
                    let mut s = Submission::new("work");
                    s.config.priority = p;
                    let id = ExecutionId::new();
                    self.apply(id, t, EventKind::Queued(Box::new(s)));
                    self.queued.insert(id, (t, p));
                }
            }
            Op::Claim(max) => self.claim(max),
            Op::Finish(i) => {
                if !self.running.is_empty() {
                    let (id, t, attempt) = self.running.remove(i.index(self.running.len()));
                    let kind = EventKind::Completed {
                        attempt,
                        output: json!(null),
                    };
                    self.apply(id, t, kind);
                }
            }
        }
        self.reopen();
    }

    /// Claims as the write path does: the projection's picks, started in
    /// one run of consecutive events.
    fn claim(&mut self, max: usize) {
        let picks: Vec<(ExecutionId, u32)> = self
            .proj
            .runnable(self.now, None, None, max)
            .into_iter()
            .map(|e| (e.execution_id, e.attempt + 1))
            .collect();
        for &(id, attempt) in &picks {
            let (t, p) = self.queued.remove(&id).expect("a pick was queued");
            let kind = EventKind::Started {
                attempt,
                worker: Some("w".into()),
                lease_ms: None,
            };
            self.apply(id, t, kind);
            self.running.push((id, t, attempt));
            // The promise, for every tenant waiting at this priority.
            let weight = self.shares[t].0;
            for (&(b, q), claims) in self.windows.iter_mut() {
                if b != t && q == p {
                    let n = claims.entry(t).or_default();
                    *n += 1;
                    self.counted += 1;
                    self.passed_over = self.passed_over.max(u64::from(*n));
                    assert!(
                        *n <= weight,
                        "tenant-{t} (weight {weight}) was claimed {n} times at priority {p} \
                         while tenant-{b} waited with room"
                    );
                }
            }
            // B's claim (at any priority) starts its windows over.
            for (&(b, _), claims) in self.windows.iter_mut() {
                if b == t {
                    claims.clear();
                }
            }
            if let Some(limit) = self.shares[t].1 {
                assert!(self.running_of(t) <= limit, "tenant-{t} ran over its limit");
            }
            // Its last work at a priority claimed, or its limit reached,
            // it no longer waits there.
            self.reopen();
        }
        // A short claim leaves nothing claimable behind.
        if picks.len() < max {
            let left = self
                .queued
                .values()
                .filter(|(t, _)| self.has_room(*t))
                .count();
            assert_eq!(
                left,
                0,
                "a claim of {max} took {} with work claimable",
                picks.len()
            );
        }
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random workloads of four tenants, random weights and limits: the
    /// promise holds at every claim.
    #[test]
    fn no_tenant_waits_longer_than_its_share_allows(
        shares in shares(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let mut sim = Sim::new(shares);
        for op in &ops {
            sim.step(op);
        }
    }
}

/// The random workloads are not vacuous: many claims happen while another
/// tenant waits, and some tenant is passed over as often as the weight
/// allows.
#[test]
fn the_workloads_exercise_the_promise() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (shares(), prop::collection::vec(op(), 1..150));
    let (mut counted, mut most) = (0, 0);
    for _ in 0..200 {
        let (shares, ops) = strategy.new_tree(&mut runner).unwrap().current();
        let mut sim = Sim::new(shares);
        for op in &ops {
            sim.step(op);
        }
        counted += sim.counted;
        most = most.max(sim.passed_over);
    }
    eprintln!("claims while another tenant waited: {counted}; most claims of one tenant before a waiting one: {most}");
    assert!(
        counted >= 3_000,
        "only {counted} claims while another waited"
    );
    assert!(
        most >= 3,
        "no tenant was passed over more than {most} times"
    );
}

/// The case: one tenant's burst of 100,000 at the same priority as
/// another's ten submitted after it. At equal weights the ten are claimed
/// by the 20th claim, one in every two; at weight 3 against 1, by the
/// 40th, one in every four.
#[test]
fn a_burst_does_not_starve_ten_jobs() {
    for (burst_weight, within) in [(1u32, 20usize), (3, 40)] {
        let mut sim = Sim::new(vec![(burst_weight, None), (1, None)]);
        for _ in 0..1_000 {
            sim.step(&Op::Submit(0, 0, 100));
        }
        sim.step(&Op::Submit(1, 0, 10));
        let mut order = Vec::new();
        for _ in 0..within {
            sim.step(&Op::Claim(1));
            let (_, t, _) = *sim.running.last().unwrap();
            order.push(t);
            sim.step(&Op::Finish(any_index()));
        }
        assert_eq!(
            order.iter().filter(|t| **t == 1).count(),
            10,
            "weight {burst_weight}: {order:?}"
        );
        // Taking turns: the burst's tenant `weight` claims to each one.
        let expected: Vec<usize> = (0..10)
            .flat_map(|_| std::iter::repeat_n(0, burst_weight as usize).chain([1]))
            .collect();
        assert_eq!(order, expected, "weight {burst_weight}");
    }
}

fn any_index() -> prop::sample::Index {
    use proptest::strategy::ValueTree;
    any::<prop::sample::Index>()
        .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
        .unwrap()
        .current()
}

// ====================================================================== a real ledger

fn submit_many(ledger: &Ledger, t: &TenantId, callable: &str, n: usize) -> Vec<ExecutionId> {
    let mut ids = Vec::new();
    let mut left = n;
    while left > 0 {
        let batch = left.min(execution_ledger::MAX_BATCH);
        let subs = (0..batch).map(|_| Submission::new(callable)).collect();
        let done = ledger.submit_many(t, subs).wait().unwrap();
        ids.extend(done.into_iter().map(|s| s.execution.execution_id));
        left -= batch;
    }
    ids
}

/// On a real ledger: a burst of 10,000 and ten jobs after it; claims (in
/// batches of four, as a worker takes them) interleave the two tenants,
/// `queue` shows the order claims then follow, a limit holds the burst's
/// tenant to two running while the other's work goes ahead, and after a
/// restart the queue is in the same order; time travel shows the queue of
/// the past in the order its claims took.
#[test]
fn a_ledger_claims_in_fair_order_across_a_restart() {
    let store = common::store();
    let clock = TestClock::new();
    let open = || {
        Ledger::builder(store.path())
            .clock(clock.clone())
            .snapshot_every(50)
            .open()
            .unwrap()
    };
    let (burst, small) = (tenant(0), tenant(1));
    let ledger = open();
    let burst_ids = submit_many(&ledger, &burst, "import", 10_000);
    let small_ids = submit_many(&ledger, &small, "report", 10);

    // What `queue` says before any claim is the order the claims follow.
    let queued: Vec<ExecutionId> = ledger
        .queue(None)
        .into_iter()
        .take(8)
        .map(|e| e.execution_id)
        .collect();
    let head = ledger.head().seq;
    let claimed: Vec<ExecutionId> = ledger
        .claim_with(Claim::new().worker("w1").max(4))
        .wait()
        .unwrap()
        .into_iter()
        .chain(
            ledger
                .claim_with(Claim::new().worker("w1").max(4))
                .wait()
                .unwrap(),
        )
        .map(|e| e.execution_id)
        .collect();
    assert_eq!(claimed, queued);
    let expected: Vec<ExecutionId> = (0..4).flat_map(|i| [burst_ids[i], small_ids[i]]).collect();
    assert_eq!(claimed, expected, "the tenants take turns");
    // Time travel: the queue as it was before the claims, in their order.
    let past: Vec<ExecutionId> = ledger
        .queue_at(At::Seq(head), None)
        .unwrap()
        .0
        .into_iter()
        .take(8)
        .map(|e| e.execution_id)
        .collect();
    assert_eq!(past, expected);

    // A limit of 2 running holds the burst (4 running) back: the next
    // claims are all the small tenant's, until its work runs out.
    ledger
        .set_tenant_share(&burst, Some(TenantShare::new(1, Some(2)).unwrap()))
        .wait()
        .unwrap();
    let next = ledger
        .claim_with(Claim::new().worker("w1").max(10))
        .wait()
        .unwrap();
    let tenants: Vec<&TenantId> = next.iter().map(|e| &e.tenant_id).collect();
    assert_eq!(tenants, vec![&small; 6], "only the small tenant has room");
    assert_eq!(
        ledger.tenant_shares().unwrap(),
        vec![(burst.clone(), TenantShare::new(1, Some(2)).unwrap())]
    );
    // The burst's work stays queued, in order, shown after the claimable.
    let queue = ledger.queue(None);
    assert_eq!(queue.len(), 10_000 - 4);
    assert_eq!(queue[0].execution_id, burst_ids[4]);

    // Finish everything running; the burst may run two at a time again,
    // and the small tenant, with nothing left, is out of the way.
    let running: Vec<ExecutionId> = claimed
        .iter()
        .copied()
        .chain(next.iter().map(|e| e.execution_id))
        .collect();
    assert_eq!(running.len(), 14);
    for id in running {
        let e = ledger.get(id).unwrap();
        assert_eq!(e.status, Status::Running);
        ledger
            .complete(id, e.attempt, json!("done"))
            .wait()
            .unwrap();
    }
    // The small tenant comes back with five more: it takes turns with the
    // burst again, which runs two at most.
    let again = submit_many(&ledger, &small, "report", 5);
    let order: Vec<ExecutionId> = ledger
        .queue(None)
        .into_iter()
        .take(7)
        .map(|e| e.execution_id)
        .collect();
    assert_eq!(
        order,
        vec![
            burst_ids[4],
            again[0],
            burst_ids[5],
            again[1],
            again[2],
            again[3],
            again[4]
        ]
    );
    let before: Vec<ExecutionId> = ledger
        .queue(None)
        .into_iter()
        .take(20)
        .map(|e| e.execution_id)
        .collect();
    drop(ledger);

    // After a restart, from a snapshot and the log after it, the same.
    let ledger = open();
    let after: Vec<ExecutionId> = ledger
        .queue(None)
        .into_iter()
        .take(20)
        .map(|e| e.execution_id)
        .collect();
    assert_eq!(after, before);
    let claimed = ledger
        .claim_with(Claim::new().worker("w2").max(4))
        .wait()
        .unwrap();
    let claimed: Vec<ExecutionId> = claimed.into_iter().map(|e| e.execution_id).collect();
    assert_eq!(
        claimed,
        before[..4],
        "claims follow the queue after a restart"
    );
    assert!(ledger.verify().unwrap().projection_compared);
    ledger.check_projection().unwrap();
}

// ====================================================================== CLI and HTTP

/// `ledger share` / `ledger shares`: set, shown (with what runs now), used
/// by `claim` and `queue`, refused when out of range (exit 2, one line,
/// nothing changed), put back.
#[test]
fn the_cli_sets_lists_and_resets_a_share() {
    use common::{ledger_cli, stderr, stdout};
    let store = common::store();
    let dir = store.path();
    let ledger = Ledger::open(dir).unwrap();
    let burst = submit_many(&ledger, &tenant(0), "import", 6);
    let small = submit_many(&ledger, &tenant(1), "report", 2);
    drop(ledger);

    let set = ledger_cli(dir, &["share", "tenant-0", "--weight", "2", "--limit", "2"]);
    assert!(set.status.success(), "{}", stderr(&set));
    assert_eq!(
        stdout(&set),
        "tenant tenant-0: weight 2, at most 2 running\n"
    );
    for _ in 0..3 {
        let claim = ledger_cli(dir, &["claim"]);
        assert!(claim.status.success(), "{}", stderr(&claim));
    }
    let listed = ledger_cli(dir, &["--json", "shares"]);
    let line: serde_json::Value = serde_json::from_str(stdout(&listed).trim()).unwrap();
    assert_eq!(
        line,
        json!({"tenant": "tenant-0", "weight": 2, "limit": 2, "running": 2})
    );
    // Weight 2: two of the burst, then the small tenant's first; then
    // the burst is at its limit, and the queue says so.
    let queue = stdout(&ledger_cli(dir, &["queue"]));
    let lines: Vec<&str> = queue.lines().collect();
    assert!(lines[1].contains(&small[1].to_string()), "{queue}");
    assert!(lines[2].contains(&burst[2].to_string()), "{queue}");
    assert!(
        queue.contains("tenant-0 runs 2 at once, its limit: its 4 queued wait until one ends"),
        "{queue}"
    );

    for (args, message) in [
        (
            vec!["share", "tenant-0", "--weight", "101"],
            "error: invalid value '101' for '--weight <WEIGHT>': takes a whole number from 1 to 100\n",
        ),
        (
            vec!["share", "tenant-0", "--limit", "0"],
            "error: invalid value '0' for '--limit <LIMIT>': takes a whole number of running attempts from 1 (leave it out for no limit)\n",
        ),
        (
            vec!["--tenant", "tenant-0", "share", "tenant-0", "--weight", "5"],
            "error: tenant: a handle scoped to a tenant cannot set shares\n",
        ),
    ] {
        let refused = ledger_cli(dir, &args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&refused), message, "{args:?}");
    }
    let listed = stdout(&ledger_cli(dir, &["shares"]));
    assert!(listed.contains("tenant-0  2       2      2"), "{listed}");

    let reset = ledger_cli(dir, &["share", "tenant-0", "--reset"]);
    assert_eq!(stdout(&reset), "tenant tenant-0: weight 1, no limit\n");
    assert_eq!(
        stdout(&ledger_cli(dir, &["shares"])),
        "every tenant has weight 1 and no limit\n"
    );
    let ledger = Ledger::open(dir).unwrap();
    assert_eq!(ledger.tenant_shares().unwrap(), vec![]);
    assert!(ledger.verify().unwrap().projection_compared);
}

/// Through a real server with keys: the admin sets a share and every
/// claim follows it; a tenant key may not set one (403) and sees its own
/// only; bad bodies are refused naming the field; the CLI reaches the
/// same through `--server`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sets_shares_for_the_admin_only() {
    use common::server::{client, error_code, json_of, sha256_hex, Server};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_keys(
        dir.path(),
        json!([
            {"admin": true, "sha256": sha256_hex("root-key")},
            {"tenant": "tenant-0", "sha256": sha256_hex("key-0")},
            {"tenant": "tenant-1", "sha256": sha256_hex("key-1")},
        ]),
    );
    let c = client();
    let as_key = |r: reqwest::RequestBuilder, key: &str| r.bearer_auth(key).send();
    for (key, n) in [("key-0", 4), ("key-1", 2)] {
        for _ in 0..n {
            let r = c
                .post(server.url("/v1/executions"))
                .json(&json!({"callableName": "work"}));
            let (status, body) = json_of(as_key(r, key).await.unwrap()).await;
            assert_eq!(status, 201, "{body}");
        }
    }
    let put = |key: &str, body: serde_json::Value| {
        as_key(
            c.put(server.url("/v1/tenants/tenant-0/share")).json(&body),
            key,
        )
    };
    let (status, body) = json_of(put("key-0", json!({"weight": 5})).await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"), "{body}");
    for (body, message) in [
        (
            json!({"weight": 0}),
            "weight: takes a whole number from 1 to 100, not 0",
        ),
        (
            json!({"weight": 3, "limit": 0}),
            "limit: takes a whole number of running attempts from 1 (leave it out for no limit)",
        ),
        (json!({"weight": 3, "burst": 1}), "burst: unknown field"),
    ] {
        let (status, refused) = json_of(put("root-key", body).await.unwrap()).await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["error"]["message"], message, "{refused}");
    }
    let (status, set) = json_of(put("root-key", json!({"limit": 1})).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        set,
        json!({"tenant": "tenant-0", "weight": 1, "limit": 1, "running": 0})
    );

    // A worker claiming four gets one of tenant-0's (its limit) and both
    // of tenant-1's.
    let (status, claimed) = json_of(
        as_key(
            c.post(server.url("/v1/workers/claim"))
                .json(&json!({"worker": "w1", "callables": ["work"], "max": 4, "leaseMs": 60000})),
            "root-key",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    let tenants: Vec<&str> = claimed["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tenantId"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["tenant-0", "tenant-1", "tenant-1"], "{claimed}");

    let list = |key: &str| as_key(c.get(server.url("/v1/shares")), key);
    let (_, all) = json_of(list("root-key").await.unwrap()).await;
    assert_eq!(
        all,
        json!({"shares": [{"tenant": "tenant-0", "weight": 1, "limit": 1, "running": 1}]})
    );
    let (_, own) = json_of(list("key-1").await.unwrap()).await;
    assert_eq!(own, json!({"shares": []}), "tenant-1 sees its own only");

    // The CLI, through the server.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["--server", &server.url(""), "--api-key", "root-key"])
            .args(args)
            .output()
            .unwrap()
    };
    let set = cli(&["share", "tenant-1", "--weight", "4"]);
    assert_eq!(
        common::stdout(&set),
        "tenant tenant-1: weight 4, no limit\n",
        "{}",
        common::stderr(&set)
    );
    let listed = common::stdout(&cli(&["--json", "shares"]));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let reset = cli(&["share", "tenant-0", "--reset"]);
    assert_eq!(
        common::stdout(&reset),
        "tenant tenant-0: weight 1, no limit\n"
    );
    let (status, back) = json_of(
        as_key(
            c.delete(server.url("/v1/tenants/tenant-1/share")),
            "root-key",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, &back["weight"]), (200, &json!(1)));
    let (_, all) = json_of(list("root-key").await.unwrap()).await;
    assert_eq!(all, json!({"shares": []}));
}
