//! Benchmark scenarios, each measured side by side with the raw sled (or
//! seed) baseline it is judged against, in the same run. `ledger bench`
//! runs them, and the criterion benches and profiling programs in
//! `benches/` include this same file (`#[path]`), so there is one
//! implementation of each scenario. It uses execution-ledger's public API
//! only.
//!
//! Every target is a ratio against a baseline measured in the same run,
//! never an absolute time: figures drift on a shared machine, ratios much
//! less.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use execution_ledger::{
    BackgroundExecution, BackgroundExecutionQueue, Durability, Event, Ledger, LedgerBuilder,
    ListFilter, Runtime, Submission, TenantId,
};
use serde::Serialize;

/// Why a scenario stopped: the ledger failed or refused a command, or the
/// file system or tokio failed.
#[derive(Debug)]
pub struct ScenarioError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ScenarioError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<execution_ledger::StorageError> for ScenarioError {
    fn from(e: execution_ledger::StorageError) -> Self {
        ScenarioError(Box::new(e))
    }
}

impl From<execution_ledger::CommandError> for ScenarioError {
    fn from(e: execution_ledger::CommandError) -> Self {
        ScenarioError(Box::new(e))
    }
}

impl From<std::io::Error> for ScenarioError {
    fn from(e: std::io::Error) -> Self {
        ScenarioError(Box::new(e))
    }
}

/// One figure, its baseline from the same run, and the target it is held to.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// The scenario.
    pub name: String,
    /// The ledger's figure.
    pub value: f64,
    /// Its unit (`events/s`, `ms`, …).
    pub unit: String,
    /// What the baseline is.
    pub baseline_name: String,
    /// The baseline's figure, in the same unit.
    pub baseline: f64,
    /// `value / baseline`.
    pub ratio: f64,
    /// The target ratio.
    pub target: f64,
    /// Whether a higher ratio is better (the target is a floor) or a lower
    /// one (the target is a ceiling).
    pub higher_is_better: bool,
    /// Whether the target is met.
    pub met: bool,
    /// Whether there is no target (the ratio is for information).
    pub informational: bool,
    /// The sizes it ran at.
    pub size: String,
}

/// The ratio a scenario is held to.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
    /// No target: the ratio is reported for information (always met).
    Informational,
}

impl Measurement {
    /// A measurement of `value` against `baseline`, held to `target`.
    pub fn new(
        name: &str,
        unit: &str,
        value: f64,
        baseline_name: &str,
        baseline: f64,
        target: Target,
        size: String,
    ) -> Self {
        let (target, higher_is_better, informational) = match target {
            Target::AtLeast(t) => (t, true, false),
            Target::AtMost(t) => (t, false, false),
            Target::Informational => (0.0, true, true),
        };
        let ratio = if baseline > 0.0 {
            value / baseline
        } else {
            f64::NAN
        };
        let met = if informational {
            true
        } else if higher_is_better {
            ratio >= target
        } else {
            ratio <= target
        };
        Measurement {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            baseline_name: baseline_name.to_owned(),
            baseline,
            ratio,
            target,
            higher_is_better,
            met,
            informational,
            size,
        }
    }
}

/// How big the scenarios are.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Events appended in the append scenarios.
    pub appends: u64,
    /// Events in the replay scenario.
    pub replay: u64,
    /// Events in the big ledger of the open-with-snapshots scenario (the
    /// small one has 10,000: 3,000 finished and 1,000 live).
    pub big_ledger: u64,
    /// Queued executions in the big claim scenario (the small one has 1,000).
    pub big_queue: u64,
    /// Finished executions in the big memory scenario (the small one has
    /// 1,000).
    pub big_history: u64,
    /// Jobs in the end-to-end scenario.
    pub jobs: u64,
    /// Jobs in the peers' workload (the peers run 20,000).
    pub peer_jobs: u64,
    /// Rounds per measurement; the median is kept.
    pub rounds: usize,
}

impl Sizes {
    /// Sizes for `ledger bench --quick`: under about 20 s on 2 cores.
    pub fn quick() -> Sizes {
        Sizes {
            appends: 10_000,
            replay: 50_000,
            big_ledger: 60_000,
            big_queue: 30_000,
            big_history: 30_000,
            jobs: 3_000,
            peer_jobs: 2_000,
            rounds: 1,
        }
    }

    /// Sizes for `ledger bench`: about a minute on 2 cores.
    pub fn standard() -> Sizes {
        Sizes {
            appends: 30_000,
            replay: 200_000,
            big_ledger: 200_000,
            big_queue: 100_000,
            big_history: 100_000,
            jobs: 10_000,
            peer_jobs: 20_000,
            rounds: 3,
        }
    }

    /// Sizes of the figures in benches/README.md (minutes).
    pub fn full() -> Sizes {
        Sizes {
            appends: 100_000,
            replay: 1_000_000,
            big_ledger: 1_000_000,
            big_queue: 1_000_000,
            big_history: 1_000_000,
            jobs: 30_000,
            peer_jobs: 20_000,
            rounds: 3,
        }
    }
}

