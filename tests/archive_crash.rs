//! Crash test of archiving: a child process (this same test binary, re-run
//! in child mode) settles executions whose payloads carry a secret while
//! another thread archives everything settled, pass after pass, printing
//! each acknowledgement; the parent kills it with SIGKILL at random
//! moments — some while it is still opening and finishing what the last
//! one left — and checks, before reopening, that the database holds either
//! none of the archived history or a removal marked pending; then reopens
//! the ledger and checks that each pass happened completely or not at all:
//! no archived entry is left in the database, the archive's segments run
//! gap-free from seq 1 to the live log's base (no segment past it, no
//! temporary file), no rewrite of the database left half done (the
//! child's opens rewrite it every 300 archived events, and are killed
//! too), every acknowledged pass's base is kept, every settled
//! execution's history reads whole (from its segment or the live log), and
//! `verify` passes over the archive and the live log.
//!
//! On PostgreSQL (a second test, run by `.ci/run` with the PostgreSQL
//! suites) the child archives into a directory it is told of; before
//! reopening, the acknowledged base is kept; after, no row at or below the
//! base is left in the database, the segments run gap-free to the base
//! with nothing past it, every settled history reads whole, and `verify`
//! passes.
//!
//! `LEDGER_ARCHIVE_CRASH_CYCLES` sets the number of cycles (default 20).

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

mod common;

use common::Rng;
use execution_ledger::{EventKind, ExecutionId, Ledger, RetentionPolicy, Submission, TenantId};

const CHILD_DIR: &str = "LEDGER_ARCHIVE_CRASH_CHILD_DIR";
/// The archive's directory, for a child on a database.
const CHILD_ARCHIVE: &str = "LEDGER_ARCHIVE_CRASH_CHILD_ARCHIVE";
const SECRET: &str = "secret-of";

