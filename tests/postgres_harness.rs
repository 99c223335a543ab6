//! The PostgreSQL the integration tests run on: fresh databases that do not
//! see each other, the engine chosen by `LEDGER_TEST_BACKEND`, a private
//! server that never runs as root, and that goes away with the test process
//! however it ends.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::{
    alive, backend, parse_backend, server, store_on, with_database, Backend, BACKEND_VAR,
    DATABASE_URL_VAR,
};

/// Whether a table named `name` exists in the database at `url`.
fn has_table(url: &str, name: &str) -> bool {
    let count = server().sql(
        url,
        &format!("select count(*) from pg_tables where tablename = '{name}'"),
    );
    match count.trim() {
        "0" => false,
        "1" => true,
        other => panic!("pg_tables counted {other:?} tables named {name}"),
    }
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn each_database_is_fresh_and_apart_from_the_others() {
    let pg = server();
    let a = pg.database();
    let b = pg.database();
    assert_ne!(a, b);
    for url in [&a, &b] {
        assert!(url.starts_with("postgres://"), "{url}");
        let name = url.rsplit('/').next().unwrap();
        assert_eq!(pg.sql(url, "select current_database()").trim(), name);
        let tables = pg.sql(
            url,
            "select count(*) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')",
        );
        assert_eq!(tables.trim(), "0", "{url} is not empty");
    }

    let out = pg.sql(
        &a,
        "create table only_in_a (x int); insert into only_in_a values (7), (8); select sum(x) from only_in_a",
    );
    assert_eq!(out.trim(), "15");
    assert!(has_table(&a, "only_in_a"));
    assert!(!has_table(&b, "only_in_a"));
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn tests_in_parallel_get_databases_of_their_own() {
    let urls: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..16)
            .map(|i| {
                scope.spawn(move || {
                    let url = server().database();
                    server().sql(
                        &url,
                        &format!("create table t (x int); insert into t values ({i})"),
                    );
                    url
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let distinct: std::collections::HashSet<&String> = urls.iter().collect();
    assert_eq!(distinct.len(), urls.len(), "{urls:?}");
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(server().sql(url, "select x from t").trim(), i.to_string());
    }
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn a_failing_statement_panics_with_psqls_message() {
    let pg = server();
    let url = pg.database();
    let panic = std::panic::catch_unwind(|| pg.sql(&url, "select * from no_such_table"))
        .expect_err("a query of a missing table must fail");
    let message = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        message.contains("relation \"no_such_table\" does not exist"),
        "{message}"
    );
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn stores_on_each_backend() {
    let sled = store_on(Backend::Sled);
    assert_eq!(sled.backend(), Backend::Sled);
    assert_eq!(sled.url(), None);
    let dir = sled.location();
    assert!(dir.is_dir(), "{}", dir.display());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    drop(sled);
    assert!(!dir.exists(), "{} outlived its store", dir.display());

    let pg = store_on(Backend::Postgres);
    assert_eq!(pg.backend(), Backend::Postgres);
    let url = pg.url().expect("a postgres store has a URL");
    assert_eq!(pg.location(), PathBuf::from(&url));
    assert_eq!(server().sql(&url, "select 1").trim(), "1");
    let other = store_on(Backend::Postgres);
    assert_ne!(other.url(), pg.url());
}

#[test]
fn the_backend_variable_takes_sled_or_postgres() {
    assert_eq!(parse_backend(None), Ok(Backend::Sled));
    assert_eq!(parse_backend(Some("sled")), Ok(Backend::Sled));
    assert_eq!(parse_backend(Some("postgres")), Ok(Backend::Postgres));
    for bad in ["Sled", "", "postgresql", "sled "] {
        let message = parse_backend(Some(bad)).expect_err(bad);
        assert!(message.contains(BACKEND_VAR), "{message}");
        assert!(
            message.contains("sled") && message.contains("postgres"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }
}

/// Set in the child process `the_backend_comes_from_its_variable` runs.
const BACKEND_CHILD_VAR: &str = "LEDGER_PG_HARNESS_CHILD_BACKEND";

#[test]
#[ignore = "a child process of the_backend_comes_from_its_variable"]
fn child_prints_the_backend() {
    if std::env::var_os(BACKEND_CHILD_VAR).is_some() {
        println!("backend {:?}", backend());
    }
}

/// The test binary run as a child with `LEDGER_TEST_BACKEND` set to
/// `value` (unset for `None`): its exit status, stdout and stderr.
fn backend_in_child(value: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_prints_the_backend",
        "--include-ignored",
        "--nocapture",
    ])
    .env(BACKEND_CHILD_VAR, "1")
    .env_remove(BACKEND_VAR);
    if let Some(value) = value {
        cmd.env(BACKEND_VAR, value);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_backend_comes_from_its_variable() {
    for (value, expected) in [
        (None, "backend Sled"),
        (Some("sled"), "backend Sled"),
        (Some("postgres"), "backend Postgres"),
    ] {
        let (ok, stdout, stderr) = backend_in_child(value);
        assert!(
            ok && stdout.contains(expected),
            "{value:?}: {stdout}{stderr}"
        );
    }
    let (ok, stdout, stderr) = backend_in_child(Some("Sled"));
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("LEDGER_TEST_BACKEND must be sled or postgres, not \"Sled\""),
        "{stderr}"
    );
}

#[test]
fn a_database_url_keeps_all_but_its_database() {
    let cases = [
        ("postgres://u@h:5432/postgres", "postgres://u@h:5432/x"),
        ("postgres://u@h:5432", "postgres://u@h:5432/x"),
        ("postgres://u@h:5432/", "postgres://u@h:5432/x"),
        (
            "postgresql://u:p@h/postgres?sslmode=disable",
            "postgresql://u:p@h/x?sslmode=disable",
        ),
        (
            "postgres://h?sslmode=disable",
            "postgres://h/x?sslmode=disable",
        ),
    ];
    for (url, expected) in cases {
        assert_eq!(with_database(url, "x"), expected, "{url}");
    }
}

/// The uids (real, effective, saved, filesystem) of a process.
fn uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .expect("a Uid line");
    line.split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn the_private_server_never_runs_as_root() {
    let pg = server();
    let url = pg.database();
    let Some(pid) = pg.postmaster_pid() else {
        // The server is someone else's; only its user can be checked.
        let named = std::env::var(DATABASE_URL_VAR).expect("an external server is named");
        let user = pg.sql(&url, "select current_user");
        assert!(
            named.contains(&format!("{}@", user.trim())),
            "{named} vs {user}"
        );
        return;
    };
    assert_eq!(pg.sql(&url, "select current_user").trim(), "ledger");
    let ours = uids(std::process::id())[1];
    let theirs = uids(pid);
    assert_eq!(theirs.len(), 4, "{theirs:?}");
    if ours == 0 {
        assert!(
            theirs.iter().all(|&uid| uid != 0),
            "postmaster uids {theirs:?}"
        );
    } else {
        assert!(
            theirs.iter().all(|&uid| uid == ours),
            "postmaster uids {theirs:?}"
        );
    }
    let data = pg.data_dir().unwrap();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&data).unwrap());
    assert_eq!(owner, theirs[1], "{} owned by {owner}", data.display());
}

/// Set in the child process `server_goes_away_with_the_test_process` runs:
/// how that process ends once it started its server.
const CHILD_VAR: &str = "LEDGER_PG_HARNESS_CHILD_END";
const CHILD_TEST: &str = "child_starts_a_server_then_ends";

#[test]
#[ignore = "a child process of the server_goes_away_* tests"]
fn child_starts_a_server_then_ends() {
    let Ok(end) = std::env::var(CHILD_VAR) else {
        return;
    };
    let pg = server();
    let url = pg.database();
    pg.sql(&url, "create table t (x int)");
    println!(
        "postmaster {} {}",
        pg.postmaster_pid().unwrap(),
        pg.data_dir().unwrap().parent().unwrap().display()
    );
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    match end.as_str() {
        "exit" => std::process::exit(0),
        "abort" => std::process::abort(),
        "panic" => panic!("the test process fails"),
        other => panic!("{CHILD_VAR}={other}: exit, abort or panic"),
    }
}

/// Runs `child_starts_a_server_then_ends` in a child process that ends as
/// `end` says (or is killed with SIGKILL when `end` is "kill"), and checks
/// that its postmaster and the server's directory go away with it.
fn server_goes_away_when(end: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--include-ignored", "--nocapture"])
        .env(CHILD_VAR, end)
        .env_remove(DATABASE_URL_VAR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut found = None;
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.trim().strip_prefix("postmaster ") {
            let (pid, dir) = rest.split_once(' ').unwrap();
            found = Some((pid.parse::<u32>().unwrap(), PathBuf::from(dir)));
            break;
        }
        line.clear();
    }
    let Some((pid, dir)) = found else {
        let out = child.wait_with_output().unwrap();
        panic!(
            "the child printed no postmaster pid: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert!(alive(pid), "postmaster {pid} is not running");
    assert!(dir.join("data").is_dir(), "{}", dir.display());

    let mut stdin = child.stdin.take().unwrap();
    if end == "kill" {
        child.kill().unwrap();
    } else {
        writeln!(stdin, "end").unwrap();
    }
    let status = child.wait().unwrap();
    drop(stdin);
    match end {
        "exit" => assert!(status.success(), "{status}"),
        _ => assert!(!status.success(), "{status}"),
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    while (proc_dir.exists() || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !proc_dir.exists(),
        "postmaster {pid} outlived its test process by 15 s"
    );
    assert!(
        !dir.exists(),
        "{} outlived its test process by 15 s",
        dir.display()
    );
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn server_goes_away_when_the_test_process_exits() {
    server_goes_away_when("exit");
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn server_goes_away_when_the_test_process_panics() {
    server_goes_away_when("panic");
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn server_goes_away_when_the_test_process_aborts() {
    server_goes_away_when("abort");
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness -- --include-ignored"]
fn server_goes_away_when_the_test_process_is_killed() {
    server_goes_away_when("kill");
}