/// A fresh directory under `root`.
fn fresh(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The median of `v` (not empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rate(n: u64, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

/// The submission every scenario appends: about 300 bytes of event JSON.
pub fn sample_submission(i: u64) -> Submission {
    let mut s = Submission::new("bench");
    s.input = Some(format!(
        "{{\"document\":\"report-{i:08}\",\"pages\":[1,2,3],\"lang\":\"en\"}}"
    ));
    s.config.priority = (i % 7) as u8 * 30;
    s
}

fn tenant() -> TenantId {
    "bench".parse().expect("a valid tenant")
}

fn ledger(
    dir: &Path,
    durability: Durability,
    snapshot_every: u64,
) -> Result<Ledger, ScenarioError> {
    Ledger::builder(dir)
        .durability(durability)
        .snapshot_every(snapshot_every)
        .open()
        .map_err(ScenarioError::from)
}

fn raw_db(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir.join("sled"))
        .cache_capacity(LedgerBuilder::DEFAULT_CACHE_BYTES)
        .open()
        .expect("a raw sled database opens")
}

/// The bytes a ledger wrote, one sled entry per event, to replay them into
/// raw sled: each event's record under its seq (as many bytes as the
/// record: a 65-byte header, then the event's JSON; the ledger may have
/// stored several in one block), then the index entries as stored.
fn written_bytes(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = {
        let l = Ledger::open(dir).expect("the ledger reopens");
        l.events(1, None)
            .map(|e| {
                let e = e.expect("readable");
                let mut record = vec![0u8; 65];
                serde_json::to_writer(&mut record, &e).expect("an event serializes");
                (e.seq.to_be_bytes().to_vec(), record)
            })
            .collect()
    };
    let db = raw_db(dir);
    let tree = db.open_tree("events").expect("the events tree");
    out.extend(tree.range([0xFFu8].as_slice()..).map(|kv| {
        let (k, v) = kv.expect("readable");
        (k.to_vec(), v.to_vec())
    }));
    out
}

/// The ledger's writes per event, in the order it makes them: each record,
/// then an index entry (the ledger writes one for each idempotency key,
/// binding and settled execution — fewer than its events; here they are
/// spread over the first events).
fn per_event(bytes: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<&(Vec<u8>, Vec<u8>)>> {
    let (records, index): (Vec<_>, Vec<_>) = bytes.iter().partition(|(k, _)| k.len() == 8);
    let mut index = index.into_iter();
    records
        .into_iter()
        .map(|r| std::iter::once(r).chain(index.next()).collect())
        .collect()
}

/// Waits for commands queued with `spawn` (queued together, so that the
/// combiner carries them out in groups).
fn await_all<R>(pending: Vec<execution_ledger::Pending<R>>) -> Result<(), ScenarioError> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(async {
        for p in pending {
            p.await?;
        }
        Ok(())
    })
}

/// Relaxed (buffered) appends against raw single-tree inserts of the same
/// bytes, one sled entry per event (records, hash links and index
/// entries): from one caller that waits for each submit (every command its
/// own group, so one record per block), and from one caller that queues
/// them all and then awaits them (the combiner's groups fill blocks).
pub fn relaxed_append(root: &Path, sizes: Sizes) -> Result<Vec<Measurement>, ScenarioError> {
    let n = sizes.appends;
    let mut ours = Vec::new();
    let mut pipelined = Vec::new();
    let mut raw = Vec::new();
    for round in 0..sizes.rounds {
        let dir = fresh(root, &format!("append-pipelined-{round}"));
        {
            let l = ledger(&dir, Durability::Buffered, 0)?;
            let t = tenant();
            let start = Instant::now();
            let pending: Vec<_> = (0..n)
                .map(|i| l.submit(&t, sample_submission(i)).spawn())
                .collect();
            await_all(pending)?;
            pipelined.push(rate(n, start.elapsed()));
        }
        let _ = std::fs::remove_dir_all(&dir);
        let dir = fresh(root, &format!("append-{round}"));
        {
            let l = ledger(&dir, Durability::Buffered, 0)?;
            let t = tenant();
            let start = Instant::now();
            for i in 0..n {
                l.submit(&t, sample_submission(i)).wait()?;
            }
            ours.push(rate(n, start.elapsed()));
        }
        let bytes = written_bytes(&dir);
        let raw_dir = fresh(root, &format!("append-raw-{round}"));
        let db = raw_db(&raw_dir);
        let tree = db.open_tree("events").expect("a tree");
        let events = per_event(&bytes);
        let start = Instant::now();
        for (k, v) in events.iter().flatten() {
            tree.insert(k, v.as_slice()).expect("insert");
        }
        raw.push(rate(n, start.elapsed()));
        drop(tree);
        drop(db);
        let _ = std::fs::remove_dir_all(&raw_dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let raw = median(raw);
    let baseline = "sled inserts of the same records and index entries, one entry an event, one tree, no flush";
    Ok(vec![
        Measurement::new(
            "relaxed append",
            "events/s",
            median(ours),
            baseline,
            raw,
            Target::AtLeast(0.8),
            format!("{n} events, each submit awaited before the next"),
        ),
        Measurement::new(
            "relaxed append, pipelined",
            "events/s",
            median(pipelined),
            baseline,
            raw,
            Target::AtLeast(1.5),
            format!("{n} events, all submits queued, then awaited"),
        ),
    ])
}

/// Synced submits per second from `tasks` tokio tasks on a 2-thread
/// runtime, `per` each, the way the runtime and the HTTP server submit
/// (awaiting `submit`), into a fresh ledger at `dir` (removed afterwards).
///
/// # Errors
///
/// When the ledger cannot be opened.
pub fn durable_task_rate(dir: &Path, tasks: u64, per: u64) -> Result<f64, ScenarioError> {
    let figure = {
        let l = ledger(dir, Durability::Synced, 0)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()?;
        let start = Instant::now();
        rt.block_on(async {
            let mut all = Vec::new();
            for t in 0..tasks {
                let l = l.clone();
                all.push(tokio::spawn(async move {
                    let tenant = tenant();
                    for i in 0..per {
                        l.submit(&tenant, sample_submission(t * per + i))
                            .spawn()
                            .await
                            .expect("a durable submit");
                    }
                }));
            }
            for t in all {
                t.await.expect("a submitting task");
            }
        });
        rate(per * tasks, start.elapsed())
    };
    let _ = std::fs::remove_dir_all(dir);
    Ok(figure)
}

/// Synced appends from 256 concurrent submitters (group commit), against
/// raw sled batches of 256 with flush and fdatasync, and against one flush
/// and fdatasync per event.
///
/// # Errors
///
/// When a ledger cannot be opened.
pub fn durable_append(root: &Path, sizes: Sizes) -> Result<Vec<Measurement>, ScenarioError> {
    let n = sizes.appends;
    let threads = 256u64;
    let per = n.div_ceil(threads);
    let mut ours = Vec::new();
    let mut tasks = Vec::new();
    let mut batched = Vec::new();
    let mut single = Vec::new();
    for round in 0..sizes.rounds {
        let dir = fresh(root, &format!("durable-{round}"));
        {
            let l = ledger(&dir, Durability::Synced, 0)?;
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let l = l.clone();
                    s.spawn(move || {
                        let tenant = tenant();
                        for i in 0..per {
                            l.submit(&tenant, sample_submission(t * per + i))
                                .wait()
                                .expect("a durable submit");
                        }
                    });
                }
            });
            ours.push(rate(per * threads, start.elapsed()));
        }
        tasks.push(durable_task_rate(
            &fresh(root, &format!("durable-tasks-{round}")),
            threads,
            per,
        )?);
        let bytes = written_bytes(&dir);
        let events = per_event(&bytes);
        // Batches of 256 events, flush, fdatasync.
        let raw_dir = fresh(root, &format!("durable-raw-{round}"));
        {
            let db = raw_db(&raw_dir);
            let tree = db.open_tree("events").expect("a tree");
            let file = File::open(raw_dir.join("sled").join("db")).expect("sled's file");
            let start = Instant::now();
            for chunk in events.chunks(256) {
                let mut batch = sled::Batch::default();
                for (k, v) in chunk.iter().flatten() {
                    batch.insert(k.as_slice(), v.as_slice());
                }
                tree.apply_batch(batch).expect("a batch");
                db.flush().expect("flush");
                file.sync_data().expect("fdatasync");
            }
            batched.push(rate(events.len() as u64, start.elapsed()));
        }
        let _ = std::fs::remove_dir_all(&raw_dir);
        // One event per flush and fdatasync (a sample: it is slow).
        let raw_dir = fresh(root, &format!("durable-one-{round}"));
        {
            let db = raw_db(&raw_dir);
            let tree = db.open_tree("events").expect("a tree");
            let file = File::open(raw_dir.join("sled").join("db")).expect("sled's file");
            let sample = events.len().min(2_000);
            let start = Instant::now();
            for writes in events.iter().take(sample) {
                let mut batch = sled::Batch::default();
                for (k, v) in writes {
                    batch.insert(k.as_slice(), v.as_slice());
                }
                tree.apply_batch(batch).expect("a batch");
                db.flush().expect("flush");
                file.sync_data().expect("fdatasync");
            }
            single.push(rate(sample as u64, start.elapsed()));
        }
        let _ = std::fs::remove_dir_all(&raw_dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (ours, tasks) = (median(ours), median(tasks));
    let (batched, single) = (median(batched), median(single));
    let size = |who: &str| format!("{} events from {threads} {who}", per * threads);
    Ok(vec![
        Measurement::new(
            "durable append, 256 submitting threads",
            "events/s",
            ours,
            "sled batches of 256 events, one entry an event, + flush + fdatasync",
            batched,
            Target::AtLeast(1.5),
            size("threads"),
        ),
        Measurement::new(
            "durable append, 256 submitting tasks",
            "events/s",
            tasks,
            "sled batches of 256 events, one entry an event, + flush + fdatasync",
            batched,
            Target::AtLeast(1.5),
            size("tokio tasks (2 worker threads)"),
        ),
        Measurement::new(
            "durable append, 256 threads vs one sync per event",
            "events/s",
            ours,
            "sled insert + flush + fdatasync per event",
            single,
            Target::AtLeast(8.0),
            size("threads"),
        ),
        Measurement::new(
            "durable append, 256 tasks vs one sync per event",
            "events/s",
            tasks,
            "sled insert + flush + fdatasync per event",
            single,
            Target::AtLeast(8.0),
            size("tokio tasks (2 worker threads)"),
        ),
    ])
}

/// Raw single-tree inserts of `n` sample records, no flush: the engine's
/// ceiling the end-to-end scenario is held to.
fn raw_insert_rate(root: &Path, n: u64) -> f64 {
    let dir = fresh(root, "raw-insert");
    let db = raw_db(&dir);
    let tree = db.open_tree("events").expect("a tree");
    let value = vec![b'x'; 370];
    let start = Instant::now();
    for i in 1..=n {
        tree.insert(i.to_be_bytes(), value.as_slice())
            .expect("insert");
    }
    let r = rate(n, start.elapsed());
    drop(tree);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// Runs `submitters * per` durable jobs of a no-op callable through a
/// runtime of `workers` workers on `ledger` (each submitter submits its
/// jobs, then awaits their results) and returns how long they took, start-up
/// and shutdown excluded.
///
/// # Errors
///
/// When the runtime cannot start or stop.
pub async fn noop_jobs(
    ledger: Ledger,
    workers: usize,
    submitters: u64,
    per: u64,
) -> Result<Duration, ScenarioError> {
    let runtime = Runtime::builder(ledger)
        .workers(workers)
        .register("noop", |_, _| async { Ok(serde_json::Value::Null) })
        .start()
        .await?;
    let runtime = Arc::new(runtime);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            let t = tenant();
            let mut handles = Vec::new();
            for i in 0..per {
                let mut sub = sample_submission(s * per + i);
                sub.callable_name = "noop".into();
                handles.push(runtime.submit(&t, sub).await.expect("a submit"));
            }
            for h in handles {
                h.result().await.expect("finished");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a submitter");
    }
    let took = start.elapsed();
    runtime.shutdown(Duration::from_secs(5)).await?;
    Ok(took)
}

/// Durable end-to-end jobs through the runtime (submit, claim, run a no-op
/// callable, complete: three synced events a job), against raw single-tree
/// inserts.
pub fn end_to_end(root: &Path, sizes: Sizes) -> Result<Measurement, ScenarioError> {
    let jobs = sizes.jobs;
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for round in 0..sizes.rounds {
        let dir = fresh(root, &format!("e2e-{round}"));
        let l = ledger(
            &dir,
            Durability::Synced,
            LedgerBuilder::DEFAULT_SNAPSHOT_EVERY,
        )?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .max_blocking_threads(512)
            .build()?;
        let submitters = 64u64;
        let per = jobs.div_ceil(submitters);
        let took = rt.block_on(noop_jobs(l.clone(), 128, submitters, per))?;
        ours.push(rate(submitters * per, took));
        drop(l);
        let _ = std::fs::remove_dir_all(&dir);
        raw.push(raw_insert_rate(root, sizes.appends));
    }
    Ok(Measurement::new(
        "end-to-end durable jobs",
        "jobs/s",
        median(ours),
        "sled single-tree inserts, no flush (events/s)",
        median(raw),
        Target::AtLeast(0.25),
        format!("{jobs} jobs, 128 workers, 64 submitters"),
    ))
}

/// Builds a ledger of `finished` submit/claim/complete cycles (three
/// events each), then `live` executions left queued, the way a busy ledger
/// writes them: a hundred at a time (a batch submit, a claim of 100, the
/// completions queued together), so that the combiner's groups fill record
/// blocks.
pub fn build_history(
    dir: &Path,
    finished: u64,
    live: u64,
    snapshot_every: u64,
) -> Result<(), ScenarioError> {
    let l = ledger(dir, Durability::Buffered, snapshot_every)?;
    let t = tenant();
    let mut i = 0;
    while i < finished {
        let n = (finished - i).min(100);
        l.submit_many(&t, (i..i + n).map(sample_submission).collect())
            .wait()?;
        let claimed = l
            .claim_with(execution_ledger::Claim::new().max(n as usize))
            .wait()?;
        debug_assert_eq!(claimed.len() as u64, n);
        let done: Vec<_> = claimed
            .iter()
            .zip(i..)
            .map(|(c, k)| {
                l.complete(c.execution_id, c.attempt, serde_json::json!({ "ok": k }))
                    .spawn()
            })
            .collect();
        await_all(done)?;
        i += n;
    }
    let mut j = 0;
    while j < live {
        let n = (live - j).min(100);
        l.submit_many(
            &t,
            (finished + j..finished + j + n)
                .map(sample_submission)
                .collect(),
        )
        .wait()?;
        j += n;
    }
    Ok(l.flush()?)
}

/// [`build_history`], one command at a time: every record its own sled
/// entry, as ledgers were written before record blocks.
pub fn build_history_singly(
    dir: &Path,
    finished: u64,
    live: u64,
    snapshot_every: u64,
) -> Result<(), ScenarioError> {
    let l = ledger(dir, Durability::Buffered, snapshot_every)?;
    let t = tenant();
    for i in 0..finished {
        let e = l.submit(&t, sample_submission(i)).wait()?.execution;
        let c = l.claim(None).wait()?.expect("runnable");
        debug_assert_eq!(c.execution_id, e.execution_id);
        l.complete(c.execution_id, c.attempt, serde_json::json!({ "ok": i }))
            .wait()?;
    }
    for j in 0..live {
        l.submit(&t, sample_submission(finished + j)).wait()?;
    }
    Ok(l.flush()?)
}

/// A raw sled database at `copy` holding the records of the closed ledger
/// at `dir`, one entry an event (the same bytes: [`written_bytes`]), for
/// [`scan_history`].
pub fn one_entry_an_event(dir: &Path, copy: &Path) {
    let db = raw_db(copy);
    let tree = db.open_tree("events").expect("a tree");
    for (k, v) in written_bytes(dir).into_iter().filter(|(k, _)| k.len() == 8) {
        tree.insert(k, v).expect("insert");
    }
    db.flush().expect("flush");
}

/// A scan of a history stored one entry an event
/// ([`one_entry_an_event`]), the baseline of reading it whole: sled opened
/// raw, every record iterated and its event decoded; returns how many.
pub fn scan_history(dir: &Path) -> u64 {
    let db = raw_db(dir);
    let tree = db.open_tree("events").expect("the events tree");
    let mut n = 0u64;
    for kv in tree.range(..[0xFFu8].as_slice()) {
        let (_, v) = kv.expect("readable");
        let event: Event = serde_json::from_slice(&v[65..]).expect("an event");
        n += u64::from(event.seq > 0);
    }
    n
}

/// Opening (replaying) a ledger with no snapshots, against iterating the
/// same tree and decoding each event.
pub fn replay(root: &Path, sizes: Sizes) -> Result<Measurement, ScenarioError> {
    let dir = fresh(root, "replay");
    build_history(&dir, sizes.replay / 3, 1_000, 0)?;
    let plain = fresh(root, "replay-plain");
    one_entry_an_event(&dir, &plain);
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    let mut events = 0;
    for _ in 0..sizes.rounds {
        let start = Instant::now();
        let l = ledger(&dir, Durability::Buffered, 0)?;
        ours.push(rate(l.head().seq, start.elapsed()));
        events = l.head().seq;
        drop(l);
        let start = Instant::now();
        let n = scan_history(&plain);
        raw.push(rate(n, start.elapsed()));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&plain);
    Ok(Measurement::new(
        "open + replay, no snapshots",
        "events/s",
        median(ours),
        "sled open + iterate + serde_json decode of each event, the same records one entry an event",
        median(raw),
        Target::AtLeast(0.8),
        format!("{events} events"),
    ))
}

/// A page of 100 executions from a ledger of many settled ones (newest
/// first, then following cursors, then filtered by status), against a scan
/// of its history (iterating the events tree and decoding each event),
/// which is what listing would cost without the engine's list of settled
/// executions.
pub fn list_page(root: &Path, sizes: Sizes) -> Result<Measurement, ScenarioError> {
    let dir = fresh(root, "list");
    build_history(&dir, sizes.big_history, 1_000, 0)?;
    let l = ledger(&dir, Durability::Buffered, 0)?;
    let mut pages = Vec::new();
    for _ in 0..sizes.rounds.max(3) {
        let mut cursor = None;
        for _ in 0..10 {
            let start = Instant::now();
            let page = l.list(&ListFilter::new(), cursor, 100)?;
            pages.push(start.elapsed().as_secs_f64() * 1e3);
            assert_eq!(page.executions.len(), 100);
            cursor = page.next;
        }
        let mut completed = ListFilter::new();
        completed.statuses = vec![execution_ledger::BackgroundExecutionStatus::Completed];
        let start = Instant::now();
        let page = l.list(&completed, None, 100)?;
        pages.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(page.executions.len(), 100);
    }
    let events = l.head().seq;
    drop(l);
    let plain = fresh(root, "list-plain");
    one_entry_an_event(&dir, &plain);
    let mut scans = Vec::new();
    for _ in 0..sizes.rounds {
        let start = Instant::now();
        assert_eq!(scan_history(&plain), events);
        scans.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&plain);
    Ok(Measurement::new(
        "a page of 100 executions (list)",
        "ms",
        median(pages),
        "a scan of history: sled iterate + serde_json decode of every event",
        median(scans),
        Target::AtMost(0.01),
        format!(
            "{} settled + 1,000 live executions, {events} events",
            sizes.big_history
        ),
    ))
}

/// Opening a big ledger with snapshots against a 10,000-event one with the
/// same 1,000 live executions; and the same big ledger written one record
/// per entry (information).
pub fn open_with_snapshots(root: &Path, sizes: Sizes) -> Result<Vec<Measurement>, ScenarioError> {
    let small = fresh(root, "open-small");
    let big = fresh(root, "open-big");
    build_history(&small, 3_000, 1_000, LedgerBuilder::DEFAULT_SNAPSHOT_EVERY)?;
    build_history(
        &big,
        (sizes.big_ledger - 1_000) / 3,
        1_000,
        LedgerBuilder::DEFAULT_SNAPSHOT_EVERY,
    )?;
    let time_open = |dir: &Path| -> Result<f64, ScenarioError> {
        let start = Instant::now();
        let l = ledger(
            dir,
            Durability::Buffered,
            LedgerBuilder::DEFAULT_SNAPSHOT_EVERY,
        )?;
        let took = start.elapsed().as_secs_f64() * 1e3;
        drop(l);
        Ok(took)
    };
    let singly = fresh(root, "open-big-singly");
    build_history_singly(
        &singly,
        (sizes.big_ledger - 1_000) / 3,
        1_000,
        LedgerBuilder::DEFAULT_SNAPSHOT_EVERY,
    )?;
    let (mut ours, mut base, mut one) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.rounds.max(3) {
        base.push(time_open(&small)?);
        ours.push(time_open(&big)?);
        one.push(time_open(&singly)?);
    }
    for dir in [&small, &big, &singly] {
        let _ = std::fs::remove_dir_all(dir);
    }
    let base = median(base);
    let baseline = "opening a 10,000-event ledger with the same 1,000 live executions";
    Ok(vec![
        Measurement::new(
            "open with snapshots, big vs 10k-event ledger",
            "ms",
            median(ours),
            baseline,
            base,
            Target::AtMost(1.5),
            format!("{} events, 1,000 live", sizes.big_ledger),
        ),
        Measurement::new(
            "open with snapshots, big ledger written one record per entry",
            "ms",
            median(one),
            baseline,
            base,
            Target::Informational,
            format!(
                "{} events, 1,000 live; written one command at a time, as before record blocks",
                sizes.big_ledger
            ),
        ),
    ])
}

/// Claim latency with `queued` executions spread over `tenants` tenants
/// (in turn), in µs a claim over 500 claims.
fn time_claims(root: &Path, queued: u64, tenants: u64, name: &str) -> Result<f64, ScenarioError> {
    let dir = fresh(root, name);
    let l = ledger(&dir, Durability::Buffered, 0)?;
    let names: Vec<TenantId> = match tenants {
        1 => vec![tenant()],
        n => (0..n)
            .map(|i| format!("bench-{i}").parse().expect("a valid tenant"))
            .collect(),
    };
    for i in 0..queued {
        let t = &names[(i % tenants) as usize];
        l.submit(t, sample_submission(i)).wait()?;
    }
    let claims = 500.min(queued);
    let start = Instant::now();
    for _ in 0..claims {
        l.claim(None).wait()?.expect("runnable");
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / claims as f64;
    drop(l);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(us)
}

/// Claim latency with a big queue of one tenant's against the same queue
/// spread over 1,000 tenants, each claim choosing whose turn it is (fair
/// shares, `src/fair.rs`).
pub fn claim_tenants(root: &Path, sizes: Sizes) -> Result<Measurement, ScenarioError> {
    let one = time_claims(root, sizes.big_queue, 1, "claim-one-tenant")?;
    let many = time_claims(root, sizes.big_queue, 1_000, "claim-tenants")?;
    Ok(Measurement::new(
        "claim with a big queue of 1,000 tenants vs one tenant's",
        "µs/claim",
        many,
        "a claim with the same queue, one tenant's",
        one,
        Target::AtMost(2.0),
        format!("{} queued", sizes.big_queue),
    ))
}

/// Claim latency with a big queue against 1,000 queued.
pub fn claim(root: &Path, sizes: Sizes) -> Result<Measurement, ScenarioError> {
    let small = time_claims(root, 1_000, 1, "claim-small")?;
    let big = time_claims(root, sizes.big_queue, 1, "claim-big")?;
    Ok(Measurement::new(
        "claim with a big queue vs 1,000 queued",
        "µs/claim",
        big,
        "a claim with 1,000 queued",
        small,
        Target::AtMost(2.0),
        format!("{} queued", sizes.big_queue),
    ))
}

/// A retention pass redacting `sizes.jobs` settled executions, durable,
/// against redacting them one at a time (each `redact` awaited before the
/// next): redactions a second.
pub fn retention_pass(root: &Path, sizes: Sizes) -> Result<Measurement, ScenarioError> {
    let dir = fresh(root, "retention");
    let single = 200.min(sizes.jobs);
    {
        let l = ledger(&dir, Durability::Buffered, 0)?;
        let t = tenant();
        for i in 0..sizes.jobs + single {
            l.submit(&t, sample_submission(i)).wait()?;
            let e = l.claim(None).wait()?.expect("runnable");
            l.complete(e.execution_id, e.attempt, serde_json::json!(i))
                .wait()?;
        }
    }
    let l = ledger(&dir, Durability::Synced, 0)?;
    // One at a time: the newest ones (the pass then finds them redacted).
    let page = l.list(&ListFilter::new(), None, single as usize)?;
    let start = Instant::now();
    for e in &page.executions {
        l.redact(e.execution_id, "bench", None).wait()?;
    }
    let one_by_one = single as f64 / start.elapsed().as_secs_f64();
    let policy =
        execution_ledger::RetentionPolicy::from_json(br#"{"default": {"redactAfter": "0s"}}"#)?;
    let start = Instant::now();
    let report = l.retain(&policy, false, |_| std::ops::ControlFlow::Continue(()))?;
    let pass = report.redacted as f64 / start.elapsed().as_secs_f64();
    assert_eq!(
        report.redacted, sizes.jobs,
        "the pass redacts every one left"
    );
    drop(l);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Measurement::new(
        "retention pass vs one redaction at a time",
        "redactions/s",
        pass,
        "redact, awaited one at a time, synced",
        one_by_one,
        Target::AtLeast(5.0),
        format!("{} settled executions redacted by one pass", sizes.jobs),
    ))
}

/// The seed's queue: a `VecDeque` kept sorted by inserting at the first
/// position of lower priority — O(n) per enqueue.
#[derive(Default)]
pub struct SeedQueue {
    items: VecDeque<BackgroundExecution>,
}

impl SeedQueue {
    /// Inserts behind the executions of the same or higher priority.
    pub fn enqueue(&mut self, e: BackgroundExecution) {
        let at = self
            .items
            .iter()
            .position(|x| x.config.priority < e.config.priority)
            .unwrap_or(self.items.len());
        self.items.insert(at, e);
    }

    /// Removes the first.
    pub fn dequeue(&mut self) -> Option<BackgroundExecution> {
        self.items.pop_front()
    }
}

/// Queue operations at 100,000 queued: `BackgroundExecutionQueue` against
/// the seed's algorithm.
pub fn queue_vs_seed(n: usize) -> Measurement {
    let sample: Vec<BackgroundExecution> = (0..n as u64)
        .map(|i| {
            let mut e = BackgroundExecution::new(tenant(), "bench", Default::default());
            e.config.priority = (i * 7919 % 256) as u8;
            e
        })
        .collect();
    let ops = 2_000usize;
    let mut ours = BackgroundExecutionQueue::new();
    for e in &sample {
        ours.enqueue(e.clone());
    }
    let start = Instant::now();
    for i in 0..ops {
        let e = ours.dequeue().expect("not empty");
        std::hint::black_box(&e);
        ours.enqueue(sample[i % n].clone());
    }
    let ours_rate = rate(2 * ops as u64, start.elapsed());
    let mut seed = SeedQueue::default();
    let mut sorted = sample.clone();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.config.priority));
    seed.items = sorted.into();
    let start = Instant::now();
    for i in 0..ops {
        let e = seed.dequeue().expect("not empty");
        std::hint::black_box(&e);
        seed.enqueue(sample[i % n].clone());
    }
    let seed_rate = rate(2 * ops as u64, start.elapsed());
    Measurement::new(
        "queue operations at 100k queued vs the seed's algorithm",
        "ops/s",
        ours_rate,
        "the seed's VecDeque insert-at-position",
        seed_rate,
        Target::AtLeast(50.0),
        format!("{n} queued"),
    )
}

/// Peak resident memory (kB) of this process so far, from /proc.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// sled's page cache in the memory scenario. sled's cache is the one part
/// of a ledger's memory that grows with history, up to this cap; the
/// projection holds live executions only.
pub const MEMORY_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// What the memory scenario does in a fresh process: open the ledger (with
/// a [`MEMORY_CACHE_BYTES`] cache), read the queue, claim and complete
/// 1,000 executions. Returns the peak RSS in kB.
pub fn memory_probe(dir: &Path) -> Result<u64, ScenarioError> {
    let l = Ledger::builder(dir)
        .durability(Durability::Buffered)
        .cache_bytes(MEMORY_CACHE_BYTES)
        .open()?;
    std::hint::black_box(l.queue(None).len());
    for _ in 0..1_000 {
        if let Some(c) = l.claim(None).wait()? {
            l.complete(c.execution_id, c.attempt, serde_json::Value::Null)
                .wait()?;
        }
    }
    drop(l);
    Ok(peak_rss_kb().unwrap_or(0))
}

/// Peak memory of a process holding a ledger with a big history and 1,000
/// live executions, against one with 1,000 finished; and the same big
/// history written one record per entry (information). `probe` runs
/// [`memory_probe`] in a fresh process and returns its peak RSS (kB).
pub fn memory(
    root: &Path,
    sizes: Sizes,
    probe: &dyn Fn(&Path) -> Result<u64, ScenarioError>,
) -> Result<Vec<Measurement>, ScenarioError> {
    let small = fresh(root, "mem-small");
    let big = fresh(root, "mem-big");
    build_history(&small, 1_000, 2_000, LedgerBuilder::DEFAULT_SNAPSHOT_EVERY)?;
    build_history(
        &big,
        sizes.big_history,
        2_000,
        LedgerBuilder::DEFAULT_SNAPSHOT_EVERY,
    )?;
    let singly = fresh(root, "mem-big-singly");
    build_history_singly(
        &singly,
        sizes.big_history,
        2_000,
        LedgerBuilder::DEFAULT_SNAPSHOT_EVERY,
    )?;
    let (mut ours, mut base, mut one) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        base.push(probe(&small)? as f64 / 1024.0);
        ours.push(probe(&big)? as f64 / 1024.0);
        one.push(probe(&singly)? as f64 / 1024.0);
    }
    for dir in [&small, &big, &singly] {
        let _ = std::fs::remove_dir_all(dir);
    }
    let size = format!(
        "{} finished, 2,000 live (1,000 claimed and completed by the probe), cache {} MiB",
        sizes.big_history,
        MEMORY_CACHE_BYTES >> 20
    );
    let base = median(base);
    let baseline = "the same process over 1,000 finished executions and the same live ones";
    Ok(vec![
        Measurement::new(
            "peak memory, big history vs 1,000 finished",
            "MiB",
            median(ours),
            baseline,
            base,
            Target::AtMost(1.25),
            size.clone(),
        ),
        Measurement::new(
            "peak memory, big history written one record per entry",
            "MiB",
            median(one),
            baseline,
            base,
            Target::Informational,
            format!("{size}; history written one command at a time, as before record blocks"),
        ),
    ])
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Archiving a ledger's settled history (`sizes.replay` events, all but
/// the last 3,000 executions settled): the peak memory of a process
/// holding it ([`memory_probe`] in a fresh process, `probe`) and the live
/// database's size on disk after the pass, against the same ledger before
/// it; and the pass's speed against replaying the same events on open.
/// `rewriting` runs the probe in a process whose open rewrites the
/// database after any archiving (`LEDGER_COMPACT_AFTER=1`).
pub fn archive(
    root: &Path,
    sizes: Sizes,
    probe: &dyn Fn(&Path) -> Result<u64, ScenarioError>,
    rewriting: &dyn Fn(&Path) -> Result<u64, ScenarioError>,
) -> Result<Vec<Measurement>, ScenarioError> {
    let dir = fresh(root, "archive");
    let finished = sizes.replay / 3;
    // Each probe claims and completes 1,000 of the live ones.
    build_history(&dir, finished, 3_000, LedgerBuilder::DEFAULT_SNAPSHOT_EVERY)?;
    let events_before = ledger(&dir, Durability::Buffered, 0)?.head().seq;
    let before = probe(&dir)? as f64 / 1024.0;
    let disk_before = dir_bytes(&dir.join("sled"));
    // A full replay of the live log, for the pass's speed to compare with.
    let started = Instant::now();
    let l = Ledger::builder(&dir)
        .durability(Durability::Buffered)
        .snapshot_every(0)
        .open()?;
    l.check_projection()?;
    let replay = l.head().seq as f64 / started.elapsed().as_secs_f64();
    let policy =
        execution_ledger::RetentionPolicy::from_json(br#"{"default": {"archiveAfter": "0s"}}"#)?;
    let started = Instant::now();
    let report = l.retain(&policy, false, |_| std::ops::ControlFlow::Continue(()))?;
    let took = started.elapsed();
    let archived = report.archive.expect("the policy archives");
    assert!(
        archived.executions >= finished,
        "the pass archives every settled execution before the live ones"
    );
    let pass = archived.events as f64 / took.as_secs_f64();
    l.verify()?;
    drop(l);
    // The next open rewrites the database (sled does not shrink its files
    // in place; by default past 100,000 archived events, here after any),
    // then the probe.
    let started = Instant::now();
    rewriting(&dir)?;
    let rewrite = started.elapsed();
    let after = probe(&dir)? as f64 / 1024.0;
    let disk_after = dir_bytes(&dir.join("sled"));
    let archive_bytes = dir_bytes(&dir.join("archive"));
    let _ = std::fs::remove_dir_all(&dir);
    let size = format!(
        "{events_before} events; {} settled executions ({} events) archived, 3,000 live",
        archived.executions, archived.events
    );
    Ok(vec![
        Measurement::new(
            "peak memory after archiving the settled history",
            "MiB",
            after,
            "the same ledger before archiving",
            before,
            Target::Informational,
            format!("{size}; probe cache {} MiB", MEMORY_CACHE_BYTES >> 20),
        ),
        Measurement::new(
            "live database on disk after archiving",
            "MiB",
            disk_after as f64 / (1 << 20) as f64,
            "the same ledger before archiving",
            disk_before as f64 / (1 << 20) as f64,
            Target::Informational,
            format!(
                "{size}; the archive's segments: {:.1} MiB; the process whose open rewrote the database took {:.1} s",
                archive_bytes as f64 / (1 << 20) as f64,
                rewrite.as_secs_f64()
            ),
        ),
        Measurement::new(
            "archive pass vs replaying the same log",
            "events/s",
            pass,
            "open and fold the whole log from its first event",
            replay,
            Target::Informational,
            size,
        ),
    ])
}

/// The peers' workload (the job-system comparisons run the same one): job
/// `i`'s payload, a JSON object of exactly 100 bytes,
/// `{"id":i,"kind":"noop","tenant":"tenant-<i%16>","pad":"xxx…"}`.
pub fn peer_payload(i: u64) -> String {
    let bare = format!(
        "{{\"id\":{i},\"kind\":\"noop\",\"tenant\":\"tenant-{}\",\"pad\":\"\"}}",
        i % 16
    );
    let pad = "x".repeat(100usize.saturating_sub(bare.len()));
    format!(
        "{{\"id\":{i},\"kind\":\"noop\",\"tenant\":\"tenant-{}\",\"pad\":\"{pad}\"}}",
        i % 16
    )
}

/// The peers' priorities of `n` jobs, 1 (most urgent) to 10: xorshift32
/// from the seed `0x2545F491`, `p = 1 + x % 10`.
pub fn peer_priorities(n: u64) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            1 + (x % 10) as u8
        })
        .collect()
}

/// Job `i` of the peers' workload at peer priority `p` (1 most urgent):
/// the ledger runs higher priorities first, so it gets `11 - p` (10 the
/// most urgent, 1 the least; the order is the peers').
pub fn peer_submission(i: u64, p: u8) -> Submission {
    let mut s = Submission::new("noop");
    s.input = Some(peer_payload(i));
    s.config.priority = 11 - p;
    s
}

/// Jobs per `submit_many` in the peers' workload (their `BATCH`).
pub const PEER_BATCH: usize = 1_000;
/// Workers of the runtime in the peers' workload (their concurrency).
pub const PEER_WORKERS: usize = 50;

/// What one run of the peers' workload measured.
#[derive(Clone, Copy, Debug)]
pub struct PeerFigures {
    /// Jobs / the time of the enqueue loop (the submissions are built
    /// before the clock starts).
    pub enqueue: f64,
    /// Jobs / (the first handler's start → the last job recorded complete).
    pub process: f64,
    /// Seconds from the enqueue's start to the last completion.
    pub total_s: f64,
    /// Events appended while processing, per job (`started` and
    /// `completed`: 2).
    pub events_per_job: f64,
}

/// The peers' workload on the ledger at `location` (a directory or a
/// `postgres://` URL) at `durability`: `n` no-op jobs enqueued with `submit_many`
/// in chunks of [`PEER_BATCH`], then a [`Runtime`] of [`PEER_WORKERS`]
/// workers with a no-op callable runs them all. The last completion is
/// when the ledger counts nothing queued or running (polled every
/// millisecond; a completion is counted once its append is committed).
///
/// # Errors
///
/// When the ledger cannot be opened or refuses a command.
pub fn peer_workload(
    location: &Path,
    n: u64,
    durability: Durability,
) -> Result<PeerFigures, ScenarioError> {
    let ledger = Ledger::builder(location).durability(durability).open()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let priorities = peer_priorities(n);
    let chunks: Vec<Vec<Submission>> = (0..n)
        .map(|i| peer_submission(i, priorities[i as usize]))
        .collect::<Vec<_>>()
        .chunks(PEER_BATCH)
        .map(<[Submission]>::to_vec)
        .collect();
    let figures = rt.block_on(async {
        let t = tenant();
        let start = Instant::now();
        for chunk in chunks {
            ledger.submit_many(&t, chunk).await?;
        }
        let enqueued = start.elapsed();
        let before = ledger.head().seq;
        let first = Arc::new(std::sync::OnceLock::<Instant>::new());
        let seen = first.clone();
        let runtime = Runtime::builder(ledger.clone())
            .workers(PEER_WORKERS)
            .register("noop", move |_, _| {
                seen.get_or_init(Instant::now);
                async { Ok(serde_json::Value::Null) }
            })
            .start()
            .await?;
        let end = loop {
            let c = ledger.counts();
            if c.queued == 0 && c.running == 0 {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let after = ledger.head().seq;
        runtime.shutdown(Duration::from_secs(5)).await?;
        let first = *first.get().unwrap_or(&end);
        Ok::<_, ScenarioError>(PeerFigures {
            enqueue: rate(n, enqueued),
            process: rate(n, end.saturating_duration_since(first)),
            total_s: (end - start).as_secs_f64(),
            events_per_job: (after - before) as f64 / n.max(1) as f64,
        })
    })?;
    drop(ledger);
    Ok(figures)
}

/// `count` synced submits to `ledger` from `submitters` threads at once
/// (the ledger's combiner groups them), each thread a share; returns how
/// many were appended. The ledger of `ledger bench-append`, which runs it
/// in several processes on one database.
pub fn concurrent_appends(ledger: &Ledger, submitters: u64, count: u64) -> u64 {
    let submitters = submitters.clamp(1, count.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..submitters)
            .map(|t| {
                let l = ledger.clone();
                s.spawn(move || {
                    let tenant = tenant();
                    let mine = (t..count).step_by(submitters as usize);
                    let mut done = 0u64;
                    for i in mine {
                        l.submit(&tenant, sample_submission(i))
                            .wait()
                            .expect("a durable submit");
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a submitting thread"))
            .sum()
    })
}