/// Child mode: does nothing unless the parent set the directory.
#[test]
fn archive_crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    // libtest has printed "test archive_crash_child ... " without a
    // newline: end it.
    println!();
    let mut builder = Ledger::builder(&dir).snapshot_every(7);
    if let Ok(archive) = std::env::var(CHILD_ARCHIVE) {
        builder = builder.archive(archive);
    }
    let ledger = builder.open().unwrap();
    println!("opened {}", ledger.head().seq);
    ledger.recover_abandoned().wait().unwrap();
    let tenant: TenantId = "acme".parse().unwrap();
    let archiver = {
        let ledger = ledger.clone();
        std::thread::spawn(move || {
            let policy =
                RetentionPolicy::from_json(br#"{"default": {"archiveAfter": "0s"}}"#).unwrap();
            loop {
                let report = ledger.retain(&policy, false, |_| std::ops::ControlFlow::Continue(()));
                // (On a database, the lock of a killed child's pass lasts
                // until the server notices it died.)
                let report = match report {
                    Ok(report) => report,
                    Err(e) => {
                        println!("refused {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let a = report.archive.unwrap();
                if a.executions > 0 {
                    println!("archived {}", a.through);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (ledger, tenant) = (ledger.clone(), tenant.clone());
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let mut s = Submission::new("mail");
                    s.input = Some(format!("{SECRET} {w}-{i}"));
                    ledger.submit(&tenant, s).wait().unwrap();
                    let Some(e) = ledger.claim(Some("w")).wait().unwrap() else {
                        continue;
                    };
                    let output = serde_json::json!({ "sent": format!("{SECRET} {w}-{i}") });
                    let done = ledger.complete(e.execution_id, e.attempt, output).wait();
                    let Ok(done) = done else { continue };
                    println!("settled {}", done.execution_id);
                    // Now and then a redaction after settling: it may stay
                    // in the live log after its execution is archived.
                    if i % 5 == 0 {
                        let redacted = ledger.redact(done.execution_id, "erasure", None).wait();
                        if redacted.is_ok() {
                            println!("redacted {}", done.execution_id);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    archiver.join().unwrap();
}

/// What the children printed over the cycles.
#[derive(Default)]
struct Told {
    settled: HashSet<ExecutionId>,
    redacted: HashSet<ExecutionId>,
    /// The highest base a pass acknowledged.
    acknowledged: u64,
    /// Why passes were refused.
    refused: Vec<String>,
}

impl Told {
    fn read(&mut self, lines: &[String]) {
        for line in lines {
            if let Some(id) = line.strip_prefix("settled ") {
                self.settled.insert(id.parse().unwrap());
            } else if let Some(id) = line.strip_prefix("redacted ") {
                self.redacted.insert(id.parse().unwrap());
            } else if let Some(through) = line.strip_prefix("archived ") {
                self.acknowledged = self.acknowledged.max(through.parse().unwrap());
            } else if let Some(why) = line.strip_prefix("refused ") {
                self.refused.push(why.to_owned());
            }
        }
    }
}

/// This test binary, to run in child mode (the environment says where).
fn child(exe: &std::path::Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "archive_crash_child",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// Checks that every settled execution's history reads whole (from its
/// segment or the live log), that every acknowledged redaction is there,
/// and that payloads read exactly when not redacted; answers how many of
/// the histories start at or below `base` (read from the archive).
fn check_histories(ledger: &Ledger, told: &Told, base: u64, cycle: u64) -> u64 {
    let mut archived_read = 0;
    for id in &told.settled {
        let history = ledger
            .history(*id)
            .unwrap_or_else(|e| panic!("cycle {cycle}: history of {id}: {e}"));
        assert!(
            history.len() >= 3
                && matches!(history[0].kind, EventKind::Queued(_))
                && history
                    .iter()
                    .any(|e| matches!(e.kind, EventKind::Completed { .. })),
            "cycle {cycle}: the history of {id} is not whole: {history:?}"
        );
        let text = serde_json::to_string(&history).unwrap();
        let was_redacted = history
            .iter()
            .any(|e| matches!(e.kind, EventKind::Redacted { .. }));
        assert!(
            !told.redacted.contains(id) || was_redacted,
            "cycle {cycle}: the acknowledged redaction of {id} is lost"
        );
        assert_eq!(
            text.contains(SECRET),
            !was_redacted,
            "cycle {cycle}: {id}'s payloads: {text}"
        );
        archived_read += u64::from(history[0].seq <= base);
    }
    archived_read
}

#[test]
fn an_archive_pass_killed_at_any_moment_happened_completely_or_not_at_all() {
    let cycles = common::env_count("LEDGER_ARCHIVE_CRASH_CYCLES", 20);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut told = Told::default();
    let (mut pending_seen, mut archived_read) = (0, 0);
    // The database file's inode: a new one after each rewrite.
    let (mut inode, mut rewrites) = (None, 0u64);
    for cycle in 0..cycles {
        // One cycle in four is killed within its first milliseconds: while
        // it opens and finishes what the last kill cut short.
        let wait = if cycle % 4 == 1 {
            rng.below(8)
        } else {
            30 + rng.below(400)
        };
        let lines = common::run_until_killed(
            child(&exe)
                .env(CHILD_DIR, dir.path())
                // Its opens rewrite the database every 300 archived events.
                .env("LEDGER_COMPACT_AFTER", "300"),
            Duration::from_millis(wait),
        );
        told.read(&lines);
        if !dir.path().join("sled").exists() && !dir.path().join("sled.compacted").exists() {
            continue;
        }
        // As the kill left it: nothing archived remains in the database,
        // unless the removal is marked pending.
        let (base, pending, left) = execution_ledger::fuzzing::archive_remnants(dir.path())
            .unwrap_or_else(|e| panic!("cycle {cycle}: cannot read the database: {e}"));
        assert!(
            pending || left == 0,
            "cycle {cycle}: {left} entries of archived history remain through seq {base} with no removal pending"
        );
        pending_seen += u64::from(pending);
        assert!(
            base >= told.acknowledged,
            "cycle {cycle}: the acknowledged archive through seq {} is lost (base {base})",
            told.acknowledged
        );

        let ledger = Ledger::open(dir.path())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        {
            use std::os::unix::fs::MetadataExt;
            let now = std::fs::metadata(dir.path().join("sled").join("db"))
                .unwrap()
                .ino();
            rewrites += u64::from(inode.is_some_and(|i| i != now));
            inode = Some(now);
        }
        let report = ledger
            .verify()
            .unwrap_or_else(|e| panic!("cycle {cycle}: verify failed: {e}"));
        assert_eq!(report.archived, base, "cycle {cycle}");
        if base > 0 {
            let a = report.archive.unwrap();
            assert_eq!(a.events, base, "cycle {cycle}");
        }
        archived_read += check_histories(&ledger, &told, base, cycle);
        drop(ledger);
        let (base_after, pending, left) =
            execution_ledger::fuzzing::archive_remnants(dir.path()).unwrap();
        assert_eq!(
            (base_after, pending, left),
            (base, false, 0),
            "cycle {cycle}: opening did not finish the removal"
        );
        // No rewrite is left half done.
        for leftover in ["sled.old", "sled.compacting", "sled.compacted"] {
            assert!(
                !dir.path().join(leftover).exists(),
                "cycle {cycle}: {leftover} left"
            );
        }
        // No temporary file and no segment past the base is left.
        for entry in std::fs::read_dir(dir.path().join("archive"))
            .into_iter()
            .flatten()
        {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name.ends_with(".segment"),
                "cycle {cycle}: {name} left in the archive"
            );
        }
    }
    let Told {
        settled,
        redacted,
        acknowledged,
        refused,
    } = told;
    println!(
        "{cycles} cycles: {} settled, {} redacted, archive through seq {acknowledged} acknowledged, {pending_seen} kills during a removal, {rewrites} cycles with the database rewritten, {archived_read} archived histories read",
        settled.len(),
        redacted.len()
    );
    assert!(acknowledged > 0, "no pass archived anything");
    assert!(rewrites > 0, "no open rewrote the database");
    assert!(refused.is_empty(), "passes refused: {refused:?}");
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test archive_crash -- --ignored"]
fn an_archive_pass_on_a_database_killed_at_any_moment_happened_completely_or_not_at_all() {
    let cycles = common::env_count("LEDGER_ARCHIVE_CRASH_CYCLES", 20);
    let store = common::postgres::store_on(common::Backend::Postgres);
    let url = store.url().unwrap();
    let pg = common::postgres::server();
    let archive = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut told = Told::default();
    let (mut removals_cut, mut archived_read) = (0u64, 0u64);
    let base_of = || -> u64 {
        pg.sql(
            &url,
            "SELECT coalesce((SELECT split_part(value, ' ', 1) FROM ledger_meta WHERE key = 'archive-base'), '0')",
        )
        .trim()
        .parse()
        .unwrap()
    };
    let rows_through = |base: u64| -> u64 {
        pg.sql(
            &url,
            &format!(
                "SELECT (SELECT count(*) FROM ledger_log WHERE seq <= {base}) \
                 + (SELECT count(*) FROM ledger_listed WHERE seq <= {base}) \
                 + (SELECT count(*) FROM ledger_snapshots WHERE seq <= {base})"
            ),
        )
        .trim()
        .parse()
        .unwrap()
    };
    for cycle in 0..cycles {
        let wait = if cycle % 4 == 1 {
            rng.below(8)
        } else {
            60 + rng.below(400)
        };
        let lines = common::run_until_killed(
            child(&exe)
                .env(CHILD_DIR, &url)
                .env(CHILD_ARCHIVE, archive.path()),
            Duration::from_millis(wait),
        );
        told.read(&lines);
        if !lines.iter().any(|l| l.starts_with("opened ")) && cycle == 0 {
            continue;
        }
        // As the kill left it: the acknowledged base is kept (the rows
        // below it may wait for their removal).
        let base = base_of();
        assert!(
            base >= told.acknowledged,
            "cycle {cycle}: the acknowledged archive through seq {} is lost (base {base})",
            told.acknowledged
        );
        removals_cut += u64::from(rows_through(base) > 0);

        let ledger = Ledger::builder(&url)
            .archive(archive.path())
            .open()
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        assert_eq!(
            rows_through(base),
            0,
            "cycle {cycle}: archived rows left after open"
        );
        let report = ledger
            .verify()
            .unwrap_or_else(|e| panic!("cycle {cycle}: verify failed: {e}"));
        assert_eq!(report.archived, base, "cycle {cycle}");
        if base > 0 {
            assert_eq!(report.archive.unwrap().events, base, "cycle {cycle}");
        }
        archived_read += check_histories(&ledger, &told, base, cycle);
        drop(ledger);
        // No temporary file and no segment past the base is left.
        for entry in std::fs::read_dir(archive.path()).into_iter().flatten() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name.ends_with(".segment"),
                "cycle {cycle}: {name} left in the archive"
            );
            let last: u64 = name.trim_end_matches(".segment")[21..].parse().unwrap();
            assert!(
                last <= base,
                "cycle {cycle}: segment {name} past the base (seq {base})"
            );
        }
    }
    let Told {
        settled,
        redacted,
        acknowledged,
        refused,
    } = told;
    println!(
        "{cycles} cycles on PostgreSQL: {} settled, {} redacted, archive through seq {acknowledged} acknowledged, {removals_cut} kills before the archived rows were removed, {archived_read} archived histories read, {} passes refused ({:?})",
        settled.len(),
        redacted.len(),
        refused.len(),
        refused.first()
    );
    // Only the lock of a killed child's pass, which the server holds until
    // it notices the child died, refuses a pass.
    assert!(
        refused
            .iter()
            .all(|why| why.contains("another process is archiving")),
        "{refused:?}"
    );
    assert!(acknowledged > 0, "no pass archived anything");
}
